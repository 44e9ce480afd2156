//! The MLflow-compatible subset: the objects the `mlflow` client logs and reads, in MLflow's own
//! shapes, as team objects of Plinth. Tracking (experiments, runs, params, tags, metric
//! history, MLflow 3's logged models) lives here; registered models and their versions are
//! Plinth's models and versions, so a version registered through MLflow is validated, governed
//! and served like an upload; artifacts go through the artifact store under `mlflow/<team id>/`.
//!
//! Which team: the one named by the tracking URI (`<server>/teams/<team>`), else the caller's
//! only team. The HTTP shapes and MLflow's error codes are `plinth-server`'s `routes/mlflow.rs`.

pub mod artifacts;
pub mod registry;
pub mod tracking;

use serde::{Deserialize, Serialize};

use crate::Plinth;
use crate::auth::{Principal, TeamRef};
use crate::error::{Error, Result};

/// A `{key, value}` pair, MLflow's shape for params and tags.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KeyValue {
    pub key: String,
    #[serde(default)]
    pub value: String,
}

/// Microseconds (Plinth's clock) to MLflow's milliseconds.
pub(crate) fn ms(micros: i64) -> i64 {
    micros.div_euclid(1000)
}

/// An MLflow key (param, tag, metric): 1 to 250 characters, no control characters, no path
/// tricks (MLflow's own rule is about file-store paths; this is its database rule).
pub(crate) fn check_key(field: &str, key: &str) -> Result<()> {
    if key.is_empty() || key.chars().count() > 250 {
        return Err(Error::invalid(field, "must be 1 to 250 characters"));
    }
    if key.chars().any(char::is_control) {
        return Err(Error::invalid(field, "contains control characters"));
    }
    Ok(())
}

impl Plinth {
    /// The team an MLflow call acts in: `named` (from the tracking URI) when given, else the
    /// caller's only team.
    pub async fn mlflow_team(&self, who: &Principal, named: Option<&str>) -> Result<TeamRef> {
        if let Some(name) = named {
            return self.team_ref(who, name).await;
        }
        let mut teams: Vec<(&String, &String)> =
            who.teams.iter().map(|(id, (name, _))| (id, name)).collect();
        teams.sort_by(|a, b| a.1.cmp(b.1));
        match teams.as_slice() {
            [(id, name)] => Ok(TeamRef { id: (*id).clone(), name: (*name).clone() }),
            [] => Err(Error::invalid(
                "tracking_uri",
                "this key belongs to no team: MLflow's objects are a team's; set MLFLOW_TRACKING_URI to <server>/teams/<team> for a team you can see",
            )),
            many => Err(Error::invalid(
                "tracking_uri",
                format!(
                    "this key belongs to {} teams ({}): set MLFLOW_TRACKING_URI to <server>/teams/<team> to say which",
                    many.len(),
                    many.iter().map(|(_, n)| n.as_str()).collect::<Vec<_>>().join(", ")
                ),
            )),
        }
    }
}
