//! Datasets: immutable, versioned, content-hashed tables (uploaded CSV or Parquet) with their
//! schema, row count and a profile of every column.

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use utoipa::{IntoParams, ToSchema};

/// The type of a dataset column.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ColumnType {
    Int64,
    Float64,
    Bool,
    String,
    /// Microseconds since the Unix epoch, UTC.
    Timestamp,
}

impl ColumnType {
    pub fn as_str(self) -> &'static str {
        match self {
            ColumnType::Int64 => "int64",
            ColumnType::Float64 => "float64",
            ColumnType::Bool => "bool",
            ColumnType::String => "string",
            ColumnType::Timestamp => "timestamp",
        }
    }
}

/// The profile of one column.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ColumnProfile {
    pub name: String,
    #[serde(rename = "type")]
    pub kind: ColumnType,
    pub nulls: u64,
    /// Distinct non-null values (exact).
    pub distinct: u64,
    /// Numeric columns: minimum, maximum, mean and standard deviation (population) of the
    /// non-null values.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mean: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub std: Option<f64>,
    /// String and bool columns: the most frequent values with their counts (at most 10).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub top: Vec<ValueCount>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ValueCount {
    pub value: String,
    pub count: u64,
}

/// A named dataset of a team; its content lives in numbered, immutable versions.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Dataset {
    pub id: String,
    pub team: String,
    pub name: String,
    pub description: String,
    pub latest_version: u32,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    pub created_by: String,
}

/// One immutable version of a dataset.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct DatasetVersion {
    pub team: String,
    pub dataset: String,
    pub version: u32,
    /// `csv` or `parquet`: the format of the uploaded file (kept byte for byte).
    pub format: String,
    /// SHA-256 of the uploaded bytes, hex.
    pub sha256: String,
    pub size_bytes: u64,
    pub rows: u64,
    pub columns: Vec<ColumnProfile>,
    /// Where the data came from (an upload's file name, a query, ...).
    pub source: String,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    pub created_by: String,
}

/// Query parameters of a dataset upload (the body is the file).
#[derive(Debug, Clone, Default, Serialize, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct UploadDataset {
    /// `csv` or `parquet`; default: detected from the content (Parquet's magic bytes, gzip, or
    /// text).
    #[serde(default)]
    pub format: Option<String>,
    /// Where the file came from, kept as lineage (e.g. its file name).
    #[serde(default)]
    pub source: Option<String>,
    #[serde(default)]
    pub description: Option<String>,
}

/// A reference to a dataset version: `team/name@version` in text, or these fields.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DatasetRef {
    pub name: String,
    /// Default: the latest version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<u32>,
}

/// SQL over the datasets the caller's team may read: its own (by name) and those other teams
/// granted it (as `"owner-team".name`). Nothing else is reachable.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"sql": "SELECT 1 AS one", "format": "jsonl"}))]
pub struct QueryRequest {
    pub sql: String,
    /// `jsonl` (default), `csv` or `parquet`.
    #[serde(default)]
    pub format: Option<String>,
    /// At most this many rows are returned (default 100000, at most 10000000); the answer says
    /// when the result was cut (`X-Plinth-Truncated: true`).
    #[serde(default)]
    pub max_rows: Option<u64>,
    /// Give up after this long (default 60000, at most 600000).
    #[serde(default)]
    pub timeout_ms: Option<u64>,
    /// Save the result as a new version of this dataset (Parquet, the query as its source)
    /// instead of returning it.
    #[serde(default)]
    pub save_as: Option<String>,
}

/// Lets another team read a dataset.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DatasetGrant {
    pub team: String,
}

/// Where a data source reads from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum SourceKind {
    /// A Parquet or CSV file under the server's local sources root.
    File,
    /// Every Parquet or CSV file of a folder under the local sources root (one schema).
    Folder,
    /// A PostgreSQL table or query.
    Postgres,
}

/// A team's data source: readable in SQL by its name, like a dataset.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateSource {
    pub name: String,
    pub kind: SourceKind,
    /// File and folder sources: a path relative to the server's `local_sources_root`.
    #[serde(default)]
    pub path: Option<String>,
    /// PostgreSQL: `postgres://user:password@host/db` (a secret: never shown again).
    #[serde(default)]
    pub url: Option<String>,
    /// PostgreSQL: a table (`schema.table` or `table`) ...
    #[serde(default)]
    pub table: Option<String>,
    /// ... or a query.
    #[serde(default)]
    pub query: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Source {
    pub team: String,
    pub name: String,
    pub kind: SourceKind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// PostgreSQL: the server, without credentials.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub table: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub query: Option<String>,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
}
