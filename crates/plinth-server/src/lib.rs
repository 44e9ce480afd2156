//! Plinth's HTTP API over [`plinth_core::Plinth`]: REST under `/api/v1`, health probes, the
//! OpenAPI document generated from the handlers, and the web dashboard's files at `/ui`.
//!
//! HTTP authenticates (the [`extract::Caller`] extractor) and the core authorizes. Handlers are
//! thin: parse, call one core method, render.

pub mod busy_poll;
mod connections;
pub mod error;
pub mod extract;
mod h1;
pub mod openapi;
mod routes;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{DefaultBodyLimit, Request};
use axum::http::{HeaderName, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use plinth_api::Code;
use plinth_core::Plinth;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::trace::TraceLayer;

use crate::error::ApiError;

/// What every handler can reach. Extractors clone it per request: reference counts.
#[derive(Clone)]
pub struct AppState {
    pub core: Arc<Plinth>,
    /// A bearer token that may read `/metrics` besides keys with a platform role.
    pub metrics_token: Option<Arc<str>>,
}

impl AppState {
    pub fn new(core: Plinth) -> AppState {
        AppState { core: Arc::new(core), metrics_token: None }
    }
}

tokio::task_local! {
    static REQUEST_ID: String;
}

/// The id of the request being served, if any.
pub fn current_request_id() -> Option<String> {
    REQUEST_ID.try_with(|id| id.clone()).ok()
}

/// The largest JSON body accepted (uploads have their own, configured limit).
pub const JSON_BODY_LIMIT: usize = 1024 * 1024;

/// The whole HTTP application.
///
/// The cross-cutting middleware wraps the router once, as one service, rather than through
/// `Router::layer`, which wraps every route on its own: that costs a boxed service clone (an
/// allocation) per layer per request, measured at a tenth of an empty endpoint's CPU time. The
/// stack is served as it is, not as a router's fallback (another boxed clone per request).
pub fn app(
    state: AppState,
) -> impl tower::Service<
    Request,
    Response = Response,
    Error = std::convert::Infallible,
    Future = impl Send + 'static,
> + Clone
+ Send
+ Sync
+ 'static {
    let (api, _) = openapi::router().split_for_parts();
    // The dashboard's files and MLflow's protocol are not Plinth's API: they stay out of the
    // OpenAPI document.
    let routes = Router::new()
        .merge(api)
        .merge(routes::ui::router())
        .merge(routes::mlflow::router())
        .fallback(not_found)
        .with_state(state);
    framed(routes)
}

/// The router inside the cross-cutting middleware: a panic in a handler answers that request
/// `500 internal` (the process goes on), traces, the request frame, the default body limit.
fn framed(
    routes: Router,
) -> impl tower::Service<
    Request,
    Response = Response,
    Error = std::convert::Infallible,
    Future = impl Send + 'static,
> + Clone
+ Send
+ Sync
+ 'static {
    tower::ServiceBuilder::new()
        .map_response(IntoResponse::into_response)
        .layer(CatchPanicLayer::custom(|_| {
            ApiError::new(Code::Internal, "internal error").into_response()
        }))
        .layer(TraceLayer::new_for_http())
        .layer(middleware::from_fn(frame))
        // Routes that take larger bodies set their own limit, which this default does not
        // override: the innermost limit wins.
        .layer(DefaultBodyLimit::max(JSON_BODY_LIMIT))
        .service(routes)
}

/// `x-request-id`, by a name built once (a name given as `&str` is parsed, and allocated when
/// inserted, on every request).
const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Every routed request's frame, one layer (each `from_fn` layer costs a boxed service and a
/// boxed future per request): the request id ([`request_id`]) in scope for the handler
/// ([`current_request_id`]) and echoed on the response, and axum's empty 405 answer given the
/// error shape.
async fn frame(req: Request, next: Next) -> Response {
    let id = request_id(req.headers().get(&X_REQUEST_ID).map(HeaderValue::as_bytes));
    let header = HeaderValue::from_str(&id);
    let mut response = REQUEST_ID
        .scope(id, async move {
            let method = req.method().clone();
            let response = next.run(req).await;
            if response.status().is_client_error() && is_plain_text(&response) {
                return shaped_rejection(response).await;
            }
            if response.status() != StatusCode::METHOD_NOT_ALLOWED
                || response.headers().get(header::CONTENT_TYPE).is_some()
            {
                return response;
            }
            // The error body carries the request id: still in its scope.
            let allow = response.headers().get(header::ALLOW).cloned();
            let mut shaped = ApiError::new(
                Code::MethodNotAllowed,
                format!("this endpoint does not accept {method}"),
            )
            .into_response();
            if let Some(allow) = allow {
                shaped.headers_mut().insert(header::ALLOW, allow);
            }
            shaped
        })
        .await;
    if let Ok(v) = header {
        response.headers_mut().insert(X_REQUEST_ID, v);
    }
    response
}

fn is_plain_text(response: &Response) -> bool {
    response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|ct| ct.as_bytes().starts_with(b"text/plain"))
}

/// An extractor's plain-text refusal (axum's answer to a path or query that does not parse, a
/// body over its limit) in the one error shape. The handlers' own errors are JSON already.
async fn shaped_rejection(response: Response) -> Response {
    let status = response.status();
    let text = axum::body::to_bytes(response.into_body(), 64 * 1024).await.unwrap_or_default();
    let text = String::from_utf8_lossy(&text);
    let message: String = text.trim().chars().take(300).collect();
    let error = match status {
        StatusCode::PAYLOAD_TOO_LARGE => plinth_core::Error::new(Code::PayloadTooLarge, message),
        StatusCode::UNSUPPORTED_MEDIA_TYPE => {
            plinth_core::Error::new(Code::UnsupportedMediaType, message)
        }
        _ if message.starts_with("Invalid URL") => {
            plinth_core::Error::new(Code::InvalidField, message).with_field("path")
        }
        _ => plinth_core::Error::new(Code::InvalidRequest, message),
    };
    ApiError(error).into_response()
}

/// A request's id: the caller's `x-request-id` when it is 1 to 128 visible ASCII characters,
/// else a fresh one.
fn request_id(given: Option<&[u8]>) -> String {
    match given {
        Some(v) if !v.is_empty() && v.len() <= 128 && v.iter().all(u8::is_ascii_graphic) => {
            String::from_utf8_lossy(v).into_owned()
        }
        _ => new_request_id(),
    }
}

/// A fresh request id: this process's random prefix and a counter (no system call per request,
/// unlike a random or time-based UUID).
fn new_request_id() -> String {
    use std::sync::OnceLock;
    use std::sync::atomic::{AtomicU64, Ordering};
    static ID: OnceLock<[u8; 36]> = OnceLock::new();
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let hex = |out: &mut [u8], n: u64| {
        for (k, digit) in out.iter_mut().rev().enumerate() {
            *digit = b"0123456789abcdef"[(n >> (4 * k)) as usize & 15];
        }
    };
    // "req_", the prefix and a counter of 16 hex digits each, built as bytes (`format!` costs
    // ten times as much, pushing one char at a time four times).
    let mut id = *ID.get_or_init(|| {
        let mut id = *b"req_0000000000000000\
                        0000000000000000";
        hex(&mut id[4..20], uuid::Uuid::now_v7().as_u64_pair().1);
        id
    });
    hex(&mut id[20..], NEXT.fetch_add(1, Ordering::Relaxed));
    std::str::from_utf8(&id).expect("hex digits").to_owned()
}

async fn not_found(req: Request) -> ApiError {
    ApiError::new(
        Code::RouteNotFound,
        format!("no endpoint at {} {}", req.method(), req.uri().path()),
    )
}

/// Serves the application on `listener` until `shutdown` resolves, then finishes in-flight
/// requests (for at most `grace`). How connections are served: [`connections`].
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
    grace: Duration,
) -> std::io::Result<()> {
    let app = app(state.clone());
    connections::serve(listener, state, app, shutdown, grace).await
}

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use axum::routing::get;
    use tower::ServiceExt;

    use super::*;

    async fn boom() -> &'static str {
        panic!("a bug in a handler")
    }

    #[tokio::test]
    async fn a_handler_that_panics_answers_500_and_the_next_request_is_served() {
        let routes =
            Router::new().route("/boom", get(boom)).route("/fine", get(|| async { "fine" }));
        let app = framed(routes);
        let call = |path: &str| {
            let req = Request::builder().uri(path).body(Body::empty()).unwrap();
            app.clone().oneshot(req)
        };
        let r = call("/boom").await.unwrap();
        assert_eq!(r.status(), StatusCode::INTERNAL_SERVER_ERROR);
        let body = axum::body::to_bytes(r.into_body(), usize::MAX).await.unwrap();
        let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(body["error"]["code"], "internal", "{body}");
        assert_eq!(call("/fine").await.unwrap().status(), StatusCode::OK);
    }
}
