//! `plinth evaluate` and `report`, and `fairness` (metrics of a predictions file, offline).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use plinth_api::governance::{Evaluation, JobStatus};
use serde_json::json;

use super::data::dataset_ref;
use super::{Global, connect, split_version, usage};
use crate::client::Client;
use crate::output;

/// Evaluations and their reports, offline fairness.
#[derive(Subcommand, Debug)]
pub(crate) enum Command {
    /// Evaluate a model version on a dataset (metrics, fairness, slices, comparison).
    #[command(
        after_help = "Example:\n  plinth evaluate fraud/churn@2 --dataset holdout --label churned"
    )]
    Evaluate(EvaluateArgs),
    /// Print an evaluation's Markdown report.
    Report {
        /// The evaluation's id (printed by `plinth evaluate`).
        evaluation: String,
        /// Write it to a file instead.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Fairness and classification metrics of a predictions file (offline; Fairlearn's layout).
    Fairness(FairnessArgs),
}

#[derive(Args, Debug)]
pub(crate) struct EvaluateArgs {
    /// TEAM/MODEL@VERSION
    model: String,
    /// NAME or NAME@VERSION of a dataset of the team.
    #[arg(long)]
    dataset: String,
    /// The dataset's label column: the true outcome to score the predictions against.
    #[arg(long)]
    label: String,
    /// Sensitive attribute columns (repeat or comma-separate).
    #[arg(long, value_delimiter = ',')]
    sensitive: Vec<String>,
    /// Slice columns (repeat or comma-separate).
    #[arg(long = "slice", value_delimiter = ',')]
    slices: Vec<String>,
    /// Compare with the version serving this environment (default production).
    #[arg(long)]
    compare: Option<String>,
    /// Return at once instead of waiting for the job.
    #[arg(long)]
    no_wait: bool,
}

#[derive(Args, Debug)]
pub(crate) struct FairnessArgs {
    /// A Parquet or CSV file of predictions.
    #[arg(long)]
    input: PathBuf,
    /// The column of true labels, 0 or 1.
    #[arg(long, default_value = "y_true")]
    label: String,
    /// The column of predicted labels, 0 or 1.
    #[arg(long, default_value = "y_pred")]
    prediction: String,
    /// The column of the sensitive attribute: each row's group.
    #[arg(long, default_value = "group")]
    group: String,
    /// Write the JSON here (default: standard output).
    #[arg(long)]
    out: Option<PathBuf>,
}

pub(crate) async fn run(g: &Global, cmd: Command) -> Result<()> {
    match cmd {
        Command::Evaluate(args) => evaluate(&connect(g)?, g.json, args).await,
        Command::Report { evaluation, out } => report(&connect(g)?, &evaluation, out).await,
        Command::Fairness(args) => fairness(args),
    }
}

pub(super) async fn evaluate(c: &Client, json_out: bool, a: EvaluateArgs) -> Result<()> {
    let (team, model, version) = split_version(&a.model)?;
    let mut body = json!({
        "version": version,
        "dataset": dataset_ref(&a.dataset)?,
        "label": a.label,
        "sensitive": a.sensitive,
        "slices": a.slices,
    });
    if let Some(env) = a.compare {
        body["compare_environment"] = json!(env);
    }
    let mut e: Evaluation =
        c.post(&format!("/teams/{team}/models/{model}/evaluations"), &body).await?;
    if !a.no_wait {
        let bar = crate::client::job_bar("evaluating");
        while matches!(e.status, JobStatus::Queued | JobStatus::Running) {
            tokio::time::sleep(Duration::from_millis(200)).await;
            e = c.get(&format!("/evaluations/{}", e.id), &[]).await?;
            bar.set_position((e.progress * 100.0) as u64);
            bar.set_message(if e.status == JobStatus::Queued { "queued" } else { "running" });
        }
        bar.finish_and_clear();
    }
    print_evaluation(json_out, &e);
    if e.status == JobStatus::Failed {
        bail!("the evaluation failed: {}", e.error.unwrap_or_default());
    }
    Ok(())
}

fn print_evaluation(json_out: bool, e: &Evaluation) {
    if json_out {
        output::json(e);
        return;
    }
    output::fields(&[
        ("evaluation", e.id.clone()),
        ("model", format!("{}/{}@{}", e.team, e.model, e.version)),
        ("dataset", e.dataset.clone()),
        ("status", e.status.as_str().to_string()),
    ]);
    let Some(r) = &e.result else { return };
    let base = r.baseline.as_ref();
    output::table(
        &["metric", "value", "baseline", "change"],
        r.metrics
            .iter()
            .map(|(k, v)| {
                vec![
                    k.clone(),
                    format!("{v:.4}"),
                    base.and_then(|b| b.metrics.get(k)).map_or(String::new(), |x| {
                        format!("{x:.4} (v{})", base.map_or(0, |b| b.version))
                    }),
                    base.and_then(|b| b.delta.get(k)).map_or(String::new(), |x| format!("{x:+.4}")),
                ]
            })
            .collect(),
    );
    for (attr, f) in &r.fairness {
        println!(
            "fairness over {attr}: demographic parity difference {:.4} (ratio {:.4}), equalized odds difference {:.4} (ratio {:.4}), four-fifths rule {}",
            f.demographic_parity_difference,
            f.demographic_parity_ratio,
            f.equalized_odds_difference,
            f.equalized_odds_ratio,
            if f.four_fifths_rule { "met" } else { "NOT met" }
        );
    }
    println!("report: plinth report {}", e.id);
}

pub(super) async fn report(c: &Client, id: &str, out: Option<PathBuf>) -> Result<()> {
    let md = c.get_text(&format!("/evaluations/{id}/report")).await?;
    match out {
        Some(p) => {
            std::fs::write(&p, md).with_context(|| format!("cannot write {}", p.display()))?
        }
        None => print!("{md}"),
    }
    Ok(())
}

/// Fairness and classification metrics of a predictions file, computed locally — the same
/// functions the evaluation jobs use. The JSON has Fairlearn's `MetricFrame` layout.
pub(super) fn fairness(a: FairnessArgs) -> Result<()> {
    use plinth_core::data::{FileFormat, TableReader};
    use plinth_core::eval::metrics;
    let bytes =
        std::fs::read(&a.input).with_context(|| format!("cannot read {}", a.input.display()))?;
    let format = FileFormat::detect(&bytes);
    let table = plinth_data::Tables
        .read(bytes, format)
        .map_err(|e| anyhow::anyhow!("{}: {e}", a.input.display()))?;
    let binary = |name: &str| -> Result<Vec<bool>> {
        let c = table
            .column(name)
            .ok_or_else(|| usage(format!("{} has no column '{name}'", a.input.display())))?;
        (0..table.rows)
            .map(|i| match c.data.number(i) {
                Some(v) if v == 0.0 || v == 1.0 => Ok(v == 1.0),
                other => bail!("column '{name}' row {i}: {other:?} is not 0 or 1"),
            })
            .collect()
    };
    let truth = binary(&a.label)?;
    let pred = binary(&a.prediction)?;
    let g = table
        .column(&a.group)
        .ok_or_else(|| usage(format!("{} has no column '{}'", a.input.display(), a.group)))?;
    let (names, groups) = g.data.groups();
    let counts = metrics::group_counts(&truth, &pred, &groups, names.len());
    let fair = metrics::fairness(&names, &counts);
    let mut overall = metrics::Counts::default();
    for c in &counts {
        overall.tp += c.tp;
        overall.fp += c.fp;
        overall.tn += c.tn;
        overall.fn_ += c.fn_;
    }
    let gm = |m: &plinth_api::governance::GroupMetrics| json!({"accuracy": m.accuracy, "selection_rate": m.selection_rate, "tpr": m.tpr, "fpr": m.fpr, "count": m.count as f64});
    let field = |f: GroupField| metrics::spread(fair.by_group.values().map(f));
    let mut diff = BTreeMap::new();
    let mut ratio = BTreeMap::new();
    let fields: [(&str, GroupField); 5] = [
        ("accuracy", |m| m.accuracy),
        ("selection_rate", |m| m.selection_rate),
        ("tpr", |m| m.tpr),
        ("fpr", |m| m.fpr),
        ("count", |m| m.count as f64),
    ];
    for (name, f) in fields {
        let (d, r) = field(f);
        diff.insert(name, d);
        ratio.insert(name, r);
    }
    let truth_cls: Vec<u32> = truth.iter().map(|&t| u32::from(t)).collect();
    let pred_cls: Vec<u32> = pred.iter().map(|&p| u32::from(p)).collect();
    let (cls, cm) = metrics::classification(&truth_cls, &pred_cls, None, 2);
    let out = json!({
        "rows": table.rows,
        "overall": gm(&overall.metrics()),
        "by_group": fair.by_group.iter().map(|(k, m)| (k.clone(), gm(m))).collect::<BTreeMap<_, _>>(),
        "difference_between_groups": diff,
        "ratio_between_groups": ratio,
        "demographic_parity_difference": fair.demographic_parity_difference,
        "equalized_odds_difference": fair.equalized_odds_difference,
        "demographic_parity_ratio": fair.demographic_parity_ratio,
        "equalized_odds_ratio": fair.equalized_odds_ratio,
        "four_fifths_rule": fair.four_fifths_rule,
        "classification": cls,
        "confusion_matrix": cm,
    });
    let text = serde_json::to_string_pretty(&out)?;
    match a.out {
        Some(p) => write_file(&p, &text)?,
        None => println!("{text}"),
    }
    Ok(())
}

/// Reads one per-group metric.
type GroupField = fn(&plinth_api::governance::GroupMetrics) -> f64;

fn write_file(p: &Path, text: &str) -> Result<()> {
    std::fs::write(p, text).with_context(|| format!("cannot write {}", p.display()))
}
