//! Request extractors: the authenticated [`Caller`], and JSON bodies and query strings whose
//! errors name the offending field.

use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use plinth_api::Code;
use plinth_core::Error;
use plinth_core::auth::Principal;
use serde::de::DeserializeOwned;

use crate::AppState;
use crate::error::ApiError;

/// The authenticated caller. Authentication only: authorization is the core's job.
pub struct Caller(pub Principal);

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let header = |name| parts.headers.get(name).and_then(|v| v.to_str().ok());
        let key = api_key(header(axum::http::header::AUTHORIZATION.as_str()), header("x-api-key"));
        authenticate(state, key).await.map(Caller)
    }
}

/// The API key a request carries: `Authorization: Bearer <key>`, else `x-api-key` (the two
/// headers' values, where they are text).
pub(crate) fn api_key<'a>(
    authorization: Option<&'a str>,
    x_api_key: Option<&'a str>,
) -> Option<&'a str> {
    authorization
        .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
        .or(x_api_key)
}

/// The principal holding `key`, for the request in scope ([`crate::current_request_id`]).
pub(crate) async fn authenticate(
    state: &AppState,
    key: Option<&str>,
) -> Result<Principal, ApiError> {
    let Some(key) = key else {
        return Err(ApiError(Error::new(
            Code::Unauthenticated,
            "no API key: send 'Authorization: Bearer <key>' (create keys with `plinth key create`)",
        )));
    };
    let mut principal = state.core.authenticate(key).await.map_err(ApiError)?;
    principal.request_id = crate::current_request_id();
    Ok(principal)
}

/// Maps a deserialization failure to the catalogue: which field, and why.
pub fn classify_json_error(
    prefix: &str,
    err: serde_path_to_error::Error<serde_json::Error>,
) -> Error {
    let path = err.path().to_string();
    let inner = err.into_inner();
    let join = |leaf: &str| {
        let mut parts: Vec<&str> = Vec::new();
        if !prefix.is_empty() {
            parts.push(prefix);
        }
        if !path.is_empty() && path != "." {
            parts.push(&path);
        }
        if !leaf.is_empty() {
            parts.push(leaf);
        }
        parts.join(".")
    };
    let message = inner.to_string();
    match inner.classify() {
        serde_json::error::Category::Syntax
        | serde_json::error::Category::Eof
        | serde_json::error::Category::Io => {
            Error::new(Code::MalformedJson, format!("the body is not valid JSON: {message}"))
        }
        serde_json::error::Category::Data => {
            let quoted = message.split('`').nth(1).unwrap_or("").to_string();
            if message.starts_with("unknown field") {
                // The path already ends with the unknown field's name.
                let field = if path.is_empty() || path == "." { join(&quoted) } else { join("") };
                Error::new(Code::UnknownField, format!("unknown field '{field}'")).with_field(field)
            } else if message.starts_with("missing field") {
                let field = join(&quoted);
                Error::new(Code::MissingField, format!("missing field '{field}'")).with_field(field)
            } else {
                let field = join("");
                let shown = if field.is_empty() { "body".to_string() } else { field.clone() };
                let clean = message.split(" at line ").next().unwrap_or(&message).to_string();
                let mut e = Error::new(Code::InvalidField, format!("{shown}: {clean}"));
                if !field.is_empty() {
                    e = e.with_field(field);
                }
                e
            }
        }
    }
}

/// Parses JSON bytes into `T`, with field-naming errors. The common case (valid input) parses
/// once without tracking paths; only a failure parses again to name the field.
pub fn parse_json<T: DeserializeOwned>(prefix: &str, bytes: &[u8]) -> Result<T, Error> {
    // Every body is an object: serde would also read a struct from an array, by position
    // (`[null, null]` created an API key).
    if bytes.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        let what = if prefix.is_empty() { "the body" } else { prefix };
        let mut e = Error::new(Code::MalformedJson, format!("{what} must be a JSON object"));
        if !prefix.is_empty() {
            e = e.with_field(prefix);
        }
        return Err(e);
    }
    if let Ok(value) = serde_json::from_slice(bytes) {
        return Ok(value);
    }
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value =
        serde_path_to_error::deserialize(&mut de).map_err(|e| classify_json_error(prefix, e))?;
    de.end()
        .map_err(|e| Error::new(Code::MalformedJson, format!("the body is not valid JSON: {e}")))?;
    Ok(value)
}

/// Whether a request says its body is JSON (`application/json` or `application/...+json`).
pub fn is_json(headers: &axum::http::HeaderMap) -> bool {
    headers.get(axum::http::header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).is_some_and(|ct| {
        ct.starts_with("application/json")
            || (ct.starts_with("application/") && ct.contains("+json"))
    })
}

/// The refusal of a body that does not say it is JSON.
pub fn not_json() -> Error {
    Error::new(
        Code::UnsupportedMediaType,
        "send the body as JSON with 'Content-Type: application/json'",
    )
}

/// A JSON body. Requires `Content-Type: application/json`.
pub struct ApiJson<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let fail = ApiError;
        if !is_json(req.headers()) {
            return Err(fail(not_json()));
        }
        let bytes = axum::body::Bytes::from_request(req, state).await.map_err(|e| {
            if e.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
                fail(Error::new(
                    Code::PayloadTooLarge,
                    "the JSON body is larger than the limit of 1 MiB",
                ))
            } else {
                fail(Error::new(Code::InvalidRequest, format!("could not read the body: {e}")))
            }
        })?;
        parse_json("", &bytes).map(ApiJson).map_err(fail)
    }
}

/// A query string, with errors that name the parameter.
pub struct ApiQuery<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let query = parts.uri.query().unwrap_or("");
        let de = serde_urlencoded::Deserializer::new(form_urlencoded_parse(query));
        serde_path_to_error::deserialize(de).map(ApiQuery).map_err(|e| {
            let path = e.path().to_string();
            let msg = e.into_inner().to_string();
            let field = msg
                .split('`')
                .nth(1)
                .filter(|_| msg.starts_with("unknown field") || msg.starts_with("missing field"));
            let field = field.map(str::to_string).unwrap_or(path);
            let code = if msg.starts_with("unknown field") {
                Code::UnknownField
            } else {
                Code::InvalidField
            };
            let mut err = Error::new(code, format!("query parameter '{field}': {msg}"));
            if !field.is_empty() && field != "." {
                err = err.with_field(field);
            }
            ApiError(err)
        })
    }
}

fn form_urlencoded_parse(query: &str) -> form_urlencoded::Parse<'_> {
    form_urlencoded::parse(query.as_bytes())
}

/// The caller, when the request carries a key: predictions on public deployments need none.
/// A key that is present but invalid is still refused.
pub struct MaybeCaller(pub Option<Principal>);

impl FromRequestParts<AppState> for MaybeCaller {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let has_key = parts.headers.contains_key(axum::http::header::AUTHORIZATION)
            || parts.headers.contains_key("x-api-key");
        if !has_key {
            return Ok(MaybeCaller(None));
        }
        let Caller(p) = Caller::from_request_parts(parts, state).await?;
        Ok(MaybeCaller(Some(p)))
    }
}
