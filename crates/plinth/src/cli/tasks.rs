//! `plinth task`: background tasks — list, show, logs (optionally followed), cancel.

use std::time::Duration;

use anyhow::Result;
use clap::Subcommand;
use plinth_api::tasks::{Task, TaskLogLine};

use super::{Global, connect};
use crate::client::Client;
use crate::output;

/// Background tasks.
#[derive(Subcommand, Debug)]
pub(crate) enum Command {
    /// Background tasks: list, show, logs, cancel.
    #[command(subcommand)]
    Task(TaskCmd),
}

pub(crate) async fn run(g: &Global, cmd: Command) -> Result<()> {
    match cmd {
        Command::Task(cmd) => task(&connect(g)?, g.json, cmd).await,
    }
}

#[derive(Subcommand, Debug)]
pub(crate) enum TaskCmd {
    /// Tasks you can see, newest first.
    List {
        /// Only this team's tasks.
        #[arg(long)]
        team: Option<String>,
        /// available, scheduled, running, retryable, completed, cancelled or discarded.
        #[arg(long)]
        state: Option<String>,
        /// evaluation, materialize, webhook.delivery, ...
        #[arg(long)]
        kind: Option<String>,
        /// The most tasks to show, at most 500 (default 50).
        #[arg(long)]
        limit: Option<u32>,
    },
    /// One task: state, attempts, errors, progress, result.
    Show {
        /// The task's id (see `plinth task list`).
        id: String,
    },
    /// A task's log, oldest line first.
    Logs {
        /// The task's id (see `plinth task list`).
        id: String,
        /// Keep printing new lines until the task is over.
        #[arg(long)]
        follow: bool,
    },
    /// Cancel a task: at once when it waits, at its runner's next heartbeat when it runs.
    Cancel {
        /// The task's id (see `plinth task list`).
        id: String,
    },
}

fn state(t: &Task) -> String {
    t.state.as_str().replace('_', " ")
}

fn print_task(json_out: bool, t: &Task) {
    if json_out {
        output::json(t);
        return;
    }
    let mut fields = vec![
        ("task", t.id.clone()),
        ("kind", t.kind.clone()),
        ("team", t.team.clone().unwrap_or_else(|| "(platform)".into())),
        ("state", state(t)),
        ("attempt", format!("{} of {}", t.attempt, t.max_attempts)),
        ("progress", format!("{:.0} %", t.progress * 100.0)),
        ("queue", format!("{} (priority {})", t.queue, t.priority)),
        ("created", format!("{} by {}", output::time(&t.created_at), t.created_by)),
    ];
    if let Some(note) = &t.progress_note {
        fields.push(("now", note.clone()));
    }
    if let Some(runner) = &t.runner {
        fields.push(("runner", runner.clone()));
    }
    if !t.state.finished() && t.state != plinth_api::tasks::TaskState::Running {
        fields.push(("runs at", output::time(&t.scheduled_at)));
    }
    if let Some(f) = &t.finished_at {
        fields.push(("finished", output::time(f)));
    }
    output::fields(&fields);
    for e in &t.errors {
        println!("attempt {} failed at {}: {}", e.attempt, output::time(&e.at), e.error);
    }
    if let Some(r) = &t.result {
        println!("result: {r}");
    }
}

pub(super) async fn task(c: &Client, json_out: bool, cmd: TaskCmd) -> Result<()> {
    match cmd {
        TaskCmd::List { team, state: s, kind, limit } => {
            let mut q = Vec::new();
            q.extend(team.map(|t| ("team", t)));
            q.extend(s.map(|s| ("state", s)));
            q.extend(kind.map(|k| ("kind", k)));
            q.extend(limit.map(|l| ("limit", l.to_string())));
            let l: Vec<Task> = c.get("/tasks", &q).await?;
            if json_out {
                output::json(&l);
            } else {
                output::table(
                    &["task", "kind", "team", "state", "attempt", "progress", "created"],
                    l.iter()
                        .map(|t| {
                            vec![
                                t.id.clone(),
                                t.kind.clone(),
                                t.team.clone().unwrap_or_default(),
                                state(t),
                                format!("{}/{}", t.attempt, t.max_attempts),
                                format!("{:.0} %", t.progress * 100.0),
                                output::time(&t.created_at),
                            ]
                        })
                        .collect(),
                );
            }
        }
        TaskCmd::Show { id } => {
            let t: Task = c.get(&format!("/tasks/{id}"), &[]).await?;
            print_task(json_out, &t);
        }
        TaskCmd::Logs { id, follow } => {
            let mut after = 0u64;
            loop {
                let lines: Vec<TaskLogLine> =
                    c.get(&format!("/tasks/{id}/logs"), &[("after", after.to_string())]).await?;
                for l in &lines {
                    if json_out {
                        println!("{}", serde_json::to_string(l)?);
                    } else {
                        println!("{} {:5} {}", output::time(&l.at), l.level, l.message);
                    }
                    after = l.seq;
                }
                if !follow {
                    break;
                }
                if lines.is_empty() {
                    let t: Task = c.get(&format!("/tasks/{id}"), &[]).await?;
                    if t.state.finished() {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            }
        }
        TaskCmd::Cancel { id } => {
            let t: Task = c.post(&format!("/tasks/{id}/cancel"), &serde_json::json!({})).await?;
            print_task(json_out, &t);
        }
    }
    Ok(())
}
