//! The error catalogue: one stable code per failure kind, its HTTP status and its meaning.
//!
//! Codes are part of the public contract (scripts match on them), so a code is never renamed or
//! reused; new failure kinds get new codes. `docs/errors.md` is generated from [`Code::ALL`] and
//! kept in sync by a test.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

macro_rules! codes {
    ($( $variant:ident = $name:literal, $status:literal, $kind:literal, $doc:literal; )*) => {
        /// A stable, machine-readable error code.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
        #[serde(rename_all = "snake_case")]
        pub enum Code {
            $( #[doc = $doc] $variant, )*
        }

        impl Code {
            /// Every code, in catalogue order.
            pub const ALL: &'static [Code] = &[$(Code::$variant,)*];

            /// The code as it appears on the wire.
            pub fn as_str(self) -> &'static str {
                match self { $(Code::$variant => $name,)* }
            }

            /// The HTTP status this code is answered with.
            pub fn http_status(self) -> u16 {
                match self { $(Code::$variant => $status,)* }
            }

            /// The broad class of the error: `invalid_request`, `auth`, `not_found`, `conflict`,
            /// `limit`, `unavailable` or `internal`.
            pub fn kind(self) -> &'static str {
                match self { $(Code::$variant => $kind,)* }
            }

            /// What the code means, for the catalogue.
            pub fn description(self) -> &'static str {
                match self { $(Code::$variant => $doc,)* }
            }
        }
    };
}

codes! {
    InvalidRequest = "invalid_request", 400, "invalid_request", "The request is malformed in a way no more specific code describes.";
    InvalidField = "invalid_field", 400, "invalid_request", "A field has a value that is not allowed; `field` names it and the message says why.";
    MissingField = "missing_field", 400, "invalid_request", "A required field is absent; `field` names it.";
    UnknownField = "unknown_field", 400, "invalid_request", "The body has a field the endpoint does not know; `field` names it.";
    MalformedJson = "malformed_json", 400, "invalid_request", "The body is not valid JSON, or a value has the wrong JSON type.";
    InvalidName = "invalid_name", 400, "invalid_request", "A name breaks the naming rule: 1-63 characters of a-z, 0-9, '-' and '_', starting with a letter or digit.";
    InvalidModel = "invalid_model", 422, "invalid_request", "The uploaded file is not a valid model of a supported format; the message names the place and the reason.";
    InvalidData = "invalid_data", 422, "invalid_request", "The uploaded file is not a readable CSV or Parquet table, or its data does not fit the request (a label of the wrong type, a single group); the message names the column and the reason.";
    UnsupportedMediaType = "unsupported_media_type", 415, "invalid_request", "The request's content type is not accepted by this endpoint.";
    PayloadTooLarge = "payload_too_large", 413, "limit", "The request body or upload is larger than the configured limit.";
    Unauthenticated = "unauthenticated", 401, "auth", "No API key was presented, or it is not a valid key.";
    KeyExpired = "key_expired", 401, "auth", "The API key presented has passed its expiry time.";
    KeyRevoked = "key_revoked", 401, "auth", "The API key presented has been revoked.";
    Forbidden = "forbidden", 403, "auth", "The caller can see the object but its role does not allow this operation.";
    NotFound = "not_found", 404, "not_found", "The object does not exist, or the caller may not see it.";
    RouteNotFound = "route_not_found", 404, "not_found", "No endpoint has this path.";
    MethodNotAllowed = "method_not_allowed", 405, "invalid_request", "The endpoint exists but does not accept this HTTP method.";
    AlreadyExists = "already_exists", 409, "conflict", "An object with this name already exists in this scope.";
    Conflict = "conflict", 409, "conflict", "The operation conflicts with the object's current state (for example, it is archived).";
    Immutable = "immutable", 409, "conflict", "The object can no longer be changed (for example, a model card after production approval).";
    ApprovalRequired = "approval_required", 409, "conflict", "The environment is gated by a policy: deploy through an approved promotion; the message names the missing requirement.";
    QuotaExceeded = "quota_exceeded", 429, "limit", "The team's quota for this resource is used up.";
    Unavailable = "unavailable", 503, "unavailable", "The service is temporarily unable to answer; retry after the time in `Retry-After`.";
    Overloaded = "overloaded", 503, "unavailable", "The deployment's queue is full: the request was shed. Retry after the time in `Retry-After`.";
    Timeout = "timeout", 504, "unavailable", "The request was not answered within the deployment's timeout.";
    FeatureDisabled = "feature_disabled", 501, "unavailable", "This build or configuration of Plinth does not include the feature.";
    Internal = "internal", 500, "internal", "An unexpected error; details are in the server log under the request id.";
}

impl std::fmt::Display for Code {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The one error shape of the REST API: `{"error": {...}}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

/// What went wrong, for people (`message`) and for programs (`code`, `field`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ErrorDetail {
    pub code: Code,
    /// The broad class of the code (see the catalogue).
    #[serde(rename = "type")]
    pub kind: String,
    pub message: String,
    /// The request field the error is about, when there is one (dotted path).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    /// The request id, to find the request in the server log.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
}

/// Renders the error catalogue as Markdown; `docs/errors.md` is this text.
pub fn catalogue_markdown() -> String {
    let mut out = String::from(
        "# Error codes\n\nEvery REST error is answered as `{\"error\": {\"code\", \"type\", \"message\", \"field\"?, \"request_id\"?}}`.\nCodes are stable: scripts may match on them. This file is generated from `plinth_api::Code` by a test.\n\n| code | HTTP | type | meaning |\n|---|---|---|---|\n",
    );
    for code in Code::ALL {
        out.push_str(&format!(
            "| `{}` | {} | {} | {} |\n",
            code.as_str(),
            code.http_status(),
            code.kind(),
            code.description()
        ));
    }
    out
}
