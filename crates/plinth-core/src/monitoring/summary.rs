//! Mergeable summaries of a column, for drift over served traffic: what a replica keeps of each
//! feature per minute, what it writes, and what any range of minutes adds up to, without the
//! log being read again.
//!
//! Numbers go into a logarithmic histogram read straight off the float's bits (as
//! HdrHistogram does): each power of two is cut into [`SUB_BUCKETS`] equal buckets, a value's
//! bucket is its exponent and the top bits of its mantissa, and the value a bucket stands for
//! (its middle) is within 0.8 % of any value in it: no logarithm on the request's path.
//! Negatives mirror it, and magnitudes below 1e-9 count as zero. A side keeps at most
//! [`MAX_BUCKETS`] consecutive buckets (values beyond fold into its edge bucket), so one
//! feature's summary is at most ~33 KB whatever the traffic, and a few hundred bytes for a
//! feature spanning two decades. Text goes into counts per value, the first
//! [`MAX_CATEGORIES`] distinct values by name and the rest as one `(other)`.
//!
//! Drift between two summaries runs Evidently's tests ([`super::drift`]) on the buckets' values
//! as if every value were its bucket's: the tests, the default choice and thresholds are the
//! same; KS and Wasserstein see values within 1 %.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::drift::{self, ColumnDrift, Counts, DriftError, Kind, Method};
use super::ks;

/// The relative accuracy of a number's bucket (its middle against any value in it).
pub const RELATIVE_ACCURACY: f64 = 0.008;
/// Buckets per power of two.
pub const SUB_BUCKETS: i32 = 64;
const SUB_BITS: u32 = 6;
/// Buckets kept per sign.
pub const MAX_BUCKETS: usize = 2048;
/// Distinct text values kept by name.
pub const MAX_CATEGORIES: usize = 256;
const SMALLEST: f64 = 1e-9;
const OTHER: &str = "(other)";

/// Consecutive buckets from `offset`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Buckets {
    pub offset: i32,
    pub counts: Vec<u64>,
}

impl Buckets {
    fn add(&mut self, key: i32, n: u64) {
        if self.counts.is_empty() {
            self.offset = key;
            self.counts.push(n);
            return;
        }
        let end = self.offset + self.counts.len() as i32;
        if key < self.offset {
            let grow = ((self.offset - key) as usize).min(MAX_BUCKETS - self.counts.len());
            if grow > 0 {
                self.counts.splice(0..0, std::iter::repeat_n(0, grow));
                self.offset -= grow as i32;
            }
            self.counts[(key.max(self.offset) - self.offset) as usize] += n;
        } else if key >= end {
            let grow = ((key - end + 1) as usize).min(MAX_BUCKETS - self.counts.len());
            self.counts.extend(std::iter::repeat_n(0, grow));
            let last = self.counts.len() - 1;
            self.counts[((key - self.offset) as usize).min(last)] += n;
        } else {
            self.counts[(key - self.offset) as usize] += n;
        }
    }

    fn merge(&mut self, other: &Buckets) {
        for (i, &n) in other.counts.iter().enumerate() {
            if n > 0 {
                self.add(other.offset + i as i32, n);
            }
        }
    }

    /// `(key, count)` of the non-empty buckets, ascending.
    fn iter(&self) -> impl DoubleEndedIterator<Item = (i32, u64)> + '_ {
        self.counts
            .iter()
            .enumerate()
            .filter(|(_, n)| **n > 0)
            .map(|(i, n)| (self.offset + i as i32, *n))
    }
}

/// The numbers of a column.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Sketch {
    /// Finite values.
    pub count: u64,
    /// NaN and infinities (left out of the tests, as Evidently drops them).
    pub missing: u64,
    pub zeros: u64,
    pub positive: Buckets,
    pub negative: Buckets,
    /// Every value so far was an integer (histogram bins are then at least 1 wide).
    pub integer: bool,
}

impl Sketch {
    pub fn new() -> Sketch {
        Sketch { integer: true, ..Sketch::default() }
    }

    pub fn add(&mut self, x: f64) {
        if !x.is_finite() {
            self.missing += 1;
            return;
        }
        self.count += 1;
        self.integer &= x.fract() == 0.0;
        let m = x.abs();
        if m < SMALLEST {
            self.zeros += 1;
            return;
        }
        let bits = m.to_bits();
        let exponent = ((bits >> 52) & 0x7ff) as i32 - 1023;
        let sub = ((bits >> (52 - SUB_BITS)) & (SUB_BUCKETS as u64 - 1)) as i32;
        let key = exponent * SUB_BUCKETS + sub;
        if x > 0.0 { self.positive.add(key, 1) } else { self.negative.add(key, 1) }
    }

    pub fn merge(&mut self, other: &Sketch) {
        self.count += other.count;
        self.missing += other.missing;
        self.zeros += other.zeros;
        self.integer &= other.integer;
        self.positive.merge(&other.positive);
        self.negative.merge(&other.negative);
    }

    /// The value a bucket stands for (within [`RELATIVE_ACCURACY`] of any value in it).
    fn value(key: i32) -> f64 {
        let (exponent, sub) = (key.div_euclid(SUB_BUCKETS), key.rem_euclid(SUB_BUCKETS));
        2f64.powi(exponent) * (1.0 + (f64::from(sub) + 0.5) / f64::from(SUB_BUCKETS))
    }

    /// `(value, count)` of every non-empty bucket, values ascending.
    pub fn values(&self) -> Vec<(f64, u64)> {
        let mut out: Vec<(f64, u64)> =
            self.negative.iter().rev().map(|(k, n)| (-Sketch::value(k), n)).collect();
        if self.zeros > 0 {
            out.push((0.0, self.zeros));
        }
        out.extend(self.positive.iter().map(|(k, n)| (Sketch::value(k), n)));
        out
    }
}

/// One column of served traffic (or of a baseline), summarized.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Summary {
    Numbers(Sketch),
    Texts { counts: BTreeMap<String, u64>, other: u64 },
}

impl Summary {
    pub fn texts() -> Summary {
        Summary::Texts { counts: BTreeMap::new(), other: 0 }
    }

    pub fn add_text(&mut self, v: &str) {
        if let Summary::Texts { counts, other } = self {
            if let Some(n) = counts.get_mut(v) {
                *n += 1;
            } else if counts.len() < MAX_CATEGORIES {
                counts.insert(v.to_string(), 1);
            } else {
                *other += 1;
            }
        }
    }

    pub fn add_number(&mut self, x: f64) {
        if let Summary::Numbers(s) = self {
            s.add(x);
        }
    }

    /// Adds `other` in (of the same kind; a summary of the other kind is left out).
    pub fn merge(&mut self, other: &Summary) {
        match (self, other) {
            (Summary::Numbers(a), Summary::Numbers(b)) => a.merge(b),
            (Summary::Texts { counts, other: rest }, Summary::Texts { counts: c, other: o }) => {
                for (k, n) in c {
                    if let Some(m) = counts.get_mut(k) {
                        *m += n;
                    } else if counts.len() < MAX_CATEGORIES {
                        counts.insert(k.clone(), *n);
                    } else {
                        *rest += n;
                    }
                }
                *rest += o;
            }
            _ => {}
        }
    }

    /// Values the tests see.
    pub fn rows(&self) -> u64 {
        match self {
            Summary::Numbers(s) => s.count,
            Summary::Texts { counts, other } => counts.values().sum::<u64>() + other,
        }
    }
}

/// A drift test's result on two summaries, with both distributions on common bins to show.
#[derive(Debug, Clone, PartialEq)]
pub struct SummaryDrift {
    pub drift: ColumnDrift,
    pub bins: Vec<String>,
    pub reference: Vec<f64>,
    pub current: Vec<f64>,
}

/// Both summaries' counts over the union of their values (ascending) or categories.
fn union_counts(
    reference: &Summary,
    current: &Summary,
) -> Result<(Vec<String>, Vec<f64>, Counts), DriftError> {
    match (reference, current) {
        (Summary::Numbers(r), Summary::Numbers(c)) => {
            let (r, c) = (r.values(), c.values());
            let (mut i, mut j) = (0, 0);
            let (mut values, mut cr, mut cc) = (Vec::new(), Vec::new(), Vec::new());
            while i < r.len() || j < c.len() {
                let take_r = j >= c.len() || (i < r.len() && r[i].0 <= c[j].0);
                let take_c = i >= r.len() || (j < c.len() && c[j].0 <= r[i].0);
                let v = if take_r { r[i].0 } else { c[j].0 };
                values.push(v);
                cr.push(if take_r { r[i].1 as usize } else { 0 });
                cc.push(if take_c { c[j].1 as usize } else { 0 });
                i += usize::from(take_r);
                j += usize::from(take_c);
            }
            let distinct_reference = cr.iter().filter(|n| **n > 0).count();
            let labels = values.iter().map(|v| format!("{v:.6}")).collect();
            Ok((labels, values, Counts { reference: cr, current: cc, distinct_reference }))
        }
        (Summary::Texts { counts: r, other: ro }, Summary::Texts { counts: c, other: co }) => {
            let mut keys: Vec<&String> = r.keys().chain(c.keys()).collect();
            keys.sort();
            keys.dedup();
            let mut labels: Vec<String> = keys.iter().map(|k| k.to_string()).collect();
            let mut cr: Vec<usize> =
                keys.iter().map(|k| r.get(*k).copied().unwrap_or(0) as usize).collect();
            let mut cc: Vec<usize> =
                keys.iter().map(|k| c.get(*k).copied().unwrap_or(0) as usize).collect();
            if ro + co > 0 {
                labels.push(OTHER.to_string());
                cr.push(*ro as usize);
                cc.push(*co as usize);
            }
            let distinct_reference = cr.iter().filter(|n| **n > 0).count();
            Ok((labels, vec![], Counts { reference: cr, current: cc, distinct_reference }))
        }
        _ => Err(DriftError::MixedTypes),
    }
}

/// Evidently's test of a column, on two summaries: `method` and `threshold` default to its
/// choice for the column's kind and the reference's size.
pub fn summary_drift(
    reference: &Summary,
    current: &Summary,
    method: Option<Method>,
    threshold: Option<f64>,
) -> Result<SummaryDrift, DriftError> {
    let (n_ref, n_cur) = (reference.rows() as usize, current.rows() as usize);
    if n_ref == 0 {
        return Err(DriftError::Empty { reference: true });
    }
    if n_cur == 0 {
        return Err(DriftError::Empty { reference: false });
    }
    let (labels, values, counts) = union_counts(reference, current)?;
    let kind = if values.is_empty() { Kind::Categorical } else { Kind::Numerical };
    let method =
        method.unwrap_or_else(|| drift::default_method(kind, n_ref, counts.reference.len()));
    let threshold = threshold.unwrap_or(method.default_threshold());
    let as_u64 = |v: &[usize]| v.iter().map(|n| *n as u64).collect::<Vec<u64>>();
    // Shown: Sturges bins for numbers with more than 20 distinct values, else one per value.
    let (bins, r_shares, c_shares) = shares(reference, &labels, &values, &counts, n_ref, n_cur);
    let score = match method {
        Method::Ks | Method::Wasserstein if kind == Kind::Categorical => {
            return Err(DriftError::NotNumerical(method));
        }
        Method::Ks => ks::p_value_of_counts(&as_u64(&counts.reference), &as_u64(&counts.current)),
        Method::Wasserstein => wasserstein_normed(&values, &counts, n_ref, n_cur),
        Method::ChiSquare => drift::chi_square(&counts, n_ref, n_cur),
        Method::ZTest => drift::z_test(&counts, n_ref, n_cur),
        Method::JensenShannon => drift::jensen_shannon(&r_shares, &c_shares),
        Method::Psi => {
            let (mut r, mut c) = (r_shares.clone(), c_shares.clone());
            drift::fill_empty(&mut r);
            drift::fill_empty(&mut c);
            r.iter().zip(&c).map(|(r, c)| (r - c) * (r / c).ln()).sum()
        }
    };
    Ok(SummaryDrift {
        drift: ColumnDrift { method, threshold, score, drifted: method.drifted(score, threshold) },
        bins,
        reference: r_shares,
        current: c_shares,
    })
}

/// Each side's shares of the bins Evidently's histogram tests use: Sturges bins over both for
/// numbers with more than 20 distinct reference values, else one bin per value.
fn shares(
    reference: &Summary,
    labels: &[String],
    values: &[f64],
    counts: &Counts,
    n_ref: usize,
    n_cur: usize,
) -> (Vec<String>, Vec<f64>, Vec<f64>) {
    let share = |c: &[usize], n: usize| c.iter().map(|c| *c as f64 / n as f64).collect();
    if !values.is_empty() && counts.distinct_reference > 20 {
        let integer = matches!(reference, Summary::Numbers(s) if s.integer);
        let edges =
            drift::sturges_edges_of(values[0], values[values.len() - 1], n_ref + n_cur, integer);
        let bins = edges.len() - 1;
        let (mut r, mut c) = (vec![0usize; bins], vec![0usize; bins]);
        for (i, v) in values.iter().enumerate() {
            let b = edges.partition_point(|e| e <= v).saturating_sub(1).min(bins - 1);
            r[b] += counts.reference[i];
            c[b] += counts.current[i];
        }
        let labels = edges[..bins].iter().map(|e| format!("{e:.6}")).collect();
        return (labels, share(&r, n_ref), share(&c, n_cur));
    }
    (labels.to_vec(), share(&counts.reference, n_ref), share(&counts.current, n_cur))
}

/// The Wasserstein distance between the two sides' values over the reference's standard
/// deviation (population, at least 0.001), as [`super::drift`] computes it on raw values.
fn wasserstein_normed(values: &[f64], counts: &Counts, n_ref: usize, n_cur: usize) -> f64 {
    let (nr, nc) = (n_ref as f64, n_cur as f64);
    let (mut fr, mut fc) = (0usize, 0usize);
    let mut sum = drift::Neumaier::default();
    for i in 0..values.len() {
        fr += counts.reference[i];
        fc += counts.current[i];
        if let Some(next) = values.get(i + 1) {
            sum.add((fr as f64 / nr - fc as f64 / nc).abs() * (next - values[i]));
        }
    }
    let mut mean = drift::Neumaier::default();
    for (v, n) in values.iter().zip(&counts.reference) {
        mean.add(v * *n as f64);
    }
    let mean = mean.total() / nr;
    let mut var = drift::Neumaier::default();
    for (v, n) in values.iter().zip(&counts.reference) {
        var.add((v - mean) * (v - mean) * *n as f64);
    }
    sum.total() / (var.total() / nr).sqrt().max(0.001)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::monitoring::drift::{Sample, Values, column_drift};

    fn numbers(values: &[f64]) -> Summary {
        let mut s = Summary::Numbers(Sketch::new());
        values.iter().for_each(|v| s.add_number(*v));
        s
    }

    #[test]
    fn buckets_hold_values_within_one_percent() {
        let mut s = Sketch::new();
        for x in [0.003, 1.0, 17.0, 90.0, 12345.6, -4.2, 0.0] {
            s.add(x);
        }
        let values = s.values();
        assert_eq!(values.len(), 7);
        for (want, (got, n)) in [-4.2, 0.0, 0.003, 1.0, 17.0, 90.0, 12345.6].iter().zip(values) {
            assert_eq!(n, 1);
            assert!((got - want).abs() <= want.abs() * RELATIVE_ACCURACY, "{got} vs {want}");
        }
    }

    #[test]
    fn merged_summaries_equal_one_summary_of_everything() {
        let all: Vec<f64> = (0..5000).map(|i| ((i * 7919) % 1000) as f64 / 10.0 - 20.0).collect();
        let (a, b) = all.split_at(1234);
        let mut left = numbers(a);
        left.merge(&numbers(b));
        assert_eq!(left, numbers(&all));
    }

    #[test]
    fn a_side_keeps_its_bucket_bound() {
        let mut s = Sketch::new();
        for e in -300..300 {
            s.add(10f64.powi(e));
        }
        assert!(s.positive.counts.len() <= MAX_BUCKETS);
        assert_eq!(s.positive.counts.iter().sum::<u64>() + s.zeros, 600);
    }

    #[test]
    fn on_values_that_fall_in_their_own_buckets_the_tests_equal_the_raw_ones() {
        // Integers 0..40 each have a bucket of their own: the summaries lose nothing, and every
        // test gives what it gives on the raw values.
        let r: Vec<f64> = (0..3000).map(|i| (i % 40) as f64).collect();
        let c: Vec<f64> = (0..2000).map(|i| ((i * 3) % 41).min(39) as f64).collect();
        let sample = |v: &[f64]| {
            let mut v = v.to_vec();
            v.sort_by(f64::total_cmp);
            Sample::new(Values::Numbers { values: v, integer: true })
        };
        for method in [Method::Ks, Method::Psi, Method::JensenShannon, Method::ChiSquare] {
            let raw = column_drift(Kind::Numerical, &sample(&r), &sample(&c), Some(method), None)
                .expect("raw");
            let binned =
                summary_drift(&numbers(&r), &numbers(&c), Some(method), None).expect("binned");
            assert!(
                (raw.score - binned.drift.score).abs() < 1e-9,
                "{method:?}: {} vs {}",
                raw.score,
                binned.drift.score
            );
        }
        // Wasserstein sees each value within 1 %.
        let raw = column_drift(Kind::Numerical, &sample(&r), &sample(&c), None, None).unwrap();
        let binned = summary_drift(&numbers(&r), &numbers(&c), None, None).unwrap();
        assert_eq!(raw.method, Method::Wasserstein);
        assert_eq!(binned.drift.method, Method::Wasserstein);
        assert!((raw.score - binned.drift.score).abs() < 0.02 * raw.score, "{raw:?} {binned:?}");
    }

    #[test]
    fn a_shifted_column_drifts_and_the_same_one_does_not() {
        let r: Vec<f64> = (0..5000).map(|i| 20.0 + (i % 50) as f64).collect();
        let shifted: Vec<f64> = r.iter().map(|v| v + 15.0).collect();
        assert!(!summary_drift(&numbers(&r), &numbers(&r), None, None).unwrap().drift.drifted);
        assert!(summary_drift(&numbers(&r), &numbers(&shifted), None, None).unwrap().drift.drifted);
        let mut t = Summary::texts();
        let mut u = Summary::texts();
        for i in 0..3000 {
            t.add_text(["a", "b", "c"][i % 3]);
            u.add_text(["a", "a", "c"][i % 3]);
        }
        let d = summary_drift(&t, &u, None, None).unwrap();
        assert_eq!(d.drift.method, Method::JensenShannon);
        assert!(d.drift.drifted);
        assert_eq!(d.bins, ["a", "b", "c"]);
    }
}
