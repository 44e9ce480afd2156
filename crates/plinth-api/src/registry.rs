//! The model registry: models, their immutable versions, signatures, model cards and lineage.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use utoipa::{IntoParams, ToSchema};

/// What a model predicts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Task {
    BinaryClassification,
    MulticlassClassification,
    Regression,
}

impl Task {
    pub fn as_str(self) -> &'static str {
        match self {
            Task::BinaryClassification => "binary_classification",
            Task::MulticlassClassification => "multiclass_classification",
            Task::Regression => "regression",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "binary_classification" => Some(Task::BinaryClassification),
            "multiclass_classification" => Some(Task::MulticlassClassification),
            "regression" => Some(Task::Regression),
            _ => None,
        }
    }
}

/// The artifact format of a model version, detected at upload.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ModelFormat {
    /// ONNX, including the ONNX-ML operators written by skl2onnx and onnxmltools.
    Onnx,
    /// A LightGBM text model (`Booster.save_model`).
    Lightgbm,
    /// An XGBoost JSON model (`Booster.save_model("*.json")`).
    Xgboost,
}

impl ModelFormat {
    pub fn as_str(self) -> &'static str {
        match self {
            ModelFormat::Onnx => "onnx",
            ModelFormat::Lightgbm => "lightgbm",
            ModelFormat::Xgboost => "xgboost",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "onnx" => Some(ModelFormat::Onnx),
            "lightgbm" => Some(ModelFormat::Lightgbm),
            "xgboost" => Some(ModelFormat::Xgboost),
            _ => None,
        }
    }
}

/// A registered model: a name in a team, holding numbered versions.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Model {
    pub id: String,
    pub team: String,
    pub name: String,
    pub task: Task,
    pub description: String,
    pub tags: BTreeMap<String, String>,
    pub owners: Vec<String>,
    /// The highest version number registered so far (0 when none).
    pub latest_version: u32,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    pub created_by: String,
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
    #[serde(
        default,
        with = "time::serde::rfc3339::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub archived_at: Option<OffsetDateTime>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateModel {
    pub name: String,
    pub task: Task,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
    /// Owners (people or groups, free text). Default: the caller.
    #[serde(default)]
    pub owners: Option<Vec<String>>,
}

/// A partial update: absent fields are left as they are.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateModel {
    #[serde(default)]
    pub description: Option<String>,
    /// Replaces all tags.
    #[serde(default)]
    pub tags: Option<BTreeMap<String, String>>,
    #[serde(default)]
    pub owners: Option<Vec<String>>,
}

/// Filters for listing and searching models. All given filters must match.
#[derive(Debug, Clone, Default, Serialize, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ModelQuery {
    /// Only models of this team (on `/models`; the team routes set it from the path).
    #[serde(default)]
    pub team: Option<String>,
    /// Name contains this text (case-insensitive).
    #[serde(default)]
    pub q: Option<String>,
    /// Has this tag: `key` or `key=value`.
    #[serde(default)]
    pub tag: Option<String>,
    /// Has a version of this format.
    #[serde(default)]
    pub format: Option<String>,
    #[serde(default)]
    pub task: Option<String>,
    /// Include archived models (default false).
    #[serde(default)]
    pub include_archived: Option<bool>,
    #[serde(default)]
    pub cursor: Option<String>,
    #[serde(default)]
    pub limit: Option<u32>,
}

/// The datatype of a tensor, named as in the Open Inference Protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "UPPERCASE")]
pub enum DataType {
    Bool,
    Uint8,
    Uint16,
    Uint32,
    Uint64,
    Int8,
    Int16,
    Int32,
    Int64,
    Fp16,
    Fp32,
    Fp64,
    Bytes,
}

/// One input or output: a name, a datatype and a shape (`-1` marks a variable dimension).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TensorSpec {
    pub name: String,
    pub datatype: DataType,
    pub shape: Vec<i64>,
}

/// What a model version takes and answers.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Signature {
    pub inputs: Vec<TensorSpec>,
    #[serde(default)]
    pub outputs: Vec<TensorSpec>,
    /// For tabular models: the feature (column) names, in input order.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub feature_names: Option<Vec<String>>,
}

/// Where a signature came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum SignatureSource {
    /// Read from the artifact.
    Artifact,
    /// Given at registration.
    Registration,
    /// Read from the artifact, then overridden at registration.
    Overridden,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum RiskTier {
    Low,
    Medium,
    High,
}

/// The model card of a version: what it is for and what to watch for. Editable until the version
/// is approved for production.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ModelCard {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub intended_use: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limitations: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ethical_considerations: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub training_data: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub evaluation_data: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owners: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub risk_tier: Option<RiskTier>,
}

/// Where a version came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum LineageSource {
    #[default]
    Upload,
    TrainingJob,
    External,
}

/// How a version was made: its source, data, code, parameters and metrics.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Lineage {
    #[serde(default)]
    pub source: LineageSource,
    /// A dataset version reference, e.g. `adult@3` or a dataset version id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dataset_version: Option<String>,
    /// A training job id, when `source` is `training_job`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub training_job: Option<String>,
    /// A code reference, e.g. a git commit URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code_ref: Option<String>,
    #[serde(default)]
    pub parameters: BTreeMap<String, String>,
    #[serde(default)]
    pub metrics: BTreeMap<String, f64>,
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
}

/// The approval state of a version; governance moves it, the registry only reads it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ApprovalState {
    /// Not approved for production: the model card is editable.
    #[default]
    None,
    /// Approved for production: the model card is frozen.
    ApprovedForProduction,
}

impl ApprovalState {
    pub fn as_str(self) -> &'static str {
        match self {
            ApprovalState::None => "none",
            ApprovalState::ApprovedForProduction => "approved_for_production",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "none" => Some(ApprovalState::None),
            "approved_for_production" => Some(ApprovalState::ApprovedForProduction),
            _ => None,
        }
    }
}

/// The stored artifact of a version.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Artifact {
    pub format: ModelFormat,
    pub filename: String,
    pub size_bytes: u64,
    /// Lower-case hex SHA-256 of the artifact bytes.
    pub sha256: String,
    /// Facts read from the artifact (opset, operators, trees, objective, ...).
    pub details: serde_json::Value,
}

/// An immutable, numbered version of a model.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ModelVersion {
    pub id: String,
    pub team: String,
    pub model: String,
    pub version: u32,
    pub description: String,
    pub artifact: Artifact,
    pub signature: Signature,
    pub signature_source: SignatureSource,
    pub card: ModelCard,
    pub lineage: Lineage,
    pub approval: ApprovalState,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    pub created_by: String,
    #[serde(
        default,
        with = "time::serde::rfc3339::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub archived_at: Option<OffsetDateTime>,
    /// The feature service the version reads its inputs from: predictions may then send entity
    /// keys instead of feature values.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub feature_service: Option<String>,
}

/// The metadata part of a version upload (the multipart field `metadata`, sent before `artifact`).
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateVersion {
    #[serde(default)]
    pub description: Option<String>,
    /// Refuse the upload unless the detected format is this one.
    #[serde(default)]
    pub format: Option<ModelFormat>,
    /// Required when the artifact carries no signature; replaces the artifact's when given.
    #[serde(default)]
    pub signature: Option<Signature>,
    #[serde(default)]
    pub card: Option<ModelCard>,
    #[serde(default)]
    pub lineage: Option<Lineage>,
    /// A feature service of the team whose features are exactly the signature's feature names.
    #[serde(default)]
    pub feature_service: Option<String>,
}

/// Changes to a version's mutable metadata. The artifact and signature never change.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateVersion {
    #[serde(default)]
    pub description: Option<String>,
    /// Replaces the whole model card (refused once the version is approved for production).
    #[serde(default)]
    pub card: Option<ModelCard>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct VersionQuery {
    #[serde(default)]
    pub include_archived: Option<bool>,
    #[serde(default)]
    pub cursor: Option<String>,
    #[serde(default)]
    pub limit: Option<u32>,
}
