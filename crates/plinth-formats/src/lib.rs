//! Model formats: detection, complete structural validation, and the facts a registry needs
//! (signature, operators, trees, objective).
//!
//! The readers here are the same ones the runtimes evaluate with, so a file that passes
//! [`inspect`] at upload is exactly a file the runtimes can load. Every error names the place in
//! the file and the reason: the reference libraries abort or answer wrong on malformed files,
//! Plinth refuses them.

pub mod lightgbm;
pub mod onnx;
pub mod onnx_ml;
mod protobuf;
pub mod xgboost;

use plinth_api::registry::{ModelFormat, Signature};

/// Why a file is not a valid model.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{format}: {place}: {reason}")]
pub struct FormatError {
    /// The format the file was read as (`onnx`, `lightgbm`, `xgboost`, or `unknown`).
    pub format: &'static str,
    /// Where in the file: a path such as `graph.node[3].input[1]` or `Tree=4.left_child[2]`.
    pub place: String,
    pub reason: String,
}

impl FormatError {
    pub(crate) fn new(
        format: &'static str,
        place: impl Into<String>,
        reason: impl Into<String>,
    ) -> Self {
        FormatError { format, place: place.into(), reason: reason.into() }
    }
}

/// What [`inspect`] learned from a valid model file.
#[derive(Debug, Clone)]
pub struct Inspected {
    pub format: ModelFormat,
    /// The signature, when the format carries one.
    pub signature: Option<Signature>,
    /// Format-specific facts, stored with the version.
    pub details: serde_json::Value,
}

/// The outputs Plinth's runtimes answer for a tabular tree model: `label` and `probabilities`
/// for classifiers (two columns for binary), `predictions` for regressors.
pub(crate) fn tree_outputs(classes: Option<usize>) -> Vec<plinth_api::registry::TensorSpec> {
    use plinth_api::registry::{DataType, TensorSpec};
    match classes {
        Some(c) => vec![
            TensorSpec { name: "label".into(), datatype: DataType::Int64, shape: vec![-1] },
            TensorSpec {
                name: "probabilities".into(),
                datatype: DataType::Fp32,
                shape: vec![-1, c as i64],
            },
        ],
        None => vec![TensorSpec {
            name: "predictions".into(),
            datatype: DataType::Fp32,
            shape: vec![-1],
        }],
    }
}

/// Detects the format of `bytes` and validates the whole file.
pub fn inspect(bytes: &[u8]) -> Result<Inspected, FormatError> {
    match detect(bytes)? {
        ModelFormat::Onnx => onnx::inspect(bytes),
        ModelFormat::Lightgbm => lightgbm::inspect(bytes),
        ModelFormat::Xgboost => xgboost::inspect(bytes),
    }
}

/// Decides which format a file claims to be, from its first bytes.
pub fn detect(bytes: &[u8]) -> Result<ModelFormat, FormatError> {
    if bytes.is_empty() {
        return Err(FormatError::new("unknown", "file", "the file is empty"));
    }
    let head = &bytes[..bytes.len().min(64)];
    let text = std::str::from_utf8(head).unwrap_or("");
    let trimmed = text.trim_start();
    if trimmed.starts_with("tree\n") || trimmed.starts_with("tree\r\n") {
        return Ok(ModelFormat::Lightgbm);
    }
    if trimmed.starts_with('{') {
        return Ok(ModelFormat::Xgboost);
    }
    if bytes[0] == b'{' || bytes[0] == b'[' {
        return Ok(ModelFormat::Xgboost);
    }
    // An ONNX ModelProto starts with a protobuf tag; in practice `ir_version` (field 1, varint),
    // but any valid field tag of ModelProto is accepted and the decoder decides.
    if onnx::looks_like_onnx(bytes) {
        return Ok(ModelFormat::Onnx);
    }
    Err(FormatError::new(
        "unknown",
        "file",
        "not a model of a supported format (ONNX protobuf, LightGBM text starting with 'tree', or XGBoost JSON)",
    ))
}
