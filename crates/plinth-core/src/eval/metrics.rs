//! Evaluation and fairness metrics, defined exactly as scikit-learn and Fairlearn define them
//! (the parity test holds them to 1e-9 on the Adult data). Pure functions over slices: the
//! evaluation job, the benchmark command and the tests all call these.
//!
//! Conventions taken from the reference libraries: a ratio or rate whose denominator is zero is
//! 0 (scikit-learn's `zero_division` default), a metric that is undefined for the data (ROC AUC
//! with one class present) is left out, binary positives are class index 1.

use std::collections::BTreeMap;

use plinth_api::governance::{Calibration, Fairness, GroupMetrics};

/// The number of bins of the calibration curve.
pub const CALIBRATION_BINS: usize = 10;

fn div(a: f64, b: f64) -> f64 {
    if b == 0.0 { 0.0 } else { a / b }
}

/// Classification metrics. `y_true` and `y_pred` are class indices below `k`; `proba`, when
/// given, is `n × k` row-major class probabilities. Returns the metrics and the confusion
/// matrix (rows: true class, columns: predicted class).
pub fn classification(
    y_true: &[u32],
    y_pred: &[u32],
    proba: Option<&[f64]>,
    k: usize,
) -> (BTreeMap<String, f64>, Vec<Vec<u64>>) {
    let n = y_true.len();
    let mut cm = vec![vec![0u64; k]; k];
    for (&t, &p) in y_true.iter().zip(y_pred) {
        cm[t as usize][p as usize] += 1;
    }
    let mut m = BTreeMap::new();
    let correct: u64 = (0..k).map(|c| cm[c][c]).sum();
    m.insert("accuracy".into(), div(correct as f64, n as f64));
    let true_sum = |c: usize| -> u64 { cm[c].iter().sum() };
    let pred_sum = |c: usize| -> u64 { cm.iter().map(|r| r[c]).sum() };
    if k == 2 {
        let (tp, t, p) = (cm[1][1] as f64, true_sum(1) as f64, pred_sum(1) as f64);
        m.insert("precision".into(), div(tp, p));
        m.insert("recall".into(), div(tp, t));
        m.insert("f1".into(), div(2.0 * tp, t + p));
    } else {
        // Macro averages over the labels present in y_true or y_pred, as scikit-learn.
        let present: Vec<usize> = (0..k).filter(|&c| true_sum(c) + pred_sum(c) > 0).collect();
        let mut sums = [0.0f64; 3];
        for &c in &present {
            let (tp, t, p) = (cm[c][c] as f64, true_sum(c) as f64, pred_sum(c) as f64);
            sums[0] += div(tp, p);
            sums[1] += div(tp, t);
            sums[2] += div(2.0 * tp, t + p);
        }
        let l = present.len() as f64;
        m.insert("precision_macro".into(), div(sums[0], l));
        m.insert("recall_macro".into(), div(sums[1], l));
        m.insert("f1_macro".into(), div(sums[2], l));
    }
    if let Some(proba) = proba {
        m.insert("log_loss".into(), log_loss(y_true, proba, k));
        if k == 2 {
            let p1: Vec<f64> = (0..n).map(|i| proba[i * 2 + 1]).collect();
            let pos: Vec<bool> = y_true.iter().map(|&t| t == 1).collect();
            m.insert("brier_score".into(), brier(&pos, &p1));
            if let Some(auc) = roc_auc(&pos, &p1) {
                m.insert("roc_auc".into(), auc);
            }
            if let Some(ap) = average_precision(&pos, &p1) {
                m.insert("pr_auc".into(), ap);
            }
        } else {
            // One-vs-rest, macro: defined when every class is present.
            let mut aucs = Vec::with_capacity(k);
            for c in 0..k {
                let pos: Vec<bool> = y_true.iter().map(|&t| t as usize == c).collect();
                let pc: Vec<f64> = (0..n).map(|i| proba[i * k + c]).collect();
                match roc_auc(&pos, &pc) {
                    Some(a) => aucs.push(a),
                    None => break,
                }
            }
            if aucs.len() == k {
                m.insert("roc_auc_ovr".into(), aucs.iter().sum::<f64>() / k as f64);
            }
        }
    }
    (m, cm)
}

/// Cross-entropy, as `sklearn.metrics.log_loss`: probabilities clipped to `[eps, 1 - eps]`
/// (eps of f64, not renormalised), mean over rows of `-ln p[true class]`.
pub fn log_loss(y_true: &[u32], proba: &[f64], k: usize) -> f64 {
    let eps = f64::EPSILON;
    let total: f64 = y_true
        .iter()
        .enumerate()
        .map(|(i, &t)| -proba[i * k + t as usize].clamp(eps, 1.0 - eps).ln())
        .sum();
    div(total, y_true.len() as f64)
}

/// The Brier score: mean squared difference between P(positive) and the outcome.
pub fn brier(pos: &[bool], p1: &[f64]) -> f64 {
    let s: f64 = pos
        .iter()
        .zip(p1)
        .map(|(&y, &p)| {
            let d = f64::from(u8::from(y)) - p;
            d * d
        })
        .sum();
    div(s, pos.len() as f64)
}

/// Cumulative (false positives, true positives) at each distinct score, highest score first:
/// scikit-learn's `_binary_clf_curve`.
fn clf_curve(pos: &[bool], score: &[f64]) -> (Vec<f64>, Vec<f64>) {
    let mut order: Vec<u32> = (0..score.len() as u32).collect();
    order.sort_unstable_by(|&a, &b| score[b as usize].total_cmp(&score[a as usize]));
    let (mut fps, mut tps) = (Vec::new(), Vec::new());
    let (mut fp, mut tp) = (0u64, 0u64);
    for (j, &i) in order.iter().enumerate() {
        if pos[i as usize] {
            tp += 1;
        } else {
            fp += 1;
        }
        let last = j + 1 == order.len();
        if last || score[order[j + 1] as usize] != score[i as usize] {
            fps.push(fp as f64);
            tps.push(tp as f64);
        }
    }
    (fps, tps)
}

/// Area under the ROC curve (trapezoids over distinct thresholds); `None` with one class.
pub fn roc_auc(pos: &[bool], score: &[f64]) -> Option<f64> {
    let (fps, tps) = clf_curve(pos, score);
    let (fn_, tn_) = (*tps.last()?, *fps.last()?);
    if fn_ == 0.0 || tn_ == 0.0 {
        return None;
    }
    let (mut area, mut px, mut py) = (0.0, 0.0, 0.0);
    for (f, t) in fps.iter().zip(&tps) {
        let (x, y) = (f / tn_, t / fn_);
        area += (x - px) * (y + py) / 2.0;
        (px, py) = (x, y);
    }
    Some(area)
}

/// Average precision (the step-wise area under the precision-recall curve, as
/// `sklearn.metrics.average_precision_score`); `None` without positives.
pub fn average_precision(pos: &[bool], score: &[f64]) -> Option<f64> {
    let (fps, tps) = clf_curve(pos, score);
    let total = *tps.last()?;
    if total == 0.0 {
        return None;
    }
    let (mut ap, mut prev_recall) = (0.0, 0.0);
    for (f, t) in fps.iter().zip(&tps) {
        let recall = t / total;
        let precision = div(*t, t + f);
        ap += (recall - prev_recall) * precision;
        prev_recall = recall;
    }
    Some(ap)
}

/// `sklearn.calibration.calibration_curve(y, p, n_bins=10, strategy="uniform")`.
pub fn calibration(pos: &[bool], p1: &[f64]) -> Calibration {
    let b = CALIBRATION_BINS;
    // numpy.linspace(0, 1, b + 1): i * step; interior edges only.
    let step = 1.0 / b as f64;
    let edges: Vec<f64> = (1..b).map(|i| i as f64 * step).collect();
    let mut sums = vec![0.0f64; b];
    let mut trues = vec![0.0f64; b];
    let mut totals = vec![0u64; b];
    for (&y, &p) in pos.iter().zip(p1) {
        // numpy.searchsorted(edges, p, side="left"): the first edge >= p.
        let bin = edges.partition_point(|&e| e < p);
        sums[bin] += p;
        trues[bin] += f64::from(u8::from(y));
        totals[bin] += 1;
    }
    let mut c = Calibration { prob_true: vec![], prob_pred: vec![], counts: vec![] };
    for i in (0..b).filter(|&i| totals[i] > 0) {
        c.prob_true.push(trues[i] / totals[i] as f64);
        c.prob_pred.push(sums[i] / totals[i] as f64);
        c.counts.push(totals[i]);
    }
    c
}

/// Regression metrics: RMSE, MAE, R², MAPE (scikit-learn's definitions).
pub fn regression(y: &[f64], p: &[f64]) -> BTreeMap<String, f64> {
    let n = y.len() as f64;
    let mean = div(y.iter().sum(), n);
    let (mut se, mut ae, mut ape, mut tot) = (0.0, 0.0, 0.0, 0.0);
    for (&t, &q) in y.iter().zip(p) {
        let d = t - q;
        se += d * d;
        ae += d.abs();
        ape += d.abs() / t.abs().max(f64::EPSILON);
        tot += (t - mean) * (t - mean);
    }
    let r2 = if tot != 0.0 {
        1.0 - se / tot
    } else if se == 0.0 {
        1.0
    } else {
        0.0
    };
    BTreeMap::from([
        ("rmse".to_string(), div(se, n).sqrt()),
        ("mae".to_string(), div(ae, n)),
        ("r2".to_string(), r2),
        ("mape".to_string(), div(ape, n)),
    ])
}

/// Confusion counts of a binary classifier within one group.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    pub tp: u64,
    pub fp: u64,
    pub tn: u64,
    pub fn_: u64,
}

impl Counts {
    pub fn add(&mut self, truth: bool, pred: bool) {
        match (truth, pred) {
            (true, true) => self.tp += 1,
            (false, true) => self.fp += 1,
            (false, false) => self.tn += 1,
            (true, false) => self.fn_ += 1,
        }
    }

    pub fn count(&self) -> u64 {
        self.tp + self.fp + self.tn + self.fn_
    }

    /// Fairlearn's per-group metrics.
    pub fn metrics(&self) -> GroupMetrics {
        let n = self.count() as f64;
        GroupMetrics {
            count: self.count(),
            selection_rate: div((self.tp + self.fp) as f64, n),
            tpr: div(self.tp as f64, (self.tp + self.fn_) as f64),
            fpr: div(self.fp as f64, (self.fp + self.tn) as f64),
            accuracy: div((self.tp + self.tn) as f64, n),
        }
    }
}

/// Confusion counts per group in one pass. `groups[i]` indexes `names`.
pub fn group_counts(truth: &[bool], pred: &[bool], groups: &[u32], n_groups: usize) -> Vec<Counts> {
    let mut out = vec![Counts::default(); n_groups];
    for ((&t, &p), &g) in truth.iter().zip(pred).zip(groups) {
        out[g as usize].add(t, p);
    }
    out
}

/// max - min and min / max of one per-group metric (Fairlearn's `difference` and `ratio`).
pub fn spread(values: impl Iterator<Item = f64> + Clone) -> (f64, f64) {
    let max = values.clone().fold(f64::NEG_INFINITY, f64::max);
    let min = values.fold(f64::INFINITY, f64::min);
    (max - min, ratio(min, max))
}

/// Fairlearn's ratio `min / max`. Where Fairlearn answers NaN (every group at 0), Plinth answers
/// 1: the groups are equal, and the value stays a number in JSON.
pub fn ratio(min: f64, max: f64) -> f64 {
    if max == 0.0 { if min == 0.0 { 1.0 } else { 0.0 } } else { min / max }
}

/// Fairness of a binary classifier across groups (names in `names`, counts from
/// [`group_counts`]); groups with no rows are left out.
pub fn fairness(names: &[String], counts: &[Counts]) -> Fairness {
    let groups: Vec<(&String, GroupMetrics)> = names
        .iter()
        .zip(counts)
        .filter(|(_, c)| c.count() > 0)
        .map(|(n, c)| (n, c.metrics()))
        .collect();
    let (dp_diff, dp_ratio) = spread(groups.iter().map(|(_, g)| g.selection_rate));
    let (tpr_diff, tpr_ratio) = spread(groups.iter().map(|(_, g)| g.tpr));
    let (fpr_diff, fpr_ratio) = spread(groups.iter().map(|(_, g)| g.fpr));
    Fairness {
        by_group: groups.into_iter().map(|(n, g)| (n.clone(), g)).collect(),
        demographic_parity_difference: dp_diff,
        demographic_parity_ratio: dp_ratio,
        equalized_odds_difference: tpr_diff.max(fpr_diff),
        equalized_odds_ratio: tpr_ratio.min(fpr_ratio),
        four_fifths_rule: dp_ratio >= 0.8,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auc_and_ap_on_a_hand_computed_case() {
        // Scores with a tie across classes: sklearn gives roc_auc 0.75, AP 0.8333333333333333.
        let pos = [false, false, true, true];
        let s = [0.1, 0.4, 0.35, 0.8];
        assert_eq!(roc_auc(&pos, &s), Some(0.75));
        assert!((average_precision(&pos, &s).unwrap() - 0.8333333333333333).abs() < 1e-15);
        assert_eq!(roc_auc(&[true, true], &[0.1, 0.2]), None);
    }

    #[test]
    fn calibration_bins_follow_numpy_edges() {
        // 0.1 sits on the first interior edge: searchsorted(left) puts it in bin 0.
        let c = calibration(&[true, false, true], &[0.1, 0.15, 0.95]);
        assert_eq!(c.counts, vec![1, 1, 1]);
        assert_eq!(c.prob_true, vec![1.0, 0.0, 1.0]);
    }

    #[test]
    fn fairness_difference_and_ratio() {
        let names = vec!["a".to_string(), "b".to_string()];
        let truth = [true, false, true, false];
        let pred = [true, true, false, false];
        let counts = group_counts(&truth, &pred, &[0, 0, 1, 1], 2);
        let f = fairness(&names, &counts);
        assert_eq!(f.demographic_parity_difference, 1.0);
        assert_eq!(f.demographic_parity_ratio, 0.0);
        assert!(!f.four_fifths_rule);
        assert_eq!(f.by_group["a"].tpr, 1.0);
        assert_eq!(f.by_group["b"].fpr, 0.0);
    }
}

/// The parity test: the same inputs as `scripts/fixtures/gen_eval.py` gave scikit-learn and
/// Fairlearn (Adult test split, LightGBM v1's probabilities), the same values to 1e-9.
#[cfg(test)]
mod parity {
    use super::*;
    use serde_json::Value;

    const TOL: f64 = 1e-9;

    fn close(what: &str, got: f64, want: &Value) {
        let want = want.as_f64().unwrap_or_else(|| panic!("{what}: no reference value"));
        assert!(
            (got - want).abs() <= TOL * want.abs().max(1.0),
            "{what}: Plinth {got:.17} vs reference {want:.17}"
        );
    }

    #[test]
    fn adult_metrics_equal_sklearn_and_fairlearn() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../testdata/eval");
        let expected: Value =
            serde_json::from_str(&std::fs::read_to_string(dir.join("expected.json")).unwrap())
                .unwrap();
        let e = &expected["v1"];
        let text = std::fs::read_to_string(dir.join("adult_v1_scores.csv")).unwrap();
        let (mut y, mut p, mut sex, mut race) = (vec![], vec![], vec![], vec![]);
        for line in text.lines().skip(1) {
            let f: Vec<&str> = line.split(',').collect();
            y.push(f[0].parse::<u32>().unwrap());
            p.push(f[1].parse::<f64>().unwrap());
            sex.push(f[2].to_string());
            race.push(f[3].to_string());
        }
        assert_eq!(y.len(), 16_281);
        let pred: Vec<u32> = p.iter().map(|&x| u32::from(x > 0.5)).collect();
        let proba: Vec<f64> = p.iter().flat_map(|&x| [1.0 - x, x]).collect();
        let (m, cm) = classification(&y, &pred, Some(&proba), 2);
        for (name, want) in e["metrics"].as_object().unwrap() {
            close(name, m[name], want);
        }
        assert_eq!(serde_json::to_value(&cm).unwrap(), e["confusion_matrix"]);
        let pos: Vec<bool> = y.iter().map(|&c| c == 1).collect();
        let cal = calibration(&pos, &p);
        for (i, (t, q)) in cal.prob_true.iter().zip(&cal.prob_pred).enumerate() {
            close(&format!("calibration.prob_true[{i}]"), *t, &e["calibration"]["prob_true"][i]);
            close(&format!("calibration.prob_pred[{i}]"), *q, &e["calibration"]["prob_pred"][i]);
        }
        assert_eq!(cal.prob_true.len(), e["calibration"]["prob_true"].as_array().unwrap().len());
        let predb: Vec<bool> = pred.iter().map(|&c| c == 1).collect();
        for (attr, values) in [("sex", &sex), ("race", &race)] {
            let mut names: Vec<String> = values.clone();
            names.sort();
            names.dedup();
            let groups: Vec<u32> =
                values.iter().map(|v| names.binary_search(v).unwrap() as u32).collect();
            let f = fairness(&names, &group_counts(&pos, &predb, &groups, names.len()));
            let r = &e["fairness"][attr];
            close(
                "demographic_parity_difference",
                f.demographic_parity_difference,
                &r["demographic_parity_difference"],
            );
            close(
                "demographic_parity_ratio",
                f.demographic_parity_ratio,
                &r["demographic_parity_ratio"],
            );
            close(
                "equalized_odds_difference",
                f.equalized_odds_difference,
                &r["equalized_odds_difference"],
            );
            close("equalized_odds_ratio", f.equalized_odds_ratio, &r["equalized_odds_ratio"]);
            for (g, m) in &f.by_group {
                let want = &r["by_group"][g];
                close(
                    &format!("{attr}.{g}.selection_rate"),
                    m.selection_rate,
                    &want["selection_rate"],
                );
                close(&format!("{attr}.{g}.tpr"), m.tpr, &want["tpr"]);
                close(&format!("{attr}.{g}.fpr"), m.fpr, &want["fpr"]);
                close(&format!("{attr}.{g}.accuracy"), m.accuracy, &want["accuracy"]);
            }
            assert_eq!(f.by_group.len(), r["by_group"].as_object().unwrap().len());
        }
    }

    #[test]
    fn ames_regression_and_multiclass_equal_sklearn() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../testdata/eval");
        let expected: Value =
            serde_json::from_str(&std::fs::read_to_string(dir.join("expected.json")).unwrap())
                .unwrap();
        let e = &expected["ames"];
        let text = std::fs::read_to_string(dir.join("ames_scores.csv")).unwrap();
        let (mut y, mut pred, mut t, mut proba) = (vec![], vec![], vec![], vec![]);
        for line in text.lines().skip(1) {
            let f: Vec<f64> = line.split(',').map(|x| x.parse().unwrap()).collect();
            y.push(f[0]);
            pred.push(f[1]);
            t.push(f[2] as u32);
            proba.extend_from_slice(&f[3..6]);
        }
        let m = regression(&y, &pred);
        for (name, want) in e["regression"].as_object().unwrap() {
            close(name, m[name], want);
        }
        let argmax: Vec<u32> = proba
            .chunks(3)
            .map(|r| (0..3).max_by(|&a, &b| r[a].total_cmp(&r[b])).unwrap() as u32)
            .collect();
        let (m, cm) = classification(&t, &argmax, Some(&proba), 3);
        for (name, want) in e["multiclass"].as_object().unwrap() {
            close(name, m[name], want);
        }
        assert_eq!(serde_json::to_value(&cm).unwrap(), e["multiclass_confusion_matrix"]);
    }
}
