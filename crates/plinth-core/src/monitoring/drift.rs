//! Data drift between a reference sample and a current one, column by column, as Evidently
//! computes it, so that the figures equal Evidently's on the same data:
//!
//! - **Cleaning**: NaN and ±inf are dropped from each column of each sample on its own.
//! - **The default test** ([`default_method`]), from the reference's cleaned size `n` and the
//!   number of distinct values `u` over both samples: with `n ≤ 1000`, numerical columns with
//!   `u > 5` get Kolmogorov–Smirnov, the rest chi-square (`u > 2`) or a Z-test on proportions;
//!   with `n > 1000`, numerical columns with `u > 5` get the Wasserstein distance normed by the
//!   reference's standard deviation, the rest Jensen–Shannon.
//! - **Scores and thresholds**: p-value tests (KS, chi-square, Z) report the p-value and drift
//!   below 0.05 (KS at or below); distances (Jensen–Shannon, Wasserstein, PSI) drift at or above
//!   0.1. Every column's method and threshold can be overridden.
//! - **Bins** (Jensen–Shannon, PSI): numerical columns with more than 20 distinct reference
//!   values are cut into Sturges bins over both samples' range; others are counted by value over
//!   the union of both samples' values. PSI fills empty bins with 0.0001 (or a millionth of the
//!   smallest share when that is smaller); Jensen–Shannon leaves them empty.
//! - **Dataset drift**: the share of drifted columns, drifted at or above `drift_share` (0.5).

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use super::{ks, special};

/// A drift test.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Method {
    /// Two-sample Kolmogorov–Smirnov; the score is the p-value.
    Ks,
    /// Pearson's chi-square of the current counts against the reference's shares; p-value.
    #[serde(rename = "chisquare")]
    ChiSquare,
    /// Z-test of two proportions (binary columns); p-value.
    #[serde(rename = "z")]
    ZTest,
    /// Jensen–Shannon distance (natural log) of the binned shares.
    #[serde(rename = "jensenshannon")]
    JensenShannon,
    /// Wasserstein distance divided by the reference's standard deviation (at least 0.001).
    Wasserstein,
    /// Population stability index of the binned shares.
    Psi,
}

impl Method {
    pub const ALL: [Method; 6] = [
        Method::Ks,
        Method::ChiSquare,
        Method::ZTest,
        Method::JensenShannon,
        Method::Wasserstein,
        Method::Psi,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Method::Ks => "ks",
            Method::ChiSquare => "chisquare",
            Method::ZTest => "z",
            Method::JensenShannon => "jensenshannon",
            Method::Wasserstein => "wasserstein",
            Method::Psi => "psi",
        }
    }

    pub fn parse(s: &str) -> Option<Method> {
        Method::ALL.into_iter().find(|m| m.as_str() == s)
    }

    /// How Evidently names the test in its reports.
    pub fn label(self) -> &'static str {
        match self {
            Method::Ks => "K-S p_value",
            Method::ChiSquare => "chi-square p_value",
            Method::ZTest => "Z-test p_value",
            Method::JensenShannon => "Jensen-Shannon distance",
            Method::Wasserstein => "Wasserstein distance (normed)",
            Method::Psi => "PSI",
        }
    }

    pub fn default_threshold(self) -> f64 {
        match self {
            Method::Ks | Method::ChiSquare | Method::ZTest => 0.05,
            Method::JensenShannon | Method::Wasserstein | Method::Psi => 0.1,
        }
    }

    /// Whether a score means drift at this threshold (p-values below it, distances above).
    pub fn drifted(self, score: f64, threshold: f64) -> bool {
        match self {
            Method::Ks => score <= threshold,
            Method::ChiSquare | Method::ZTest => score < threshold,
            Method::JensenShannon | Method::Wasserstein | Method::Psi => score >= threshold,
        }
    }
}

/// What a column holds, which decides its default test.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Numerical,
    Categorical,
}

/// One column of one sample.
#[derive(Debug, Clone)]
pub enum Values {
    /// Numbers; `integer` when they came from an integer column (their histogram bins are at
    /// least 1 wide, as numpy makes them).
    Numbers { values: Vec<f64>, integer: bool },
    /// Text values (nulls already left out).
    Texts(Vec<String>),
}

/// A column of one sample, cleaned: numbers sorted ascending, without NaN or ±inf.
#[derive(Debug, Clone)]
pub struct Sample {
    values: Values,
}

impl Sample {
    /// Drops NaN and ±inf, as Evidently does before every test, and sorts numbers.
    pub fn new(values: Values) -> Sample {
        let values = match values {
            Values::Numbers { mut values, integer } => {
                values.retain(|v| v.is_finite());
                values.sort_unstable_by(f64::total_cmp);
                Values::Numbers { values, integer }
            }
            texts => texts,
        };
        Sample { values }
    }

    pub fn len(&self) -> usize {
        match &self.values {
            Values::Numbers { values, .. } => values.len(),
            Values::Texts(t) => t.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn numbers(&self) -> Option<&[f64]> {
        match &self.values {
            Values::Numbers { values, .. } => Some(values),
            Values::Texts(_) => None,
        }
    }
}

/// Evidently's default test for a column.
pub fn default_method(kind: Kind, reference_rows: usize, distinct_in_both: usize) -> Method {
    match (reference_rows <= 1000, kind) {
        (true, Kind::Numerical) if distinct_in_both > 5 => Method::Ks,
        (true, _) if distinct_in_both > 2 => Method::ChiSquare,
        (true, _) => Method::ZTest,
        (false, Kind::Numerical) if distinct_in_both > 5 => Method::Wasserstein,
        (false, _) => Method::JensenShannon,
    }
}

/// A column's drift.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ColumnDrift {
    pub method: Method,
    pub threshold: f64,
    pub score: f64,
    pub drifted: bool,
}

/// Why a column's drift cannot be computed.
#[derive(Debug, Clone, PartialEq)]
pub enum DriftError {
    /// A sample has no value left after cleaning.
    Empty { reference: bool },
    /// The test needs numbers and the column holds text.
    NotNumerical(Method),
    /// One sample holds numbers and the other text.
    MixedTypes,
}

impl std::fmt::Display for DriftError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DriftError::Empty { reference: true } => {
                f.write_str("the reference has no value (after dropping NaN and infinities)")
            }
            DriftError::Empty { reference: false } => {
                f.write_str("the current sample has no value (after dropping NaN and infinities)")
            }
            DriftError::NotNumerical(m) => {
                write!(f, "{} needs numbers; the column holds text", m.as_str())
            }
            DriftError::MixedTypes => f.write_str("one sample holds numbers and the other text"),
        }
    }
}

/// The drift of one column: `method` and `threshold` default to Evidently's choice. (The
/// method names are Evidently's stattest names: `ks`, `chisquare`, `z`, `jensenshannon`,
/// `wasserstein`, `psi`.)
pub fn column_drift(
    kind: Kind,
    reference: &Sample,
    current: &Sample,
    method: Option<Method>,
    threshold: Option<f64>,
) -> Result<ColumnDrift, DriftError> {
    if reference.is_empty() {
        return Err(DriftError::Empty { reference: true });
    }
    if current.is_empty() {
        return Err(DriftError::Empty { reference: false });
    }
    let keys = Counts::of(reference, current)?;
    let method =
        method.unwrap_or_else(|| default_method(kind, reference.len(), keys.reference.len()));
    let threshold = threshold.unwrap_or(method.default_threshold());
    let score = match method {
        Method::Ks | Method::Wasserstein => {
            let (Some(r), Some(c)) = (reference.numbers(), current.numbers()) else {
                return Err(DriftError::NotNumerical(method));
            };
            if method == Method::Ks { ks::p_value(r, c) } else { wasserstein_normed(r, c) }
        }
        Method::ChiSquare => chi_square(&keys, reference.len(), current.len()),
        Method::ZTest => z_test(&keys, reference.len(), current.len()),
        Method::JensenShannon => {
            let (r, c) = shares(reference, current, &keys);
            jensen_shannon(&r, &c)
        }
        Method::Psi => {
            let (mut r, mut c) = shares(reference, current, &keys);
            fill_empty(&mut r);
            fill_empty(&mut c);
            r.iter().zip(&c).map(|(r, c)| (r - c) * (r / c).ln()).sum()
        }
    };
    Ok(ColumnDrift { method, threshold, score, drifted: method.drifted(score, threshold) })
}

/// The dataset's drift: how many columns drifted, their share, and whether the share reaches
/// `drift_share`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DatasetDrift {
    pub count: usize,
    pub share: f64,
    pub drift_share: f64,
    pub dataset_drift: bool,
}

pub const DEFAULT_DRIFT_SHARE: f64 = 0.5;

pub fn dataset_drift<'a>(
    columns: impl IntoIterator<Item = &'a ColumnDrift>,
    drift_share: f64,
) -> DatasetDrift {
    let (mut count, mut total) = (0, 0);
    for c in columns {
        total += 1;
        count += usize::from(c.drifted);
    }
    let share = if total == 0 { 0.0 } else { count as f64 / total as f64 };
    DatasetDrift { count, share, drift_share, dataset_drift: total > 0 && share >= drift_share }
}

/// Runs of equal values in sorted numbers: (value, count).
fn runs(sorted: &[f64]) -> impl Iterator<Item = (f64, usize)> + '_ {
    let mut i = 0;
    std::iter::from_fn(move || {
        let v = *sorted.get(i)?;
        let start = i;
        while i < sorted.len() && sorted[i] == v {
            i += 1;
        }
        Some((v, i - start))
    })
}

/// Both samples counted by value over the union of their values (in ascending order).
pub(crate) struct Counts {
    /// Distinct values of the reference alone (what decides the histogram branch) and of both.
    pub(crate) reference: Vec<usize>,
    pub(crate) current: Vec<usize>,
    pub(crate) distinct_reference: usize,
}

impl Counts {
    fn of(reference: &Sample, current: &Sample) -> Result<Counts, DriftError> {
        match (&reference.values, &current.values) {
            (Values::Numbers { values: r, .. }, Values::Numbers { values: c, .. }) => {
                let (mut rr, mut cr) = (runs(r).peekable(), runs(c).peekable());
                let (mut out_r, mut out_c) = (Vec::new(), Vec::new());
                loop {
                    match (rr.peek().copied(), cr.peek().copied()) {
                        (Some((a, na)), Some((b, nb))) if a == b => {
                            out_r.push(na);
                            out_c.push(nb);
                            rr.next();
                            cr.next();
                        }
                        (Some((a, na)), Some((b, _))) if a < b => {
                            out_r.push(na);
                            out_c.push(0);
                            rr.next();
                        }
                        (Some(_), Some((_, nb))) => {
                            out_r.push(0);
                            out_c.push(nb);
                            cr.next();
                        }
                        (Some((_, na)), None) => {
                            out_r.push(na);
                            out_c.push(0);
                            rr.next();
                        }
                        (None, Some((_, nb))) => {
                            out_r.push(0);
                            out_c.push(nb);
                            cr.next();
                        }
                        (None, None) => break,
                    }
                }
                let distinct_reference = out_r.iter().filter(|n| **n > 0).count();
                Ok(Counts { reference: out_r, current: out_c, distinct_reference })
            }
            (Values::Texts(r), Values::Texts(c)) => {
                let mut keys: HashMap<&str, (usize, usize)> = HashMap::new();
                for v in r {
                    keys.entry(v).or_default().0 += 1;
                }
                for v in c {
                    keys.entry(v).or_default().1 += 1;
                }
                let mut keys: Vec<(&str, (usize, usize))> = keys.into_iter().collect();
                keys.sort_unstable_by_key(|k| k.0);
                let distinct_reference = keys.iter().filter(|k| k.1.0 > 0).count();
                Ok(Counts {
                    reference: keys.iter().map(|k| k.1.0).collect(),
                    current: keys.iter().map(|k| k.1.1).collect(),
                    distinct_reference,
                })
            }
            _ => Err(DriftError::MixedTypes),
        }
    }
}

/// Chi-square of the current counts against the reference's shares scaled to the current size;
/// a value the reference never had makes the statistic infinite (p = 0).
pub(crate) fn chi_square(k: &Counts, n_ref: usize, n_cur: usize) -> f64 {
    let ratio = n_cur as f64 / n_ref as f64;
    let stat: f64 = k
        .reference
        .iter()
        .zip(&k.current)
        .map(|(&r, &c)| {
            let expected = r as f64 * ratio;
            let d = c as f64 - expected;
            d * d / expected
        })
        .sum();
    let df = k.reference.len() as f64 - 1.0;
    if df <= 0.0 {
        // One value in both samples: no degrees of freedom, no p-value (scipy answers NaN,
        // which never drifts).
        return f64::NAN;
    }
    special::chi2_sf(df, stat)
}

/// The Z-test of the share of values other than the smallest, in each sample.
pub(crate) fn z_test(k: &Counts, n_ref: usize, n_cur: usize) -> f64 {
    let distinct = |counts: &[usize]| counts.iter().filter(|n| **n > 0).count();
    if distinct(&k.reference) == 1
        && distinct(&k.current) == 1
        && k.reference.iter().position(|n| *n > 0) == k.current.iter().position(|n| *n > 0)
    {
        return 1.0;
    }
    let (n1, n2) = (n_ref as f64, n_cur as f64);
    let p1 = (n_ref - k.reference[0]) as f64 / n1;
    let p2 = (n_cur - k.current[0]) as f64 / n2;
    let p = (p1 * n1 + p2 * n2) / (n1 + n2);
    let z = (p1 - p2) / (p * (1.0 - p) * (1.0 / n1 + 1.0 / n2)).sqrt();
    2.0 * (1.0 - special::normal_cdf(z.abs()))
}

/// Each sample's shares of the bins: Sturges bins for numbers with more than 20 distinct
/// reference values, else one bin per value of either sample.
fn shares(reference: &Sample, current: &Sample, k: &Counts) -> (Vec<f64>, Vec<f64>) {
    let share = |counts: &[usize], n: usize| -> Vec<f64> {
        counts.iter().map(|c| *c as f64 / n as f64).collect()
    };
    if let (Values::Numbers { values: r, integer }, Values::Numbers { values: c, .. }) =
        (&reference.values, &current.values)
        && k.distinct_reference > 20
    {
        let edges = sturges_edges(r, c, *integer);
        return (share(&histogram(r, &edges), r.len()), share(&histogram(c, &edges), c.len()));
    }
    (share(&k.reference, reference.len()), share(&k.current, current.len()))
}

/// numpy's `histogram_bin_edges(..., bins="sturges")` over both (sorted) samples.
fn sturges_edges(r: &[f64], c: &[f64], integer: bool) -> Vec<f64> {
    sturges_edges_of(r[0].min(c[0]), r[r.len() - 1].max(c[c.len() - 1]), r.len() + c.len(), integer)
}

/// numpy's Sturges edges for `n` values from `min` to `max`.
pub(crate) fn sturges_edges_of(min: f64, max: f64, n: usize, integer: bool) -> Vec<f64> {
    let (mut lo, mut hi) = (min, max);
    if lo == hi {
        lo -= 0.5;
        hi += 0.5;
    }
    let n = n as f64;
    let ptp = max - min;
    let mut width = ptp / (n.log2() + 1.0);
    if integer && width < 1.0 {
        width = 1.0;
    }
    let bins = if width > 0.0 { ((hi - lo) / width).ceil() as usize } else { 1 }.max(1);
    let step = (hi - lo) / bins as f64;
    let mut edges: Vec<f64> = (0..bins).map(|i| i as f64 * step + lo).collect();
    edges.push(hi);
    edges
}

/// Counts of sorted values per bin: `[e_i, e_i+1)`, the last bin closed.
fn histogram(sorted: &[f64], edges: &[f64]) -> Vec<usize> {
    let at = |e: f64, right: bool| {
        if right { sorted.partition_point(|v| *v <= e) } else { sorted.partition_point(|v| *v < e) }
    };
    let last = edges.len() - 1;
    let cum: Vec<usize> = edges.iter().enumerate().map(|(i, e)| at(*e, i == last)).collect();
    cum.windows(2).map(|w| w[1] - w[0]).collect()
}

/// PSI's fill of empty bins.
pub(crate) fn fill_empty(shares: &mut [f64]) {
    let smallest = shares.iter().copied().filter(|s| *s > 0.0).fold(f64::INFINITY, f64::min);
    let fill = if smallest <= 0.0001 { smallest / 1e6 } else { 0.0001 };
    shares.iter_mut().filter(|s| **s == 0.0).for_each(|s| *s = fill);
}

/// The Jensen–Shannon distance (square root of the divergence, natural log).
pub(crate) fn jensen_shannon(p: &[f64], q: &[f64]) -> f64 {
    let (sp, sq) = (p.iter().sum::<f64>(), q.iter().sum::<f64>());
    let mut total = 0.0;
    for (p, q) in p.iter().zip(q) {
        let (p, q) = (p / sp, q / sq);
        let m = (p + q) / 2.0;
        total += rel_entr(p, m) + rel_entr(q, m);
    }
    (total / 2.0).sqrt()
}

/// `x ln(x/y)`, as scipy computes it (with `log1p` where `x` and `y` are close).
fn rel_entr(x: f64, y: f64) -> f64 {
    if x == 0.0 && y >= 0.0 {
        return 0.0;
    }
    if x > 0.0 && y > 0.0 {
        let r = x / y;
        if r > 0.5 && r < 2.0 { x * ((x - y) / y).ln_1p() } else { x * r.ln() }
    } else {
        f64::INFINITY
    }
}

/// The Wasserstein distance between two sorted samples, over the reference's standard
/// deviation (population, at least 0.001).
fn wasserstein_normed(r: &[f64], c: &[f64]) -> f64 {
    let (nr, nc) = (r.len() as f64, c.len() as f64);
    let (mut i, mut j) = (0usize, 0usize);
    let mut sum = Neumaier::default();
    let mut prev: Option<f64> = None;
    // Walk the merged values; between consecutive ones the CDFs are constant.
    while i < r.len() || j < c.len() {
        let v = match (r.get(i), c.get(j)) {
            (Some(&a), Some(&b)) => a.min(b),
            (Some(&a), None) => a,
            (None, Some(&b)) => b,
            (None, None) => unreachable!(),
        };
        if let Some(p) = prev {
            let gap = (i as f64 / nr - j as f64 / nc).abs();
            sum.add(gap * (v - p));
        }
        while i < r.len() && r[i] <= v {
            i += 1;
        }
        while j < c.len() && c[j] <= v {
            j += 1;
        }
        prev = Some(v);
    }
    let mut mean = Neumaier::default();
    r.iter().for_each(|v| mean.add(*v));
    let mean = mean.total() / nr;
    let mut var = Neumaier::default();
    r.iter().for_each(|v| var.add((mean - v) * (mean - v)));
    let std = (var.total() / nr).sqrt();
    sum.total() / std.max(0.001)
}

/// Compensated summation (Neumaier): sums of millions of terms stay exact to a few ulps.
#[derive(Default)]
pub(crate) struct Neumaier {
    sum: f64,
    c: f64,
}

impl Neumaier {
    pub(crate) fn add(&mut self, x: f64) {
        let t = self.sum + x;
        if self.sum.abs() >= x.abs() {
            self.c += (self.sum - t) + x;
        } else {
            self.c += (x - t) + self.sum;
        }
        self.sum = t;
    }

    pub(crate) fn total(&self) -> f64 {
        self.sum + self.c
    }
}
