//! `plinth dataset`, `query` and `source`: datasets as immutable versions, governed SQL, data
//! sources.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use plinth_api::data::{Dataset, DatasetVersion};
use serde_json::{Value, json};

use super::{Global, connect, split_model, usage};
use crate::client::Client;
use crate::output;

/// Datasets, SQL and data sources.
#[derive(Subcommand, Debug)]
pub(crate) enum Command {
    /// Datasets: upload CSV or Parquet files as immutable versions, list, show profiles.
    #[command(subcommand)]
    Dataset(DatasetCmd),
    /// SQL over a team's datasets and sources, and the ones granted to it.
    Query(QueryArgs),
    /// Data sources: files and folders under the server's sources root, PostgreSQL tables.
    #[command(subcommand)]
    Source(SourceCmd),
}

#[derive(Subcommand, Debug)]
pub(crate) enum DatasetCmd {
    /// Upload a CSV (plain or .gz) or Parquet file as the next version of TEAM/NAME.
    Upload {
        /// The dataset, TEAM/NAME (created by its first upload).
        dataset: String,
        /// The file: CSV with a header row (plain or .gz) or Parquet.
        file: PathBuf,
        /// csv or parquet (default: detected from the content).
        #[arg(long)]
        format: Option<String>,
        /// What the dataset holds (kept from its first upload).
        #[arg(long)]
        description: Option<String>,
    },
    /// A team's datasets.
    List {
        /// The team's name.
        team: String,
    },
    /// A dataset's versions, with their schema and profile (TEAM/NAME).
    Show {
        /// The dataset, TEAM/NAME.
        dataset: String,
    },
    /// Let another team read TEAM/NAME (in SQL as "TEAM".NAME).
    Grant {
        /// The dataset, TEAM/NAME.
        dataset: String,
        /// The team that may read it.
        #[arg(long)]
        to: String,
    },
    /// Take a grant back.
    Revoke {
        /// The dataset, TEAM/NAME.
        dataset: String,
        /// The team that may no longer read it.
        #[arg(long)]
        from: String,
    },
}

pub(crate) async fn run(g: &Global, cmd: Command) -> Result<()> {
    match cmd {
        Command::Dataset(cmd) => dataset(&connect(g)?, g.json, cmd).await,
        Command::Query(args) => query(&connect(g)?, g.json, args).await,
        Command::Source(cmd) => source(&connect(g)?, g.json, cmd).await,
    }
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

pub(super) fn dataset_ref(s: &str) -> Result<Value> {
    Ok(match s.split_once('@') {
        Some((n, v)) => {
            let v: u32 = v.parse().map_err(|_| usage(format!("'{v}' is not a version number")))?;
            json!({"name": n, "version": v})
        }
        None => json!({"name": s}),
    })
}

#[derive(Subcommand, Debug)]
pub(crate) enum SourceCmd {
    /// Declare TEAM/NAME: --path for a file or folder (in the team's folder under the server's
    /// sources root), or --database-url with --table or --query for PostgreSQL.
    Add {
        /// The source, TEAM/NAME (NAME is its table name in SQL).
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
        /// PostgreSQL: the table to read, schema.table or table.
        #[arg(long)]
        table: Option<String>,
        /// PostgreSQL: a query to read instead of a table.
        #[arg(long)]
        query: Option<String>,
    },
    List {
        /// The team's name.
        team: String,
    },
    /// Let another team read TEAM/NAME.
    Grant {
        /// The source, TEAM/NAME.
        source: String,
        /// The team that may read it.
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
    /// Return at most this many rows, up to 10000000 (default 100000).
    #[arg(long)]
    max_rows: Option<u64>,
    /// Give up after this many milliseconds, up to 600000 (default 60000).
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
