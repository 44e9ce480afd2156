//! Plinth's built-in trainers, kept out of the core like the inference runtimes:
//!
//! - [`gbdt`]: histogram gradient-boosted trees in LightGBM's manner (binary, multiclass,
//!   regression, Huber), written as a LightGBM text model ([`model`]) that Plinth serves and the
//!   `lightgbm` package loads.
//! - [`linear`]: linear and logistic regression (L2, standardized inputs), written as an ONNX
//!   model of `ai.onnx.ml` linear operators.
//!
//! [`service::BuiltIn`] is the core's `Trainer`: what a recipe's run calls.
//!
//! Data arrives as a [`data::Source`] read twice: once to sample bin boundaries, once to store
//! bins. Memory is the binned matrix (rows × features bytes) plus per-row label, scores and
//! gradients (20 + 16 × classes bytes a row, docs/training.md), never the raw floats.

pub mod data;
pub mod gbdt;
pub mod linear;
pub mod model;
pub mod onnx;
pub mod params;
pub mod rng;
pub mod service;

use std::ops::ControlFlow;

pub use data::{Columns, Dataset, FileSource, Labels, Source};
pub use gbdt::{Booster, Progress};
pub use params::{Objective, ParamError, Params};

/// A trained gradient-boosted model, written.
#[derive(Debug)]
pub struct Trained {
    /// The LightGBM text model.
    pub model: String,
    pub booster: Booster,
    pub train_rows: usize,
    pub valid_rows: usize,
    /// Bytes of the binned matrices: what training memory is proportional to.
    pub binned_bytes: usize,
    pub labels: Labels,
    pub feature_names: Vec<String>,
    /// Per feature, the categories of a string feature: serving takes a category's index in
    /// this list (its code); unknown or missing values go where missing values go.
    pub categories: Vec<Option<Vec<String>>>,
}

/// Why training did not produce a model.
#[derive(Debug, Clone, PartialEq)]
pub enum TrainError {
    /// The data or a parameter is at fault: names the field and the reason.
    Invalid(String),
    Cancelled,
}

impl std::fmt::Display for TrainError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TrainError::Invalid(m) => f.write_str(m),
            TrainError::Cancelled => f.write_str("cancelled"),
        }
    }
}

impl std::error::Error for TrainError {}

/// Bins the source and boosts; `progress` sees each iteration and may cancel.
pub fn train_gbdt(
    source: &mut dyn Source,
    columns: &Columns,
    params: &Params,
    progress: &mut dyn FnMut(&Progress) -> ControlFlow<()>,
) -> Result<Trained, TrainError> {
    let mut params = params.clone();
    let columns = Columns { classify: params.objective.is_classification(), ..columns.clone() };
    let data = data::build(source, &columns, &params).map_err(TrainError::Invalid)?;
    if let Labels::Classes(classes) = &data.labels {
        match params.objective {
            Objective::Binary if classes.len() != 2 => {
                return Err(TrainError::Invalid(format!(
                    "{}: binary needs exactly two classes, the data has {} ({})",
                    columns.label,
                    classes.len(),
                    classes.iter().take(5).cloned().collect::<Vec<_>>().join(", ")
                )));
            }
            Objective::Multiclass => {
                if params.num_class > 1 && params.num_class != classes.len() {
                    return Err(TrainError::Invalid(format!(
                        "num_class: {} given, but the label '{}' has {} classes",
                        params.num_class,
                        columns.label,
                        classes.len()
                    )));
                }
                params.num_class = classes.len();
            }
            _ => {}
        }
    }
    let booster = gbdt::train(&data, &params, progress).map_err(|_| TrainError::Cancelled)?;
    let model = model::lightgbm_text(&booster, &data);
    Ok(Trained {
        model,
        train_rows: data.train.rows,
        valid_rows: data.valid.rows,
        binned_bytes: data.bytes(),
        labels: data.labels.clone(),
        feature_names: data.feature_names.clone(),
        categories: data
            .mappers
            .iter()
            .map(|m| match m {
                data::Mapper::Categorical { names, .. } => names.clone(),
                data::Mapper::Numeric { .. } => None,
            })
            .collect(),
        booster,
    })
}
