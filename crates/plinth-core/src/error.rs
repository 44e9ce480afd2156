//! The core's one error type: a catalogue [`Code`], a message safe to show the caller, the field
//! it is about, and (for internal errors only) a source that is logged but never shown.

use plinth_api::Code;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
#[error("{code}: {message}")]
pub struct Error {
    pub code: Code,
    pub message: String,
    pub field: Option<String>,
    /// For `quota_exceeded`: the limit that was reached, for the rate-limit headers.
    pub limit: Option<Box<LimitInfo>>,
    #[source]
    pub source: Option<Box<dyn std::error::Error + Send + Sync>>,
}

impl Error {
    pub fn new(code: Code, message: impl Into<String>) -> Self {
        Error { code, message: message.into(), field: None, limit: None, source: None }
    }

    /// A field with a value that is not allowed.
    pub fn invalid(field: impl Into<String>, reason: impl std::fmt::Display) -> Self {
        let field = field.into();
        Error {
            code: Code::InvalidField,
            message: format!("{field}: {reason}"),
            field: Some(field),
            limit: None,
            source: None,
        }
    }

    pub fn missing(field: impl Into<String>, why: impl std::fmt::Display) -> Self {
        let field = field.into();
        Error {
            code: Code::MissingField,
            message: format!("{field} is required: {why}"),
            field: Some(field),
            limit: None,
            source: None,
        }
    }

    pub fn invalid_name(field: impl Into<String>, value: &str) -> Self {
        let field = field.into();
        Error {
            code: Code::InvalidName,
            message: format!(
                "{field}: '{}' is not a valid name: use 1-63 characters of a-z, 0-9, '-' and '_', starting with a letter or digit",
                shown(value)
            ),
            field: Some(field),
            limit: None,
            source: None,
        }
    }

    /// The object does not exist or the caller may not see it: the same answer for both, so that
    /// names in other teams do not leak.
    pub fn not_found(kind: &str, name: impl std::fmt::Display) -> Self {
        Error::new(Code::NotFound, format!("{kind} '{}' not found", shown(&name.to_string())))
    }

    pub fn forbidden(message: impl Into<String>) -> Self {
        Error::new(Code::Forbidden, message)
    }

    pub fn already_exists(kind: &str, name: impl std::fmt::Display) -> Self {
        Error::new(
            Code::AlreadyExists,
            format!("{kind} '{}' already exists", shown(&name.to_string())),
        )
    }

    pub fn conflict(message: impl Into<String>) -> Self {
        Error::new(Code::Conflict, message)
    }

    /// An unexpected failure. The message the caller sees is generic; the source is logged.
    pub fn internal(source: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Self {
        Error {
            code: Code::Internal,
            message: "internal error".into(),
            field: None,
            limit: None,
            source: Some(source.into()),
        }
    }

    pub fn with_field(mut self, field: impl Into<String>) -> Self {
        self.field = Some(field.into());
        self
    }
}

/// A limit a request ran into, as the rate-limit headers state it (IETF `RateLimit-Policy` /
/// `RateLimit`, and the `X-RateLimit-*` triple).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LimitInfo {
    /// The policy's name: `monthly`, `per-second` or `storage`.
    pub policy: &'static str,
    pub quota: u64,
    /// The policy's window in seconds (0: none, as for storage).
    pub window_seconds: u64,
    pub remaining: u64,
    /// Seconds until the window resets (0: it does not by itself).
    pub reset_seconds: u64,
}

/// A caller's value as an error message quotes it: at most 80 characters, marked when cut.
pub fn shown(value: &str) -> String {
    match value.char_indices().nth(80) {
        Some((cut, _)) => format!("{}... ({} characters)", &value[..cut], value.chars().count()),
        None => value.to_string(),
    }
}

impl From<sqlx::Error> for Error {
    fn from(e: sqlx::Error) -> Self {
        Error::internal(e)
    }
}

impl From<std::io::Error> for Error {
    fn from(e: std::io::Error) -> Self {
        Error::internal(e)
    }
}

impl From<serde_json::Error> for Error {
    fn from(e: serde_json::Error) -> Self {
        Error::internal(e)
    }
}

/// True when a database error is a unique-constraint violation.
pub(crate) fn is_unique_violation(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Database(db) => {
            db.is_unique_violation()
                || db.code().is_some_and(|c| c == "23505" || c == "2067" || c == "1555")
        }
        _ => false,
    }
}
