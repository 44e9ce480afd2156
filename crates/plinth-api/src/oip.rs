//! The Open Inference Protocol v2 bodies, as the OpenAPI document describes them. The server
//! reads requests with its own fast reader and writes answers directly; these types say what
//! those bodies are, field by field, for clients and for the document.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// `GET /v2`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ServerMetadata {
    pub name: String,
    pub version: String,
    pub extensions: Vec<String>,
}

/// `GET /v2/health/live` and `/v2/health/ready`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Health {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub live: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready: Option<bool>,
}

/// `GET /v2/models/{name}/ready`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ModelReady {
    pub name: String,
    pub ready: bool,
}

/// A tensor as metadata describes it.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct TensorMetadata {
    pub name: String,
    /// `BOOL`, `INT8`...`INT64`, `UINT8`...`UINT64`, `FP16`, `FP32`, `FP64`, `BYTES`.
    pub datatype: String,
    /// -1 for a dimension of any size.
    pub shape: Vec<i64>,
}

/// `GET /v2/models/{name}`: a deployment (`team.model` for production, `team.model.env`).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ModelMetadata {
    pub name: String,
    /// The versions the deployment serves.
    pub versions: Vec<String>,
    pub platform: String,
    pub inputs: Vec<TensorMetadata>,
    pub outputs: Vec<TensorMetadata>,
}

/// An input tensor of an inference request: `data` inline (nested or flat arrays in row-major
/// order), or `parameters.binary_data_size` bytes in the binary section after the JSON
/// (`Inference-Header-Content-Length` gives the JSON's length).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct InferInputTensor {
    pub name: String,
    pub shape: Vec<i64>,
    pub datatype: String,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schema(value_type = Object)]
    pub parameters: BTreeMap<String, serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Vec<Value>>)]
    pub data: Option<serde_json::Value>,
}

/// An output a request asks for (`parameters.binary_data: true` for the binary section).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct RequestedOutputTensor {
    pub name: String,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schema(value_type = Object)]
    pub parameters: BTreeMap<String, serde_json::Value>,
}

/// `POST /v2/models/{name}/infer`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[schema(example = json!({"inputs": [{"name": "input", "shape": [1, 6], "datatype": "FP32", "data": [39, 13, 2174, 0, 40, 1]}]}))]
pub struct InferRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// `binary_data_output: true` answers every output in the binary section.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schema(value_type = Object)]
    pub parameters: BTreeMap<String, serde_json::Value>,
    pub inputs: Vec<InferInputTensor>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub outputs: Vec<RequestedOutputTensor>,
}

/// An output tensor of an answer: `data` inline, or `parameters.binary_data_size` bytes in the
/// binary section.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct InferOutputTensor {
    pub name: String,
    pub datatype: String,
    pub shape: Vec<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Vec<Value>>)]
    pub data: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub parameters: Option<serde_json::Value>,
}

/// The answer to an inference request.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct InferResponse {
    pub model_name: String,
    pub model_version: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    pub outputs: Vec<InferOutputTensor>,
}

/// The protocol's error: a message, and Plinth's error code.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct OipError {
    pub error: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<crate::Code>,
}

/// Triton's model configuration extension (`GET /v2/models/{name}/config`).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[schema(value_type = Object)]
pub struct ModelConfig(pub serde_json::Value);

/// Triton's statistics extension (`GET /v2/models/{name}/stats`, `/v2/models/stats`).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ModelStats {
    #[schema(value_type = Vec<Object>)]
    pub model_stats: Vec<serde_json::Value>,
}

/// An entry of Triton's model repository index (`POST /v2/repository/index`).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct RepositoryModel {
    pub name: String,
    pub version: String,
    pub state: String,
}

/// `GET /healthz` and `GET /readyz`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Probe {
    /// `ok`, `ready` or `not ready`.
    pub status: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}
