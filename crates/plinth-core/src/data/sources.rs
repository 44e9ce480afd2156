//! Data sources: a team's files and folders and PostgreSQL tables or queries, readable in SQL by
//! name like datasets, and grantable to other teams.
//!
//! - Files and folders live in the team's own folder, `<local_sources_root>/<team>/`: every
//!   file a source reads is resolved (symbolic links followed) and refused unless it is inside
//!   that folder.
//! - PostgreSQL sources reach only the hosts the server's configuration allows
//!   ([`PostgresAccess`], none by default), connect within a time limit, and read in a read-only
//!   transaction with a role that is neither a superuser nor allowed to read server files. A
//!   failed connection is reported the same way whatever the network said. Data is read with
//!   `COPY ... TO STDOUT (FORMAT csv)`.

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

/// Which PostgreSQL servers sources may read, how long a connection may take, and how much a
/// query may copy out of them.
#[derive(Debug, Clone)]
pub struct PostgresAccess {
    /// `host`, `host:port` or `host:port/database`; empty: PostgreSQL sources are refused.
    pub allowed_hosts: Vec<String>,
    pub connect_timeout: std::time::Duration,
    /// The most bytes (as CSV) one source may give one query.
    pub max_bytes: u64,
}

impl Default for PostgresAccess {
    fn default() -> Self {
        PostgresAccess {
            allowed_hosts: Vec::new(),
            connect_timeout: std::time::Duration::from_secs(5),
            max_bytes: 1 << 30,
        }
    }
}

/// How long a source's reading may take when no query bounds it (a preview, a schema).
const READ_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

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
    /// The team's own folder under the sources root, resolved.
    fn team_folder(&self, team: &str) -> Result<PathBuf> {
        let root = self.sources_root.as_ref().ok_or_else(|| {
            Error::new(
                Code::FeatureDisabled,
                "file and folder sources need the server's local_sources_root setting",
            )
            .with_field("kind")
        })?;
        root.join(team).canonicalize().map_err(|_| {
            Error::invalid(
                "path",
                format!("team '{team}' has no folder under the sources root: an operator creates <local_sources_root>/{team} and puts the team's files there"),
            )
        })
    }

    /// The local path of a file or folder source: inside the team's folder, symbolic links
    /// resolved (a path of "" or "/" is the folder itself).
    fn local_path(&self, team: &str, path: &str) -> Result<PathBuf> {
        let folder = self.team_folder(team)?;
        let full = folder.join(path.trim_start_matches('/')).canonicalize().map_err(|_| {
            Error::invalid("path", format!("'{path}' does not exist in the team's folder"))
        })?;
        if !full.starts_with(&folder) {
            return Err(Error::invalid(
                "path",
                format!("'{path}' leads outside the team's folder"),
            ));
        }
        Ok(full)
    }

    /// The data files of a folder source, each resolved and refused if it leads outside the
    /// team's folder (a symbolic link to any file of the host, say).
    fn folder_files(&self, team: &str, dir: &Path, source: &str) -> Result<Vec<PathBuf>> {
        let folder = self.team_folder(team)?;
        let mut files = Vec::new();
        for entry in std::fs::read_dir(dir)? {
            let entry = entry?.path();
            if file_format(&entry).is_none() {
                continue;
            }
            let Ok(resolved) = entry.canonicalize() else { continue };
            if !resolved.starts_with(&folder) {
                return Err(Error::invalid(
                    "sql",
                    format!(
                        "source '{source}': '{}' leads outside the team's folder",
                        entry.file_name().map(|n| n.to_string_lossy()).unwrap_or_default()
                    ),
                ));
            }
            if resolved.is_file() {
                files.push(resolved);
            }
        }
        files.sort();
        Ok(files)
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
                let full = self.local_path(&t.name, &path)?;
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
    /// The PostgreSQL sources' copies, one after another, must all end `within` (the query's
    /// time limit): each gets what the ones before it left.
    pub(crate) async fn source_tables(
        &self,
        team_id: &str,
        sql: &str,
        within: std::time::Duration,
    ) -> Result<Vec<QueryTable>> {
        let rows = self
            .db
            .fetch_all(&Sql::with(
                "SELECT NULL AS owner, t.name AS owner_name, s.name, s.kind, s.spec FROM sources s
                   JOIN teams t ON t.id = s.team_id WHERE s.team_id = $1
                 UNION ALL
                 SELECT t.name AS owner, t.name AS owner_name, s.name, s.kind, s.spec FROM source_grants g
                   JOIN sources s ON s.id = g.source_id JOIN teams t ON t.id = s.team_id WHERE g.team_id = $1",
                [team_id.into()],
            ))
            .await?;
        let deadline = std::time::Instant::now() + within;
        let mut out = Vec::new();
        for r in &rows {
            let name: String = col(r, "name")?;
            if !sql.contains(name.as_str()) {
                continue;
            }
            let spec: Spec = serde_json::from_str(&col::<String>(r, "spec")?)?;
            // Files are read from the folder of the team that owns the source.
            let owner: String = col(r, "owner_name")?;
            let path = spec.path.as_deref().unwrap_or_default();
            let parts = match parse_kind(&col::<String>(r, "kind")?) {
                SourceKind::File => {
                    let p = self.local_path(&owner, path)?;
                    let format = file_format(&p).unwrap_or(FileFormat::Csv);
                    vec![LocalFile::new(p, format)]
                }
                SourceKind::Folder => {
                    let dir = self.local_path(&owner, path)?;
                    self.folder_files(&owner, &dir, &name)?
                        .into_iter()
                        .map(|f| {
                            let format = file_format(&f).unwrap_or(FileFormat::Csv);
                            LocalFile::new(f, format)
                        })
                        .collect()
                }
                SourceKind::Postgres => {
                    let left = deadline.saturating_duration_since(std::time::Instant::now());
                    vec![self.postgres_file(&spec, &name, left, within).await?]
                }
            };
            out.push(QueryTable { schema: col(r, "owner")?, name, parts });
        }
        Ok(out)
    }

    /// A PostgreSQL table or query as a CSV file in staging, streamed there by `COPY`, within
    /// `within` (the server stops the statement a moment later, so the caller's own clock
    /// speaks first) and `max_bytes`; `limit` is the query's whole time limit, for the message.
    async fn postgres_file(
        &self,
        spec: &Spec,
        name: &str,
        within: std::time::Duration,
        limit: std::time::Duration,
    ) -> Result<LocalFile> {
        use sqlx::Connection;
        let max_bytes = self.postgres.max_bytes;
        let copy = async {
            let server_side = within + std::time::Duration::from_millis(500);
            let (mut conn, copy) = self.postgres_copy(spec, None, server_side).await?;
            let fail = |e: &dyn std::fmt::Display| pg_error(spec, e);
            let stream = conn.copy_out_raw(&copy).await.map_err(|e| fail(&e))?;
            let mut reader =
                tokio_util::io::StreamReader::new(stream.map(|chunk| {
                    chunk.map_err(|e| std::io::Error::other(pg_error(spec, &e).message))
                }));
            let staged =
                self.staging().receive(&mut reader, max_bytes).await.map_err(|e| match e.code {
                    Code::InvalidRequest => fail(&e.message),
                    Code::PayloadTooLarge => Error::invalid(
                        "sql",
                        format!(
                            "the PostgreSQL source '{name}' gives more than {max_bytes} bytes (the server's postgres_source_max_bytes): select fewer rows or columns in the source"
                        ),
                    ),
                    _ => e,
                })?;
            drop(reader);
            let _ = conn.close().await;
            Ok(LocalFile::staged(staged, FileFormat::Csv))
        };
        tokio::time::timeout(within, copy).await.map_err(|_| {
            Error::invalid(
                "sql",
                format!(
                    "the query ran longer than its limit of {} ms reading the PostgreSQL source '{name}'",
                    limit.as_millis()
                ),
            )
        })?
    }

    /// A PostgreSQL table or query as CSV with a header (at most `limit` rows).
    async fn postgres_csv(&self, spec: &Spec, limit: Option<u64>) -> Result<Vec<u8>> {
        use sqlx::Connection;
        let read = async {
            let (mut conn, copy) = self.postgres_copy(spec, limit, READ_TIMEOUT).await?;
            let mut stream = conn.copy_out_raw(&copy).await.map_err(|e| pg_error(spec, &e))?;
            let mut out = Vec::new();
            while let Some(chunk) = stream.next().await {
                out.extend_from_slice(&chunk.map_err(|e| pg_error(spec, &e))?);
                if out.len() as u64 > self.postgres.max_bytes {
                    return Err(Error::invalid(
                        "query",
                        "the source gives more than the server's postgres_source_max_bytes",
                    ));
                }
            }
            drop(stream);
            let _ = conn.close().await;
            Ok(out)
        };
        tokio::time::timeout(READ_TIMEOUT, read)
            .await
            .map_err(|_| Error::invalid("query", "reading the source took longer than 60 s"))?
    }
}

fn pg_error(spec: &Spec, e: &dyn std::fmt::Display) -> Error {
    let url = spec.url.as_deref().unwrap_or_default();
    Error::invalid("url", format!("PostgreSQL at {}: {e}", host_of(url)))
}

/// Where a PostgreSQL URL leads: `(host, port, database)`.
fn pg_target(opts: &sqlx::postgres::PgConnectOptions) -> (String, u16, String) {
    (
        opts.get_host().to_string(),
        opts.get_port(),
        opts.get_database().unwrap_or_else(|| opts.get_username()).to_string(),
    )
}

/// Whether an allow-list entry (`host`, `host:port`, `host:port/database`) admits a target.
fn admits(entry: &str, host: &str, port: u16, database: &str) -> bool {
    let (address, db) = match entry.split_once('/') {
        Some((a, d)) => (a, Some(d)),
        None => (entry, None),
    };
    let (h, p) = match address.rsplit_once(':') {
        Some((h, p)) if !h.is_empty() => (h, p.parse::<u16>().ok()),
        _ => (address, None),
    };
    h.eq_ignore_ascii_case(host) && p.is_none_or(|p| p == port) && db.is_none_or(|d| d == database)
}

impl Plinth {
    /// A read-only connection to a PostgreSQL source the configuration allows, and the `COPY`
    /// that reads its table or query as CSV with a header (at most `limit` rows).
    async fn postgres_copy(
        &self,
        spec: &Spec,
        limit: Option<u64>,
        within: std::time::Duration,
    ) -> Result<(sqlx::postgres::PgConnection, String)> {
        use sqlx::{ConnectOptions, Connection};
        let url = spec.url.as_deref().unwrap_or_default();
        let opts: sqlx::postgres::PgConnectOptions = url.parse().map_err(|_| {
            Error::invalid("url", "not a postgres://user:password@host:port/db URL")
        })?;
        let (host, port, database) = pg_target(&opts);
        let access = &self.postgres;
        if !access.allowed_hosts.iter().any(|e| admits(e, &host, port, &database)) {
            return Err(Error::invalid(
                "url",
                format!(
                    "the server does not allow PostgreSQL sources at {host}:{port}/{database}: an admin adds it to postgres_source_hosts"
                ),
            ));
        }
        let opts =
            opts.application_name("plinth-source").log_statements(tracing::log::LevelFilter::Off);
        let unreachable = || {
            Error::invalid(
                "url",
                format!(
                    "cannot connect to the PostgreSQL database {host}:{port}/{database} (check the address and that the server runs)"
                ),
            )
        };
        let mut conn = match tokio::time::timeout(access.connect_timeout, opts.connect()).await {
            Ok(Ok(conn)) => conn,
            // The server answered (bad credentials, no such database): its words.
            Ok(Err(sqlx::Error::Database(e))) => {
                return Err(Error::invalid(
                    "url",
                    format!("PostgreSQL at {host}:{port} refused the connection: {}", e.message()),
                ));
            }
            // Refused, reset, timed out, not PostgreSQL at all: one answer, whatever the network said.
            Ok(Err(_)) | Err(_) => return Err(unreachable()),
        };
        // A role that is an administrator, reads every table or the server's files, signals
        // other sessions, or can open connections elsewhere (dblink, large-object files) is
        // refused whole. Roles and functions are looked up by name: a server without them (an
        // older release, no dblink) simply has nothing to refuse.
        let powerful: bool = sqlx::query_scalar(
            "SELECT r.rolsuper OR r.rolreplication OR r.rolbypassrls OR r.rolcreaterole
                OR EXISTS (SELECT 1 FROM pg_roles g
                    WHERE g.rolname IN ('pg_read_server_files', 'pg_write_server_files',
                        'pg_execute_server_program', 'pg_read_all_data', 'pg_write_all_data',
                        'pg_signal_backend', 'pg_read_all_settings', 'pg_read_all_stats',
                        'pg_monitor', 'pg_checkpoint')
                    AND pg_has_role(current_user, g.oid, 'MEMBER'))
                OR EXISTS (SELECT 1 FROM pg_proc p
                    WHERE p.proname IN ('pg_read_file', 'pg_read_binary_file', 'pg_ls_dir',
                        'pg_stat_file', 'lo_import', 'lo_export', 'dblink_connect',
                        'dblink_connect_u', 'dblink', 'dblink_exec')
                    AND has_function_privilege(p.oid, 'EXECUTE'))
             FROM pg_roles r WHERE r.rolname = current_user",
        )
        .fetch_one(&mut conn)
        .await
        .map_err(|e| pg_error(spec, &e))?;
        if powerful {
            let _ = conn.close().await;
            return Err(Error::invalid(
                "url",
                "the source's role is a superuser or an administrator, may read every table or the server's files, or may reach other servers (dblink): connect with a role that can only read its tables",
            ));
        }
        // Every statement of the session runs in a read-only transaction, and the server
        // stops it when the caller's time is up.
        let ms = within.as_millis().clamp(1, i32::MAX as u128);
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
            "SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY; SET statement_timeout = {ms}"
        )))
        .execute(&mut conn)
        .await
        .map_err(|e| pg_error(spec, &e))?;
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
}
