//! The one mapping from core errors to HTTP responses: the status comes from the code's catalogue
//! entry, the body is `{"error": {...}}`, and internal details go to the log, never the body.

use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use plinth_api::{Code, ErrorBody, ErrorDetail};
use plinth_core::Error;
use plinth_core::error::LimitInfo;

/// The longest error message answered, in bytes.
const MAX_MESSAGE: usize = 2000;

/// A message as answered: however it came to quote a caller's input, it stays readable.
pub(crate) fn bounded(mut message: String) -> String {
    if message.len() > MAX_MESSAGE {
        let cut = (0..=MAX_MESSAGE).rev().find(|&i| message.is_char_boundary(i)).unwrap_or(0);
        message.truncate(cut);
        message.push_str("... (cut)");
    }
    message
}

/// An error on its way to the client.
#[derive(Debug)]
pub struct ApiError(pub Error);

impl ApiError {
    pub fn new(code: Code, message: impl Into<String>) -> Self {
        ApiError(Error::new(code, message))
    }
}

impl From<Error> for ApiError {
    fn from(error: Error) -> Self {
        ApiError(error)
    }
}

pub fn status_of(code: Code) -> StatusCode {
    StatusCode::from_u16(code.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let e = self.0;
        let request_id = crate::current_request_id();
        if e.code == Code::Internal {
            tracing::error!(request_id = ?request_id, error = %e, source = ?e.source, "internal error");
        }
        let message = bounded(e.message);
        let body = ErrorBody {
            error: ErrorDetail {
                code: e.code,
                kind: e.code.kind().to_string(),
                message,
                field: e.field,
                request_id,
            },
        };
        let mut response = (status_of(e.code), axum::Json(body)).into_response();
        if matches!(e.code, Code::Unavailable | Code::Overloaded) {
            response.headers_mut().insert("retry-after", HeaderValue::from_static("1"));
        }
        if matches!(e.code, Code::Unauthenticated | Code::KeyExpired | Code::KeyRevoked) {
            response.headers_mut().insert("www-authenticate", HeaderValue::from_static("Bearer"));
        }
        if let Some(limit) = &e.limit {
            rate_limit_headers(limit, response.headers_mut());
        }
        response
    }
}

/// The headers of a limit reached: `Retry-After`, the IETF draft's `RateLimit-Policy` and
/// `RateLimit` fields, and the `X-RateLimit-Limit/Remaining/Reset` triple clients still read
/// (`Reset` in seconds from now, as the draft's `t`).
pub(crate) fn rate_limit_headers(l: &LimitInfo, headers: &mut HeaderMap) {
    let mut put = |name: &'static str, value: String| {
        if let Ok(v) = HeaderValue::from_str(&value) {
            headers.insert(name, v);
        }
    };
    let window =
        if l.window_seconds > 0 { format!(";w={}", l.window_seconds) } else { String::new() };
    put("ratelimit-policy", format!("\"{}\";q={}{window}", l.policy, l.quota));
    let reset = if l.reset_seconds > 0 { format!(";t={}", l.reset_seconds) } else { String::new() };
    put("ratelimit", format!("\"{}\";r={}{reset}", l.policy, l.remaining));
    put("x-ratelimit-limit", l.quota.to_string());
    put("x-ratelimit-remaining", l.remaining.to_string());
    if l.reset_seconds > 0 {
        put("x-ratelimit-reset", l.reset_seconds.to_string());
        put("retry-after", l.reset_seconds.to_string());
    }
}

pub type ApiResult<T> = Result<T, ApiError>;
