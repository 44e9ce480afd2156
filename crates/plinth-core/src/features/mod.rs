//! The feature store: entities, feature views over team datasets, feature services, the online
//! store (embedded or Redis), materialization into it (a durable job, full or incremental from
//! the view's watermark), online lookups of many entities × many features, pushes, freshness.

mod lookup;

pub use lookup::OnlineAnswer;
pub(crate) use rendered::RenderCache;
mod materialize;
pub mod nats;
pub mod online;
mod push;
mod registry;
mod rendered;
mod training;

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use plinth_api::data::{ColumnType, DatasetRef};
use plinth_api::features::{
    CreateEntity, CreateFeatureService, CreateFeatureView, CreateTrainingSet, Entity, FeatureField,
    FeatureService, FeatureView, Freshness, JoinKey, Materialization, MaterializeRequest,
    OnlineRequest, PushRequest, PushResponse,
};
use plinth_api::governance::JobStatus;
use plinth_api::identity::TeamRole;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sqlx::any::AnyRow;

use crate::Plinth;
use crate::audit::{self, Target};
use crate::auth::Principal;
use crate::data::ColumnData;
use crate::error::{Error, Result};
use crate::store::{Sql, col};
use crate::util::{check_name, check_text, micros_to_time, new_id, now_micros, time_to_micros};
use online::{Stored, encode_values};

/// What a view stores besides its identity (the `spec` column).
#[derive(Debug, Clone, Serialize, Deserialize)]
struct ViewSpec {
    join_keys: Vec<JoinKey>,
    source: DatasetRef,
    timestamp_field: String,
    created_timestamp_field: Option<String>,
    features: Vec<FeatureField>,
    ttl_seconds: u64,
    online: bool,
    freshness_sla_seconds: u64,
}

/// A view as lookups need it, cached in memory (views do not change after creation).
#[derive(Debug)]
pub(crate) struct ViewMeta {
    id: String,
    name: String,
    team_id: String,
    public: bool,
    spec: ViewSpec,
    /// Feature name → position in the stored values.
    index: HashMap<String, usize>,
}

/// Views by (team name, view name).
#[derive(Default)]
pub(crate) struct ViewCache(RwLock<HashMap<(String, String), Arc<ViewMeta>>>);

pub(crate) const MATERIALIZE: &str = "materialize";

/// Materializations run as tasks ([`crate::tasks`]).
struct MaterializeTask;

impl crate::tasks::TaskKind for MaterializeTask {
    fn name(&self) -> &'static str {
        MATERIALIZE
    }

    fn run<'a>(
        &'a self,
        core: &'a Plinth,
        task: &'a crate::tasks::TaskRun,
    ) -> futures_util::future::BoxFuture<'a, Result<Value>> {
        Box::pin(core.run_materialization(task))
    }
}

/// Registers the feature store's task kinds.
pub(crate) fn register(r: &mut crate::tasks::Registry) {
    r.register(MaterializeTask);
}

/// The online-store key of an entity row of a view.
fn store_key(view_id: &str, key: &str) -> String {
    let mut out = String::with_capacity(view_id.len() + 1 + key.len());
    out.push_str(view_id);
    out.push('\u{1f}');
    out.push_str(key);
    out
}

/// Appends a join-key value in canonical text: integers in decimal, strings as they are. The
/// field is named only when the value is refused (a lookup checks thousands of keys a second).
fn push_key_text(
    out: &mut String,
    field: impl FnOnce() -> String,
    kind: ColumnType,
    v: &Value,
) -> Result<()> {
    match (kind, v) {
        (ColumnType::Int64, Value::Number(n)) if n.is_i64() => {
            use std::fmt::Write;
            // Writing into a String cannot fail.
            let _ = write!(out, "{}", n.as_i64().unwrap_or_default());
            Ok(())
        }
        (ColumnType::String, Value::String(s)) => {
            out.push_str(s);
            Ok(())
        }
        (k, other) => Err(Error::invalid(
            field(),
            format!("join keys of this entity are {}, got {other}", k.as_str()),
        )),
    }
}

fn check_value(field: &str, kind: ColumnType, v: &Value) -> Result<()> {
    let ok = match (kind, v) {
        (_, Value::Null) => true,
        (ColumnType::Float64, Value::Number(_)) => true,
        (ColumnType::Int64, Value::Number(n)) => n.is_i64(),
        (ColumnType::Bool, Value::Bool(_)) => true,
        (ColumnType::String, Value::String(_)) => true,
        _ => false,
    };
    if ok {
        Ok(())
    } else {
        Err(Error::invalid(field, format!("expected a {} value, got {v}", kind.as_str())))
    }
}

fn rfc3339(micros: i64) -> String {
    micros_to_time(micros)
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}
