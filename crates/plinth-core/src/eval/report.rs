//! The evaluation report a reviewer reads: Markdown, rendered from a stored evaluation.

use std::fmt::Write;

use plinth_api::governance::{Evaluation, JobStatus};

fn f(x: f64) -> String {
    format!("{x:.4}")
}

/// Renders an evaluation as Markdown.
pub fn markdown(e: &Evaluation) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "# Evaluation of {}/{} version {}\n", e.team, e.model, e.version);
    let _ = writeln!(
        s,
        "- Dataset: `{}`, label `{}`\n- Status: {}\n- Requested by {} at {}\n",
        e.dataset,
        e.label,
        e.status.as_str(),
        e.created_by,
        e.created_at.format(&time::format_description::well_known::Rfc3339).unwrap_or_default()
    );
    if e.status != JobStatus::Succeeded {
        if let Some(err) = &e.error {
            let _ = writeln!(s, "The evaluation failed: {err}");
        }
        return s;
    }
    let Some(r) = &e.result else { return s };
    let _ = writeln!(s, "## Metrics ({} rows)\n", r.rows);
    let base = r.baseline.as_ref();
    match base {
        Some(b) => {
            let _ = writeln!(
                s,
                "| metric | this version | {} (v{}) | change |\n|---|---:|---:|---:|",
                b.environment, b.version
            );
        }
        None => {
            let _ = writeln!(s, "| metric | value |\n|---|---:|");
        }
    }
    for (name, v) in &r.metrics {
        match base {
            Some(b) => {
                let bv = b.metrics.get(name).map_or("-".into(), |x| f(*x));
                let d = b.delta.get(name).map_or("-".into(), |x| format!("{x:+.4}"));
                let _ = writeln!(s, "| {name} | {} | {bv} | {d} |", f(*v));
            }
            None => {
                let _ = writeln!(s, "| {name} | {} |", f(*v));
            }
        }
    }
    if let Some(cm) = &r.confusion_matrix {
        let _ = writeln!(s, "\n## Confusion matrix (rows: true class, columns: predicted)\n");
        let _ = writeln!(
            s,
            "| | {} |\n|---|{}",
            r.classes.join(" | "),
            "---:|".repeat(r.classes.len())
        );
        for (c, row) in r.classes.iter().zip(cm) {
            let cells: Vec<String> = row.iter().map(u64::to_string).collect();
            let _ = writeln!(s, "| **{c}** | {} |", cells.join(" | "));
        }
    }
    if let Some(cal) = &r.calibration {
        let _ = writeln!(
            s,
            "\n## Calibration\n\n| mean predicted | observed rate | rows |\n|---:|---:|---:|"
        );
        for ((p, t), n) in cal.prob_pred.iter().zip(&cal.prob_true).zip(&cal.counts) {
            let _ = writeln!(s, "| {} | {} | {n} |", f(*p), f(*t));
        }
    }
    for (attr, fair) in &r.fairness {
        let _ = writeln!(s, "\n## Fairness: `{attr}`\n");
        let _ = writeln!(
            s,
            "| group | rows | selection rate | TPR | FPR | accuracy |\n|---|---:|---:|---:|---:|---:|"
        );
        for (g, m) in &fair.by_group {
            let _ = writeln!(
                s,
                "| {g} | {} | {} | {} | {} | {} |",
                m.count,
                f(m.selection_rate),
                f(m.tpr),
                f(m.fpr),
                f(m.accuracy)
            );
        }
        let _ = writeln!(
            s,
            "\n- Demographic parity: difference {}, ratio {}\n- Equalized odds: difference {}, ratio {}\n- Four-fifths rule: {}",
            f(fair.demographic_parity_difference),
            f(fair.demographic_parity_ratio),
            f(fair.equalized_odds_difference),
            f(fair.equalized_odds_ratio),
            if fair.four_fifths_rule { "met" } else { "**not met**" }
        );
    }
    for (col, slices) in &r.slices {
        let _ = writeln!(s, "\n## Slices by `{col}`\n");
        let names: Vec<&String> = r.metrics.keys().collect();
        let _ = writeln!(
            s,
            "| {col} | rows | {} |\n|---|---:|{}",
            names.iter().map(|n| n.as_str()).collect::<Vec<_>>().join(" | "),
            "---:|".repeat(names.len())
        );
        for (v, m) in slices {
            let cells: Vec<String> =
                names.iter().map(|n| m.metrics.get(*n).map_or("-".into(), |x| f(*x))).collect();
            let _ = writeln!(s, "| {v} | {} | {} |", m.rows, cells.join(" | "));
        }
    }
    s
}
