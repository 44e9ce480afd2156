//! Governed SQL: the core decides which tables a query may see (the team's own datasets, and
//! the datasets other teams granted it) and hands exactly those to a [`QueryEngine`] (DataFusion,
//! in the `plinth-query` crate). Grants of datasets to other teams live here too.

use std::time::Duration;

use plinth_api::Code;
use plinth_api::data::{DatasetGrant, DatasetVersion, QueryRequest, UploadDataset};
use plinth_api::identity::TeamRole;
use serde_json::json;

use super::LocalFile;
use crate::Plinth;
use crate::audit::{self, Target};
use crate::auth::Principal;
use crate::error::{Error, Result};
use crate::store::{Sql, col};
use crate::util::now_micros;
use tokio::sync::mpsc;

/// What a grant lets another team read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Readable {
    Dataset,
    Source,
}

/// A table a query may read: `schema` is `None` for the caller's own datasets and sources, the
/// owning team's name for granted ones. Its rows are the files in `parts` (one schema), read in
/// place as the query runs.
#[derive(Debug)]
pub struct QueryTable {
    pub schema: Option<String>,
    pub name: String,
    pub parts: Vec<LocalFile>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResultFormat {
    JsonLines,
    Csv,
    Parquet,
}

impl ResultFormat {
    pub fn content_type(self) -> &'static str {
        match self {
            ResultFormat::JsonLines => "application/x-ndjson",
            ResultFormat::Csv => "text/csv",
            ResultFormat::Parquet => "application/vnd.apache.parquet",
        }
    }
}

#[derive(Debug, Clone, Copy)]
pub struct QueryLimits {
    pub max_rows: usize,
    /// How long the query may run, counted from `started` (the request's start: copying its
    /// PostgreSQL sources counts too).
    pub timeout: Duration,
    pub started: std::time::Instant,
    /// Memory the engine may use for operators (sorts, joins, aggregations).
    pub memory_bytes: usize,
}

/// What a running query hands over, in order: encoded rows as they are produced, then how it
/// ended.
#[derive(Debug)]
pub enum QueryEvent {
    /// The next bytes of the result, in its format.
    Rows(Vec<u8>),
    /// Every row was sent. `truncated`: more than `max_rows` rows existed.
    Done { rows: u64, truncated: bool },
    /// The query failed after it started answering (a bad row, the time limit).
    Failed(String),
}

/// How many encoded chunks may wait for a slow reader before the query pauses: the result is
/// streamed, never held whole.
pub const QUERY_BUFFER: usize = 4;

/// Runs SQL over the given tables only. Errors are the engine's message (the query's fault).
#[async_trait::async_trait]
pub trait QueryEngine: Send + Sync {
    /// Plans the query and starts it; its result arrives on the returned channel while it runs
    /// (at most [`QUERY_BUFFER`] chunks ahead of the reader). Planning errors, and errors before
    /// the first rows, are returned here.
    async fn run(
        &self,
        tables: Vec<QueryTable>,
        sql: &str,
        limits: QueryLimits,
        format: ResultFormat,
    ) -> std::result::Result<mpsc::Receiver<QueryEvent>, String>;
}

/// The engine of a build without SQL.
pub struct NoQuery;

#[async_trait::async_trait]
impl QueryEngine for NoQuery {
    async fn run(
        &self,
        _: Vec<QueryTable>,
        _: &str,
        _: QueryLimits,
        _: ResultFormat,
    ) -> std::result::Result<mpsc::Receiver<QueryEvent>, String> {
        Err("this build of Plinth has no SQL engine (crate plinth-query)".into())
    }
}

/// A query's answer: rows streaming in a format, or the dataset version they were saved as.
#[derive(Debug)]
pub enum QueryAnswer {
    Rows { format: ResultFormat, events: mpsc::Receiver<QueryEvent> },
    Saved(DatasetVersion),
}

impl Plinth {
    /// Lets `req.team` read dataset `team/name` (maintainers).
    pub async fn grant_dataset(
        &self,
        who: &Principal,
        team: &str,
        name: &str,
        req: DatasetGrant,
    ) -> Result<()> {
        let t = self.team_ref(who, team).await?;
        who.require(&t, TeamRole::Maintainer, "granting a dataset")?;
        let ds = self.dataset_id(&t.id, &t.name, name).await?;
        self.grant_read(who, &t, Readable::Dataset, &ds, name, &req.team).await
    }

    /// Records that team `to` may read a dataset or source of team `t` (replacing an earlier
    /// grant), with its audit entry.
    pub(crate) async fn grant_read(
        &self,
        who: &Principal,
        t: &crate::auth::TeamRef,
        what: Readable,
        object_id: &str,
        object_name: &str,
        to: &str,
    ) -> Result<()> {
        let (kind, delete, insert) = match what {
            Readable::Dataset => (
                "dataset",
                "DELETE FROM dataset_grants WHERE dataset_id = $1 AND team_id = $2",
                "INSERT INTO dataset_grants (dataset_id, team_id, created_at, created_by) VALUES ($1, $2, $3, $4)",
            ),
            Readable::Source => (
                "source",
                "DELETE FROM source_grants WHERE source_id = $1 AND team_id = $2",
                "INSERT INTO source_grants (source_id, team_id, created_at, created_by) VALUES ($1, $2, $3, $4)",
            ),
        };
        let to_id = self
            .db
            .fetch_optional(&Sql::with("SELECT id FROM teams WHERE name = $1", [to.into()]))
            .await?
            .ok_or_else(|| Error::not_found("team", to).with_field("team"))?;
        let to_id: String = col(&to_id, "id")?;
        if to_id == t.id {
            return Err(Error::invalid("team", format!("a team always reads its own {kind}s")));
        }
        let mut tx = self.db.begin().await?;
        Sql::with(delete, [object_id.into(), to_id.clone().into()]).execute(&mut tx).await?;
        Sql::with(
            insert,
            [object_id.into(), to_id.into(), now_micros().into(), who.id.clone().into()],
        )
        .execute(&mut tx)
        .await?;
        let target = Target { team_id: Some(&t.id), object_type: kind, object_id, object_name };
        audit::record(&mut tx, who, &format!("{kind}.grant"), target, json!({"team": to})).await?;
        tx.commit().await
    }

    pub async fn revoke_dataset(
        &self,
        who: &Principal,
        team: &str,
        name: &str,
        from: &str,
    ) -> Result<()> {
        let t = self.team_ref(who, team).await?;
        who.require(&t, TeamRole::Maintainer, "revoking a dataset grant")?;
        let ds = self.dataset_id(&t.id, &t.name, name).await?;
        let mut tx = self.db.begin().await?;
        let n = Sql::with(
            "DELETE FROM dataset_grants WHERE dataset_id = $1 AND team_id = (SELECT id FROM teams WHERE name = $2)",
            [ds.clone().into(), from.into()],
        )
        .execute(&mut tx)
        .await?;
        if n == 0 {
            return Err(Error::not_found("grant", format!("{team}/{name} to {from}")));
        }
        let target = Target {
            team_id: Some(&t.id),
            object_type: "dataset",
            object_id: &ds,
            object_name: name,
        };
        audit::record(&mut tx, who, "dataset.revoke", target, json!({"team": from})).await?;
        tx.commit().await
    }

    async fn dataset_id(&self, team_id: &str, team: &str, name: &str) -> Result<String> {
        let r = self
            .db
            .fetch_optional(&Sql::with(
                "SELECT id FROM datasets WHERE team_id = $1 AND name = $2",
                [team_id.into(), name.into()],
            ))
            .await?
            .ok_or_else(|| Error::not_found("dataset", format!("{team}/{name}")))?;
        col(&r, "id")
    }

    /// Runs SQL as `team` over its datasets and the ones granted to it. With `save_as`, the
    /// result becomes a dataset version whose source is the query (lineage).
    pub async fn query(
        &self,
        who: &Principal,
        team: &str,
        req: QueryRequest,
    ) -> Result<QueryAnswer> {
        let t = self.team_ref(who, team).await?;
        who.require(&t, TeamRole::Viewer, "querying")?;
        if req.sql.trim().is_empty() {
            return Err(Error::missing("sql", "the query to run"));
        }
        crate::util::check_text("sql", &req.sql, 100_000)?;
        let format = match (req.format.as_deref(), &req.save_as) {
            (_, Some(_)) => ResultFormat::Parquet,
            (None | Some("jsonl"), None) => ResultFormat::JsonLines,
            (Some("csv"), None) => ResultFormat::Csv,
            (Some("parquet"), None) => ResultFormat::Parquet,
            (Some(other), None) => {
                return Err(Error::invalid(
                    "format",
                    format!("'{other}' is not jsonl, csv or parquet"),
                ));
            }
        };
        let max_rows = req.max_rows.unwrap_or(100_000);
        if !(1..=10_000_000).contains(&max_rows) {
            return Err(Error::invalid("max_rows", "must be 1-10000000"));
        }
        let timeout_ms = req.timeout_ms.unwrap_or(60_000);
        if !(1..=600_000).contains(&timeout_ms) {
            return Err(Error::invalid("timeout_ms", "must be 1-600000"));
        }
        if let Some(name) = &req.save_as {
            crate::util::check_name("save_as", name)?;
            who.require(&t, TeamRole::Developer, "saving a dataset")?;
        }
        // The tables this team may read: its datasets, then those granted to it.
        let rows = self
            .db
            .fetch_all(&Sql::with(
                "SELECT NULL AS owner, d.name, v.id AS version_id, v.format FROM datasets d
                   JOIN dataset_versions v ON v.dataset_id = d.id AND v.version = d.latest_version WHERE d.team_id = $1
                 UNION ALL
                 SELECT t.name AS owner, d.name, v.id AS version_id, v.format FROM dataset_grants g
                   JOIN datasets d ON d.id = g.dataset_id JOIN teams t ON t.id = d.team_id
                   JOIN dataset_versions v ON v.dataset_id = d.id AND v.version = d.latest_version WHERE g.team_id = $1",
                [t.id.clone().into()],
            ))
            .await?;
        let mut tables = Vec::with_capacity(rows.len());
        for r in &rows {
            let name: String = col(r, "name")?;
            // Only tables the query names are opened (a cheap, conservative textual check).
            if !req.sql.contains(name.as_str()) {
                continue;
            }
            let file = self.dataset_file(&col::<String>(r, "version_id")?).await?;
            tables.push(QueryTable { schema: col(r, "owner")?, name, parts: vec![file] });
        }
        // Copying a PostgreSQL source counts against the query's time limit.
        let timeout = Duration::from_millis(timeout_ms);
        let started = std::time::Instant::now();
        tables.extend(self.source_tables(&t.id, &req.sql, timeout).await?);
        let limits = QueryLimits {
            max_rows: max_rows as usize,
            timeout,
            started,
            memory_bytes: 512 * 1024 * 1024,
        };
        let bad_sql = |e: String| Error::new(Code::InvalidField, e).with_field("sql");
        let events =
            self.query_engine.run(tables, &req.sql, limits, format).await.map_err(bad_sql)?;
        // Recorded before any row leaves.
        let mut tx = self.db.begin().await?;
        let target = Target {
            team_id: Some(&t.id),
            object_type: "query",
            object_id: &t.id,
            object_name: &t.name,
        };
        audit::record(
            &mut tx,
            who,
            "query.run",
            target,
            json!({"sql": req.sql, "format": format.content_type(), "save_as": req.save_as}),
        )
        .await?;
        tx.commit().await?;
        let Some(name) = &req.save_as else {
            return Ok(QueryAnswer::Rows { format, events });
        };
        // Saved: the Parquet stream goes to staging (hashed as it lands), then becomes a version.
        let failure = std::sync::Arc::new(std::sync::Mutex::new(None::<String>));
        let seen = failure.clone();
        let chunks = futures_util::stream::unfold(Some(events), move |events| {
            let seen = seen.clone();
            async move {
                let mut events = events?;
                let failed = match events.recv().await {
                    Some(QueryEvent::Rows(b)) => {
                        return Some((Ok(bytes::Bytes::from(b)), Some(events)));
                    }
                    Some(QueryEvent::Done { .. }) => return None,
                    Some(QueryEvent::Failed(m)) => m,
                    None => "the query stopped before its last row".to_string(),
                };
                *seen.lock().expect("failure lock") = Some(failed.clone());
                Some((Err(std::io::Error::other(failed)), None))
            }
        });
        let mut reader = tokio_util::io::StreamReader::new(Box::pin(chunks));
        let staged = match self.staging().receive(&mut reader, u64::MAX).await {
            Ok(s) => s,
            Err(e) => {
                let failed = failure.lock().expect("failure lock").take();
                return Err(failed.map(bad_sql).unwrap_or(e));
            }
        };
        let upload = UploadDataset {
            format: Some("parquet".into()),
            source: Some(format!("query: {}", req.sql)),
            description: None,
        };
        Ok(QueryAnswer::Saved(self.upload_dataset(who, team, name, upload, staged).await?))
    }
}
