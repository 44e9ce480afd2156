//! Drift of served traffic: each version's captured minutes ([`super::capture`]) added up over a
//! range and held, feature by feature and for the prediction, against its baseline — the
//! dataset a maintainer chose, else the one the version's latest evaluation ran on — with
//! Evidently's tests and defaults, or the method and threshold set per feature.
//!
//! A baseline is summarized once per version and dataset version (the model scores it for the
//! prediction's column) and kept in memory: at most ~33 KB per column, a few KB typically.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use plinth_api::data::DatasetRef;
use plinth_api::monitoring::{
    DriftedColumns, FeatureDrift, MonitoringSettings, RangeQuery, ServedDrift, VersionDrift,
};

use super::capture::{Columns, PREDICTION, column_names, prediction_value};
use super::drift::{self, Method};
use super::feedback::{Monitored, range};
use super::summary::{Sketch, Summary, summary_drift};
use crate::Plinth;
use crate::auth::{Principal, TeamRef};
use crate::error::{Error, Result};
use crate::util::micros_to_time;

/// Baseline summaries by (version id, dataset version id).
#[derive(Default)]
pub(crate) struct Baselines(Mutex<HashMap<(String, String), Arc<Columns>>>);

/// A baseline: which dataset version, shown as, and why.
struct BaselineRef {
    dataset_version_id: String,
    name: String,
    source: &'static str,
}

impl Plinth {
    /// The drift of a deployment's served traffic over a range, per version, for anyone who
    /// may see the deployment.
    pub async fn deployment_drift(
        &self,
        who: &Principal,
        team: &str,
        model: &str,
        environment: &str,
        q: &RangeQuery,
    ) -> Result<ServedDrift> {
        let m = self.monitored(who, team, model, environment).await?;
        let (since, until) = range(q)?;
        let settings = self.monitoring_settings_of(&m.id).await?;
        let versions = self.drift_of(&m, &settings, since, until, q.version, true).await?;
        Ok(ServedDrift {
            deployment: m.name,
            since: micros_to_time(since),
            until: micros_to_time(until),
            versions,
        })
    }

    /// Each version's drift in `[since, until)`. Versions without traffic are left out; one
    /// without a baseline is an error when `strict`, else left out.
    pub(crate) async fn drift_of(
        &self,
        m: &Monitored,
        settings: &MonitoringSettings,
        since: i64,
        until: i64,
        version: Option<u32>,
        strict: bool,
    ) -> Result<Vec<VersionDrift>> {
        let served = self.served_columns(&m.id, since, until, version).await?;
        let drift_share = settings.drift_share.unwrap_or(drift::DEFAULT_DRIFT_SHARE);
        let mut out = Vec::new();
        for (v, current) in served {
            let Some(b) = self.baseline_ref(m, settings, v).await? else {
                if strict {
                    return Err(Error::invalid(
                        "baseline",
                        format!(
                            "version {v} has no baseline: evaluate it on a dataset, or set one in the deployment's monitoring settings"
                        ),
                    ));
                }
                continue;
            };
            let reference = self.baseline_columns(m, v, &b.dataset_version_id).await?;
            let mut columns = BTreeMap::new();
            for (name, cur) in &current.columns {
                let Some(r) = reference.columns.get(name) else { continue };
                let test = settings.drift.get(name);
                let method = test.and_then(|t| t.method.as_deref()).and_then(Method::parse);
                let threshold = test.and_then(|t| t.threshold);
                // A column that cannot be tested (empty, or text against numbers) is left out.
                if let Ok(d) = summary_drift(r, cur, method, threshold) {
                    columns.insert(
                        name.clone(),
                        FeatureDrift {
                            method: d.drift.method.as_str().to_string(),
                            threshold: d.drift.threshold,
                            score: d.drift.score,
                            drifted: d.drift.drifted,
                            bins: d.bins,
                            reference: d.reference,
                            current: d.current,
                        },
                    );
                }
            }
            let count = columns.values().filter(|c| c.drifted).count();
            let share = if columns.is_empty() { 0.0 } else { count as f64 / columns.len() as f64 };
            out.push(VersionDrift {
                version: v,
                baseline: b.name,
                baseline_source: b.source.to_string(),
                rows_reference: reference.rows,
                rows_current: current.rows,
                columns,
                drifted_columns: DriftedColumns {
                    count: count as u64,
                    share,
                    drift_share,
                    dataset_drift: count > 0 && share >= drift_share,
                },
            });
        }
        Ok(out)
    }

    async fn baseline_ref(
        &self,
        m: &Monitored,
        settings: &MonitoringSettings,
        version: u32,
    ) -> Result<Option<BaselineRef>> {
        if let Some(b) = &settings.baseline {
            let r = parse_dataset(b, "baseline")?;
            let team = TeamRef { id: m.team_id.clone(), name: m.team.clone() };
            let v = self.resolve_dataset(&team, &r, "baseline").await?;
            return Ok(Some(BaselineRef {
                dataset_version_id: v.id,
                name: format!("{}@{}", v.info.dataset, v.info.version),
                source: "chosen by a maintainer",
            }));
        }
        if let Some((_, name, id, _)) = self.latest_evaluation(&m.model_id, version).await? {
            return Ok(Some(BaselineRef {
                dataset_version_id: id,
                name,
                source: "the dataset of the version's latest evaluation",
            }));
        }
        // Not evaluated: the dataset its lineage says it was trained on, when that is one of
        // the team's dataset versions (`name@version`).
        let Some(row) = self
            .db
            .fetch_optional(&crate::store::Sql::with(
                "SELECT lineage FROM model_versions WHERE model_id = $1 AND version = $2",
                [m.model_id.clone().into(), i64::from(version).into()],
            ))
            .await?
        else {
            return Ok(None);
        };
        let lineage: plinth_api::registry::Lineage =
            serde_json::from_str(&crate::store::col::<String>(&row, "lineage")?)?;
        let Some(r) = lineage
            .dataset_version
            .as_deref()
            .and_then(|d| parse_dataset(d, "").ok())
            .filter(|r| r.version.is_some())
        else {
            return Ok(None);
        };
        let team = TeamRef { id: m.team_id.clone(), name: m.team.clone() };
        match self.resolve_dataset(&team, &r, "baseline").await {
            Ok(v) => Ok(Some(BaselineRef {
                dataset_version_id: v.id,
                name: format!("{}@{}", v.info.dataset, v.info.version),
                source: "the dataset the version was trained on (its lineage)",
            })),
            // Named, but not one of the team's dataset versions: no baseline.
            Err(e)
                if matches!(
                    e.code,
                    plinth_api::Code::NotFound | plinth_api::Code::InvalidField
                ) =>
            {
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }

    /// A version's baseline summarized: its features from the dataset, the prediction from
    /// the model run over it.
    async fn baseline_columns(
        &self,
        m: &Monitored,
        version: u32,
        dataset_version_id: &str,
    ) -> Result<Arc<Columns>> {
        let source =
            self.engine.version_source(&m.model_id, version).await?.ok_or_else(|| {
                Error::not_found("model version", format!("{}@{version}", m.name))
            })?;
        let key = (source.version_id.clone(), dataset_version_id.to_string());
        if let Some(c) = self.baselines.0.lock().expect("baselines lock").get(&key) {
            return Ok(c.clone());
        }
        let (_, format) = self.artifact_of(dataset_version_id).await?;
        let bytes = self.dataset_bytes(dataset_version_id).await?;
        let table = Arc::new(self.read_table(bytes, format).await?);
        let scored = self.score_version(&m.model_id, version, &table, m.task).await?;
        let mut columns = BTreeMap::new();
        for name in column_names(&source.signature) {
            let Some(c) = table.column(&name) else { continue };
            let mut s = match c.data {
                crate::data::ColumnData::Str { .. } => Summary::texts(),
                _ => Summary::Numbers(Sketch::new()),
            };
            for i in 0..table.rows {
                match &mut s {
                    Summary::Numbers(_) => s.add_number(c.data.number(i).unwrap_or(f64::NAN)),
                    Summary::Texts { .. } => {
                        if let Some(t) = c.data.text(i) {
                            s.add_text(&t);
                        }
                    }
                }
            }
            columns.insert(name, s);
        }
        let mut prediction = Summary::Numbers(Sketch::new());
        for i in 0..table.rows {
            prediction.add_number(prediction_value(m.task, &scored, i));
        }
        columns.insert(PREDICTION.to_string(), prediction);
        let c = Arc::new(Columns { rows: table.rows as u64, columns });
        self.baselines.0.lock().expect("baselines lock").insert(key, c.clone());
        Ok(c)
    }
}

/// `name` or `name@version`.
pub(crate) fn parse_dataset(s: &str, field: &str) -> Result<DatasetRef> {
    let (name, version) = match s.split_once('@') {
        Some((n, v)) => (
            n,
            Some(v.parse::<u32>().map_err(|_| {
                Error::invalid(field, format!("'{v}' is not a version number (name@version)"))
            })?),
        ),
        None => (s, None),
    };
    if name.is_empty() {
        return Err(Error::invalid(field, "a dataset name (name or name@version)"));
    }
    Ok(DatasetRef { name: name.to_string(), version })
}
