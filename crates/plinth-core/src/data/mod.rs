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

/// A table file read in place: a dataset version's artifact, a source's file, or a staged copy
/// of data that lives elsewhere (deleted when this is dropped).
pub struct LocalFile {
    pub path: std::path::PathBuf,
    pub format: FileFormat,
    _copy: Option<crate::store::artifacts::StagedFile>,
}

impl std::fmt::Debug for LocalFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalFile").field("path", &self.path).field("format", &self.format).finish()
    }
}

impl LocalFile {
    pub fn new(path: std::path::PathBuf, format: FileFormat) -> LocalFile {
        LocalFile { path, format, _copy: None }
    }

    pub(crate) fn staged(copy: crate::store::artifacts::StagedFile, format: FileFormat) -> Self {
        LocalFile { path: copy.path().to_path_buf(), format, _copy: Some(copy) }
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

    /// The rows whose `keep` is true, in order.
    pub fn filter(&self, keep: &[bool]) -> Table {
        fn pick<T: Clone>(v: &[T], keep: &[bool]) -> Vec<T> {
            v.iter().zip(keep).filter(|(_, k)| **k).map(|(x, _)| x.clone()).collect()
        }
        let columns = self
            .columns
            .iter()
            .map(|c| Column {
                name: c.name.clone(),
                data: match &c.data {
                    ColumnData::Int64(v) => ColumnData::Int64(pick(v, keep)),
                    ColumnData::Float64(v) => ColumnData::Float64(pick(v, keep)),
                    ColumnData::Bool(v) => ColumnData::Bool(pick(v, keep)),
                    ColumnData::Timestamp(v) => ColumnData::Timestamp(pick(v, keep)),
                    ColumnData::Str { dict, codes } => {
                        ColumnData::Str { dict: dict.clone(), codes: pick(codes, keep) }
                    }
                },
            })
            .collect();
        Table { columns, rows: keep.iter().take(self.rows).filter(|k| **k).count() }
    }

    /// Every column's profile (see [`Profiler`]).
    pub fn profile(&self) -> Vec<ColumnProfile> {
        let mut p = Profiler::default();
        p.add(self).expect("a table's columns are its own");
        p.finish()
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

    /// Reads a file one batch of rows at a time, with only the named columns (in file order;
    /// all when `None`), handing each batch to `each`: memory holds one batch, whatever the
    /// file's size. A file without rows gives one empty batch. A missing column, an unreadable
    /// file or an error from `each` stops the scan.
    fn scan(
        &self,
        path: &std::path::Path,
        format: FileFormat,
        columns: Option<&[String]>,
        each: &mut dyn FnMut(Table) -> std::result::Result<(), String>,
    ) -> std::result::Result<(), String>;

    /// Joins each feature table in turn to the entity table, as of each entity row's time, and
    /// returns the result as Parquet.
    fn point_in_time(
        &self,
        entities: Vec<u8>,
        format: FileFormat,
        joins: Vec<PitJoin>,
    ) -> std::result::Result<Vec<u8>, String>;

    /// Writes `rows`, read once, to `out` as one Parquet file (the first batch's columns are
    /// the file's); answers the rows written.
    fn write_parquet(
        &self,
        out: &mut dyn std::io::Write,
        rows: &mut dyn Rows,
    ) -> std::result::Result<u64, String> {
        let _ = (out, rows);
        Err(NO_TABLES.into())
    }
}

/// Rows that can be read more than once, a batch at a time (a trainer reads them twice).
pub trait Rows {
    fn scan(
        &mut self,
        each: &mut dyn FnMut(&Table) -> std::result::Result<(), String>,
    ) -> std::result::Result<(), String>;
}

/// Tables already in memory, as rows.
impl Rows for Vec<Table> {
    fn scan(
        &mut self,
        each: &mut dyn FnMut(&Table) -> std::result::Result<(), String>,
    ) -> std::result::Result<(), String> {
        self.iter().try_for_each(each)
    }
}

/// The reader of a build without file formats: every read fails clearly.
pub struct NoTables;

const NO_TABLES: &str = "this build of Plinth has no CSV/Parquet reader (crate plinth-data)";

impl TableReader for NoTables {
    fn read(&self, _: Vec<u8>, _: FileFormat) -> std::result::Result<Table, String> {
        Err(NO_TABLES.into())
    }

    fn scan(
        &self,
        _: &std::path::Path,
        _: FileFormat,
        _: Option<&[String]>,
        _: &mut dyn FnMut(Table) -> std::result::Result<(), String>,
    ) -> std::result::Result<(), String> {
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

/// Column profiles built batch by batch, so a dataset of any length is profiled in bounded
/// memory: counts, min, max, mean and standard deviation (Welford's update, population form)
/// are exact; distinct counts are exact up to [`EXACT_DISTINCT`] values per column and an
/// estimate above (a k-minimum-values sketch, about ±3 %); string top values are exact unless a
/// column has more than [`EXACT_DISTINCT`] distinct strings, then counted among the first ones.
#[derive(Debug, Default)]
pub struct Profiler {
    columns: Vec<(String, Acc)>,
    rows: u64,
}

/// Beyond this many distinct values, a column's distinct count is estimated (a few MB a column
/// at most, however wide and long the table).
pub const EXACT_DISTINCT: usize = 1 << 16;

#[derive(Debug)]
enum Acc {
    Numeric {
        kind: ColumnType,
        nulls: u64,
        n: u64,
        mean: f64,
        m2: f64,
        min: f64,
        max: f64,
        distinct: Distinct,
    },
    Bool {
        nulls: u64,
        t: u64,
        f: u64,
    },
    Str {
        nulls: u64,
        counts: HashMap<String, u64>,
        distinct: Distinct,
    },
}

impl Profiler {
    /// Adds a batch of rows; every batch must have the first one's columns.
    pub fn add(&mut self, t: &Table) -> std::result::Result<(), String> {
        if self.columns.is_empty() && self.rows == 0 {
            self.columns =
                t.columns.iter().map(|c| (c.name.clone(), Acc::new(c.data.kind()))).collect();
        }
        if t.columns.len() != self.columns.len() {
            return Err("a batch has other columns than the first".into());
        }
        for (c, (name, acc)) in t.columns.iter().zip(&mut self.columns) {
            if &c.name != name {
                return Err(format!("a batch has column '{}' where '{name}' was", c.name));
            }
            acc.add(&c.data)?;
        }
        self.rows += t.rows as u64;
        Ok(())
    }

    pub fn rows(&self) -> u64 {
        self.rows
    }

    pub fn finish(self) -> Vec<ColumnProfile> {
        self.columns.into_iter().map(|(name, acc)| acc.finish(name)).collect()
    }
}

impl Acc {
    fn new(kind: ColumnType) -> Acc {
        match kind {
            ColumnType::Bool => Acc::Bool { nulls: 0, t: 0, f: 0 },
            ColumnType::String => {
                Acc::Str { nulls: 0, counts: HashMap::new(), distinct: Distinct::default() }
            }
            kind => Acc::Numeric {
                kind,
                nulls: 0,
                n: 0,
                mean: 0.0,
                m2: 0.0,
                min: f64::INFINITY,
                max: f64::NEG_INFINITY,
                distinct: Distinct::default(),
            },
        }
    }

    fn add(&mut self, data: &ColumnData) -> std::result::Result<(), String> {
        let changed =
            || format!("a batch has {:?} values where earlier ones had others", data.kind());
        match (self, data) {
            (Acc::Numeric { kind, nulls, n, mean, m2, min, max, distinct }, data)
                if data.kind() == *kind =>
            {
                let mut one = |x: Option<f64>| match x {
                    None => *nulls += 1,
                    Some(x) => {
                        distinct.insert(x.to_bits());
                        *n += 1;
                        let d = x - *mean;
                        *mean += d / *n as f64;
                        *m2 += d * (x - *mean);
                        *min = min.min(x);
                        *max = max.max(x);
                    }
                };
                match data {
                    ColumnData::Int64(v) | ColumnData::Timestamp(v) => {
                        v.iter().for_each(|x| one(x.map(|x| x as f64)))
                    }
                    ColumnData::Float64(v) => v.iter().for_each(|x| one(*x)),
                    _ => return Err(changed()),
                }
            }
            (Acc::Bool { nulls, t, f }, ColumnData::Bool(v)) => {
                for x in v {
                    match x {
                        None => *nulls += 1,
                        Some(true) => *t += 1,
                        Some(false) => *f += 1,
                    }
                }
            }
            (Acc::Str { nulls, counts, distinct }, ColumnData::Str { dict, codes }) => {
                let mut per_code = vec![0u64; dict.len()];
                for c in codes {
                    match c {
                        None => *nulls += 1,
                        Some(c) => per_code[*c as usize] += 1,
                    }
                }
                // The dictionary may hold duplicates (one per Parquet page): merge by value.
                for (v, k) in dict.iter().zip(per_code).filter(|(_, k)| *k > 0) {
                    distinct.insert(hash_str(v));
                    let room = counts.len() < EXACT_DISTINCT;
                    match counts.get_mut(v.as_str()) {
                        Some(total) => *total += k,
                        None if room => {
                            counts.insert(v.clone(), k);
                        }
                        None => {}
                    }
                }
            }
            _ => return Err(changed()),
        }
        Ok(())
    }

    fn finish(self, name: String) -> ColumnProfile {
        let mut p = ColumnProfile {
            name,
            kind: ColumnType::String,
            nulls: 0,
            distinct: 0,
            min: None,
            max: None,
            mean: None,
            std: None,
            top: vec![],
        };
        match self {
            Acc::Numeric { kind, nulls, n, mean, m2, min, max, distinct } => {
                (p.kind, p.nulls, p.distinct) = (kind, nulls, distinct.count());
                if n > 0 {
                    (p.min, p.max, p.mean) = (Some(min), Some(max), Some(mean));
                    p.std = Some((m2 / n as f64).max(0.0).sqrt());
                }
            }
            Acc::Bool { nulls, t, f } => {
                (p.kind, p.nulls) = (ColumnType::Bool, nulls);
                p.distinct = u64::from(t > 0) + u64::from(f > 0);
                p.top = [("true", t), ("false", f)]
                    .into_iter()
                    .filter(|(_, n)| *n > 0)
                    .map(|(v, n)| ValueCount { value: v.into(), count: n })
                    .collect();
            }
            Acc::Str { nulls, counts, distinct } => {
                (p.nulls, p.distinct) = (nulls, distinct.count());
                let mut top: Vec<(String, u64)> = counts.into_iter().collect();
                top.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
                p.top = top
                    .into_iter()
                    .take(10)
                    .map(|(value, count)| ValueCount { value, count })
                    .collect();
            }
        }
        p
    }
}

fn hash_str(s: &str) -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h =
        std::hash::BuildHasherDefault::<std::collections::hash_map::DefaultHasher>::default()
            .build_hasher();
    h.write(s.as_bytes());
    h.finish()
}

/// A distinct count: exact (a set of the values' bits) up to [`EXACT_DISTINCT`] values, then
/// a k-minimum-values estimate over a 64-bit mix of them.
#[derive(Debug, Default)]
struct Distinct {
    exact: HashSet<u64>,
    /// The `KMV` smallest mixed values seen, once the exact set overflowed.
    sketch: Option<std::collections::BTreeSet<u64>>,
}

const KMV: usize = 1024;

impl Distinct {
    fn insert(&mut self, bits: u64) {
        match &mut self.sketch {
            None => {
                self.exact.insert(bits);
                if self.exact.len() > EXACT_DISTINCT {
                    let mut sketch = std::collections::BTreeSet::new();
                    for b in self.exact.drain() {
                        kmv_insert(&mut sketch, mix(b));
                    }
                    self.exact.shrink_to_fit();
                    self.sketch = Some(sketch);
                }
            }
            Some(sketch) => kmv_insert(sketch, mix(bits)),
        }
    }

    fn count(&self) -> u64 {
        match &self.sketch {
            None => self.exact.len() as u64,
            Some(s) => {
                let kth = *s.iter().next_back().expect("a full sketch") as f64;
                (((KMV - 1) as f64) * (u64::MAX as f64) / kth).round() as u64
            }
        }
    }
}

fn kmv_insert(sketch: &mut std::collections::BTreeSet<u64>, h: u64) {
    if sketch.len() < KMV {
        sketch.insert(h);
    } else if h < *sketch.iter().next_back().expect("a full sketch") && sketch.insert(h) {
        sketch.pop_last();
    }
}

/// A 64-bit finalizer (SplitMix64's): spreads the values' bits uniformly for the sketch.
fn mix(mut x: u64) -> u64 {
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58476d1ce4e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d049bb133111eb);
    x ^ (x >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn profiles_are_the_same_in_one_batch_or_many() {
        let n = 10_000;
        let ints: Vec<Option<i64>> = (0..n).map(|i| (i % 17 != 0).then_some(i % 101)).collect();
        let floats: Vec<Option<f64>> = (0..n).map(|i| Some(i as f64 * 0.5 - 7.0)).collect();
        let codes: Vec<Option<u32>> =
            (0..n).map(|i| (i % 5 != 0).then_some((i % 3) as u32)).collect();
        let table = |a: usize, b: usize| Table {
            rows: b - a,
            columns: vec![
                Column { name: "i".into(), data: ColumnData::Int64(ints[a..b].to_vec()) },
                Column { name: "f".into(), data: ColumnData::Float64(floats[a..b].to_vec()) },
                Column {
                    name: "s".into(),
                    data: ColumnData::Str {
                        dict: vec!["x".into(), "y".into(), "z".into()],
                        codes: codes[a..b].to_vec(),
                    },
                },
            ],
        };
        let whole = table(0, n as usize).profile();
        let mut p = Profiler::default();
        for a in (0..n as usize).step_by(999) {
            p.add(&table(a, (a + 999).min(n as usize))).unwrap();
        }
        assert_eq!(p.rows(), n as u64);
        let parts = p.finish();
        for (w, b) in whole.iter().zip(&parts) {
            assert_eq!(
                (w.nulls, w.distinct, &w.top, w.min, w.max),
                (b.nulls, b.distinct, &b.top, b.min, b.max)
            );
            let close = |x: Option<f64>, y: Option<f64>| (x.unwrap() - y.unwrap()).abs() < 1e-9;
            if w.kind != ColumnType::String {
                assert!(close(w.mean, b.mean) && close(w.std, b.std), "{w:?} {b:?}");
            }
        }
        // Against the definitions: mean and population standard deviation of 0..100 by 0.5 - 7.
        let f = &parts[1];
        let xs: Vec<f64> = floats.iter().flatten().copied().collect();
        let mean = xs.iter().sum::<f64>() / xs.len() as f64;
        let std = (xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / xs.len() as f64).sqrt();
        assert!((f.mean.unwrap() - mean).abs() < 1e-9 && (f.std.unwrap() - std).abs() < 1e-9);
        assert_eq!((parts[0].distinct, parts[0].nulls), (101, 589));
        assert_eq!(parts[2].top[0].value, "x");
    }

    #[test]
    fn distinct_counts_are_exact_then_estimated() {
        let mut d = Distinct::default();
        for i in 0..1000u64 {
            d.insert(i);
            d.insert(i);
        }
        assert_eq!(d.count(), 1000);
        let n = 3 * EXACT_DISTINCT as u64;
        let mut d = Distinct::default();
        for i in 0..n {
            d.insert((i as f64).to_bits());
        }
        assert!(d.sketch.is_some() && d.exact.is_empty(), "the exact set gave way to the sketch");
        let err = (d.count() as f64 - n as f64).abs() / n as f64;
        assert!(err < 0.1, "estimate {} for {n} ({err})", d.count());
    }
}
