//! The feature store from the command line: `entity`, `feature-view`, `feature-service`,
//! `materialize`, `features get` / `push` over the API, and `features pit`, which builds a
//! point-in-time correct training set from Parquet files locally.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow};
use clap::Subcommand;
use plinth_api::features::{
    Entity, FeatureService, FeatureView, Materialization, OnlineResponse, PushResponse,
};
use plinth_api::governance::JobStatus;
use serde_json::{Value, json};

use super::{Global, connect, parse_duration, split_model, usage};
use crate::client::Client;
use crate::output;

/// The feature store.
#[derive(Subcommand, Debug)]
pub(crate) enum Command {
    /// Online features (get, push) and point-in-time training sets from files (pit).
    #[command(subcommand)]
    Features(FeaturesCmd),
    /// Entities of the feature store (their join keys).
    #[command(subcommand)]
    Entity(EntityCmd),
    /// Feature views: typed features of an entity over a dataset, with freshness.
    #[command(subcommand, name = "feature-view")]
    FeatureView(FeatureViewCmd),
    /// Feature services: named sets of features.
    #[command(subcommand, name = "feature-service")]
    FeatureService(FeatureServiceCmd),
    /// Materialize a feature view (TEAM/VIEW) into the online store, and follow the job.
    Materialize {
        /// The feature view, TEAM/VIEW.
        view: String,
        /// Rewrite everything instead of the rows newer than the watermark.
        #[arg(long)]
        full: bool,
    },
}

pub(crate) async fn run(g: &Global, cmd: Command) -> Result<()> {
    match cmd {
        Command::Features(cmd @ FeaturesCmd::Pit { .. }) => features(cmd),
        Command::Features(cmd) => features_remote(&connect(g)?, g.json, cmd).await,
        Command::Entity(cmd) => entity(&connect(g)?, g.json, cmd).await,
        Command::FeatureView(cmd) => feature_view(&connect(g)?, g.json, cmd).await,
        Command::FeatureService(cmd) => feature_service(&connect(g)?, g.json, cmd).await,
        Command::Materialize { view, full } => materialize(&connect(g)?, g.json, &view, full).await,
    }
}

#[derive(Subcommand, Debug)]
pub(crate) enum EntityCmd {
    /// Define an entity TEAM/NAME with its join keys (NAME:int64 or NAME:string).
    Create {
        /// The entity, TEAM/NAME.
        entity: String,
        /// A join key, NAME:int64 or NAME:string (repeat for a composite key).
        #[arg(long = "join-key", required = true)]
        keys: Vec<String>,
        /// What the entity is, e.g. a driver or a customer.
        #[arg(long)]
        description: Option<String>,
    },
    List {
        /// The team's name.
        team: String,
    },
}

#[derive(Subcommand, Debug)]
pub(crate) enum FeatureViewCmd {
    /// Define a feature view in TEAM from a JSON file (see the API's CreateFeatureView).
    Create {
        /// The team that owns the view.
        team: String,
        /// The view's definition, a .json file.
        file: PathBuf,
    },
    List {
        /// The team's name.
        team: String,
    },
    /// A view with its freshness (TEAM/NAME).
    Show {
        /// The feature view, TEAM/NAME.
        view: String,
    },
}

#[derive(Subcommand, Debug)]
pub(crate) enum FeatureServiceCmd {
    /// Name a set of features TEAM/NAME (view:feature, repeatable).
    Create {
        /// The feature service, TEAM/NAME.
        service: String,
        /// A feature of the set, view:feature (repeatable).
        #[arg(long = "feature", required = true)]
        features: Vec<String>,
    },
}

#[derive(Subcommand, Debug)]
pub(crate) enum FeaturesCmd {
    /// Online features of entities: --feature view:feature (repeatable) or --service NAME, and
    /// --entity KEY=V1,V2,... (repeatable, one per join key).
    Get {
        /// The team whose features to read.
        team: String,
        /// A feature to read, view:feature (repeatable).
        #[arg(long = "feature")]
        features: Vec<String>,
        /// A feature service of the team, by name (instead of --feature).
        #[arg(long)]
        service: Option<String>,
        /// The entities' keys, KEY=V1,V2,... (repeat for each join key).
        #[arg(long = "entity", required = true)]
        entities: Vec<String>,
    },
    /// Build a point-in-time correct training set from an entity dataset (NAME or NAME@V with
    /// the join keys and a timestamp per row), saved as dataset --name.
    TrainingSet {
        /// The team whose datasets and features are used.
        team: String,
        /// The dataset to save the training set as (its next version).
        #[arg(long)]
        name: String,
        /// The entity dataset of the team, NAME or NAME@VERSION (default: its latest version).
        #[arg(long)]
        entities: String,
        /// The entity dataset's timestamp column (default event_timestamp).
        #[arg(long)]
        entity_timestamp: Option<String>,
        /// A feature service of the team, by name (instead of --feature).
        #[arg(long)]
        service: Option<String>,
        /// A feature to join, view:feature (repeatable).
        #[arg(long = "feature")]
        features: Vec<String>,
    },
    /// Write fresh values from a JSON file (an array of rows with the join keys,
    /// event_timestamp and features).
    Push {
        /// The team that owns the view.
        team: String,
        /// The feature view's name in the team.
        #[arg(long)]
        view: String,
        /// The rows, a .json file.
        file: PathBuf,
    },
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
        #[arg(long = "join-key", default_value = "entity_id")]
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

pub(super) async fn entity(c: &Client, json_out: bool, cmd: EntityCmd) -> Result<()> {
    match cmd {
        EntityCmd::Create { entity, keys, description } => {
            let (team, name) = split_model(&entity)?;
            let join_keys: Vec<Value> = keys
                .iter()
                .map(|k| match k.split_once(':') {
                    Some((n, t)) => Ok(json!({"name": n, "type": t})),
                    None => Err(usage(format!("'{k}' is not NAME:TYPE (int64 or string)"))),
                })
                .collect::<Result<_>>()?;
            let e: Entity = c
                .post(
                    &format!("/teams/{team}/entities"),
                    &json!({"name": name, "join_keys": join_keys, "description": description}),
                )
                .await?;
            if json_out {
                output::json(&e)
            } else {
                println!("created entity {}/{}", e.team, e.name)
            }
        }
        EntityCmd::List { team } => {
            let l: Vec<Entity> = c.get(&format!("/teams/{team}/entities"), &[]).await?;
            if json_out {
                output::json(&l);
            } else {
                output::table(
                    &["entity", "join keys"],
                    l.iter()
                        .map(|e| {
                            vec![
                                e.name.clone(),
                                e.join_keys
                                    .iter()
                                    .map(|k| format!("{}:{}", k.name, k.kind.as_str()))
                                    .collect::<Vec<_>>()
                                    .join(", "),
                            ]
                        })
                        .collect(),
                );
            }
        }
    }
    Ok(())
}

fn print_views(json_out: bool, l: &[FeatureView]) {
    if json_out {
        output::json(&l);
        return;
    }
    output::table(
        &["view", "entity", "features", "source", "last event", "materialized", "stale"],
        l.iter()
            .map(|v| {
                vec![
                    format!("{}/{}", v.team, v.name),
                    v.entity.clone(),
                    v.features.iter().map(|f| f.name.clone()).collect::<Vec<_>>().join(", "),
                    v.source.name.clone(),
                    output::opt_time(&v.freshness.last_event_at),
                    output::opt_time(&v.freshness.last_materialized_at),
                    v.freshness.stale.to_string(),
                ]
            })
            .collect(),
    );
}

pub(super) async fn feature_view(c: &Client, json_out: bool, cmd: FeatureViewCmd) -> Result<()> {
    match cmd {
        FeatureViewCmd::Create { team, file } => {
            let body: Value = serde_json::from_str(
                &std::fs::read_to_string(&file)
                    .with_context(|| format!("cannot read {}", file.display()))?,
            )
            .with_context(|| format!("{} is not JSON", file.display()))?;
            let v: FeatureView = c.post(&format!("/teams/{team}/feature-views"), &body).await?;
            print_views(json_out, &[v]);
        }
        FeatureViewCmd::List { team } => {
            let l: Vec<FeatureView> = c.get(&format!("/teams/{team}/feature-views"), &[]).await?;
            print_views(json_out, &l);
        }
        FeatureViewCmd::Show { view } => {
            let (team, name) = split_model(&view)?;
            let v: FeatureView = c.get(&format!("/teams/{team}/feature-views/{name}"), &[]).await?;
            print_views(json_out, &[v]);
        }
    }
    Ok(())
}

pub(super) async fn feature_service(
    c: &Client,
    json_out: bool,
    cmd: FeatureServiceCmd,
) -> Result<()> {
    let FeatureServiceCmd::Create { service, features } = cmd;
    let (team, name) = split_model(&service)?;
    let s: FeatureService = c
        .post(
            &format!("/teams/{team}/feature-services"),
            &json!({"name": name, "features": features}),
        )
        .await?;
    if json_out {
        output::json(&s)
    } else {
        println!("created feature service {}/{}", s.team, s.name)
    }
    Ok(())
}

/// Starts a materialization of TEAM/VIEW and follows it with a progress bar.
pub(super) async fn materialize(c: &Client, json_out: bool, view: &str, full: bool) -> Result<()> {
    let (team, name) = split_model(view)?;
    let start = Instant::now();
    let mut m: Materialization = c
        .post(
            &format!("/teams/{team}/feature-views/{name}/materialize"),
            &json!({"incremental": !full}),
        )
        .await?;
    let bar = crate::client::job_bar("materializing");
    while matches!(m.status, JobStatus::Queued | JobStatus::Running) {
        tokio::time::sleep(Duration::from_millis(20)).await;
        m = c.get(&format!("/materializations/{}", m.id), &[]).await?;
        bar.set_position((m.progress * 100.0) as u64);
        bar.set_message(if m.status == JobStatus::Queued { "queued" } else { "running" });
    }
    bar.finish_and_clear();
    if json_out {
        output::json(&m);
    } else {
        println!(
            "{} {} in {:.3} s: {}",
            m.id,
            m.status.as_str(),
            start.elapsed().as_secs_f64(),
            m.result.clone().unwrap_or(Value::Null)
        );
    }
    if m.status == JobStatus::Failed {
        anyhow::bail!("the materialization failed: {}", m.error.unwrap_or_default());
    }
    Ok(())
}

pub(super) async fn features_remote(c: &Client, json_out: bool, cmd: FeaturesCmd) -> Result<()> {
    match cmd {
        FeaturesCmd::Get { team, features, service, entities } => {
            let ents = super::entity_keys(&entities)?;
            let body = json!({"features": features, "feature_service": service, "entities": ents});
            let r: OnlineResponse =
                c.post(&format!("/teams/{team}/features/online"), &body).await?;
            if json_out {
                output::json(&r);
            } else {
                let n = r.results.first().map_or(0, |c| c.values.len());
                let rows = (0..n)
                    .map(|i| {
                        r.results
                            .iter()
                            .map(|c| {
                                if c.statuses[i] == "PRESENT" {
                                    c.values[i].to_string()
                                } else {
                                    "-".into()
                                }
                            })
                            .collect()
                    })
                    .collect();
                let header: Vec<&str> =
                    r.metadata.feature_names.iter().map(String::as_str).collect();
                output::table(&header, rows);
            }
        }
        FeaturesCmd::Push { team, view, file } => {
            let rows: Value = serde_json::from_str(
                &std::fs::read_to_string(&file)
                    .with_context(|| format!("cannot read {}", file.display()))?,
            )
            .with_context(|| format!("{} is not JSON", file.display()))?;
            let r: PushResponse = c
                .post(
                    &format!("/teams/{team}/features/push"),
                    &json!({"feature_view": view, "rows": rows}),
                )
                .await?;
            if json_out {
                output::json(&r)
            } else {
                println!("wrote {} of {} rows", r.written, r.received)
            }
        }
        FeaturesCmd::TrainingSet { team, name, entities, entity_timestamp, service, features } => {
            let ents = match entities.split_once('@') {
                Some((n, v)) => {
                    json!({"name": n, "version": v.parse::<u32>().map_err(|_| usage(format!("'{v}' is not a version number")))?})
                }
                None => json!({"name": entities}),
            };
            let body = json!({"name": name, "entities": ents, "entity_timestamp": entity_timestamp, "feature_service": service, "features": features});
            let v: plinth_api::data::DatasetVersion =
                c.post(&format!("/teams/{team}/training-sets"), &body).await?;
            if json_out {
                output::json(&v);
            } else {
                println!(
                    "saved {}/{}@{}: {} rows ({})",
                    v.team, v.dataset, v.version, v.rows, v.source
                );
            }
        }
        FeaturesCmd::Pit { .. } => unreachable!("pit runs locally"),
    }
    Ok(())
}

pub(super) fn features(cmd: FeaturesCmd) -> Result<()> {
    match cmd {
        FeaturesCmd::Get { .. } | FeaturesCmd::Push { .. } | FeaturesCmd::TrainingSet { .. } => {
            unreachable!("these call the server")
        }
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
