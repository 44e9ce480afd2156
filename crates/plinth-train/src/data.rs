//! Training data, binned: every feature is cut into at most `max_bin` bins (one byte a value)
//! from a row sample, then the rows are read again and stored as bins only. The raw floats are
//! never held whole: memory is rows × features bytes for the matrix, plus the label.
//!
//! Numeric bins are cut between distinct sample values (greedily, so that bins hold similar row
//! counts); a feature with missing values (NaN, null) gets a bin of its own for them, and splits
//! learn which side it goes. Categorical features (string columns, and the columns named in
//! `categorical_feature`) get one bin per category, the most frequent first; bin 0 holds every
//! category the sample did not see, negative values and missing ones, and always goes right,
//! as in LightGBM.

use std::collections::HashMap;

use plinth_core::data::{ColumnData, Table};
use rayon::prelude::*;

use crate::params::Params;
use crate::rng::{Rng, row_uniform};

/// A source of rows that can be read more than once (binning reads it twice): the core's
/// [`plinth_core::training::Rows`].
pub use plinth_core::training::Rows as Source;

/// A CSV or Parquet file read through the core's table reader, batch by batch, with only the
/// named columns.
pub struct FileSource<'a> {
    pub reader: &'a dyn plinth_core::data::TableReader,
    pub path: std::path::PathBuf,
    pub format: plinth_core::data::FileFormat,
    pub columns: Vec<String>,
}

impl Source for FileSource<'_> {
    fn scan(&mut self, each: &mut dyn FnMut(&Table) -> Result<(), String>) -> Result<(), String> {
        self.reader.scan(&self.path, self.format, Some(&self.columns), &mut |t| each(&t))
    }
}

/// How one feature's values map to bins.
#[derive(Debug, Clone)]
pub enum Mapper {
    Numeric {
        /// Bin `b` holds values `<= upper[b]` (and above the previous bound); the last is +inf.
        upper: Vec<f64>,
        /// The bin of missing values, when the data had any.
        nan_bin: Option<u8>,
        min: f64,
        max: f64,
    },
    Categorical {
        /// Bin `b + 1` is category `cats[b]`; bin 0 is "other".
        cats: Vec<i64>,
        lookup: HashMap<i64, u8>,
        /// For string columns: category code → string (codes are the sorted strings' ranks).
        names: Option<Vec<String>>,
    },
}

impl Mapper {
    pub fn num_bins(&self) -> usize {
        match self {
            Mapper::Numeric { upper, nan_bin, .. } => upper.len() + nan_bin.is_some() as usize,
            Mapper::Categorical { cats, .. } => cats.len() + 1,
        }
    }

    pub fn is_categorical(&self) -> bool {
        matches!(self, Mapper::Categorical { .. })
    }

    /// The bin of a value (`None` is missing).
    pub fn bin(&self, v: Option<f64>) -> u8 {
        match self {
            Mapper::Numeric { upper, nan_bin, .. } => {
                let v = match v {
                    Some(v) if !v.is_nan() => v,
                    _ => match nan_bin {
                        Some(b) => return *b,
                        // Without a missing bin, LightGBM reads a missing value as zero.
                        None => 0.0,
                    },
                };
                upper.partition_point(|&u| u < v) as u8
            }
            Mapper::Categorical { lookup, .. } => match v {
                Some(v) if v >= 0.0 && v.fract() == 0.0 => {
                    lookup.get(&(v as i64)).copied().unwrap_or(0)
                }
                _ => 0,
            },
        }
    }

    /// LightGBM's `feature_infos` entry.
    pub fn info(&self) -> String {
        match self {
            Mapper::Numeric { min, max, .. } if min <= max => format!("[{min}:{max}]"),
            Mapper::Numeric { .. } => "none".into(),
            Mapper::Categorical { cats, .. } if cats.is_empty() => "none".into(),
            Mapper::Categorical { cats, .. } => {
                cats.iter().map(|c| c.to_string()).collect::<Vec<_>>().join(":")
            }
        }
    }
}

/// The label's meaning.
#[derive(Debug, Clone, PartialEq)]
pub enum Labels {
    /// Regression: the value itself.
    Values,
    /// Classification: class index → the label as it appeared (sorted).
    Classes(Vec<String>),
}

/// A binned matrix, column by column (`bins[feature * rows + row]`): splitting a leaf reads one
/// feature's column, and a histogram one column at a time, at the leaf's rows in ascending
/// order, so each pass streams through a column of `rows` bytes.
#[derive(Debug, Default)]
pub struct Binned {
    pub rows: usize,
    pub features: usize,
    pub bins: Vec<u8>,
    pub label: Vec<f32>,
}

impl Binned {
    /// Feature `f`'s bins, one per row.
    pub fn column(&self, f: usize) -> &[u8] {
        &self.bins[f * self.rows..(f + 1) * self.rows]
    }

    /// Row `r`'s bin of feature `f`.
    pub fn bin(&self, r: usize, f: usize) -> u8 {
        self.bins[f * self.rows + r]
    }
}

/// The training set and its validation split, binned with the same mappers.
#[derive(Debug)]
pub struct Dataset {
    pub feature_names: Vec<String>,
    pub mappers: Vec<Mapper>,
    pub train: Binned,
    pub valid: Binned,
    pub labels: Labels,
}

impl Dataset {
    /// Bytes held by the binned matrices and labels: what training memory is proportional to.
    pub fn bytes(&self) -> usize {
        let f = self.feature_names.len();
        (self.train.rows + self.valid.rows) * (f + 4)
    }
}

/// What to read from the source.
#[derive(Debug, Clone)]
pub struct Columns {
    pub features: Vec<String>,
    pub label: String,
    /// Share of rows held out for validation (0 = none).
    pub valid_fraction: f64,
    /// Classification: labels are classes.
    pub classify: bool,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Kind {
    Numeric,
    Categorical,
    Strings,
}

struct Pass1 {
    kinds: Vec<Option<Kind>>,
    /// Reservoir of training rows: sample[f][slot].
    sample: Vec<Vec<Option<f64>>>,
    seen_train: u64,
    train_rows: usize,
    valid_rows: usize,
    /// String features: string → first-seen code.
    strings: Vec<HashMap<String, u32>>,
    label_strings: HashMap<String, ()>,
    /// Numeric class labels, by their bits.
    label_numbers: std::collections::HashSet<u64>,
    has_nan: Vec<bool>,
}

fn column_values(data: &ColumnData, row: usize) -> Option<f64> {
    match data {
        ColumnData::Float64(v) => v[row],
        ColumnData::Int64(v) => v[row].map(|x| x as f64),
        ColumnData::Bool(v) => v[row].map(|x| x as u8 as f64),
        ColumnData::Str { codes, .. } => codes[row].map(|c| c as f64),
        ColumnData::Timestamp(v) => v[row].map(|x| x as f64),
    }
}

/// A numeric label (null and NaN are no label).
fn label_number(data: &ColumnData, row: usize) -> Option<f64> {
    match data {
        ColumnData::Float64(v) => v[row].filter(|x| !x.is_nan()),
        ColumnData::Int64(v) => v[row].map(|x| x as f64),
        ColumnData::Bool(v) => v[row].map(|x| x as u8 as f64),
        _ => None,
    }
}

/// A numeric class as text: whole numbers without a decimal point.
fn number_text(x: f64) -> String {
    if x.fract() == 0.0 && x.abs() < 1e15 { (x as i64).to_string() } else { x.to_string() }
}

/// A label as text (numbers as [`number_text`]; null and NaN are no label).
pub(crate) fn label_text(data: &ColumnData, row: usize) -> Option<String> {
    match data {
        ColumnData::Str { dict, codes } => codes[row].map(|c| dict[c as usize].clone()),
        ColumnData::Timestamp(v) => v[row].map(|x| x.to_string()),
        _ => label_number(data, row).map(number_text),
    }
}

/// Class labels sort as numbers when they all are, else as text.
pub(crate) fn sort_classes(classes: &mut [String]) {
    if classes.iter().all(|c| c.parse::<f64>().is_ok()) {
        classes.sort_by(|a, b| a.parse::<f64>().unwrap().total_cmp(&b.parse::<f64>().unwrap()));
    } else {
        classes.sort();
    }
}

/// Reads the source twice and bins it.
pub fn build(source: &mut dyn Source, cols: &Columns, params: &Params) -> Result<Dataset, String> {
    let nf = cols.features.len();
    if nf == 0 {
        return Err("features: at least one feature is needed".into());
    }
    if cols.features.contains(&cols.label) {
        return Err(format!("features: the label '{}' cannot also be a feature", cols.label));
    }
    for c in &params.categorical_feature {
        if !cols.features.contains(c) {
            return Err(format!("categorical_feature: '{c}' is not one of the features"));
        }
    }
    let cap = params.bin_construct_sample_cnt;
    let mut p1 = Pass1 {
        kinds: vec![None; nf],
        sample: vec![Vec::new(); nf],
        seen_train: 0,
        train_rows: 0,
        valid_rows: 0,
        strings: vec![HashMap::new(); nf],
        label_strings: HashMap::new(),
        label_numbers: std::collections::HashSet::new(),
        has_nan: vec![false; nf],
    };
    let mut rng = Rng::new(params.data_random_seed);
    let mut row_no: u64 = 0;
    source.scan(&mut |t: &Table| {
        let positions = positions(t, cols)?;
        let label = &t.columns[positions.1].data;
        for (f, &p) in positions.0.iter().enumerate() {
            let kind = match &t.columns[p].data {
                ColumnData::Str { .. } => Kind::Strings,
                ColumnData::Timestamp(_) => {
                    return Err(format!(
                        "features.{}: a timestamp is not a feature a model can take; derive a \
                         number from it first",
                        cols.features[f]
                    ));
                }
                _ if params.categorical_feature.contains(&cols.features[f]) => Kind::Categorical,
                _ => Kind::Numeric,
            };
            match p1.kinds[f] {
                None => p1.kinds[f] = Some(kind),
                Some(k) if k != kind => {
                    return Err(format!(
                        "features.{}: the column changes type within the data",
                        cols.features[f]
                    ));
                }
                _ => {}
            }
        }
        // Per batch: string codes → global first-seen codes.
        let mut remap: Vec<Vec<u32>> = vec![Vec::new(); nf];
        for (f, &p) in positions.0.iter().enumerate() {
            if let ColumnData::Str { dict, .. } = &t.columns[p].data {
                let seen = &mut p1.strings[f];
                remap[f] = dict
                    .iter()
                    .map(|s| {
                        let n = seen.len() as u32;
                        *seen.entry(s.clone()).or_insert(n)
                    })
                    .collect();
            }
        }
        for r in 0..t.rows {
            let row = row_no;
            row_no += 1;
            // Numbers are read as numbers (no text per row); other labels as text.
            if let Some(v) = label_number(label, r) {
                if cols.classify {
                    if p1.label_numbers.insert(v.to_bits()) && p1.label_numbers.len() > 1000 {
                        return Err(format!(
                            "{}: more than 1000 distinct classes; is this a regression label?",
                            cols.label
                        ));
                    }
                } else if !v.is_finite() {
                    return Err(format!(
                        "{}: row {} has label {v}, not a finite number (regression)",
                        cols.label,
                        row + 1
                    ));
                }
            } else if let Some(l) = label_text(label, r)
                && cols.classify
            {
                if !p1.label_strings.contains_key(&l) {
                    if p1.label_strings.len() >= 1000 {
                        return Err(format!(
                            "{}: more than 1000 distinct classes; is this a regression label?",
                            cols.label
                        ));
                    }
                    p1.label_strings.insert(l, ());
                }
            } else if let Some(l) = label_text(label, r) {
                return Err(format!(
                    "{}: row {} has label '{l}', not a number (regression)",
                    cols.label,
                    row + 1
                ));
            } else {
                return Err(format!("{}: row {} has no label", cols.label, row + 1));
            }
            if cols.valid_fraction > 0.0
                && row_uniform(params.data_random_seed, row) < cols.valid_fraction
            {
                p1.valid_rows += 1;
                continue;
            }
            p1.train_rows += 1;
            let slot = if (p1.seen_train as usize) < cap {
                Some(p1.seen_train as usize)
            } else {
                let j = rng.below(p1.seen_train + 1) as usize;
                (j < cap).then_some(j)
            };
            p1.seen_train += 1;
            for (f, &p) in positions.0.iter().enumerate() {
                let data = &t.columns[p].data;
                let mut v = column_values(data, r);
                if let (ColumnData::Str { .. }, Some(c)) = (data, v) {
                    v = Some(remap[f][c as usize] as f64);
                }
                if v.is_none_or(f64::is_nan) {
                    p1.has_nan[f] = true;
                }
                if let Some(slot) = slot {
                    if slot == p1.sample[f].len() {
                        p1.sample[f].push(v);
                    } else {
                        p1.sample[f][slot] = v;
                    }
                }
            }
        }
        Ok(())
    })?;
    if p1.train_rows == 0 {
        return Err("data: no training rows".into());
    }
    // Strings: codes become the sorted strings' ranks.
    let mut string_names: Vec<Option<Vec<String>>> = vec![None; nf];
    let mut string_codes: Vec<HashMap<String, u32>> = vec![HashMap::new(); nf];
    for f in 0..nf {
        if p1.kinds[f] != Some(Kind::Strings) {
            continue;
        }
        let mut names: Vec<String> = p1.strings[f].keys().cloned().collect();
        names.sort();
        let rank: HashMap<String, u32> =
            names.iter().enumerate().map(|(i, s)| (s.clone(), i as u32)).collect();
        let first_to_rank: HashMap<u32, u32> =
            p1.strings[f].iter().map(|(s, &first)| (first, rank[s])).collect();
        for v in p1.sample[f].iter_mut().flatten() {
            *v = first_to_rank[&(*v as u32)] as f64;
        }
        string_codes[f] = rank;
        string_names[f] = Some(names);
    }
    let mut mappers = Vec::with_capacity(nf);
    for (f, names) in string_names.iter_mut().enumerate() {
        let m = match p1.kinds[f].unwrap_or(Kind::Numeric) {
            Kind::Numeric => numeric_mapper(&p1.sample[f], p1.has_nan[f], params),
            Kind::Categorical | Kind::Strings => {
                categorical_mapper(&cols.features[f], &p1.sample[f], names.take(), params)?
            }
        };
        mappers.push(m);
    }
    let labels = if cols.classify {
        if !p1.label_numbers.is_empty() && !p1.label_strings.is_empty() {
            return Err(format!("{}: the label mixes numbers and text", cols.label));
        }
        let mut classes: Vec<String> = p1.label_strings.into_keys().collect();
        classes.extend(p1.label_numbers.iter().map(|&b| number_text(f64::from_bits(b))));
        sort_classes(&mut classes);
        if classes.len() < 2 {
            return Err(format!(
                "{}: only one class ({}) in the data; a classifier needs at least two",
                cols.label,
                classes.first().map(String::as_str).unwrap_or("none")
            ));
        }
        Labels::Classes(classes)
    } else {
        Labels::Values
    };
    let class_index: HashMap<String, f32> = match &labels {
        Labels::Classes(c) => c.iter().enumerate().map(|(i, s)| (s.clone(), i as f32)).collect(),
        Labels::Values => HashMap::new(),
    };
    let number_index: HashMap<u64, f32> = p1
        .label_numbers
        .iter()
        .map(|&b| (b, class_index[&number_text(f64::from_bits(b))]))
        .collect();
    let alloc = |rows: usize| Binned {
        rows,
        features: nf,
        bins: vec![0; rows * nf],
        label: Vec::with_capacity(rows),
    };
    let mut train = alloc(p1.train_rows);
    let mut valid = alloc(p1.valid_rows);
    let mut row_no: u64 = 0;
    source.scan(&mut |t: &Table| {
        let positions = positions(t, cols)?;
        let label = &t.columns[positions.1].data;
        // Each row's place: (is validation, row within its matrix).
        let (mut nt, mut nv) = (train.label.len(), valid.label.len());
        let dest: Vec<(bool, usize)> = (0..t.rows as u64)
            .map(|r| {
                let v = cols.valid_fraction > 0.0
                    && row_uniform(params.data_random_seed, row_no + r) < cols.valid_fraction;
                let at = if v { &mut nv } else { &mut nt };
                *at += 1;
                (v, *at - 1)
            })
            .collect();
        if nt > train.rows || nv > valid.rows {
            return Err("data: the source changed between its two reads".into());
        }
        row_no += t.rows as u64;
        // Features are binned in parallel, each into its own column.
        let train_cols: Vec<&mut [u8]> = columns_of(&mut train.bins, train.rows, nf);
        let valid_cols: Vec<&mut [u8]> = columns_of(&mut valid.bins, valid.rows, nf);
        train_cols.into_par_iter().zip(valid_cols).enumerate().for_each(|(f, (tc, vc))| {
            let data = &t.columns[positions.0[f]].data;
            let m = &mappers[f];
            let rank: Option<Vec<u32>> = match data {
                ColumnData::Str { dict, .. } => Some(
                    dict.iter()
                        .map(|s| string_codes[f].get(s).copied().unwrap_or(u32::MAX))
                        .collect(),
                ),
                _ => None,
            };
            for (r, &(is_valid, at)) in dest.iter().enumerate() {
                let v = match (data, &rank) {
                    (ColumnData::Float64(v), _) => v[r],
                    (ColumnData::Str { codes, .. }, Some(rank)) => {
                        codes[r].map(|c| rank[c as usize] as f64)
                    }
                    _ => column_values(data, r),
                };
                let b = m.bin(v);
                if is_valid { vc[at] = b } else { tc[at] = b }
            }
        });
        for (r, &(is_valid, _)) in dest.iter().enumerate() {
            let changed = || format!("{}: the data changed between its two reads", cols.label);
            let y = match (label_number(label, r), cols.classify) {
                (Some(v), false) => v as f32,
                (Some(v), true) => *number_index.get(&v.to_bits()).ok_or_else(changed)?,
                (None, _) => {
                    let text = label_text(label, r).unwrap_or_default();
                    *class_index.get(&text).ok_or_else(changed)?
                }
            };
            if is_valid { valid.label.push(y) } else { train.label.push(y) }
        }
        Ok(())
    })?;
    if train.label.len() != p1.train_rows || valid.label.len() != p1.valid_rows {
        return Err("data: the source changed between its two reads".into());
    }
    Ok(Dataset { feature_names: cols.features.clone(), mappers, train, valid, labels })
}

/// A column-major matrix's columns, each `rows` long (empty ones when there are no rows).
fn columns_of(bins: &mut [u8], rows: usize, features: usize) -> Vec<&mut [u8]> {
    if rows == 0 {
        return (0..features).map(|_| <&mut [u8]>::default()).collect();
    }
    bins.chunks_mut(rows).collect()
}

fn positions(t: &Table, cols: &Columns) -> Result<(Vec<usize>, usize), String> {
    let find = |name: &str, what: &str| {
        t.columns
            .iter()
            .position(|c| c.name == name)
            .ok_or_else(|| format!("{what}: the data has no column '{name}'"))
    };
    let features = cols.features.iter().map(|f| find(f, "features")).collect::<Result<_, _>>()?;
    Ok((features, find(&cols.label, "label")?))
}

fn numeric_mapper(sample: &[Option<f64>], has_nan: bool, params: &Params) -> Mapper {
    let mut values: Vec<f64> = sample.iter().flatten().copied().filter(|v| !v.is_nan()).collect();
    values.sort_by(f64::total_cmp);
    let mut distinct: Vec<(f64, usize)> = Vec::new();
    for v in values {
        match distinct.last_mut() {
            Some((d, n)) if *d == v => *n += 1,
            _ => distinct.push((v, 1)),
        }
    }
    let (min, max) = match (distinct.first(), distinct.last()) {
        (Some(a), Some(b)) => (a.0, b.0),
        _ => (f64::INFINITY, f64::NEG_INFINITY),
    };
    let max_bins = params.max_bin - has_nan as usize;
    let mut upper = Vec::new();
    if distinct.len() <= max_bins {
        for w in distinct.windows(2) {
            upper.push(midpoint(w[0].0, w[1].0));
        }
    } else {
        // Greedy: cut once a bin holds its share of the remaining rows; a value as frequent as
        // a share gets a bin of its own.
        let total: usize = distinct.iter().map(|d| d.1).sum();
        let mut rest_rows = total;
        let mut rest_bins = max_bins;
        let mut mean = rest_rows as f64 / rest_bins as f64;
        let mut current = 0usize;
        for i in 0..distinct.len() - 1 {
            current += distinct[i].1;
            let next_big = distinct[i + 1].1 as f64 >= mean;
            if current >= params.min_data_in_bin && (current as f64 >= mean || next_big) {
                upper.push(midpoint(distinct[i].0, distinct[i + 1].0));
                rest_rows -= current;
                rest_bins -= 1;
                current = 0;
                if rest_bins <= 1 {
                    break;
                }
                mean = rest_rows as f64 / rest_bins as f64;
            }
        }
    }
    upper.push(f64::INFINITY);
    let nan_bin = has_nan.then_some(upper.len() as u8);
    Mapper::Numeric { upper, nan_bin, min, max }
}

/// Halfway between two values, never equal to the upper one (so that `x <= t` splits them).
fn midpoint(a: f64, b: f64) -> f64 {
    let m = a + (b - a) / 2.0;
    if m >= b { a } else { m }
}

fn categorical_mapper(
    name: &str,
    sample: &[Option<f64>],
    names: Option<Vec<String>>,
    params: &Params,
) -> Result<Mapper, String> {
    let mut counts: HashMap<i64, usize> = HashMap::new();
    for v in sample.iter().flatten() {
        if v.is_nan() || *v < 0.0 {
            continue;
        }
        if v.fract() != 0.0 {
            return Err(format!(
                "categorical_feature: '{name}' has the value {v}; categories are whole numbers \
                 or strings"
            ));
        }
        *counts.entry(*v as i64).or_default() += 1;
    }
    let mut cats: Vec<(i64, usize)> = counts.into_iter().collect();
    cats.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    cats.truncate(params.max_bin - 1);
    // Categories rarer than `min_data_in_bin` in the sample join "other" (the two most frequent
    // always stay), as in LightGBM.
    let keep = cats
        .iter()
        .enumerate()
        .position(|(i, c)| i > 1 && c.1 < params.min_data_in_bin)
        .unwrap_or(cats.len());
    cats.truncate(keep);
    let cats: Vec<i64> = cats.into_iter().map(|c| c.0).collect();
    let lookup = cats.iter().enumerate().map(|(i, &c)| (c, (i + 1) as u8)).collect();
    Ok(Mapper::Categorical { cats, lookup, names })
}
