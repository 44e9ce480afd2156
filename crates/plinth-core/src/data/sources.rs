//! Data sources: a team's files and folders (under the server's local sources root, never
//! outside it) and PostgreSQL tables or queries, readable in SQL by name like datasets, and
//! grantable to other teams. PostgreSQL data is read with `COPY ... TO STDOUT (FORMAT csv)`.

use std::path::{Path, PathBuf};

use futures_util::StreamExt;
use plinth_api::Code;
use plinth_api::data::{CreateSource, DatasetGrant, Source, SourceKind};
use plinth_api::identity::TeamRole;
use serde::{Deserialize, Serialize};
use serde_json::json;
use sqlx::any::AnyRow;

use super::query::{QueryTable, Readable};
use super::{FileFormat, LocalFile};
use crate::Plinth;
use crate::audit::{self, Target};
use crate::auth::Principal;
use crate::error::{Error, Result};
use crate::store::{Sql, col};
use crate::util::{check_name, micros_to_time, new_id, now_micros};

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Spec {
    path: Option<String>,
    url: Option<String>,
    table: Option<String>,
    query: Option<String>,
}

fn kind_str(k: SourceKind) -> &'static str {
    match k {
        SourceKind::File => "file",
        SourceKind::Folder => "folder",
        SourceKind::Postgres => "postgres",
    }
}

fn parse_kind(s: &str) -> SourceKind {
    match s {
        "file" => SourceKind::File,
        "folder" => SourceKind::Folder,
        _ => SourceKind::Postgres,
    }
}

/// A file's format by its name: `.parquet`, `.csv` or `.csv.gz`.
fn file_format(path: &Path) -> Option<FileFormat> {
    let name = path.file_name()?.to_str()?.to_ascii_lowercase();
    if name.ends_with(".parquet") {
        Some(FileFormat::Parquet)
    } else if name.ends_with(".csv") || name.ends_with(".csv.gz") {
        Some(FileFormat::Csv)
    } else {
        None
    }
}

/// `schema.table` or `table`, plain identifiers only.
fn check_table(t: &str) -> Result<()> {
    let ok = !t.is_empty()
        && t.split('.').count() <= 2
        && t.split('.').all(|p| {
            !p.is_empty()
                && p.chars().next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                && p.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        });
    if ok {
        Ok(())
    } else {
        Err(Error::invalid("table", "a table is `name` or `schema.name` of letters, digits and _"))
    }
}

fn host_of(url: &str) -> String {
    let rest = url.split_once("://").map_or(url, |x| x.1);
    rest.rsplit_once('@').map_or(rest, |x| x.1).to_string()
}

fn source_from_row(r: &AnyRow, team: &str) -> Result<Source> {
    let spec: Spec = serde_json::from_str(&col::<String>(r, "spec")?)?;
    Ok(Source {
        team: team.to_string(),
        name: col(r, "name")?,
        kind: parse_kind(&col::<String>(r, "kind")?),
        path: spec.path,
        host: spec.url.as_deref().map(host_of),
        table: spec.table,
        query: spec.query,
        created_at: micros_to_time(col(r, "created_at")?),
    })
}

impl Plinth {
    /// The local path of a file or folder source, checked to be inside the sources root.
    fn local_path(&self, path: &str) -> Result<PathBuf> {
        let root = self.sources_root.as_ref().ok_or_else(|| {
            Error::new(
                Code::FeatureDisabled,
                "file and folder sources need the server's local_sources_root setting",
            )
            .with_field("kind")
        })?;
        let root = root
            .canonicalize()
            .map_err(|e| Error::new(Code::Unavailable, format!("local_sources_root: {e}")))?;
        let full = root.join(path.trim_start_matches('/')).canonicalize().map_err(|_| {
            Error::invalid("path", format!("'{path}' does not exist under the sources root"))
        })?;
        if !full.starts_with(&root) {
            return Err(Error::invalid("path", format!("'{path}' leads outside the sources root")));
        }
        Ok(full)
    }

    /// Declares a data source of the team (maintainers).
    pub async fn create_source(
        &self,
        who: &Principal,
        team: &str,
        req: CreateSource,
    ) -> Result<Source> {
        let t = self.team_ref(who, team).await?;
        who.require(&t, TeamRole::Maintainer, "adding a data source")?;
        check_name("name", &req.name)?;
        let spec = match req.kind {
            SourceKind::File | SourceKind::Folder => {
                if req.url.is_some() || req.table.is_some() || req.query.is_some() {
                    return Err(Error::invalid("kind", "file and folder sources take a path only"));
                }
                let path = req.path.clone().ok_or_else(|| {
                    Error::missing("path", "where the data is, under the sources root")
                })?;
                let full = self.local_path(&path)?;
                if req.kind == SourceKind::File && (!full.is_file() || file_format(&full).is_none())
                {
                    return Err(Error::invalid("path", "not a .parquet, .csv or .csv.gz file"));
                }
                if req.kind == SourceKind::Folder && !full.is_dir() {
                    return Err(Error::invalid("path", "not a folder"));
                }
                Spec { path: Some(path), ..Default::default() }
            }
            SourceKind::Postgres => {
                if req.path.is_some() {
                    return Err(Error::invalid(
                        "path",
                        "PostgreSQL sources take a url and a table or query",
                    ));
                }
                let url = req
                    .url
                    .clone()
                    .ok_or_else(|| Error::missing("url", "postgres://user:password@host/db"))?;
                if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
                    return Err(Error::invalid("url", "must be a postgres:// URL"));
                }
                match (&req.table, &req.query) {
                    (Some(t), None) => check_table(t)?,
                    (None, Some(q)) if !q.trim().is_empty() => {}
                    _ => {
                        return Err(Error::invalid(
                            "table",
                            "give a table or a query, one of them",
                        ));
                    }
                }
                let spec = Spec {
                    url: Some(url),
                    table: req.table.clone(),
                    query: req.query.clone(),
                    path: None,
                };
                // Read nothing, but prove the table or query works with these credentials.
                self.postgres_csv(&spec, Some(0)).await?;
                spec
            }
        };
        let id = new_id("src");
        let now = now_micros();
        let mut tx = self.db.begin().await?;
        Sql::with(
            "INSERT INTO sources (id, team_id, name, kind, spec, created_at, created_by) VALUES ($1, $2, $3, $4, $5, $6, $7)",
            [id.clone().into(), t.id.clone().into(), req.name.clone().into(), kind_str(req.kind).into(), serde_json::to_string(&spec)?.into(), now.into(), who.id.clone().into()],
        )
        .execute_unique(&mut tx, || Error::already_exists("source", &req.name).with_field("name"))
        .await?;
        let target = Target {
            team_id: Some(&t.id),
            object_type: "source",
            object_id: &id,
            object_name: &req.name,
        };
        audit::record(&mut tx, who, "source.create", target, json!({"kind": kind_str(req.kind), "path": spec.path, "host": spec.url.as_deref().map(host_of), "table": spec.table, "query": spec.query})).await?;
        tx.commit().await?;
        Ok(Source {
            team: t.name,
            name: req.name,
            kind: req.kind,
            path: spec.path,
            host: spec.url.as_deref().map(host_of),
            table: spec.table,
            query: spec.query,
            created_at: micros_to_time(now),
        })
    }

    pub async fn list_sources(&self, who: &Principal, team: &str) -> Result<Vec<Source>> {
        let t = self.team_ref(who, team).await?;
        let rows = self
            .db
            .fetch_all(&Sql::with(
                "SELECT * FROM sources WHERE team_id = $1 ORDER BY name",
                [t.id.clone().into()],
            ))
            .await?;
        rows.iter().map(|r| source_from_row(r, &t.name)).collect()
    }

    /// Lets another team read a source (maintainers).
    pub async fn grant_source(
        &self,
        who: &Principal,
        team: &str,
        name: &str,
        req: DatasetGrant,
    ) -> Result<()> {
        let t = self.team_ref(who, team).await?;
        who.require(&t, TeamRole::Maintainer, "granting a source")?;
        let src = self
            .db
            .fetch_optional(&Sql::with(
                "SELECT id FROM sources WHERE team_id = $1 AND name = $2",
                [t.id.clone().into(), name.into()],
            ))
            .await?
            .ok_or_else(|| Error::not_found("source", format!("{}/{name}", t.name)))?;
        let src: String = col(&src, "id")?;
        self.grant_read(who, &t, Readable::Source, &src, name, &req.team).await
    }

    /// The sources a team's query names: its own, and those granted to it (with the owner's
    /// name as schema).
    pub(crate) async fn source_tables(&self, team_id: &str, sql: &str) -> Result<Vec<QueryTable>> {
        let rows = self
            .db
            .fetch_all(&Sql::with(
                "SELECT NULL AS owner, s.name, s.kind, s.spec FROM sources s WHERE s.team_id = $1
                 UNION ALL
                 SELECT t.name AS owner, s.name, s.kind, s.spec FROM source_grants g JOIN sources s ON s.id = g.source_id
                   JOIN teams t ON t.id = s.team_id WHERE g.team_id = $1",
                [team_id.into()],
            ))
            .await?;
        let mut out = Vec::new();
        for r in &rows {
            let name: String = col(r, "name")?;
            if !sql.contains(name.as_str()) {
                continue;
            }
            let spec: Spec = serde_json::from_str(&col::<String>(r, "spec")?)?;
            let parts = match parse_kind(&col::<String>(r, "kind")?) {
                SourceKind::File => {
                    let p = self.local_path(spec.path.as_deref().unwrap_or_default())?;
                    let format = file_format(&p).unwrap_or(FileFormat::Csv);
                    vec![LocalFile::new(p, format)]
                }
                SourceKind::Folder => {
                    let dir = self.local_path(spec.path.as_deref().unwrap_or_default())?;
                    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)?
                        .filter_map(|e| e.ok().map(|e| e.path()))
                        .filter(|p| p.is_file() && file_format(p).is_some())
                        .collect();
                    files.sort();
                    files
                        .into_iter()
                        .map(|f| {
                            let format = file_format(&f).unwrap_or(FileFormat::Csv);
                            LocalFile::new(f, format)
                        })
                        .collect()
                }
                SourceKind::Postgres => vec![self.postgres_file(&spec).await?],
            };
            out.push(QueryTable { schema: col(r, "owner")?, name, parts });
        }
        Ok(out)
    }

    /// A PostgreSQL table or query as a CSV file in staging, streamed there by `COPY`.
    async fn postgres_file(&self, spec: &Spec) -> Result<LocalFile> {
        use sqlx::Connection;
        let (mut conn, copy) = postgres_copy(spec, None).await?;
        let fail = |e: &dyn std::fmt::Display| pg_error(spec, e);
        let stream = conn.copy_out_raw(&copy).await.map_err(|e| fail(&e))?;
        let mut reader = tokio_util::io::StreamReader::new(
            stream
                .map(|chunk| chunk.map_err(|e| std::io::Error::other(pg_error(spec, &e).message))),
        );
        let staged = self
            .staging()
            .receive(&mut reader, u64::MAX)
            .await
            .map_err(|e| if e.code == Code::InvalidRequest { fail(&e.message) } else { e })?;
        drop(reader);
        let _ = conn.close().await;
        Ok(LocalFile::staged(staged, FileFormat::Csv))
    }

    /// A PostgreSQL table or query as CSV with a header (at most `limit` rows).
    async fn postgres_csv(&self, spec: &Spec, limit: Option<u64>) -> Result<Vec<u8>> {
        use sqlx::Connection;
        let (mut conn, copy) = postgres_copy(spec, limit).await?;
        let mut stream = conn.copy_out_raw(&copy).await.map_err(|e| pg_error(spec, &e))?;
        let mut out = Vec::new();
        while let Some(chunk) = stream.next().await {
            out.extend_from_slice(&chunk.map_err(|e| pg_error(spec, &e))?);
        }
        drop(stream);
        let _ = conn.close().await;
        Ok(out)
    }
}

fn pg_error(spec: &Spec, e: &dyn std::fmt::Display) -> Error {
    let url = spec.url.as_deref().unwrap_or_default();
    Error::invalid("url", format!("PostgreSQL at {}: {e}", host_of(url)))
}

/// A connection to a PostgreSQL source and the `COPY` that reads it as CSV with a header (at
/// most `limit` rows).
async fn postgres_copy(
    spec: &Spec,
    limit: Option<u64>,
) -> Result<(sqlx::postgres::PgConnection, String)> {
    use sqlx::Connection;
    let url = spec.url.as_deref().unwrap_or_default();
    let conn = sqlx::postgres::PgConnection::connect(url).await.map_err(|e| pg_error(spec, &e))?;
    let select = match (&spec.table, &spec.query) {
        (Some(t), _) => format!("SELECT * FROM {t}"),
        (None, Some(q)) => q.trim().trim_end_matches(';').to_string(),
        _ => return Err(Error::invalid("table", "give a table or a query")),
    };
    let select = match limit {
        Some(n) => format!("SELECT * FROM ({select}) AS q LIMIT {n}"),
        None => select,
    };
    Ok((conn, format!("COPY ({select}) TO STDOUT (FORMAT csv, HEADER true)")))
}
