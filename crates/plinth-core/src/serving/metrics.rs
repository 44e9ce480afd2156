//! Serving figures: lock-free counters and fixed-bucket histograms, rendered as Prometheus text
//! and as per-deployment summaries for the API.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

/// A histogram with fixed upper bounds (Prometheus `le` buckets).
#[derive(Debug)]
pub struct Histogram {
    bounds: Vec<f64>,
    counts: Vec<AtomicU64>,
    count: AtomicU64,
    /// The sum, in millionths of the unit, to stay in integers.
    sum_micro: AtomicU64,
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram::latency_seconds()
    }
}

impl Histogram {
    pub fn new(bounds: Vec<f64>) -> Histogram {
        let counts = (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect();
        Histogram { bounds, counts, count: AtomicU64::new(0), sum_micro: AtomicU64::new(0) }
    }

    /// Request latency buckets, in seconds: 50 µs to 10 s.
    pub fn latency_seconds() -> Histogram {
        Histogram::new(vec![
            0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
            0.5, 1.0, 2.5, 5.0, 10.0,
        ])
    }

    /// Batch size buckets, in rows.
    pub fn batch_sizes() -> Histogram {
        Histogram::new(vec![1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0])
    }

    pub fn observe(&self, v: f64) {
        let i = self.bounds.iter().position(|&b| v <= b).unwrap_or(self.bounds.len());
        self.counts[i].fetch_add(1, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_micro.fetch_add((v * 1e6) as u64, Ordering::Relaxed);
    }

    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    pub fn mean(&self) -> f64 {
        let n = self.count();
        if n == 0 { 0.0 } else { self.sum_micro.load(Ordering::Relaxed) as f64 / 1e6 / n as f64 }
    }

    /// An estimate of quantile `q` by linear interpolation inside the bucket.
    pub fn quantile(&self, q: f64) -> f64 {
        quantile(&self.bounds, &self.counts(), q)
    }

    /// The count of each bucket (the last one past every bound).
    pub fn counts(&self) -> Vec<u64> {
        self.counts.iter().map(|c| c.load(Ordering::Relaxed)).collect()
    }

    /// The sum of the observed values, in millionths of the unit.
    pub fn sum_micro(&self) -> u64 {
        self.sum_micro.load(Ordering::Relaxed)
    }

    pub fn bounds(&self) -> &[f64] {
        &self.bounds
    }

    /// Appends this histogram in Prometheus text format.
    pub fn render(&self, out: &mut String, name: &str, labels: &str) {
        let mut cumulative = 0;
        for (i, c) in self.counts.iter().enumerate() {
            cumulative += c.load(Ordering::Relaxed);
            let le = self.bounds.get(i).map(|b| b.to_string()).unwrap_or_else(|| "+Inf".into());
            let _ = writeln!(out, "{name}_bucket{{{labels},le=\"{le}\"}} {cumulative}");
        }
        let _ = writeln!(
            out,
            "{name}_sum{{{labels}}} {}",
            self.sum_micro.load(Ordering::Relaxed) as f64 / 1e6
        );
        let _ = writeln!(out, "{name}_count{{{labels}}} {}", self.count());
    }
}

/// An estimate of quantile `q` of bucket counts over `bounds`, by linear interpolation inside
/// the bucket it falls in.
pub fn quantile(bounds: &[f64], counts: &[u64], q: f64) -> f64 {
    let n: u64 = counts.iter().sum();
    if n == 0 {
        return 0.0;
    }
    let target = q * n as f64;
    let mut seen = 0.0;
    for (i, &c) in counts.iter().enumerate() {
        let c = c as f64;
        if seen + c >= target && c > 0.0 {
            let lo = if i == 0 { 0.0 } else { bounds[i - 1] };
            let hi = bounds.get(i).copied().unwrap_or(lo * 2.0);
            return lo + (hi - lo) * ((target - seen) / c).clamp(0.0, 1.0);
        }
        seen += c;
    }
    *bounds.last().unwrap_or(&0.0)
}

/// The request-level figures of one deployment.
#[derive(Debug, Default)]
pub struct DeploymentStats {
    pub requests: AtomicU64,
    pub rows: AtomicU64,
    pub latency: Histogram,
    errors: Mutex<BTreeMap<String, u64>>,
    /// Served traffic captured for monitoring.
    pub capture: crate::monitoring::capture::Capture,
}

impl DeploymentStats {
    pub fn record_error(&self, code: &str) {
        *self.errors.lock().expect("errors lock").entry(code.to_string()).or_default() += 1;
    }

    pub fn errors(&self) -> BTreeMap<String, u64> {
        self.errors.lock().expect("errors lock").clone()
    }
}

/// Escapes a Prometheus label value.
pub fn label(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}
