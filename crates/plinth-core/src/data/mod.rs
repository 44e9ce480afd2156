//! Tabular data in the core: the columnar [`Table`] evaluations and profiles work on, the
//! [`TableReader`] seam through which file formats are decoded (CSV and Parquet live in the
//! `plinth-data` crate, so the core builds without Arrow), and column profiles.

pub mod datasets;
pub mod query;
pub mod sources;

use std::collections::{HashMap, HashSet};

use plinth_api::data::{ColumnProfile, ColumnType, ValueCount};

/// A file format a dataset can be uploaded in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileFormat {
    /// Comma-separated with a header row; gzip-compressed files are accepted.
    Csv,
    Parquet,
}

impl FileFormat {
    pub fn as_str(self) -> &'static str {
        match self {
            FileFormat::Csv => "csv",
            FileFormat::Parquet => "parquet",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "csv" => Some(FileFormat::Csv),
            "parquet" => Some(FileFormat::Parquet),
            _ => None,
        }
    }

    /// Parquet files start with `PAR1`; anything else is read as CSV.
    pub fn detect(head: &[u8]) -> FileFormat {
        if head.starts_with(b"PAR1") { FileFormat::Parquet } else { FileFormat::Csv }
    }
}

/// The values of one column; `None` is null. Strings are dictionary-encoded: `codes[i]` indexes
/// `dict`.
#[derive(Debug, Clone, PartialEq)]
pub enum ColumnData {
    Int64(Vec<Option<i64>>),
    Float64(Vec<Option<f64>>),
    Bool(Vec<Option<bool>>),
    Str {
        dict: Vec<String>,
        codes: Vec<Option<u32>>,
    },
    /// Microseconds since the epoch, UTC.
    Timestamp(Vec<Option<i64>>),
}

impl ColumnData {
    pub fn len(&self) -> usize {
        match self {
            ColumnData::Int64(v) | ColumnData::Timestamp(v) => v.len(),
            ColumnData::Float64(v) => v.len(),
            ColumnData::Bool(v) => v.len(),
            ColumnData::Str { codes, .. } => codes.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn kind(&self) -> ColumnType {
        match self {
            ColumnData::Int64(_) => ColumnType::Int64,
            ColumnData::Float64(_) => ColumnType::Float64,
            ColumnData::Bool(_) => ColumnType::Bool,
            ColumnData::Str { .. } => ColumnType::String,
            ColumnData::Timestamp(_) => ColumnType::Timestamp,
        }
    }

    /// The value of row `i` as a number (bools as 0/1); `None` for nulls and strings.
    pub fn number(&self, i: usize) -> Option<f64> {
        match self {
            ColumnData::Int64(v) | ColumnData::Timestamp(v) => v[i].map(|x| x as f64),
            ColumnData::Float64(v) => v[i],
            ColumnData::Bool(v) => v[i].map(|b| f64::from(u8::from(b))),
            ColumnData::Str { .. } => None,
        }
    }

    /// The value of row `i` as text (a group key); `None` for nulls.
    pub fn text(&self, i: usize) -> Option<String> {
        match self {
            ColumnData::Int64(v) | ColumnData::Timestamp(v) => v[i].map(|x| x.to_string()),
            ColumnData::Float64(v) => v[i].map(|x| x.to_string()),
            ColumnData::Bool(v) => v[i].map(|x| x.to_string()),
            ColumnData::Str { dict, codes } => codes[i].map(|c| dict[c as usize].clone()),
        }
    }

    /// Groups the rows by value: the distinct values (sorted; null as `"null"`) and each row's
    /// group index.
    pub fn groups(&self) -> (Vec<String>, Vec<u32>) {
        let n = self.len();
        let mut keys: Vec<Option<String>> = Vec::new();
        let mut index: HashMap<Option<String>, u32> = HashMap::new();
        let mut raw = Vec::with_capacity(n);
        match self {
            ColumnData::Str { dict, codes } => {
                // Group on the codes first: one lookup per distinct value, not per row.
                let mut by_code: HashMap<Option<u32>, u32> = HashMap::new();
                for c in codes {
                    let g = *by_code.entry(*c).or_insert_with(|| {
                        let key = c.map(|c| dict[c as usize].clone());
                        *index.entry(key.clone()).or_insert_with(|| {
                            keys.push(key);
                            keys.len() as u32 - 1
                        })
                    });
                    raw.push(g);
                }
            }
            _ => {
                for i in 0..n {
                    let key = self.text(i);
                    let g = *index.entry(key.clone()).or_insert_with(|| {
                        keys.push(key);
                        keys.len() as u32 - 1
                    });
                    raw.push(g);
                }
            }
        }
        // Sort the group names so the output does not depend on row order.
        let names: Vec<String> =
            keys.into_iter().map(|k| k.unwrap_or_else(|| "null".to_string())).collect();
        let mut order: Vec<usize> = (0..names.len()).collect();
        order.sort_by(|&a, &b| names[a].cmp(&names[b]));
        let mut remap = vec![0u32; names.len()];
        for (new, &old) in order.iter().enumerate() {
            remap[old] = new as u32;
        }
        let sorted = order.iter().map(|&i| names[i].clone()).collect();
        (sorted, raw.into_iter().map(|g| remap[g as usize]).collect())
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Column {
    pub name: String,
    pub data: ColumnData,
}

/// A table held in memory, column by column.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Table {
    pub columns: Vec<Column>,
    pub rows: usize,
}

impl Table {
    pub fn column(&self, name: &str) -> Option<&Column> {
        self.columns.iter().find(|c| c.name == name)
    }

    /// Every column's profile.
    pub fn profile(&self) -> Vec<ColumnProfile> {
        self.columns.iter().map(profile).collect()
    }
}

/// One point-in-time join of a training set: a feature table joined as of the rows of the
/// entity table (see `plinth_data::pit`).
#[derive(Debug, Clone)]
pub struct PitJoin {
    /// The feature table (CSV or Parquet bytes).
    pub features: Vec<u8>,
    pub format: FileFormat,
    pub keys: Vec<String>,
    pub entity_timestamp: String,
    pub feature_timestamp: String,
    pub created_timestamp: Option<String>,
    pub ttl_micros: Option<i64>,
    /// The feature columns to bring.
    pub columns: Vec<String>,
}

/// Decodes uploaded files into tables, and joins them. Implemented by `plinth-data`.
pub trait TableReader: Send + Sync {
    /// Reads the whole file. Errors name the column or the line and the reason.
    fn read(&self, bytes: Vec<u8>, format: FileFormat) -> std::result::Result<Table, String>;

    /// Joins each feature table in turn to the entity table, as of each entity row's time, and
    /// returns the result as Parquet.
    fn point_in_time(
        &self,
        entities: Vec<u8>,
        format: FileFormat,
        joins: Vec<PitJoin>,
    ) -> std::result::Result<Vec<u8>, String>;
}

/// The reader of a build without file formats: every read fails clearly.
pub struct NoTables;

const NO_TABLES: &str = "this build of Plinth has no CSV/Parquet reader (crate plinth-data)";

impl TableReader for NoTables {
    fn read(&self, _: Vec<u8>, _: FileFormat) -> std::result::Result<Table, String> {
        Err(NO_TABLES.into())
    }

    fn point_in_time(
        &self,
        _: Vec<u8>,
        _: FileFormat,
        _: Vec<PitJoin>,
    ) -> std::result::Result<Vec<u8>, String> {
        Err(NO_TABLES.into())
    }
}

fn profile(c: &Column) -> ColumnProfile {
    let mut p = ColumnProfile {
        name: c.name.clone(),
        kind: c.data.kind(),
        nulls: 0,
        distinct: 0,
        min: None,
        max: None,
        mean: None,
        std: None,
        top: vec![],
    };
    let numeric = |values: &mut dyn Iterator<Item = Option<f64>>, p: &mut ColumnProfile| {
        let mut distinct = HashSet::new();
        let (mut n, mut sum, mut min, mut max) = (0u64, 0.0, f64::INFINITY, f64::NEG_INFINITY);
        let mut seen = Vec::new();
        for v in values {
            match v {
                None => p.nulls += 1,
                Some(x) => {
                    distinct.insert(x.to_bits());
                    n += 1;
                    sum += x;
                    min = min.min(x);
                    max = max.max(x);
                    seen.push(x);
                }
            }
        }
        p.distinct = distinct.len() as u64;
        if n > 0 {
            let mean = sum / n as f64;
            let var = seen.iter().map(|x| (x - mean) * (x - mean)).sum::<f64>() / n as f64;
            (p.min, p.max, p.mean, p.std) = (Some(min), Some(max), Some(mean), Some(var.sqrt()));
        }
    };
    match &c.data {
        ColumnData::Int64(v) | ColumnData::Timestamp(v) => {
            numeric(&mut v.iter().map(|x| x.map(|x| x as f64)), &mut p)
        }
        ColumnData::Float64(v) => numeric(&mut v.iter().copied(), &mut p),
        ColumnData::Bool(v) => {
            let (mut t, mut f) = (0, 0);
            for x in v {
                match x {
                    None => p.nulls += 1,
                    Some(true) => t += 1,
                    Some(false) => f += 1,
                }
            }
            p.distinct = u64::from(t > 0) + u64::from(f > 0);
            p.top = [("true", t), ("false", f)]
                .into_iter()
                .filter(|(_, n)| *n > 0)
                .map(|(v, n)| ValueCount { value: v.into(), count: n })
                .collect();
        }
        ColumnData::Str { dict, codes } => {
            let mut counts = vec![0u64; dict.len()];
            for c in codes {
                match c {
                    None => p.nulls += 1,
                    Some(c) => counts[*c as usize] += 1,
                }
            }
            // The dictionary may hold duplicates (one per Parquet page): merge by value.
            let mut by_value: HashMap<&str, u64> = HashMap::new();
            for (v, n) in dict.iter().zip(&counts).filter(|(_, n)| **n > 0) {
                *by_value.entry(v.as_str()).or_default() += n;
            }
            p.distinct = by_value.len() as u64;
            let mut top: Vec<(&str, u64)> = by_value.into_iter().collect();
            top.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
            p.top = top
                .into_iter()
                .take(10)
                .map(|(v, n)| ValueCount { value: v.to_string(), count: n })
                .collect();
        }
    }
    p
}
