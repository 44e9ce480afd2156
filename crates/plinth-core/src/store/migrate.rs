//! Versioned migrations. Each migration is portable SQL plus optional per-dialect extras; the
//! applied versions are recorded in `plinth_schema`. A database newer than this binary is refused.

use sqlx::Executor;

use super::{Db, Dialect};
use crate::error::{Error, Result};
use crate::util::now_micros;

struct Migration {
    version: i64,
    name: &'static str,
    common: &'static str,
    sqlite: &'static str,
    postgres: &'static str,
    /// SQLite rebuilds a table to change a column's constraints: foreign keys are off while it
    /// does, and checked before the migration commits (SQLite's documented procedure).
    sqlite_rebuilds: bool,
}

const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "identity, audit and registry",
        common: include_str!("migrations/0001_init.sql"),
        sqlite: include_str!("migrations/0001_init.sqlite.sql"),
        postgres: include_str!("migrations/0001_init.postgres.sql"),
        sqlite_rebuilds: false,
    },
    Migration {
        version: 2,
        name: "serving",
        common: include_str!("migrations/0002_serving.sql"),
        sqlite: "",
        postgres: "",
        sqlite_rebuilds: false,
    },
    Migration {
        version: 3,
        name: "governance",
        common: include_str!("migrations/0003_governance.sql"),
        sqlite: "",
        postgres: "",
        sqlite_rebuilds: false,
    },
    Migration {
        version: 4,
        name: "feature store",
        common: include_str!("migrations/0004_features.sql"),
        sqlite: "",
        postgres: "",
        sqlite_rebuilds: false,
    },
    Migration {
        version: 5,
        name: "version feature services",
        common: include_str!("migrations/0005_version_features.sql"),
        sqlite: "",
        postgres: "",
        sqlite_rebuilds: false,
    },
    Migration {
        version: 6,
        name: "dataset grants",
        common: include_str!("migrations/0006_dataset_grants.sql"),
        sqlite: "",
        postgres: "",
        sqlite_rebuilds: false,
    },
    Migration {
        version: 7,
        name: "data sources",
        common: include_str!("migrations/0007_sources.sql"),
        sqlite: "",
        postgres: "",
        sqlite_rebuilds: false,
    },
    Migration {
        version: 8,
        name: "independent review",
        common: include_str!("migrations/0008_independent_review.sql"),
        sqlite: "",
        postgres: "",
        sqlite_rebuilds: false,
    },
    Migration {
        version: 9,
        name: "tasks, schedules, events",
        common: include_str!("migrations/0009_tasks.sql"),
        sqlite: include_str!("migrations/0009_tasks.sqlite.sql"),
        postgres: include_str!("migrations/0009_tasks.postgres.sql"),
        sqlite_rebuilds: true,
    },
    Migration {
        version: 10,
        name: "health minutes",
        common: include_str!("migrations/0010_health.sql"),
        sqlite: "",
        postgres: "",
        sqlite_rebuilds: false,
    },
    Migration {
        version: 11,
        name: "alert states",
        common: include_str!("migrations/0011_alerts.sql"),
        sqlite: "",
        postgres: "",
        sqlite_rebuilds: false,
    },
    Migration {
        version: 12,
        name: "alert silences",
        common: include_str!("migrations/0012_silences.sql"),
        sqlite: "",
        postgres: "",
        sqlite_rebuilds: false,
    },
    Migration {
        version: 13,
        name: "incidents",
        common: include_str!("migrations/0013_incidents.sql"),
        sqlite: "",
        postgres: "",
        sqlite_rebuilds: false,
    },
    Migration {
        version: 14,
        name: "webhook formats",
        common: include_str!("migrations/0014_webhook_formats.sql"),
        sqlite: "",
        postgres: "",
        sqlite_rebuilds: false,
    },
    Migration {
        version: 15,
        name: "monitoring",
        common: include_str!("migrations/0015_monitoring.sql"),
        sqlite: "",
        postgres: "",
        sqlite_rebuilds: false,
    },
    Migration {
        version: 16,
        name: "training",
        common: include_str!("migrations/0016_training.sql"),
        sqlite: "",
        postgres: "",
        sqlite_rebuilds: false,
    },
    Migration {
        version: 17,
        name: "billing",
        common: include_str!("migrations/0017_billing.sql"),
        sqlite: "",
        postgres: "",
        sqlite_rebuilds: false,
    },
    Migration {
        version: 18,
        name: "mlflow",
        common: include_str!("migrations/0018_mlflow.sql"),
        sqlite: "",
        postgres: "",
        sqlite_rebuilds: false,
    },
];

/// The schema version this binary writes: its last migration's.
pub const SCHEMA_VERSION: i64 = MIGRATIONS[MIGRATIONS.len() - 1].version;

pub(super) async fn run(db: &Db) -> Result<()> {
    let mut conn = db.pool.acquire().await?;
    if db.dialect == Dialect::Postgres {
        // Several replicas may start at once: one migrates, the others wait.
        conn.execute("SELECT pg_advisory_lock(727046)").await?;
    }
    let result = apply(db, &mut conn).await;
    if db.dialect == Dialect::Postgres {
        let _ = conn.execute("SELECT pg_advisory_unlock(727046)").await;
    }
    result
}

async fn apply(db: &Db, conn: &mut sqlx::AnyConnection) -> Result<()> {
    conn.execute(
        "CREATE TABLE IF NOT EXISTS plinth_schema (version BIGINT PRIMARY KEY, name TEXT NOT NULL, applied_at BIGINT NOT NULL)",
    )
    .await?;
    let current: Option<i64> =
        sqlx::query_scalar("SELECT MAX(version) FROM plinth_schema").fetch_one(&mut *conn).await?;
    let current = current.unwrap_or(0);
    if current > SCHEMA_VERSION {
        return Err(Error::new(
            plinth_api::Code::Unavailable,
            format!(
                "the metadata database has schema version {current}, newer than this binary's {SCHEMA_VERSION}: upgrade Plinth"
            ),
        ));
    }
    for m in MIGRATIONS.iter().filter(|m| m.version > current) {
        let _guard = match &db.write_lock {
            Some(lock) => Some(lock.lock().await),
            None => None,
        };
        let rebuild = m.sqlite_rebuilds && db.dialect == Dialect::Sqlite;
        if rebuild {
            conn.execute("PRAGMA foreign_keys = OFF").await?;
        }
        let mut tx = sqlx::Connection::begin(&mut *conn).await?;
        let extra = match db.dialect {
            Dialect::Sqlite => m.sqlite,
            Dialect::Postgres => m.postgres,
        };
        sqlx::raw_sql(m.common).execute(&mut *tx).await?;
        if !extra.trim().is_empty() {
            sqlx::raw_sql(extra).execute(&mut *tx).await?;
        }
        if rebuild {
            let broken = sqlx::raw_sql("PRAGMA foreign_key_check").fetch_all(&mut *tx).await?;
            if !broken.is_empty() {
                return Err(Error::internal(format!(
                    "migration {} left {} rows whose foreign keys point nowhere",
                    m.version,
                    broken.len()
                )));
            }
        }
        sqlx::query("INSERT INTO plinth_schema (version, name, applied_at) VALUES ($1, $2, $3)")
            .bind(m.version)
            .bind(m.name)
            .bind(now_micros())
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        if rebuild {
            conn.execute("PRAGMA foreign_keys = ON").await?;
        }
        tracing::info!(version = m.version, name = m.name, "applied migration");
    }
    Ok(())
}
