//! Governed SQL: the core decides which tables a query may see (the team's own datasets, and
//! the datasets other teams granted it) and hands exactly those to a [`QueryEngine`] (DataFusion,
//! in the `plinth-query` crate). Grants of datasets to other teams live here too.

use std::time::Duration;

use plinth_api::Code;
use plinth_api::data::{DatasetGrant, DatasetVersion, QueryRequest, UploadDataset};
use plinth_api::identity::TeamRole;
use serde_json::json;

use super::FileFormat;
use crate::Plinth;
use crate::audit::{self, Target};
use crate::auth::Principal;
use crate::error::{Error, Result};
use crate::store::{Sql, col};
use crate::util::now_micros;

/// What a grant lets another team read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Readable {
    Dataset,
    Source,
}

/// A table a query may read: `schema` is `None` for the caller's own datasets and sources, the
/// owning team's name for granted ones. Its rows are the files in `parts` (one schema).
#[derive(Debug, Clone)]
pub struct QueryTable {
    pub schema: Option<String>,
    pub name: String,
    pub parts: Vec<(Vec<u8>, FileFormat)>,
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
    pub timeout: Duration,
    /// Memory the engine may use for operators (sorts, joins, aggregations).
    pub memory_bytes: usize,
}

/// A finished query.
#[derive(Debug)]
pub struct QueryOutput {
    pub bytes: Vec<u8>,
    pub rows: u64,
    /// True when more rows than `max_rows` existed.
    pub truncated: bool,
}

/// Runs SQL over the given tables only. Errors are the engine's message (the query's fault).
#[async_trait::async_trait]
pub trait QueryEngine: Send + Sync {
    async fn run(
        &self,
        tables: Vec<QueryTable>,
        sql: &str,
        limits: QueryLimits,
        format: ResultFormat,
    ) -> std::result::Result<QueryOutput, String>;
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
    ) -> std::result::Result<QueryOutput, String> {
        Err("this build of Plinth has no SQL engine (crate plinth-query)".into())
    }
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
    ) -> Result<(QueryOutput, ResultFormat, Option<DatasetVersion>)> {
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
            // Only tables the query names are loaded (a cheap, conservative textual check).
            if !req.sql.contains(name.as_str()) {
                continue;
            }
            let format: String = col(r, "format")?;
            let bytes = self.dataset_bytes(&col::<String>(r, "version_id")?).await?;
            let format = FileFormat::parse(&format).unwrap_or(FileFormat::Csv);
            tables.push(QueryTable {
                schema: col(r, "owner")?,
                name,
                parts: vec![(bytes, format)],
            });
        }
        tables.extend(self.source_tables(&t.id, &req.sql).await?);
        let limits = QueryLimits {
            max_rows: max_rows as usize,
            timeout: Duration::from_millis(timeout_ms),
            memory_bytes: 512 * 1024 * 1024,
        };
        let out = self
            .query_engine
            .run(tables, &req.sql, limits, format)
            .await
            .map_err(|e| Error::new(Code::InvalidField, e).with_field("sql"))?;
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
            json!({"sql": req.sql, "rows": out.rows, "save_as": req.save_as}),
        )
        .await?;
        tx.commit().await?;
        let saved = match &req.save_as {
            Some(name) => {
                let staged = self.staging().receive(&mut out.bytes.as_slice(), u64::MAX).await?;
                let upload = UploadDataset {
                    format: Some("parquet".into()),
                    source: Some(format!("query: {}", req.sql)),
                    description: None,
                };
                Some(self.upload_dataset(who, team, name, upload, staged).await?)
            }
            None => None,
        };
        Ok((out, format, saved))
    }
}
