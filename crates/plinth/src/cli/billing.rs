//! `plinth plan`, `billing`, `usage`, `statement`, `platform report`, `survey`: the price book,
//! a team's plan, limits and budget, what it used and what it costs, and the platform's own
//! figures.

use std::path::PathBuf;

use anyhow::Result;
use clap::Subcommand;
use plinth_api::billing::{
    LimitsUpdate, Percentiles, Plan, PlanChange, PlatformReport, Quotas, Statement,
    StatementSummary, SurveyAnswer, TeamBilling, Usage,
};

use super::{Global, connect};
use crate::client::Client;
use crate::output;

#[derive(Subcommand, Debug)]
pub(crate) enum Command {
    /// The price book: list, show, put (admins).
    #[command(subcommand)]
    Plan(PlanCmd),
    /// A team's plan, limits and budget: show, set-plan, limits (admins change them).
    #[command(subcommand)]
    Billing(BillingCmd),
    /// What a team used in a month, per model, deployment and version.
    #[command(after_help = "Example:\n  plinth usage fraud --month 2026-11")]
    Usage {
        /// The team's name.
        team: String,
        /// YYYY-MM (default: this month).
        #[arg(long)]
        month: Option<String>,
    },
    /// Monthly statements: show, list, export (admins: every team, for finance).
    #[command(subcommand)]
    Statement(StatementCmd),
    /// The platform's own figures.
    #[command(subcommand)]
    Platform(PlatformCmd),
    /// Tell the platform team how it is going: SCORE from 1 (very unhappy) to 5 (very happy),
    /// once a month.
    Survey {
        /// Your score: 1 (very unhappy) to 5 (very happy).
        score: u8,
        /// What works and what does not, in your words.
        #[arg(long, default_value = "")]
        comment: String,
        /// The team you answer for (default: your only team).
        #[arg(long)]
        team: Option<String>,
    },
}

#[derive(Subcommand, Debug)]
pub(crate) enum PlanCmd {
    List,
    Show {
        /// The plan's name (see `plinth plan list`).
        name: String,
    },
    /// Create or replace a plan from a JSON or TOML file (admins).
    Put {
        /// The plan, a .json or .toml file with its name.
        #[arg(long)]
        file: PathBuf,
    },
}

#[derive(Subcommand, Debug)]
pub(crate) enum BillingCmd {
    /// The team's plan (and next month's), limits, budget and this month so far.
    Show {
        /// The team's name.
        team: String,
    },
    /// Move the team to a plan from next month on (admins).
    SetPlan {
        /// The team's name.
        team: String,
        /// The plan's name (see `plinth plan list`).
        plan: String,
    },
    /// Set the team's own limits and budget (admins); a limit left out falls back to the plan's.
    Limits {
        /// The team's name.
        team: String,
        /// Predictions (rows answered) a calendar month, UTC.
        #[arg(long)]
        predictions_per_month: Option<u64>,
        /// Prediction requests a second, over every replica.
        #[arg(long)]
        requests_per_second: Option<u64>,
        /// Bytes of artifacts and datasets the team may store.
        #[arg(long)]
        storage_bytes: Option<u64>,
        /// A monthly budget in US dollars (webhooks are told at 80 % and 100 % of it).
        #[arg(long)]
        budget_usd: Option<f64>,
    },
}

#[derive(Subcommand, Debug)]
pub(crate) enum StatementCmd {
    /// A team's statement of a month (default: this month, open).
    #[command(after_help = "Example:\n  plinth statement show fraud --month 2026-11 --csv")]
    Show {
        /// The team's name.
        team: String,
        /// YYYY-MM (default: this month).
        #[arg(long)]
        month: Option<String>,
        /// The lines as CSV.
        #[arg(long)]
        csv: bool,
    },
    /// A team's months, newest first.
    List {
        /// The team's name.
        team: String,
    },
    /// Every team's statement of a month, for finance (admins).
    Export {
        /// YYYY-MM (default: this month).
        #[arg(long)]
        month: Option<String>,
        /// The lines of every statement as CSV.
        #[arg(long)]
        csv: bool,
    },
}

#[derive(Subcommand, Debug)]
pub(crate) enum PlatformCmd {
    /// Adoption, quality, business and delivery (DORA) of a month, from live figures.
    Report {
        /// YYYY-MM (default: this month).
        #[arg(long)]
        month: Option<String>,
        /// One team's slice (members); the whole platform needs a platform role.
        #[arg(long)]
        team: Option<String>,
    },
}

pub(crate) async fn run(g: &Global, cmd: Command) -> Result<()> {
    let c = connect(g)?;
    let json_out = g.json;
    match cmd {
        Command::Plan(cmd) => plan(&c, json_out, cmd).await,
        Command::Billing(cmd) => billing(&c, json_out, cmd).await,
        Command::Usage { team, month } => {
            let q: Vec<(&str, String)> = month.map(|m| ("month", m)).into_iter().collect();
            let u: Usage = c.get(&format!("/teams/{team}/usage"), &q).await?;
            print_usage(json_out, &u);
            Ok(())
        }
        Command::Statement(cmd) => statement(&c, json_out, cmd).await,
        Command::Platform(PlatformCmd::Report { month, team }) => {
            let mut q = Vec::new();
            q.extend(month.map(|m| ("month", m)));
            q.extend(team.map(|t| ("team", t)));
            let r: PlatformReport = c.get("/platform/report", &q).await?;
            if json_out {
                output::json(&r);
            } else {
                print!("{}", report_tree(&r));
            }
            Ok(())
        }
        Command::Survey { score, comment, team } => {
            let _: serde_json::Value =
                c.post("/survey", &SurveyAnswer { score, comment, team }).await?;
            if !json_out {
                println!("thank you: answer recorded for this month");
            }
            Ok(())
        }
    }
}

async fn plan(c: &Client, json_out: bool, cmd: PlanCmd) -> Result<()> {
    match cmd {
        PlanCmd::List => {
            let plans: Vec<Plan> = c.get("/plans", &[]).await?;
            if json_out {
                output::json(&plans);
            } else {
                output::table(
                    &[
                        "plan",
                        "free a month",
                        "per 1 M beyond",
                        "vCPU-h",
                        "GB-month",
                        "description",
                    ],
                    plans
                        .iter()
                        .map(|p| {
                            vec![
                                p.name.clone(),
                                p.free_predictions.to_string(),
                                tiers(p),
                                format!("${}", p.vcpu_hour_usd),
                                format!("${}", p.storage_gb_month_usd),
                                p.description.clone(),
                            ]
                        })
                        .collect(),
                );
            }
        }
        PlanCmd::Show { name } => {
            let p: Plan = c.get(&format!("/plans/{name}"), &[]).await?;
            output::json(&p);
        }
        PlanCmd::Put { file } => {
            let spec = super::read_spec(&file)?;
            let Some(name) = spec.get("name").and_then(|n| n.as_str()) else {
                return Err(super::usage(format!(
                    "{} has no plan name (name = ...)",
                    file.display()
                )));
            };
            let p: Plan = c.put(&format!("/plans/{name}"), &spec).await?;
            if json_out {
                output::json(&p);
            } else {
                println!("plan {} saved", p.name);
            }
        }
    }
    Ok(())
}

fn tiers(p: &Plan) -> String {
    if p.tiers.is_empty() {
        return "-".into();
    }
    p.tiers
        .iter()
        .map(|t| match t.up_to {
            Some(up) => format!("${} to {up}", t.usd_per_million),
            None => format!("${}", t.usd_per_million),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn quota(q: Option<u64>) -> String {
    q.map_or_else(|| "none".into(), |n| n.to_string())
}

async fn billing(c: &Client, json_out: bool, cmd: BillingCmd) -> Result<()> {
    let b: TeamBilling = match cmd {
        BillingCmd::Show { team } => c.get(&format!("/teams/{team}/billing"), &[]).await?,
        BillingCmd::SetPlan { team, plan } => {
            c.put(&format!("/teams/{team}/billing/plan"), &PlanChange { plan }).await?
        }
        BillingCmd::Limits {
            team,
            predictions_per_month,
            requests_per_second,
            storage_bytes,
            budget_usd,
        } => {
            let update = LimitsUpdate {
                quotas: Quotas { predictions_per_month, requests_per_second, storage_bytes },
                budget_usd,
            };
            c.put(&format!("/teams/{team}/billing/limits"), &update).await?
        }
    };
    if json_out {
        output::json(&b);
        return Ok(());
    }
    let mut fields = vec![
        ("team", b.team.clone()),
        ("plan", b.plan.clone()),
        ("predictions a month", quota(b.quotas.predictions_per_month)),
        ("requests a second", quota(b.quotas.requests_per_second)),
        ("storage bytes", quota(b.quotas.storage_bytes)),
        ("budget", b.budget_usd.map_or_else(|| "none".into(), |u| format!("${u:.2} a month"))),
        (
            "this month",
            format!(
                "{}: {} predictions, ${:.6} so far",
                b.month, b.predictions_this_month, b.cost_this_month_usd
            ),
        ),
        ("stored", crate::output::size(b.storage_bytes)),
    ];
    if let Some(next) = &b.next_plan {
        fields.insert(2, ("from next month", next.clone()));
    }
    output::fields(&fields);
    Ok(())
}

fn print_usage(json_out: bool, u: &Usage) {
    if json_out {
        output::json(u);
        return;
    }
    println!("{} in {}", u.team, u.month);
    output::table(
        &[
            "item",
            "model",
            "subject",
            "version",
            "requests",
            "predictions",
            "CPU s",
            "GB-h",
            "runs",
        ],
        u.items
            .iter()
            .map(|i| {
                vec![
                    i.item.clone(),
                    i.model.clone().unwrap_or_default(),
                    i.subject.clone().unwrap_or_default(),
                    i.version.map(|v| v.to_string()).unwrap_or_default(),
                    i.requests.to_string(),
                    i.predictions.to_string(),
                    format!("{:.3}", i.cpu_seconds),
                    format!("{:.6}", i.gb_hours),
                    i.runs.to_string(),
                ]
            })
            .collect(),
    );
}

async fn statement(c: &Client, json_out: bool, cmd: StatementCmd) -> Result<()> {
    match cmd {
        StatementCmd::Show { team, month, csv } => {
            let month = match month {
                Some(m) => m,
                None => {
                    let b: TeamBilling = c.get(&format!("/teams/{team}/billing"), &[]).await?;
                    b.month
                }
            };
            let path = format!("/teams/{team}/statements/{month}");
            if csv {
                print!("{}", c.get_text(&format!("{path}?format=csv")).await?);
                return Ok(());
            }
            let s: Statement = c.get(&path, &[]).await?;
            if json_out {
                output::json(&s);
            } else {
                print_statement(&s);
            }
        }
        StatementCmd::List { team } => {
            let l: Vec<StatementSummary> = c.get(&format!("/teams/{team}/statements"), &[]).await?;
            if json_out {
                output::json(&l);
            } else {
                output::table(
                    &["month", "status", "predictions", "total"],
                    l.iter()
                        .map(|s| {
                            vec![
                                s.month.clone(),
                                s.status.clone(),
                                s.predictions.to_string(),
                                format!("${:.6}", s.total_usd),
                            ]
                        })
                        .collect(),
                );
            }
        }
        StatementCmd::Export { month, csv } => {
            let mut q: Vec<(&str, String)> = month.map(|m| ("month", m)).into_iter().collect();
            if csv {
                q.push(("format", "csv".into()));
                let query: Vec<String> = q.iter().map(|(k, v)| format!("{k}={v}")).collect();
                print!(
                    "{}",
                    c.get_text(&format!("/billing/statements?{}", query.join("&"))).await?
                );
                return Ok(());
            }
            let all: Vec<Statement> = c.get("/billing/statements", &q).await?;
            if json_out {
                output::json(&all);
            } else {
                for s in &all {
                    print_statement(s);
                    println!();
                }
            }
        }
    }
    Ok(())
}

fn print_statement(s: &Statement) {
    println!(
        "Statement of {} for team {} — plan {}, {}{}",
        s.month,
        s.team,
        s.plan.name,
        s.status,
        s.closed_at.map(|t| format!(" on {}", output::time(&t))).unwrap_or_default()
    );
    let p = &s.predictions;
    println!(
        "predictions: {} ({} requests): {} free, {} billed = ${:.6}",
        p.predictions, p.requests, p.free, p.billed, p.amount_usd
    );
    for t in &p.tiers {
        let to = t.to.map_or_else(|| "...".into(), |n| n.to_string());
        println!(
            "  units {}-{to}: {} x ${} per 1 M = ${:.6}",
            t.from, t.units, t.usd_per_million, t.amount_usd
        );
    }
    output::table(
        &["item", "model", "subject", "quantity", "unit", "rate", "amount"],
        s.lines
            .iter()
            .map(|l| {
                vec![
                    l.item.clone(),
                    l.model.clone().unwrap_or_default(),
                    l.subject.clone().unwrap_or_default(),
                    format!("{}", l.quantity),
                    l.unit.clone(),
                    format!("${:.8}", l.rate_usd),
                    format!("${:.6}", l.amount_usd),
                ]
            })
            .collect(),
    );
    for m in &s.models {
        println!(
            "model {}: {} predictions, ${:.6}{}",
            m.model,
            m.predictions,
            m.amount_usd,
            m.cost_per_1000_predictions_usd
                .map(|c| format!(", ${c:.6} per 1,000 predictions"))
                .unwrap_or_default()
        );
    }
    println!("total: ${:.6}", s.total_usd);
    if let Some(b) = s.budget_usd {
        println!("budget: ${b:.2} ({:.1} % used)", s.total_usd / b * 100.0);
    }
}

fn pct(x: Option<f64>) -> String {
    x.map_or_else(|| "n/a".into(), |v| format!("{:.2} %", v * 100.0))
}

fn spread(p: &Percentiles, unit: &str) -> String {
    match (p.median, p.p90) {
        (Some(m), Some(p90)) => format!("median {m:.1} {unit} (p90 {p90:.1}) over {}", p.count),
        _ => "n/a".into(),
    }
}

/// The report as the brief's dashboard: a tree of adoption, quality, business and delivery.
pub(crate) fn report_tree(r: &PlatformReport) -> String {
    let a = &r.adoption;
    let q = &r.quality;
    let b = &r.business;
    let d = &r.delivery;
    let growth =
        a.growth.map_or_else(String::new, |g| format!(" ({:+.1} % on last month)", g * 100.0));
    let by_team: Vec<String> = b.cost_by_team.iter().map(|(t, c)| format!("{t} ${c:.2}")).collect();
    let sections: Vec<(&str, Vec<(&str, String)>)> = vec![
        (
            "Adoption",
            vec![
                ("teams active", format!("{} of {}", a.teams_active, a.teams_total)),
                (
                    "models",
                    format!(
                        "{} registered, {} in production",
                        a.models_registered, a.models_deployed
                    ),
                ),
                (
                    "predictions",
                    format!(
                        "{} this month{growth}; {} last month",
                        a.predictions_this_month, a.predictions_last_month
                    ),
                ),
            ],
        ),
        (
            "Quality",
            vec![
                (
                    "availability",
                    format!(
                        "{} (target {})",
                        pct(q.availability),
                        pct(Some(q.availability_target))
                    ),
                ),
                (
                    "live accuracy",
                    q.average_live_accuracy.map_or_else(
                        || "n/a (no labels yet)".into(),
                        |acc| format!("{acc:.4} over {} models with labels", q.models_with_labels),
                    ),
                ),
                (
                    "incidents",
                    format!(
                        "{} opened; MTTA {}; MTTR {}",
                        q.incidents_opened,
                        spread(&q.mtta_minutes, "min"),
                        spread(&q.mttr_minutes, "min")
                    ),
                ),
                (
                    "satisfaction",
                    format!("CSAT {} ({} answers)", pct(q.satisfaction), r.satisfaction.answers),
                ),
            ],
        ),
        (
            "Business",
            vec![
                (
                    "cost",
                    format!(
                        "${:.2}{}",
                        b.cost_usd,
                        b.cost_per_prediction_usd
                            .map_or_else(String::new, |c| format!(" (${c:.8} per prediction)"))
                    ),
                ),
                (
                    "cost by team",
                    if by_team.is_empty() { "n/a".into() } else { by_team.join(", ") },
                ),
                ("time to launch", spread(&b.time_to_launch_hours, "h")),
            ],
        ),
        (
            "Delivery (DORA)",
            vec![
                (
                    "deployment frequency",
                    format!(
                        "{} ({} to production this month)",
                        d.deployment_frequency, d.deployments
                    ),
                ),
                ("lead time", spread(&d.lead_time_hours, "h")),
                (
                    "change failure rate",
                    format!("{} (within {} h)", pct(d.change_failure_rate), d.failure_window_hours),
                ),
                ("time to restore", spread(&d.time_to_restore_hours, "h")),
            ],
        ),
    ];
    let scope = r.team.as_deref().map_or_else(|| "all teams".to_string(), |t| format!("team {t}"));
    let mut out = format!("Platform report {} ({scope})\n", r.month);
    let width =
        sections.iter().flat_map(|(_, f)| f.iter().map(|(k, _)| k.len())).max().unwrap_or(0);
    for (i, (name, fields)) in sections.iter().enumerate() {
        let last = i + 1 == sections.len();
        out.push_str(&format!("{} {name}\n", if last { "└──" } else { "├──" }));
        for (j, (k, v)) in fields.iter().enumerate() {
            let stem = if last { "    " } else { "│   " };
            let branch = if j + 1 == fields.len() { "└──" } else { "├──" };
            out.push_str(&format!("{stem}{branch} {k:width$}  {v}\n"));
        }
    }
    out
}
