//! Plinth's wire types: everything that crosses the HTTP boundary as JSON, and the stable
//! error-code catalogue. This crate is a leaf: it depends on nothing heavier than serde, so the
//! CLI, the server, the core and future clients all share one definition of each body.

pub mod audit;
pub mod billing;
pub mod data;
pub mod error;
pub mod features;
pub mod governance;
pub mod identity;
pub mod monitoring;
pub mod oip;
pub mod page;
pub mod registry;
pub mod serving;
pub mod tasks;
pub mod training;

pub use error::{Code, ErrorBody, ErrorDetail};
pub use page::Page;

/// A body of bytes (a file, Parquet, a binary tensor section), as the OpenAPI document
/// describes it: a binary string.
#[derive(Debug, Clone, utoipa::ToSchema)]
#[schema(value_type = String, format = Binary)]
pub struct Binary(pub Vec<u8>);

/// The API version prefix every REST route lives under.
pub const API_PREFIX: &str = "/api/v1";
