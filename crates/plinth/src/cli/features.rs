//! `plinth features`: feature-store work that runs locally on files. `pit` builds a
//! point-in-time correct training set from a feature table and an entity table (Parquet).

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Result, anyhow};
use clap::Subcommand;

use super::parse_duration;

#[derive(Subcommand, Debug)]
pub(crate) enum FeaturesCmd {
    /// Point-in-time join: each entity row gets the latest feature row of its entity at or
    /// before its timestamp (within --ttl); rows without one are kept with null features.
    Pit {
        /// The feature table (Parquet).
        #[arg(long)]
        features: PathBuf,
        /// The entity table (Parquet): join keys and a timestamp per row.
        #[arg(long)]
        entities: PathBuf,
        /// Where to write the result (Parquet).
        #[arg(long)]
        out: PathBuf,
        /// Join key column(s), in both tables.
        #[arg(long = "key", default_value = "entity_id")]
        keys: Vec<String>,
        /// The entity table's timestamp column.
        #[arg(long, default_value = "event_timestamp")]
        entity_timestamp: String,
        /// The feature table's event timestamp column.
        #[arg(long, default_value = "event_timestamp")]
        feature_timestamp: String,
        /// The feature table's created timestamp column (breaks ties of event time).
        #[arg(long)]
        created_timestamp: Option<String>,
        /// How old a feature row may be, e.g. 2d, 12h, 90m (default: no limit).
        #[arg(long)]
        ttl: Option<String>,
        /// Feature columns to bring (default: all but keys and timestamps).
        #[arg(long = "feature")]
        feature_columns: Vec<String>,
    },
}

pub(super) fn features(cmd: FeaturesCmd) -> Result<()> {
    match cmd {
        FeaturesCmd::Pit {
            features,
            entities,
            out,
            keys,
            entity_timestamp,
            feature_timestamp,
            created_timestamp,
            ttl,
            feature_columns,
        } => {
            let ttl_micros = match ttl {
                Some(t) => Some(parse_duration(&t)?.whole_microseconds() as i64),
                None => None,
            };
            let start = Instant::now();
            let f = plinth_data::read_parquet_file(&features).map_err(|e| anyhow!(e))?;
            let e = plinth_data::read_parquet_file(&entities).map_err(|e| anyhow!(e))?;
            let read = start.elapsed();
            let spec = plinth_data::pit::PitSpec {
                keys,
                entity_timestamp,
                feature_timestamp,
                created_timestamp,
                ttl_micros,
                features: (!feature_columns.is_empty()).then_some(feature_columns),
            };
            let joined = plinth_data::pit::pit_join(&e, &f, &spec).map_err(|e| anyhow!(e))?;
            let join = start.elapsed();
            plinth_data::write_parquet_file(&out, &joined).map_err(|e| anyhow!(e))?;
            let total = start.elapsed();
            eprintln!(
                "wrote {} rows to {} in {:.3} s (read {:.3} s, join {:.3} s, write {:.3} s)",
                joined.num_rows(),
                out.display(),
                total.as_secs_f64(),
                read.as_secs_f64(),
                (join - read).as_secs_f64(),
                (total - join).as_secs_f64()
            );
            Ok(())
        }
    }
}
