//! Cursor pagination: every list endpoint answers a [`Page`] and accepts `cursor` and `limit`.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// The default number of items in a page.
pub const DEFAULT_LIMIT: u32 = 50;
/// The largest page a caller may ask for.
pub const MAX_LIMIT: u32 = 500;

/// One page of a list. Pass `next_cursor` back as `cursor` to get the next page; it is absent on
/// the last page. Cursors are opaque.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Page<T> {
    pub items: Vec<T>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}
