//! The trainers as the core's [`plinth_core::training::Trainer`]: what a recipe's run calls.

use std::collections::BTreeMap;
use std::ops::ControlFlow;

use plinth_api::registry::{ModelFormat, Task};
use plinth_api::training::RunStep;
use plinth_core::training::{Rows, TrainFailure, TrainJob, Trained, Trainer};
use serde_json::Value;

use crate::linear::{LinearParams, train_linear};
use crate::{Columns, Objective, Params, TrainError};

/// Plinth's built-in trainers: `gbdt`, `linear`, `logistic`.
#[derive(Debug, Default)]
pub struct BuiltIn;

fn step(p: &crate::Progress) -> RunStep {
    RunStep {
        iteration: p.iteration as u32,
        of: p.of as u32,
        metric: p.metric.to_string(),
        train: p.train,
        valid: p.valid,
    }
}

fn failure(e: TrainError) -> TrainFailure {
    match e {
        TrainError::Invalid(m) => TrainFailure::Invalid(m),
        TrainError::Cancelled => TrainFailure::Cancelled,
    }
}

impl Trainer for BuiltIn {
    fn check(&self, trainer: &str, params: &BTreeMap<String, Value>) -> Result<(), String> {
        match trainer {
            "gbdt" => Params::from_json(params).map(drop).map_err(|e| e.to_string()),
            "linear" | "logistic" => {
                LinearParams::from_json(params).map(drop).map_err(|e| e.to_string())
            }
            other => Err(format!(
                "trainer: '{other}' is not a trainer (gbdt, linear, logistic, command)"
            )),
        }
    }

    fn train(
        &self,
        job: &TrainJob,
        rows: &mut dyn Rows,
        progress: &mut dyn FnMut(&RunStep) -> ControlFlow<()>,
    ) -> Result<Trained, TrainFailure> {
        let mut forward = |p: &crate::Progress| progress(&step(p));
        match job.trainer.as_str() {
            "gbdt" => {
                let mut map = job.params.clone();
                // The model's task decides the objective unless the recipe says otherwise.
                map.entry("objective".into()).or_insert_with(|| {
                    Value::String(
                        match job.task {
                            Task::BinaryClassification => "binary",
                            Task::MulticlassClassification => "multiclass",
                            Task::Regression => "regression",
                        }
                        .into(),
                    )
                });
                map.entry("is_provide_training_metric".into()).or_insert(Value::Bool(true));
                let mut params = Params::from_json(&map)
                    .map_err(|e| TrainFailure::Invalid(format!("params.{e}")))?;
                let valid_fraction = if params.early_stopping_round > 0 { 0.1 } else { 0.0 };
                if params.objective.is_classification() != (job.task != Task::Regression) {
                    return Err(TrainFailure::Invalid(format!(
                        "params.objective: '{}' does not fit the model's task ({})",
                        params.objective.name(),
                        job.task.as_str()
                    )));
                }
                if job.task == Task::BinaryClassification {
                    params.objective = Objective::Binary;
                }
                let cols = Columns {
                    features: job.features.clone(),
                    label: job.label.clone(),
                    valid_fraction,
                    classify: false,
                };
                let t = crate::train_gbdt(rows, &cols, &params, &mut forward).map_err(failure)?;
                let mut effective: BTreeMap<String, String> = map
                    .iter()
                    .map(|(k, v)| {
                        (k.clone(), v.as_str().map(str::to_string).unwrap_or_else(|| v.to_string()))
                    })
                    .collect();
                effective
                    .insert("num_iterations".into(), t.booster.params.num_iterations.to_string());
                if let Some(b) = t.booster.best_iteration {
                    effective.insert("best_iteration".into(), b.to_string());
                }
                let trees = t.booster.trees.len();
                Ok(Trained {
                    format: ModelFormat::Lightgbm,
                    bytes: t.model.into_bytes(),
                    categories: t.categories,
                    params: effective,
                    summary: format!(
                        "gradient-boosted trees ({} objective): {trees} trees of at most {} leaves, learning rate {}; binned matrix {} bytes",
                        t.booster.objective.name(),
                        params.num_leaves,
                        params.learning_rate,
                        t.binned_bytes
                    ),
                })
            }
            "linear" | "logistic" => {
                let logistic = job.trainer == "logistic";
                if logistic != (job.task == Task::BinaryClassification) {
                    return Err(TrainFailure::Invalid(format!(
                        "trainer: '{}' does not fit the model's task ({})",
                        job.trainer,
                        job.task.as_str()
                    )));
                }
                let params = LinearParams::from_json(&job.params)
                    .map_err(|e| TrainFailure::Invalid(format!("params.{e}")))?;
                let cols = Columns {
                    features: job.features.clone(),
                    label: job.label.clone(),
                    valid_fraction: 0.0,
                    classify: logistic,
                };
                let fit =
                    train_linear(rows, &cols, logistic, &params, &mut forward).map_err(failure)?;
                Ok(Trained {
                    format: ModelFormat::Onnx,
                    bytes: fit.onnx(),
                    categories: vec![None; job.features.len()],
                    params: BTreeMap::from([
                        ("lambda_l2".to_string(), params.lambda_l2.to_string()),
                        ("iterations".to_string(), fit.iterations.to_string()),
                    ]),
                    summary: format!(
                        "{} regression on standardized inputs (L2 {}), {} Newton iterations",
                        if logistic { "logistic" } else { "linear" },
                        params.lambda_l2,
                        fit.iterations
                    ),
                })
            }
            other => {
                Err(TrainFailure::Invalid(format!("trainer: '{other}' is not a built-in trainer")))
            }
        }
    }
}
