//! Retraining triggers: every minute (a platform schedule, fired once per occurrence across
//! replicas) each recipe with triggers is checked — a live metric of its deployment crossing its
//! threshold, a drift alert firing on it, a new version of its dataset — and the first that
//! holds starts a run, unless the recipe is cooling down from its last triggered run or a run
//! of it is still going. Schedule triggers are schedules of their own (see `put_recipe`).

use plinth_api::training::{RecipeData, RecipeSpec, Trigger};
use serde_json::Value;

use super::RunArgs;
use crate::Plinth;
use crate::error::{Error, Result};
use crate::store::{Sql, col};
use crate::tasks::schedule::Every;

pub(crate) const CHECK: &str = "training.triggers";

pub(crate) struct CheckTriggers;

impl crate::tasks::TaskKind for CheckTriggers {
    fn name(&self) -> &'static str {
        CHECK
    }

    fn queue(&self) -> &'static str {
        "monitoring"
    }

    fn max_attempts(&self) -> u32 {
        1
    }

    fn run<'a>(
        &'a self,
        core: &'a Plinth,
        _task: &'a crate::tasks::TaskRun,
    ) -> futures_util::future::BoxFuture<'a, Result<Value>> {
        Box::pin(async move {
            let started = core.check_retrain_triggers_at(crate::util::now_micros()).await?;
            Ok(serde_json::json!({ "started": started }))
        })
    }
}

pub(crate) async fn ensure_schedule(core: &Plinth) -> Result<()> {
    core.ensure_schedule("retrain-triggers", CHECK, Every::Interval(60)).await
}

impl Plinth {
    /// Checks every recipe's triggers as of `now` (microseconds) and starts the runs they call
    /// for; answers the ids of the runs started. The minute task calls it with the clock's
    /// time; tests with the time they drive.
    #[doc(hidden)]
    pub async fn check_retrain_triggers_at(&self, now: i64) -> Result<Vec<String>> {
        let recipes = self
            .db
            .fetch_all(&Sql::new(
                "SELECT r.id, r.team_id, r.latest_version, r.last_triggered_at, r.last_dataset_version_id, v.spec, v.created_by
                 FROM recipes r JOIN recipe_versions v ON v.recipe_id = r.id AND v.version = r.latest_version",
            ))
            .await?;
        let mut started = Vec::new();
        for row in recipes {
            let spec: RecipeSpec = serde_json::from_str(&col::<String>(&row, "spec")?)?;
            let Some(retrain) = &spec.retrain else { continue };
            if retrain.triggers.iter().all(|t| matches!(t, Trigger::Schedule { .. })) {
                continue;
            }
            let recipe_id: String = col(&row, "id")?;
            let team_id: String = col(&row, "team_id")?;
            let cooldown = retrain.cooldown_seconds.unwrap_or(3600) as i64 * 1_000_000;
            if col::<Option<i64>>(&row, "last_triggered_at")?.is_some_and(|t| now - t < cooldown) {
                continue;
            }
            let active = self
                .db
                .fetch_optional(&Sql::with(
                    "SELECT r.id FROM training_runs r JOIN tasks k ON k.id = r.id
                     WHERE r.recipe_id = $1 AND k.state IN ('available', 'scheduled', 'running', 'retryable')",
                    [recipe_id.clone().into()],
                ))
                .await?;
            if active.is_some() {
                continue;
            }
            let mut why = None;
            for t in &retrain.triggers {
                why = match t {
                    Trigger::Metric { metric, below, above, window_seconds, min_labelled } => {
                        self.metric_fires(
                            &team_id,
                            &spec,
                            &retrain.environment,
                            metric,
                            *below,
                            *above,
                            *window_seconds,
                            *min_labelled,
                            now,
                        )
                        .await?
                    }
                    Trigger::Drift => {
                        self.drift_fires(&team_id, &spec, &retrain.environment).await?
                    }
                    Trigger::NewData => {
                        self.new_data_fires(&team_id, &spec, col(&row, "last_dataset_version_id")?)
                            .await?
                    }
                    Trigger::Schedule { .. } => None,
                };
                if why.is_some() {
                    break;
                }
            }
            let Some(why) = why else { continue };
            let args = RunArgs {
                recipe_id: recipe_id.clone(),
                recipe_version: Some(col::<i64>(&row, "latest_version")? as u32),
                trigger: why.clone(),
                params: Default::default(),
            };
            let by: String = col(&row, "created_by")?;
            let mut tx = self.db.begin().await?;
            Sql::with(
                "UPDATE recipes SET last_triggered_at = $1 WHERE id = $2",
                [now.into(), recipe_id.clone().into()],
            )
            .execute(&mut tx)
            .await?;
            tx.commit().await?;
            // Audited as the recipe author's, whose run it is (unless they are gone).
            let author = self.acting_principal(&by).await.ok();
            let id = self.enqueue_run(&team_id, &args, &by, author.as_ref()).await?;
            let mut tx = self.db.begin().await?;
            let payload = serde_json::json!({"run": id, "recipe": recipe_id, "trigger": why});
            self.emit_event(&mut tx, Some(&team_id), "training.triggered", &payload).await?;
            tx.commit().await?;
            tracing::info!(run = %id, trigger = %why, "retraining triggered");
            started.push(id);
        }
        Ok(started)
    }

    async fn deployment_of(
        &self,
        team_id: &str,
        spec: &RecipeSpec,
        environment: &str,
    ) -> Result<Option<crate::monitoring::feedback::Monitored>> {
        let Some(row) = self
            .db
            .fetch_optional(&Sql::with(
                "SELECT d.id, d.model_id, m.task, t.name AS team_name FROM deployments d JOIN models m ON m.id = d.model_id
                 JOIN teams t ON t.id = d.team_id WHERE d.team_id = $1 AND m.name = $2 AND d.environment = $3",
                [team_id.into(), spec.model.clone().into(), environment.into()],
            ))
            .await?
        else {
            return Ok(None);
        };
        let task: String = col(&row, "task")?;
        let team: String = col(&row, "team_name")?;
        Ok(Some(crate::monitoring::feedback::Monitored {
            id: col(&row, "id")?,
            team_id: team_id.to_string(),
            name: format!("{team}/{}@{environment}", spec.model),
            team,
            model_id: col(&row, "model_id")?,
            task: plinth_api::registry::Task::parse(&task)
                .ok_or_else(|| Error::internal(format!("bad task {task}")))?,
        }))
    }

    #[allow(clippy::too_many_arguments)]
    async fn metric_fires(
        &self,
        team_id: &str,
        spec: &RecipeSpec,
        environment: &str,
        metric: &str,
        below: Option<f64>,
        above: Option<f64>,
        window_seconds: Option<u64>,
        min_labelled: Option<u64>,
        now: i64,
    ) -> Result<Option<String>> {
        let Some(m) = self.deployment_of(team_id, spec, environment).await? else {
            return Ok(None);
        };
        let window = window_seconds.unwrap_or(3600) as i64 * 1_000_000;
        let versions = self.performance_of(&m, now - window, now + 1, None).await?;
        let need = min_labelled.unwrap_or(50);
        // The newest version with enough labels in the window.
        let Some(v) = versions.iter().rev().find(|v| v.labelled >= need) else { return Ok(None) };
        let Some(&value) = v.metrics.get(metric) else { return Ok(None) };
        Ok(match (below, above) {
            (Some(b), _) if value < b => Some(format!("metric:{metric}={value:.4}<{b}")),
            (_, Some(a)) if value > a => Some(format!("metric:{metric}={value:.4}>{a}")),
            _ => None,
        })
    }

    async fn drift_fires(
        &self,
        team_id: &str,
        spec: &RecipeSpec,
        environment: &str,
    ) -> Result<Option<String>> {
        let Some(m) = self.deployment_of(team_id, spec, environment).await? else {
            return Ok(None);
        };
        // The deployment's drift rules (alerts are named by their rule).
        let settings = self.monitoring_settings_of(&m.id).await?;
        let drift_rules: Vec<String> = settings
            .rules
            .iter()
            .filter(|r| r.series == "drift_share" || r.series == "feature_drift")
            .map(|r| r.name.clone())
            .collect();
        if drift_rules.is_empty() {
            return Ok(None);
        }
        let firing = self
            .db
            .fetch_all(&Sql::with(
                "SELECT rule FROM alert_states WHERE deployment_id = $1 AND state = 'firing' ORDER BY rule",
                [m.id.into()],
            ))
            .await?;
        for r in firing {
            let rule: String = col(&r, "rule")?;
            if drift_rules.contains(&rule) {
                return Ok(Some(format!("drift:{rule}")));
            }
        }
        Ok(None)
    }

    async fn new_data_fires(
        &self,
        team_id: &str,
        spec: &RecipeSpec,
        last: Option<String>,
    ) -> Result<Option<String>> {
        let RecipeData::Dataset(d) = &spec.data else { return Ok(None) };
        if d.version.is_some() {
            return Ok(None);
        }
        let Some(last) = last else { return Ok(None) };
        let latest = self
            .db
            .fetch_optional(&Sql::with(
                "SELECT v.id, v.version FROM datasets s JOIN dataset_versions v ON v.dataset_id = s.id AND v.version = s.latest_version
                 WHERE s.team_id = $1 AND s.name = $2",
                [team_id.into(), d.name.clone().into()],
            ))
            .await?;
        Ok(match latest {
            Some(r) if col::<String>(&r, "id")? != last => {
                Some(format!("new_data:{}@{}", d.name, col::<i64>(&r, "version")?))
            }
            _ => None,
        })
    }
}
