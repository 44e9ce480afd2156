//! Plinth's inference runtimes, behind one object-safe trait, [`Model`].
//!
//! - LightGBM text and XGBoost JSON models are lowered onto the native tree evaluator
//!   ([`tree`]), which is built for batches and a cache-friendly layout.
//! - ONNX models run on a small graph executor ([`onnx`]) whose ONNX-ML operators (tree
//!   ensembles, linear models, scaler, imputer, normalizer, ZipMap, ...) are Plinth's own; tree
//!   ensembles lower onto the same evaluator.
//!
//! Loading validates completely (the readers in `plinth-formats` plus index checks here), so a
//! loaded model cannot read out of bounds at prediction time.

mod lightgbm;
pub mod onnx;
pub mod tensor;
pub mod tree;
mod tree_model;
mod xgboost;

use plinth_api::registry::{ModelFormat, TensorSpec};
pub use tensor::{Data, Tensor};

/// Why a model could not be loaded.
#[derive(Debug, Clone, thiserror::Error)]
pub enum LoadError {
    #[error(transparent)]
    Format(#[from] plinth_formats::FormatError),
    #[error("{0}")]
    Unsupported(String),
}

/// Why a prediction failed: always a problem with the input, named.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct InferError {
    /// The input (or `input.<column>`) at fault.
    pub field: String,
    pub reason: String,
}

impl InferError {
    pub fn new(field: impl Into<String>, reason: impl Into<String>) -> Self {
        InferError { field: field.into(), reason: reason.into() }
    }
}

/// A loaded model, ready to predict. Implementations are immutable and shared across threads.
pub trait Model: Send + Sync + std::fmt::Debug {
    /// The inputs the model takes (shapes use -1 for the batch dimension).
    fn inputs(&self) -> &[TensorSpec];
    /// The outputs it answers.
    fn outputs(&self) -> &[TensorSpec];
    /// Runs the model on named inputs and answers every output, in [`Model::outputs`] order.
    fn run(&self, inputs: &[(&str, Tensor)]) -> Result<Vec<(String, Tensor)>, InferError>;
}

/// Loads a model file of the given format.
pub fn load(format: ModelFormat, bytes: &[u8]) -> Result<Box<dyn Model>, LoadError> {
    match format {
        ModelFormat::Lightgbm => Ok(Box::new(lightgbm::load(bytes)?)),
        ModelFormat::Xgboost => Ok(Box::new(xgboost::load(bytes)?)),
        ModelFormat::Onnx => Ok(Box::new(onnx::OnnxModel::load(bytes)?)),
    }
}
