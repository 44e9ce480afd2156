//! Training as a platform service: a team's **recipes** (named, versioned training specs: data,
//! label, features, trainer and parameters, the model to register into), **runs** that execute
//! them as tasks of the `training` queue, and **retraining** triggers (a live metric crossing a
//! threshold, a drift alert, a schedule, new data) that start runs by themselves.
//!
//! The trainers live outside the core ([`Trainer`], implemented by `plinth-train` and wired in
//! by the binary), like the inference runtimes. A recipe may instead name a command: Plinth runs
//! it as a subprocess ([`command`]).
//!
//! A run: read the data (a dataset version, the latest one, or SQL over what the team may
//! read), hold out a share of the rows, train on the rest, register the model as a version of
//! the recipe's model with its lineage (dataset version and hash, recipe version, run id,
//! parameters) and model card filled in, upload the held-out rows as a dataset version and
//! evaluate the new version on it (fairness included), and — for triggered runs — request its
//! promotion, which the team's policy decides (self-serve or review).

pub mod command;
mod run;
pub mod triggers;

use std::collections::BTreeMap;
use std::ops::ControlFlow;

use plinth_api::Code;
use plinth_api::identity::TeamRole;
use plinth_api::registry::{ModelFormat, Task};
use plinth_api::tasks::TaskState;
use plinth_api::training::{
    Recipe, RecipeData, RecipeSpec, RunStep, StartRun, TrainingRun, Trigger,
};
use serde_json::{Value, json};
use sqlx::any::AnyRow;

use crate::Plinth;
use crate::audit::{self, Target};
use crate::auth::Principal;
use crate::error::{Error, Result};
use crate::store::{Sql, col};
use crate::util::{check_name, micros_to_time, new_id, now_micros};

/// Rows a trainer reads, as often as it needs (the built-in trainers read twice).
pub use crate::data::Rows;

/// What to train.
#[derive(Debug, Clone)]
pub struct TrainJob {
    /// `gbdt`, `linear` or `logistic`.
    pub trainer: String,
    pub task: Task,
    pub features: Vec<String>,
    pub label: String,
    pub params: BTreeMap<String, Value>,
}

/// A trained model, written in a format Plinth serves.
#[derive(Debug, Clone)]
pub struct Trained {
    pub format: ModelFormat,
    pub bytes: Vec<u8>,
    /// Per feature, the categories of a string feature (serving takes a category's index).
    pub categories: Vec<Option<Vec<String>>>,
    /// The parameters in effect, for the lineage.
    pub params: BTreeMap<String, String>,
    /// E.g. "100 trees, 31 leaves at most".
    pub summary: String,
}

/// Why training failed.
#[derive(Debug, Clone, PartialEq)]
pub enum TrainFailure {
    /// The data or a parameter is at fault; the message names it.
    Invalid(String),
    Cancelled,
}

/// The built-in trainers, as the core sees them.
pub trait Trainer: Send + Sync {
    /// Checks a recipe's trainer and parameters without data (a recipe is refused at once when
    /// they are wrong). Errors name the parameter.
    fn check(
        &self,
        trainer: &str,
        params: &BTreeMap<String, Value>,
    ) -> std::result::Result<(), String>;

    fn train(
        &self,
        job: &TrainJob,
        rows: &mut dyn Rows,
        progress: &mut dyn FnMut(&RunStep) -> ControlFlow<()>,
    ) -> std::result::Result<Trained, TrainFailure>;
}

/// A build without trainers: recipes can still name a command.
#[derive(Debug, Default)]
pub struct NoTrainer;

impl Trainer for NoTrainer {
    fn check(&self, trainer: &str, _: &BTreeMap<String, Value>) -> std::result::Result<(), String> {
        Err(format!("this build of Plinth has no built-in trainers ('{trainer}'); use a command"))
    }

    fn train(
        &self,
        _: &TrainJob,
        _: &mut dyn Rows,
        _: &mut dyn FnMut(&RunStep) -> ControlFlow<()>,
    ) -> std::result::Result<Trained, TrainFailure> {
        Err(TrainFailure::Invalid("this build of Plinth has no built-in trainers".into()))
    }
}

/// The task kind of a run.
pub(crate) const RUN: &str = "training.run";

/// Arguments of a run's task.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub(crate) struct RunArgs {
    pub recipe_id: String,
    /// Absent for a schedule's runs: the latest version at the time.
    #[serde(default)]
    pub recipe_version: Option<u32>,
    pub trigger: String,
    #[serde(default)]
    pub params: BTreeMap<String, Value>,
}

struct RunTask;

impl crate::tasks::TaskKind for RunTask {
    fn name(&self) -> &'static str {
        RUN
    }

    fn queue(&self) -> &'static str {
        "training"
    }

    /// A failed run is not retried by itself: its reason is the answer (the team re-runs).
    fn max_attempts(&self) -> u32 {
        1
    }

    fn run<'a>(
        &'a self,
        core: &'a Plinth,
        task: &'a crate::tasks::TaskRun,
    ) -> futures_util::future::BoxFuture<'a, Result<Value>> {
        Box::pin(async move { core.execute_run(task).await })
    }
}

/// Registers the training task kinds.
pub(crate) fn register(r: &mut crate::tasks::Registry) {
    r.register(RunTask);
    r.register(triggers::CheckTriggers);
}

const RECIPE_SELECT: &str = "SELECT r.id, r.name, r.latest_version, r.last_triggered_at, r.team_id, t.name AS team_name,
        v.version, v.spec, v.created_at, COALESCE(p.name, v.created_by) AS created_by_name, v.created_by
    FROM recipes r JOIN teams t ON t.id = r.team_id JOIN recipe_versions v ON v.recipe_id = r.id
    LEFT JOIN principals p ON p.id = v.created_by";

fn recipe_from_row(row: &AnyRow) -> Result<Recipe> {
    Ok(Recipe {
        team: col(row, "team_name")?,
        name: col(row, "name")?,
        version: col::<i64>(row, "version")? as u32,
        spec: serde_json::from_str(&col::<String>(row, "spec")?)?,
        created_at: micros_to_time(col(row, "created_at")?),
        created_by: col(row, "created_by_name")?,
        last_triggered_at: col::<Option<i64>>(row, "last_triggered_at")?.map(micros_to_time),
    })
}

const RUN_SELECT: &str = "SELECT r.id, r.trigger, r.steps, r.recipe_version, r.created_at, k.state, k.progress, k.result, k.errors,
        k.finished_at, t.name AS team_name, c.name AS recipe_name, COALESCE(p.name, k.created_by) AS created_by_name,
        (SELECT v.spec FROM recipe_versions v WHERE v.recipe_id = r.recipe_id AND v.version = r.recipe_version) AS spec
    FROM training_runs r JOIN tasks k ON k.id = r.id JOIN teams t ON t.id = r.team_id JOIN recipes c ON c.id = r.recipe_id
    LEFT JOIN principals p ON p.id = k.created_by";

fn run_from_row(row: &AnyRow) -> Result<TrainingRun> {
    let state: String = col(row, "state")?;
    let spec: RecipeSpec = serde_json::from_str(&col::<String>(row, "spec")?)?;
    let result: Option<String> = col(row, "result")?;
    let errors: Vec<plinth_api::tasks::TaskError> =
        serde_json::from_str(&col::<String>(row, "errors")?)?;
    Ok(TrainingRun {
        id: col(row, "id")?,
        team: col(row, "team_name")?,
        recipe: col(row, "recipe_name")?,
        recipe_version: col::<i64>(row, "recipe_version")? as u32,
        model: spec.model,
        state: TaskState::parse(&state)
            .ok_or_else(|| Error::internal(format!("bad task state {state}")))?,
        progress: col(row, "progress")?,
        trigger: col(row, "trigger")?,
        steps: serde_json::from_str(&col::<String>(row, "steps")?)?,
        result: result.map(|r| serde_json::from_str(&r)).transpose()?,
        error: errors.last().map(|e| e.error.clone()),
        created_at: micros_to_time(col(row, "created_at")?),
        created_by: col(row, "created_by_name")?,
        finished_at: col::<Option<i64>>(row, "finished_at")?.map(micros_to_time),
    })
}

/// The share of rows held out for the evaluation.
pub(crate) fn holdout_fraction(spec: &RecipeSpec) -> f64 {
    spec.holdout_fraction.unwrap_or(0.2)
}

impl Plinth {
    fn check_recipe(&self, spec: &RecipeSpec) -> Result<()> {
        if spec.label.trim().is_empty() {
            return Err(Error::invalid("label", "must name the label column"));
        }
        if spec.features.contains(&spec.label) {
            return Err(Error::invalid(
                "features",
                format!("the label '{}' cannot also be a feature", spec.label),
            ));
        }
        let h = holdout_fraction(spec);
        if !(0.0..0.9).contains(&h) || (h > 0.0 && h < 0.01) {
            return Err(Error::invalid(
                "holdout_fraction",
                format!("must be 0 (no evaluation) or between 0.01 and 0.9, got {h}"),
            ));
        }
        match (spec.trainer.as_str(), &spec.command) {
            ("command", None) => {
                return Err(Error::invalid("command", "trainer 'command' needs a command to run"));
            }
            ("command", Some(c)) => {
                if !self.training_commands {
                    return Err(Error::new(
                        Code::FeatureDisabled,
                        "this server does not run training commands (training_commands = false): use a built-in trainer",
                    )
                    .with_field("command"));
                }
                if c.argv.is_empty() || c.argv[0].trim().is_empty() {
                    return Err(Error::invalid("command.argv", "must name a program"));
                }
                if c.timeout_seconds == Some(0) {
                    return Err(Error::invalid("command.timeout_seconds", "must be at least 1"));
                }
                if c.memory_mb.is_some_and(|m| m < 16) {
                    return Err(Error::invalid("command.memory_mb", "must be at least 16"));
                }
            }
            (_, Some(_)) => {
                return Err(Error::invalid("command", "only trainer 'command' runs a command"));
            }
            (t, None) => self.trainer.check(t, &spec.params).map_err(|e| {
                let (field, reason) = e.split_once(": ").unwrap_or(("trainer", e.as_str()));
                let field =
                    if field == "trainer" { field.to_string() } else { format!("params.{field}") };
                Error::invalid(field, reason)
            })?,
        }
        if let RecipeData::Sql(q) = &spec.data
            && q.trim().is_empty()
        {
            return Err(Error::invalid("data.sql", "the query is empty"));
        }
        if let Some(r) = &spec.retrain {
            if let Some(w) = r.canary_weight
                && !(1..=99).contains(&w)
            {
                return Err(Error::invalid("retrain.canary_weight", "must be between 1 and 99"));
            }
            for (i, t) in r.triggers.iter().enumerate() {
                match t {
                    Trigger::Metric { metric, below, above, .. } => {
                        if metric.trim().is_empty() || below.is_some() == above.is_some() {
                            return Err(Error::invalid(
                                format!("retrain.triggers[{i}]"),
                                "a metric trigger names a metric and exactly one of below/above",
                            ));
                        }
                    }
                    Trigger::Schedule { cron } => {
                        crate::tasks::schedule::Cron::parse(cron)
                            .map_err(|e| e.with_field(format!("retrain.triggers[{i}].cron")))?;
                    }
                    Trigger::Drift | Trigger::NewData => {}
                }
            }
        }
        Ok(())
    }

    /// Creates a recipe, or a new version of it when the spec changed (developers and up).
    pub async fn put_recipe(
        &self,
        who: &Principal,
        team: &str,
        name: &str,
        spec: RecipeSpec,
    ) -> Result<Recipe> {
        let team = self.team_ref(who, team).await?;
        who.require(&team, TeamRole::Developer, "writing a recipe")?;
        check_name("name", name)?;
        self.check_recipe(&spec)?;
        // The model must be the team's: the run registers into it.
        self.model_ref(who, &team.name, &spec.model).await.map_err(|e| e.with_field("model"))?;
        match &spec.data {
            RecipeData::Dataset(d) => {
                self.resolve_dataset(&team, d, "data.dataset").await?;
            }
            RecipeData::TrainingSet(t) => {
                self.resolve_dataset(&team, &t.entities, "data.training_set.entities").await?;
                if t.feature_service.is_none() && t.features.is_empty() {
                    return Err(Error::invalid(
                        "data.training_set",
                        "name a feature_service or features (view:feature)",
                    ));
                }
            }
            RecipeData::Sql(_) => {}
        }
        let text = serde_json::to_string(&spec)?;
        let now = now_micros();
        let mut tx = self.db.begin().await?;
        let existing = Sql::with(
            "SELECT r.id, r.latest_version, v.spec FROM recipes r JOIN recipe_versions v ON v.recipe_id = r.id AND v.version = r.latest_version
             WHERE r.team_id = $1 AND r.name = $2",
            [team.id.clone().into(), name.into()],
        )
        .fetch_optional_tx(&mut tx)
        .await?;
        let (id, version) = match existing {
            Some(row) => {
                let id: String = col(&row, "id")?;
                let latest: i64 = col(&row, "latest_version")?;
                if col::<String>(&row, "spec")? == text {
                    tx.commit().await?;
                    return self.get_recipe(who, &team.name, name).await;
                }
                Sql::with(
                    "UPDATE recipes SET latest_version = $1 WHERE id = $2",
                    [(latest + 1).into(), id.clone().into()],
                )
                .execute(&mut tx)
                .await?;
                (id, latest + 1)
            }
            None => {
                let id = new_id("rcp");
                Sql::with(
                    "INSERT INTO recipes (id, team_id, name, latest_version, created_at) VALUES ($1, $2, $3, 1, $4)",
                    [id.clone().into(), team.id.clone().into(), name.into(), now.into()],
                )
                .execute(&mut tx)
                .await?;
                (id, 1)
            }
        };
        Sql::with(
            "INSERT INTO recipe_versions (recipe_id, version, spec, created_at, created_by) VALUES ($1, $2, $3, $4, $5)",
            [id.clone().into(), version.into(), text.into(), now.into(), who.id.clone().into()],
        )
        .execute(&mut tx)
        .await?;
        let label = format!("{name}@{version}");
        let t = Target {
            team_id: Some(&team.id),
            object_type: "recipe",
            object_id: &id,
            object_name: &label,
        };
        audit::record(&mut tx, who, "recipe.put", t, json!({"version": version, "spec": spec}))
            .await?;
        tx.commit().await?;
        self.sync_recipe_schedules(&team.id, &id, &spec, &who.id).await?;
        self.get_recipe(who, &team.name, name).await
    }

    /// One schedule per schedule trigger of the recipe's latest version (the others removed).
    async fn sync_recipe_schedules(
        &self,
        team_id: &str,
        recipe_id: &str,
        spec: &RecipeSpec,
        by: &str,
    ) -> Result<()> {
        let prefix = format!("recipe:{recipe_id}:");
        let mut tx = self.db.begin().await?;
        Sql::with(
            "DELETE FROM schedules WHERE team_id = $1 AND name LIKE $2",
            [team_id.into(), format!("{prefix}%").into()],
        )
        .execute(&mut tx)
        .await?;
        tx.commit().await?;
        let triggers = spec.retrain.as_ref().map(|r| r.triggers.as_slice()).unwrap_or(&[]);
        for (i, t) in triggers.iter().enumerate() {
            if let Trigger::Schedule { cron } = t {
                let args = serde_json::to_value(RunArgs {
                    recipe_id: recipe_id.into(),
                    recipe_version: None,
                    trigger: "schedule".into(),
                    params: BTreeMap::new(),
                })?;
                self.put_schedule(crate::tasks::schedule::NewSchedule {
                    team_id: Some(team_id),
                    name: &format!("{prefix}{i}"),
                    kind: RUN,
                    args: &args,
                    every: crate::tasks::schedule::Every::Cron(
                        crate::tasks::schedule::Cron::parse(cron)?,
                    ),
                    first_at: None,
                    by,
                })
                .await?;
            }
        }
        Ok(())
    }

    pub async fn get_recipe(&self, who: &Principal, team: &str, name: &str) -> Result<Recipe> {
        let team = self.team_ref(who, team).await?;
        let row = self
            .db
            .fetch_optional(&Sql::with(
                &format!("{RECIPE_SELECT} WHERE r.team_id = $1 AND r.name = $2 AND v.version = r.latest_version"),
                [team.id.clone().into(), name.into()],
            ))
            .await?
            .ok_or_else(|| Error::not_found("recipe", format!("{}/{name}", team.name)))?;
        recipe_from_row(&row)
    }

    pub async fn list_recipes(&self, who: &Principal, team: &str) -> Result<Vec<Recipe>> {
        let team = self.team_ref(who, team).await?;
        self.db
            .fetch_all(&Sql::with(
                &format!("{RECIPE_SELECT} WHERE r.team_id = $1 AND v.version = r.latest_version ORDER BY r.name"),
                [team.id.clone().into()],
            ))
            .await?
            .iter()
            .map(recipe_from_row)
            .collect()
    }

    /// Starts a run of the recipe's latest version: 202, the run waits in the `training` queue.
    pub async fn start_run(
        &self,
        who: &Principal,
        team: &str,
        recipe: &str,
        req: StartRun,
    ) -> Result<TrainingRun> {
        let r = self.get_recipe(who, team, recipe).await?;
        let team = self.team_ref(who, team).await?;
        who.require(&team, TeamRole::Developer, "starting a training run")?;
        if !req.params.is_empty() && r.spec.trainer != "command" {
            let mut merged = r.spec.params.clone();
            merged.extend(req.params.clone());
            self.trainer.check(&r.spec.trainer, &merged).map_err(|e| {
                let (field, reason) = e.split_once(": ").unwrap_or(("params", e.as_str()));
                Error::invalid(format!("params.{field}"), reason)
            })?;
        }
        let id = self.recipe_id(&team.id, recipe).await?;
        let args = RunArgs {
            recipe_id: id,
            recipe_version: Some(r.version),
            trigger: "manual".into(),
            params: req.params,
        };
        let run = self.enqueue_run(&team.id, &args, &who.id, Some(who)).await?;
        self.load_run(&run).await
    }

    async fn recipe_id(&self, team_id: &str, name: &str) -> Result<String> {
        self.db
            .fetch_optional(&Sql::with(
                "SELECT id FROM recipes WHERE team_id = $1 AND name = $2",
                [team_id.into(), name.into()],
            ))
            .await?
            .ok_or_else(|| Error::not_found("recipe", name))
            .and_then(|r| col(&r, "id"))
    }

    /// Queues a run and records it (with the audit entry when a person asked for it).
    pub(crate) async fn enqueue_run(
        &self,
        team_id: &str,
        args: &RunArgs,
        by: &str,
        who: Option<&Principal>,
    ) -> Result<String> {
        let value = serde_json::to_value(args)?;
        let mut tx = self.db.begin().await?;
        let id = self
            .enqueue(&mut tx, crate::tasks::NewTask::new(Some(team_id), RUN, &value, by))
            .await?;
        let version = match args.recipe_version {
            Some(v) => i64::from(v),
            None => col(
                &Sql::with(
                    "SELECT latest_version FROM recipes WHERE id = $1",
                    [args.recipe_id.clone().into()],
                )
                .fetch_optional_tx(&mut tx)
                .await?
                .ok_or_else(|| Error::not_found("recipe", &args.recipe_id))?,
                "latest_version",
            )?,
        };
        Sql::with(
            "INSERT INTO training_runs (id, team_id, recipe_id, recipe_version, trigger, steps, created_at) VALUES ($1, $2, $3, $4, $5, '[]', $6)",
            [id.clone().into(), team_id.into(), args.recipe_id.clone().into(), version.into(), args.trigger.clone().into(), now_micros().into()],
        )
        .execute(&mut tx)
        .await?;
        if let Some(who) = who {
            let t = Target {
                team_id: Some(team_id),
                object_type: "training_run",
                object_id: &id,
                object_name: &id,
            };
            audit::record(
                &mut tx,
                who,
                "training_run.start",
                t,
                json!({"recipe": args.recipe_id, "trigger": args.trigger}),
            )
            .await?;
        }
        tx.commit().await?;
        self.wake_tasks();
        Ok(id)
    }

    pub(crate) async fn load_run(&self, id: &str) -> Result<TrainingRun> {
        let row = self
            .db
            .fetch_optional(&Sql::with(&format!("{RUN_SELECT} WHERE r.id = $1"), [id.into()]))
            .await?
            .ok_or_else(|| Error::not_found("training run", id))?;
        run_from_row(&row)
    }

    /// A run, if the caller may see its team.
    pub async fn get_run(&self, who: &Principal, team: &str, id: &str) -> Result<TrainingRun> {
        let team = self.team_ref(who, team).await?;
        let row = self
            .db
            .fetch_optional(&Sql::with(
                &format!("{RUN_SELECT} WHERE r.id = $1 AND r.team_id = $2"),
                [id.into(), team.id.clone().into()],
            ))
            .await?
            .ok_or_else(|| Error::not_found("training run", id))?;
        run_from_row(&row)
    }

    /// A team's runs, newest first (of one recipe when given).
    pub async fn list_runs(
        &self,
        who: &Principal,
        team: &str,
        recipe: Option<&str>,
    ) -> Result<Vec<TrainingRun>> {
        let team = self.team_ref(who, team).await?;
        let mut sql = Sql::new(&format!("{RUN_SELECT} WHERE r.team_id = "));
        sql.bind(team.id.clone());
        if let Some(name) = recipe {
            sql.push(" AND c.name = ").bind(name.to_string());
        }
        sql.push(" ORDER BY r.created_at DESC, r.id DESC LIMIT 200");
        self.db.fetch_all(&sql).await?.iter().map(run_from_row).collect()
    }

    /// Cancels a run (developers and up): it stops at its next iteration and registers nothing.
    pub async fn cancel_run(&self, who: &Principal, team: &str, id: &str) -> Result<TrainingRun> {
        self.get_run(who, team, id).await?;
        self.cancel_task(who, id).await?;
        self.load_run(id).await
    }

    /// The principal a run acts as: who started it, or the author of the recipe version a
    /// trigger ran.
    pub(crate) async fn acting_principal(&self, id: &str) -> Result<Principal> {
        crate::auth::principal_by_id(&self.db, id).await.map_err(|e| {
            Error::new(Code::Conflict, format!("the run's principal {id} is gone: {}", e.message))
        })
    }
}
