//! The seam to the inference runtimes: the object-safe [`Model`] and [`InferenceBackend`] traits.
//! The runtimes themselves live in the `plinth-infer` crate, so the core builds without them; the
//! binary wires a backend in at start.

use std::sync::Arc;

use plinth_api::registry::{ModelFormat, TensorSpec};

use super::tensor::Tensor;

/// Why a prediction failed: a problem with the input, named.
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
    fn run(&self, inputs: &[(&str, &Tensor)]) -> Result<Vec<(String, Tensor)>, InferError>;
}

/// Loads model artifacts into runnable models.
pub trait InferenceBackend: Send + Sync {
    fn load(&self, format: ModelFormat, bytes: &[u8]) -> Result<Arc<dyn Model>, String>;
    /// Whether a file would load: what an upload must pass before it is stored, so that every
    /// registered version can be served.
    fn check(&self, format: ModelFormat, bytes: &[u8]) -> Result<(), String> {
        self.load(format, bytes).map(drop)
    }
    /// A short description for logs and server metadata.
    fn describe(&self) -> String;
}

/// The backend of a build without runtimes: every load fails with a clear reason.
#[derive(Debug, Default)]
pub struct NoBackend;

impl InferenceBackend for NoBackend {
    fn load(&self, _: ModelFormat, _: &[u8]) -> Result<Arc<dyn Model>, String> {
        Err("this build of Plinth has no inference runtime (built without the `infer` feature)"
            .into())
    }

    /// Without a runtime there is nothing to load into: the format's own validation stands.
    fn check(&self, _: ModelFormat, _: &[u8]) -> Result<(), String> {
        Ok(())
    }

    fn describe(&self) -> String {
        "none".into()
    }
}
