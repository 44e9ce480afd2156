//! `plinth dataset`, `evaluate`, `report`, `promote`, `review`, `policy`, `webhook`, the
//! `history --at` question, and `fairness` (metrics of a predictions file, offline).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use plinth_api::data::{Dataset, DatasetVersion};
use plinth_api::governance::{
    CheckStatus, Delivery, Evaluation, JobStatus, PolicyChange, PolicyOutcome, PolicyRecord,
    Promotion, PromotionStatus, ServedAt, Webhook,
};
use serde_json::{Value, json};

use super::{split_model, split_version, usage};
use crate::client::Client;
use crate::output;

#[derive(Subcommand, Debug)]
pub(crate) enum DatasetCmd {
    /// Upload a CSV (plain or .gz) or Parquet file as the next version of TEAM/NAME.
    Upload {
        dataset: String,
        file: PathBuf,
        #[arg(long)]
        format: Option<String>,
        #[arg(long)]
        description: Option<String>,
    },
    /// A team's datasets.
    List { team: String },
    /// A dataset's versions, with their schema and profile (TEAM/NAME).
    Show { dataset: String },
    /// Let another team read TEAM/NAME (in SQL as "TEAM".NAME).
    Grant {
        dataset: String,
        #[arg(long)]
        to: String,
    },
    /// Take a grant back.
    Revoke {
        dataset: String,
        #[arg(long)]
        from: String,
    },
}

#[derive(Args, Debug)]
pub(crate) struct EvaluateArgs {
    /// TEAM/MODEL@VERSION
    model: String,
    /// NAME or NAME@VERSION of a dataset of the team.
    #[arg(long)]
    dataset: String,
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
pub(crate) struct PromoteArgs {
    /// TEAM/MODEL@VERSION
    model: String,
    #[arg(long)]
    env: String,
    /// Start as a canary with this share of traffic (percent).
    #[arg(long)]
    canary: Option<u32>,
    /// The evaluation to use as evidence (default: the newest on the policy's dataset).
    #[arg(long)]
    evaluation: Option<String>,
    #[arg(long)]
    note: Option<String>,
}

#[derive(Subcommand, Debug)]
pub(crate) enum ReviewCmd {
    /// Promotions waiting for you.
    Queue,
    /// One promotion with its checks and reviews.
    Show { id: String },
    Approve {
        id: String,
        #[arg(long)]
        comment: Option<String>,
    },
    Reject {
        id: String,
        #[arg(long)]
        comment: String,
    },
    RequestChanges {
        id: String,
        #[arg(long)]
        comment: String,
    },
}

#[derive(Subcommand, Debug)]
pub(crate) enum PolicyCmd {
    /// Set the policy of an environment from a JSON file, for a team or (admins, no --team)
    /// the platform default.
    Set {
        #[arg(long)]
        team: Option<String>,
        #[arg(long)]
        env: String,
        file: PathBuf,
    },
    /// The platform defaults and, with --team, the team's own policies.
    Show {
        #[arg(long)]
        team: Option<String>,
    },
    /// Changes to team policies waiting for review (or, with --status, decided ones).
    Changes {
        #[arg(long)]
        team: Option<String>,
        /// pending_review (default), approved or rejected.
        #[arg(long, default_value = "pending_review")]
        status: String,
    },
    /// Approve (puts it in force) or reject a team's policy change (platform reviewers).
    Review {
        id: String,
        /// approve or reject.
        decision: String,
        #[arg(long)]
        comment: Option<String>,
    },
}

#[derive(Subcommand, Debug)]
pub(crate) enum WebhookCmd {
    /// Subscribe URL to events of TEAM (all events when none is given).
    Add {
        team: String,
        /// Where the events are POSTed (the global --url is Plinth's own address).
        #[arg(value_name = "URL")]
        endpoint: String,
        #[arg(long = "event")]
        events: Vec<String>,
    },
    List {
        team: String,
    },
    Remove {
        team: String,
        id: String,
    },
    /// The delivery log of a webhook.
    Deliveries {
        team: String,
        id: String,
    },
}

#[derive(Args, Debug)]
pub(crate) struct FairnessArgs {
    /// A Parquet or CSV file of predictions.
    #[arg(long)]
    input: PathBuf,
    #[arg(long, default_value = "y_true")]
    label: String,
    #[arg(long, default_value = "y_pred")]
    prediction: String,
    #[arg(long, default_value = "group")]
    group: String,
    /// Write the JSON here (default: standard output).
    #[arg(long)]
    out: Option<PathBuf>,
}

pub(super) async fn dataset(c: &Client, json_out: bool, cmd: DatasetCmd) -> Result<()> {
    match cmd {
        DatasetCmd::Upload { dataset, file, format, description } => {
            let (team, name) = split_model(&dataset)?;
            let mut q = vec![(
                "source",
                file.file_name().map(|f| f.to_string_lossy().to_string()).unwrap_or_default(),
            )];
            if let Some(f) = format {
                q.push(("format", f));
            }
            if let Some(d) = description {
                q.push(("description", d));
            }
            let v: DatasetVersion =
                c.upload_raw(&format!("/teams/{team}/datasets/{name}/versions"), &q, &file).await?;
            print_dataset_version(json_out, &v);
        }
        DatasetCmd::List { team } => {
            let l: Vec<Dataset> = c.get(&format!("/teams/{team}/datasets"), &[]).await?;
            if json_out {
                output::json(&l);
            } else {
                output::table(
                    &["dataset", "latest", "created", "by"],
                    l.iter()
                        .map(|d| {
                            vec![
                                format!("{}/{}", d.team, d.name),
                                d.latest_version.to_string(),
                                output::time(&d.created_at),
                                d.created_by.clone(),
                            ]
                        })
                        .collect(),
                );
            }
        }
        DatasetCmd::Grant { dataset, to } => {
            let (team, name) = split_model(&dataset)?;
            let _: Value = c
                .put(&format!("/teams/{team}/datasets/{name}/grants"), &json!({"team": to}))
                .await?;
            println!("{to} may now read {team}/{name}");
        }
        DatasetCmd::Revoke { dataset, from } => {
            let (team, name) = split_model(&dataset)?;
            let _: Value =
                c.delete(&format!("/teams/{team}/datasets/{name}/grants/{from}")).await?;
            println!("{from} may no longer read {team}/{name}");
        }
        DatasetCmd::Show { dataset } => {
            let (team, name) = split_model(&dataset)?;
            let l: Vec<DatasetVersion> =
                c.get(&format!("/teams/{team}/datasets/{name}/versions"), &[]).await?;
            if json_out {
                output::json(&l);
            } else if let Some(v) = l.last() {
                print_dataset_version(false, v);
            }
        }
    }
    Ok(())
}

fn print_dataset_version(json_out: bool, v: &DatasetVersion) {
    if json_out {
        output::json(v);
        return;
    }
    output::fields(&[
        ("dataset", format!("{}/{}@{}", v.team, v.dataset, v.version)),
        ("format", v.format.clone()),
        ("rows", v.rows.to_string()),
        ("sha256", v.sha256.clone()),
        ("size", v.size_bytes.to_string()),
        ("source", v.source.clone()),
    ]);
    let num = |x: Option<f64>| x.map_or(String::new(), |x| format!("{x:.4}"));
    output::table(
        &["column", "type", "nulls", "distinct", "min", "max", "mean", "top"],
        v.columns
            .iter()
            .map(|c| {
                vec![
                    c.name.clone(),
                    c.kind.as_str().to_string(),
                    c.nulls.to_string(),
                    c.distinct.to_string(),
                    num(c.min),
                    num(c.max),
                    num(c.mean),
                    c.top
                        .iter()
                        .take(3)
                        .map(|t| format!("{} ({})", t.value, t.count))
                        .collect::<Vec<_>>()
                        .join(", "),
                ]
            })
            .collect(),
    );
}

fn dataset_ref(s: &str) -> Result<Value> {
    Ok(match s.split_once('@') {
        Some((n, v)) => {
            let v: u32 = v.parse().map_err(|_| usage(format!("'{v}' is not a version number")))?;
            json!({"name": n, "version": v})
        }
        None => json!({"name": s}),
    })
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
        let bar = crate::client::progress_bar(100, "evaluating");
        while matches!(e.status, JobStatus::Queued | JobStatus::Running) {
            tokio::time::sleep(Duration::from_millis(200)).await;
            e = c.get(&format!("/evaluations/{}", e.id), &[]).await?;
            bar.set_position((e.progress * 100.0) as u64);
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

pub(super) async fn promote(c: &Client, json_out: bool, a: PromoteArgs) -> Result<()> {
    let (team, model, version) = split_version(&a.model)?;
    let body = json!({"version": version, "environment": a.env, "canary_weight": a.canary, "evaluation": a.evaluation, "note": a.note});
    let p: Promotion = c.post(&format!("/teams/{team}/models/{model}/promotions"), &body).await?;
    print_promotion(json_out, &p);
    // A blocked promotion fails the command, so that a CI gate stops on it.
    if p.status == PromotionStatus::Blocked {
        let failed: Vec<&str> = p
            .checks
            .iter()
            .filter(|c| c.status == CheckStatus::Failed)
            .map(|c| c.name.as_str())
            .collect();
        bail!("promotion {} is blocked: failed checks {}", p.id, failed.join(", "));
    }
    Ok(())
}

fn status(s: CheckStatus) -> &'static str {
    match s {
        CheckStatus::Passed => "passed",
        CheckStatus::Failed => "FAILED",
        CheckStatus::Skipped => "skipped",
        CheckStatus::Flagged => "FLAGGED",
    }
}

fn print_promotion(json_out: bool, p: &Promotion) {
    if json_out {
        output::json(p);
        return;
    }
    output::fields(&[
        ("promotion", p.id.clone()),
        ("model", format!("{}/{}@{} → {}", p.team, p.model, p.version, p.environment)),
        ("status", p.status.as_str().to_string()),
        ("risk tier", p.risk_tier.clone()),
        ("reviewers needed", p.required_reviewers.to_string()),
        ("requested by", format!("{} at {}", p.requested_by, output::time(&p.requested_at))),
    ]);
    if let Some(why) = &p.auto_approved {
        println!("approved automatically: {why}");
    }
    if !p.checks.is_empty() {
        output::table(
            &["check", "status", "evidence"],
            p.checks
                .iter()
                .map(|c| vec![c.name.clone(), status(c.status).into(), c.evidence.clone()])
                .collect(),
        );
    }
    for r in &p.reviews {
        println!(
            "{} by {} at {}: {}",
            r.decision.as_str(),
            r.reviewer,
            output::time(&r.at),
            r.comment
        );
    }
}

pub(super) async fn review(c: &Client, json_out: bool, cmd: ReviewCmd) -> Result<()> {
    let decide = |id: String, decision: &str, comment: Option<String>| {
        (format!("/promotions/{id}/reviews"), json!({"decision": decision, "comment": comment}))
    };
    let (path, body) = match cmd {
        ReviewCmd::Queue => {
            let l: Vec<Promotion> = c.get("/promotions", &[("reviewable", "true".into())]).await?;
            if json_out {
                output::json(&l);
            } else {
                output::table(
                    &["promotion", "model", "to", "risk", "requested by", "at"],
                    l.iter()
                        .map(|p| {
                            vec![
                                p.id.clone(),
                                format!("{}/{}@{}", p.team, p.model, p.version),
                                p.environment.clone(),
                                p.risk_tier.clone(),
                                p.requested_by.clone(),
                                output::time(&p.requested_at),
                            ]
                        })
                        .collect(),
                );
            }
            return Ok(());
        }
        ReviewCmd::Show { id } => {
            let p: Promotion = c.get(&format!("/promotions/{id}"), &[]).await?;
            print_promotion(json_out, &p);
            return Ok(());
        }
        ReviewCmd::Approve { id, comment } => decide(id, "approve", comment),
        ReviewCmd::Reject { id, comment } => decide(id, "reject", Some(comment)),
        ReviewCmd::RequestChanges { id, comment } => decide(id, "request_changes", Some(comment)),
    };
    let p: Promotion = c.post(&path, &body).await?;
    print_promotion(json_out, &p);
    Ok(())
}

pub(super) async fn policy(c: &Client, json_out: bool, cmd: PolicyCmd) -> Result<()> {
    match cmd {
        PolicyCmd::Set { team, env, file } => {
            let text = std::fs::read_to_string(&file)
                .with_context(|| format!("cannot read {}", file.display()))?;
            let body: Value = serde_json::from_str(&text)
                .with_context(|| format!("{} is not JSON", file.display()))?;
            let path = match &team {
                Some(t) => format!("/teams/{t}/policies/{env}"),
                None => format!("/policies/{env}"),
            };
            let outcome: PolicyOutcome = c.put(&path, &body).await?;
            match outcome {
                PolicyOutcome::Applied(r) => print_policies(json_out, &[r]),
                PolicyOutcome::Pending(change) => print_policy_changes(json_out, &[change]),
            }
        }
        PolicyCmd::Changes { team, status } => {
            let mut q = vec![("status", status)];
            q.extend(team.map(|t| ("team", t)));
            let l: Vec<PolicyChange> = c.get("/policy-changes", &q).await?;
            print_policy_changes(json_out, &l);
        }
        PolicyCmd::Review { id, decision, comment } => {
            if !matches!(decision.as_str(), "approve" | "reject") {
                return Err(usage(format!("decision '{decision}': say approve or reject")));
            }
            let body = json!({"decision": decision, "comment": comment});
            let change: PolicyChange =
                c.post(&format!("/policy-changes/{id}/review"), &body).await?;
            print_policy_changes(json_out, &[change]);
        }
        PolicyCmd::Show { team } => {
            let q: Vec<(&str, String)> = team.map(|t| vec![("team", t)]).unwrap_or_default();
            let l: Vec<PolicyRecord> = c.get("/policies", &q).await?;
            print_policies(json_out, &l);
        }
    }
    Ok(())
}

fn print_policy_changes(json_out: bool, l: &[PolicyChange]) {
    if json_out {
        output::json(&l);
        return;
    }
    output::table(
        &["change", "team", "environment", "status", "requested by", "at", "decided by"],
        l.iter()
            .map(|c| {
                vec![
                    c.id.clone(),
                    c.team.clone(),
                    c.environment.clone(),
                    c.status.as_str().replace('_', " "),
                    c.requested_by.clone(),
                    output::time(&c.requested_at),
                    c.decided_by.clone().unwrap_or_default(),
                ]
            })
            .collect(),
    );
}

fn print_policies(json_out: bool, l: &[PolicyRecord]) {
    if json_out {
        output::json(&l);
        return;
    }
    for r in l {
        println!(
            "# {} / {} (updated {} by {})",
            r.team.as_deref().unwrap_or("platform default"),
            r.environment,
            output::time(&r.updated_at),
            r.updated_by
        );
        println!("{}", serde_json::to_string_pretty(&r.policy).unwrap_or_default());
    }
}

pub(super) async fn served(
    c: &Client,
    json_out: bool,
    model: &str,
    env: &str,
    at: &str,
) -> Result<()> {
    let (team, model) = split_model(model)?;
    let s: ServedAt = c
        .get(
            &format!("/teams/{team}/models/{model}/served"),
            &[("environment", env.to_string()), ("at", at.to_string())],
        )
        .await?;
    if json_out {
        output::json(&s);
        return Ok(());
    }
    let Some(r) = &s.revision else {
        println!(
            "nothing served {}/{} in {} at {}",
            s.team,
            s.model,
            s.environment,
            output::time(&s.at)
        );
        return Ok(());
    };
    let traffic: Vec<String> =
        r.spec.versions.iter().map(|v| format!("v{} {}%", v.version, v.weight)).collect();
    output::fields(&[
        ("at", output::time(&s.at)),
        ("serving", traffic.join(", ")),
        (
            "revision",
            format!("{} ({}, by {} at {})", r.revision, r.action, r.by, output::time(&r.at)),
        ),
    ]);
    for p in &s.promotions {
        let approvers: Vec<String> = p
            .reviews
            .iter()
            .filter(|r| r.decision == plinth_api::governance::Decision::Approve)
            .map(|r| r.reviewer.clone())
            .collect();
        let how = match &p.auto_approved {
            Some(why) => format!("approved automatically ({why})"),
            None => format!("approved by {}", approvers.join(", ")),
        };
        println!(
            "v{}: promotion {} requested by {}, {how}; evidence: evaluation {}",
            p.version,
            p.id,
            p.requested_by,
            p.evaluation.as_deref().unwrap_or("none")
        );
        for c in &p.checks {
            println!("  {} {}: {}", c.name, status(c.status), c.evidence);
        }
    }
    Ok(())
}

pub(super) async fn webhook(c: &Client, json_out: bool, cmd: WebhookCmd) -> Result<()> {
    match cmd {
        WebhookCmd::Add { team, endpoint, events } => {
            let w: Webhook = c
                .post(
                    &format!("/teams/{team}/webhooks"),
                    &json!({"url": endpoint, "events": events}),
                )
                .await?;
            if json_out {
                output::json(&w);
            } else {
                output::fields(&[
                    ("webhook", w.id.clone()),
                    ("url", w.url.clone()),
                    ("secret", w.secret.clone().unwrap_or_default()),
                ]);
                eprintln!("keep the secret: it is shown only once (it signs X-Plinth-Signature)");
            }
        }
        WebhookCmd::List { team } => {
            let l: Vec<Webhook> = c.get(&format!("/teams/{team}/webhooks"), &[]).await?;
            if json_out {
                output::json(&l);
            } else {
                output::table(
                    &["webhook", "url", "events"],
                    l.iter()
                        .map(|w| {
                            vec![
                                w.id.clone(),
                                w.url.clone(),
                                if w.events.is_empty() {
                                    "all".into()
                                } else {
                                    w.events.join(", ")
                                },
                            ]
                        })
                        .collect(),
                );
            }
        }
        WebhookCmd::Remove { team, id } => {
            let _: Value = c.delete(&format!("/teams/{team}/webhooks/{id}")).await?;
            println!("removed {id}");
        }
        WebhookCmd::Deliveries { team, id } => {
            let l: Vec<Delivery> =
                c.get(&format!("/teams/{team}/webhooks/{id}/deliveries"), &[]).await?;
            if json_out {
                output::json(&l);
            } else {
                output::table(
                    &["delivery", "event", "status", "attempts", "last answer", "created"],
                    l.iter()
                        .map(|d| {
                            vec![
                                d.id.clone(),
                                d.event.clone(),
                                d.status.clone(),
                                d.attempts.to_string(),
                                d.last_status_code
                                    .map(|c| c.to_string())
                                    .or(d.last_error.clone())
                                    .unwrap_or_default(),
                                output::time(&d.created_at),
                            ]
                        })
                        .collect(),
                );
            }
        }
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

#[derive(Subcommand, Debug)]
pub(crate) enum SourceCmd {
    /// Declare TEAM/NAME: --path for a file or folder (in the team's folder under the server's
    /// sources root), or --database-url with --table or --query for PostgreSQL.
    Add {
        source: String,
        /// file, folder or postgres
        #[arg(long)]
        kind: String,
        /// A file or folder, relative to the team's folder under the sources root.
        #[arg(long)]
        path: Option<String>,
        /// postgres://user:password@host:port/database (a host the server allows).
        #[arg(long)]
        database_url: Option<String>,
        #[arg(long)]
        table: Option<String>,
        #[arg(long)]
        query: Option<String>,
    },
    List {
        team: String,
    },
    /// Let another team read TEAM/NAME.
    Grant {
        source: String,
        #[arg(long)]
        to: String,
    },
}

pub(super) async fn source(c: &Client, json_out: bool, cmd: SourceCmd) -> Result<()> {
    match cmd {
        SourceCmd::Add { source, kind, path, database_url, table, query } => {
            let (team, name) = split_model(&source)?;
            let body = json!({"name": name, "kind": kind, "path": path, "url": database_url, "table": table, "query": query});
            let s: plinth_api::data::Source =
                c.post(&format!("/teams/{team}/sources"), &body).await?;
            if json_out { output::json(&s) } else { println!("added source {}/{}", s.team, s.name) }
        }
        SourceCmd::List { team } => {
            let l: Vec<plinth_api::data::Source> =
                c.get(&format!("/teams/{team}/sources"), &[]).await?;
            if json_out {
                output::json(&l);
            } else {
                output::table(
                    &["source", "kind", "where"],
                    l.iter()
                        .map(|s| {
                            let at = s
                                .path
                                .clone()
                                .or(s.table.clone())
                                .or(s.query.clone())
                                .unwrap_or_default();
                            vec![s.name.clone(), format!("{:?}", s.kind).to_lowercase(), at]
                        })
                        .collect(),
                );
            }
        }
        SourceCmd::Grant { source, to } => {
            let (team, name) = split_model(&source)?;
            let _: Value = c
                .put(&format!("/teams/{team}/sources/{name}/grants"), &json!({"team": to}))
                .await?;
            println!("{to} may now read {team}/{name}");
        }
    }
    Ok(())
}

#[derive(Args, Debug)]
pub(crate) struct QueryArgs {
    /// The team whose datasets (and grants) the query reads.
    team: String,
    /// The SQL; tables are the team's datasets by name and granted ones as "owner-team".name.
    sql: String,
    /// jsonl (default), csv or parquet.
    #[arg(long)]
    format: Option<String>,
    /// Write the rows to this file instead of standard output.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Save the result as a new version of this dataset.
    #[arg(long)]
    save_as: Option<String>,
    #[arg(long)]
    max_rows: Option<u64>,
    #[arg(long)]
    timeout_ms: Option<u64>,
}

/// Runs SQL on the server; the rows are written as they arrive, with a running count of bytes.
pub(super) async fn query(c: &Client, json_out: bool, a: QueryArgs) -> Result<()> {
    use http_body_util::BodyExt;
    use std::io::Write;
    let body = json!({"sql": a.sql, "format": a.format, "save_as": a.save_as, "max_rows": a.max_rows, "timeout_ms": a.timeout_ms});
    let spinner = indicatif::ProgressBar::new_spinner().with_message("running the query");
    spinner.enable_steady_tick(Duration::from_millis(100));
    let response = c.post_streamed(&format!("/teams/{}/query", a.team), &body).await;
    let response = match response {
        Ok(r) => r,
        Err(e) => {
            spinner.finish_and_clear();
            return Err(e);
        }
    };
    if response.status() == reqwest::StatusCode::CREATED {
        spinner.finish_and_clear();
        let v: DatasetVersion = response.json().await?;
        print_dataset_version(json_out, &v);
        return Ok(());
    }
    let mut out: Box<dyn Write> = match &a.out {
        Some(p) => Box::new(std::io::BufWriter::new(
            std::fs::File::create(p).with_context(|| format!("cannot write {}", p.display()))?,
        )),
        None => Box::new(std::io::stdout().lock()),
    };
    let mut body = http::Response::from(response).into_body();
    let (mut received, mut trailers) = (0u64, None);
    while let Some(frame) = body.frame().await {
        let frame = frame.context("the server stopped sending the result")?;
        match frame.into_data() {
            Ok(data) => {
                received += data.len() as u64;
                spinner.set_message(format!("{} received", indicatif::HumanBytes(received)));
                spinner.suspend(|| out.write_all(&data))?;
            }
            Err(frame) => trailers = frame.into_trailers().ok(),
        }
    }
    out.flush()?;
    spinner.finish_and_clear();
    let field = |name: &str| -> Option<String> {
        Some(String::from_utf8_lossy(trailers.as_ref()?.get(name)?.as_bytes()).into_owned())
    };
    if let Some(e) = field("x-plinth-error") {
        return Err(anyhow::anyhow!("the query failed after {received} bytes: {e}"));
    }
    let rows = field("x-plinth-rows").ok_or_else(|| {
        anyhow::anyhow!("the result ended without its summary: it may be incomplete")
    })?;
    let cut = field("x-plinth-truncated").as_deref() == Some("true");
    eprintln!("{rows} rows{}", if cut { " (cut at --max-rows)" } else { "" });
    Ok(())
}
