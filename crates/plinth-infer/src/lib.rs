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
pub mod tree;
mod tree_model;
mod xgboost;

use std::sync::Arc;

use plinth_api::registry::ModelFormat;
pub use plinth_core::serving::runtime::{InferError, InferenceBackend, Model};
pub use plinth_core::serving::tensor::{self, Data, Tensor};

/// Why a model could not be loaded.
#[derive(Debug, Clone, thiserror::Error)]
pub enum LoadError {
    #[error(transparent)]
    Format(#[from] plinth_formats::FormatError),
    #[error("{0}")]
    Unsupported(String),
}

/// Loads a model file of the given format.
pub fn load(format: ModelFormat, bytes: &[u8]) -> Result<Box<dyn Model>, LoadError> {
    match format {
        ModelFormat::Lightgbm => Ok(Box::new(lightgbm::load(bytes)?)),
        ModelFormat::Xgboost => Ok(Box::new(xgboost::load(bytes)?)),
        ModelFormat::Onnx => Ok(Box::new(onnx::OnnxModel::load(bytes)?)),
    }
}

/// Plinth's own runtimes as the core's inference backend.
#[derive(Debug, Default)]
pub struct NativeBackend;

impl InferenceBackend for NativeBackend {
    fn load(&self, format: ModelFormat, bytes: &[u8]) -> Result<Arc<dyn Model>, String> {
        load(format, bytes).map(Arc::from).map_err(|e| e.to_string())
    }

    fn describe(&self) -> String {
        "plinth-native (tree evaluator, ONNX with ONNX-ML)".into()
    }
}
