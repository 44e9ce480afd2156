//! `plinth promote`, `review` and `policy`, and the `history --at` question.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use plinth_api::governance::{
    CheckStatus, PolicyChange, PolicyOutcome, PolicyRecord, Promotion, PromotionStatus, ServedAt,
};
use serde_json::{Value, json};

use super::{Global, connect, split_model, split_version, usage};
use crate::client::Client;
use crate::output;

/// Promotions, reviews and policies.
#[derive(Subcommand, Debug)]
pub(crate) enum Command {
    /// Request the promotion of a version to an environment.
    #[command(
        after_help = "Example:\n  plinth promote fraud/income@2 --env production --canary 10"
    )]
    Promote(PromoteArgs),
    /// Review promotions: queue, show, approve, reject, request-changes.
    #[command(subcommand)]
    Review(ReviewCmd),
    /// Promotion policies per team and environment.
    #[command(subcommand)]
    Policy(PolicyCmd),
}

#[derive(Args, Debug)]
pub(crate) struct PromoteArgs {
    /// TEAM/MODEL@VERSION
    model: String,
    /// The environment to promote it to, e.g. production.
    #[arg(long)]
    env: String,
    /// Start as a canary with this share of traffic (percent).
    #[arg(long)]
    canary: Option<u32>,
    /// The evaluation to use as evidence (default: the newest on the policy's dataset).
    #[arg(long)]
    evaluation: Option<String>,
    /// A note for the reviewers: what changed and why.
    #[arg(long)]
    note: Option<String>,
}

#[derive(Subcommand, Debug)]
pub(crate) enum ReviewCmd {
    /// Promotions waiting for you.
    Queue,
    /// One promotion with its checks and reviews.
    Show {
        /// The promotion's id, prm_... (see `plinth review queue`).
        id: String,
    },
    #[command(
        after_help = "Example:\n  plinth review approve prm_... --comment 'fairness within policy'"
    )]
    Approve {
        /// The promotion's id, prm_... (see `plinth review queue`).
        id: String,
        /// Why you approve it (optional).
        #[arg(long)]
        comment: Option<String>,
    },
    Reject {
        /// The promotion's id, prm_... (see `plinth review queue`).
        id: String,
        /// Why you reject it.
        #[arg(long)]
        comment: String,
    },
    RequestChanges {
        /// The promotion's id, prm_... (see `plinth review queue`).
        id: String,
        /// What must change before you approve it.
        #[arg(long)]
        comment: String,
    },
}

#[derive(Subcommand, Debug)]
pub(crate) enum PolicyCmd {
    /// Set the policy of an environment from a JSON file, for a team or (admins, no --team)
    /// the platform default.
    Set {
        /// The team whose policy to set (default: the platform default, admins only).
        #[arg(long)]
        team: Option<String>,
        /// The environment the policy applies to, e.g. production.
        #[arg(long)]
        env: String,
        /// The policy, a .json file.
        file: PathBuf,
    },
    /// The platform defaults and, with --team, the team's own policies.
    Show {
        /// Also show this team's own policies.
        #[arg(long)]
        team: Option<String>,
    },
    /// Changes to team policies waiting for review (or, with --status, decided ones).
    Changes {
        /// Only this team's changes.
        #[arg(long)]
        team: Option<String>,
        /// pending_review (default), approved or rejected.
        #[arg(long, default_value = "pending_review")]
        status: String,
    },
    /// Approve (puts it in force) or reject a team's policy change (platform reviewers).
    Review {
        /// The policy change's id (see `plinth policy changes`).
        id: String,
        /// approve or reject.
        decision: String,
        /// Why (optional).
        #[arg(long)]
        comment: Option<String>,
    },
}

pub(crate) async fn run(g: &Global, cmd: Command) -> Result<()> {
    match cmd {
        Command::Promote(args) => promote(&connect(g)?, g.json, args).await,
        Command::Review(cmd) => review(&connect(g)?, g.json, cmd).await,
        Command::Policy(cmd) => policy(&connect(g)?, g.json, cmd).await,
    }
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
        ("status", p.status.as_str().replace('_', " ")),
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
