//! Persistence: the metadata database (SQLite or PostgreSQL behind one interface) with versioned
//! migrations, and the artifact store.
//!
//! **Boundary:** nothing dialect-specific leaves this module. The rest of the core writes portable
//! SQL (TEXT and BIGINT columns, `$n` placeholders, which both drivers accept) through [`Db`] and
//! [`Sql`]; the few differences (pragmas, the SQLite write lock, advisory locks, triggers) live
//! here.

pub mod artifacts;
mod migrate;

use std::sync::Arc;

use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::{Any, AnyPool, Executor, Transaction};
use tokio::sync::{Mutex, OwnedMutexGuard};

use crate::error::{Error, Result};

/// The change counter of what serves (deployments, their grants).
pub(crate) const DEPLOYMENTS: &str = "deployments";
/// The change counter of who may do what (keys, memberships, roles).
pub(crate) const IDENTITY: &str = "identity";

/// Counts a change every replica must pick up, in the change's transaction (replicas poll the
/// counters: [`crate::Plinth`]'s change watch).
pub(crate) async fn bump(tx: &mut Tx, counter: &str) -> Result<()> {
    Sql::with("UPDATE change_counters SET value = value + 1 WHERE name = $1", [counter.into()])
        .execute(tx)
        .await
        .map(drop)
}

/// Which database engine a [`Db`] talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    Sqlite,
    Postgres,
}

/// The metadata database.
#[derive(Clone)]
pub struct Db {
    pool: AnyPool,
    dialect: Dialect,
    /// SQLite allows one writer: writers queue here instead of failing with SQLITE_BUSY.
    write_lock: Option<Arc<Mutex<()>>>,
}

/// A write transaction. Dropping it without [`Tx::commit`] rolls back.
pub struct Tx {
    pub(crate) tx: Transaction<'static, Any>,
    _guard: Option<OwnedMutexGuard<()>>,
}

impl Tx {
    pub async fn commit(self) -> Result<()> {
        self.tx.commit().await?;
        Ok(())
    }

    pub(crate) fn conn(&mut self) -> &mut sqlx::AnyConnection {
        &mut self.tx
    }
}

impl Db {
    /// Connects to `url` (`sqlite://path` or `postgres://...`) and applies pending migrations.
    pub async fn open(url: &str) -> Result<Db> {
        sqlx::any::install_default_drivers();
        let dialect = if url.starts_with("sqlite:") {
            Dialect::Sqlite
        } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            Dialect::Postgres
        } else {
            return Err(Error::invalid("database_url", "must start with sqlite:// or postgres://"));
        };
        let mut options = AnyPoolOptions::new();
        options = match dialect {
            Dialect::Sqlite => options.max_connections(8).after_connect(|conn, _| {
                Box::pin(async move {
                    conn.execute("PRAGMA journal_mode = WAL").await?;
                    conn.execute("PRAGMA synchronous = FULL").await?;
                    conn.execute("PRAGMA foreign_keys = ON").await?;
                    conn.execute("PRAGMA busy_timeout = 10000").await?;
                    Ok(())
                })
            }),
            Dialect::Postgres => options.max_connections(16),
        };
        let pool = options.connect(url).await.map_err(|e| {
            Error::new(
                plinth_api::Code::Unavailable,
                format!("cannot connect to the metadata database: {e}"),
            )
        })?;
        let write_lock = (dialect == Dialect::Sqlite).then(|| Arc::new(Mutex::new(())));
        let db = Db { pool, dialect, write_lock };
        migrate::run(&db).await?;
        Ok(db)
    }

    pub fn dialect(&self) -> Dialect {
        self.dialect
    }

    /// What a claiming subquery ends with so that concurrent claimers skip each other's rows:
    /// PostgreSQL's `FOR UPDATE SKIP LOCKED`; nothing on SQLite, whose one writer claims alone.
    pub fn skip_locked(&self) -> &'static str {
        match self.dialect {
            Dialect::Postgres => " FOR UPDATE SKIP LOCKED",
            Dialect::Sqlite => "",
        }
    }

    /// What a read ends with to lock its rows until the transaction ends: PostgreSQL's
    /// `FOR UPDATE`; nothing on SQLite, whose one writer holds every write transaction alone.
    pub fn for_update(&self) -> &'static str {
        match self.dialect {
            Dialect::Postgres => " FOR UPDATE",
            Dialect::Sqlite => "",
        }
    }

    /// Starts a write transaction.
    pub async fn begin(&self) -> Result<Tx> {
        let guard = match &self.write_lock {
            Some(lock) => Some(lock.clone().lock_owned().await),
            None => None,
        };
        let tx = self.pool.begin().await?;
        Ok(Tx { tx, _guard: guard })
    }

    /// Runs a read query.
    pub async fn fetch_all(&self, sql: &Sql) -> Result<Vec<AnyRow>> {
        Ok(sql.query().fetch_all(&self.pool).await?)
    }

    pub async fn fetch_optional(&self, sql: &Sql) -> Result<Option<AnyRow>> {
        Ok(sql.query().fetch_optional(&self.pool).await?)
    }

    /// True when the database answers.
    pub async fn ping(&self) -> bool {
        sqlx::query("SELECT 1").execute(&self.pool).await.is_ok()
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }
}

/// A bind argument.
#[derive(Debug, Clone)]
pub enum Arg {
    Text(String),
    OptText(Option<String>),
    Int(i64),
    OptInt(Option<i64>),
    Float(f64),
}

impl From<&str> for Arg {
    fn from(v: &str) -> Self {
        Arg::Text(v.to_string())
    }
}
impl From<String> for Arg {
    fn from(v: String) -> Self {
        Arg::Text(v)
    }
}
impl From<&String> for Arg {
    fn from(v: &String) -> Self {
        Arg::Text(v.clone())
    }
}
impl From<Option<String>> for Arg {
    fn from(v: Option<String>) -> Self {
        Arg::OptText(v)
    }
}
impl From<Option<&str>> for Arg {
    fn from(v: Option<&str>) -> Self {
        Arg::OptText(v.map(str::to_string))
    }
}
impl From<i64> for Arg {
    fn from(v: i64) -> Self {
        Arg::Int(v)
    }
}
impl From<f64> for Arg {
    fn from(v: f64) -> Self {
        Arg::Float(v)
    }
}
impl From<Option<i64>> for Arg {
    fn from(v: Option<i64>) -> Self {
        Arg::OptInt(v)
    }
}

/// A SQL statement with numbered (`$n`) placeholders, built up with its arguments.
#[derive(Debug, Clone, Default)]
pub struct Sql {
    text: String,
    args: Vec<Arg>,
}

impl Sql {
    pub fn new(text: &str) -> Sql {
        Sql { text: text.to_string(), args: Vec::new() }
    }

    /// A statement whose placeholders `$1..$n` are the given arguments, in order.
    pub fn with(text: &str, args: impl IntoIterator<Item = Arg>) -> Sql {
        Sql { text: text.to_string(), args: args.into_iter().collect() }
    }

    pub fn push(&mut self, text: &str) -> &mut Self {
        self.text.push_str(text);
        self
    }

    /// Appends a subquery of the values of `values`, a JSON array of strings, bound as one
    /// parameter. Many values go this way rather than as a placeholder each: SQLite looks a
    /// parameter up by a linear scan, so a statement's binds cost the square of their number.
    pub fn push_json_values(&mut self, dialect: Dialect, values: String) -> &mut Self {
        self.args.push(Arg::Text(values));
        let n = self.args.len();
        self.text.push_str(&match dialect {
            Dialect::Sqlite => format!("SELECT value FROM json_each(${n})"),
            Dialect::Postgres => {
                format!("SELECT value FROM jsonb_array_elements_text(${n}::jsonb) AS j(value)")
            }
        });
        self
    }

    /// Appends a `FROM` source over `rows`, a JSON array of arrays, bound as one parameter
    /// (see [`Sql::push_json_values`]); [`json_item`] reads a row's elements. (SQLite needs a
    /// `WHERE` after it before an `ON CONFLICT`.)
    pub fn push_json_rows(&mut self, dialect: Dialect, rows: String) -> &mut Self {
        self.args.push(Arg::Text(rows));
        let n = self.args.len();
        self.text.push_str(&match dialect {
            Dialect::Sqlite => format!("json_each(${n})"),
            Dialect::Postgres => format!("jsonb_array_elements(${n}::jsonb) AS j(value)"),
        });
        self
    }

    /// Appends a placeholder for `arg`.
    pub fn bind(&mut self, arg: impl Into<Arg>) -> &mut Self {
        self.args.push(arg.into());
        self.text.push('$');
        self.text.push_str(&self.args.len().to_string());
        self
    }

    fn query(&self) -> sqlx::query::Query<'static, Any, sqlx::any::AnyArguments> {
        // Values are always bound; the text is assembled from constant fragments only.
        let mut q = sqlx::query(sqlx::AssertSqlSafe(self.text.clone()));
        for arg in &self.args {
            q = match arg {
                Arg::Text(s) => q.bind(s.as_str()),
                Arg::OptText(s) => q.bind(s.as_deref()),
                Arg::Int(i) => q.bind(*i),
                Arg::OptInt(i) => q.bind(*i),
                Arg::Float(f) => q.bind(*f),
            };
        }
        q
    }

    /// Runs the statement in `tx` and returns the number of rows it changed.
    pub async fn execute(&self, tx: &mut Tx) -> Result<u64> {
        Ok(self.query().execute(tx.conn()).await?.rows_affected())
    }

    /// Like [`Sql::execute`], but a unique violation becomes `err`.
    pub async fn execute_unique(&self, tx: &mut Tx, err: impl FnOnce() -> Error) -> Result<u64> {
        match self.query().execute(tx.conn()).await {
            Ok(r) => Ok(r.rows_affected()),
            Err(e) if crate::error::is_unique_violation(&e) => Err(err()),
            Err(e) => Err(e.into()),
        }
    }

    pub async fn fetch_optional_tx(&self, tx: &mut Tx) -> Result<Option<AnyRow>> {
        Ok(self.query().fetch_optional(tx.conn()).await?)
    }

    pub async fn fetch_all_tx(&self, tx: &mut Tx) -> Result<Vec<AnyRow>> {
        Ok(self.query().fetch_all(tx.conn()).await?)
    }
}

/// Element `i` of a row of [`Sql::push_json_rows`], as SQL of type `ty` (`text`, `bigint`,
/// `double precision`); JSON null is NULL.
pub fn json_item(dialect: Dialect, i: usize, ty: &str) -> String {
    match dialect {
        Dialect::Sqlite => format!("json_extract(value, '$[{i}]')"),
        Dialect::Postgres => format!("(value->>{i})::{ty}"),
    }
}

/// Reads a column, mapping a decoding failure to an internal error.
pub fn col<T>(row: &AnyRow, name: &str) -> Result<T>
where
    T: for<'r> sqlx::Decode<'r, Any> + sqlx::Type<Any>,
{
    use sqlx::Row;
    row.try_get(name).map_err(Error::from)
}
