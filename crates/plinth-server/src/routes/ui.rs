//! The web dashboard at `/ui` and the API reference at `/docs`: the files of `ui/src`, embedded
//! in the binary when it is built
//! (nothing is read from disk or fetched at run time). The page is one more client of the public
//! API, with the user's own key: it has no access of its own, so it can show nobody anything the
//! API would not.

use std::sync::OnceLock;

use axum::Router;
use axum::extract::Path;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;

use plinth_api::Code;

use crate::AppState;
use crate::error::ApiError;

/// One embedded file.
pub struct Asset {
    /// Its path under `/ui/` (and under `ui/src/` in the repository).
    pub path: &'static str,
    pub mime: &'static str,
    pub bytes: &'static [u8],
}

const JS: &str = "text/javascript; charset=utf-8";
const CSS: &str = "text/css; charset=utf-8";

macro_rules! assets {
    ($($path:literal => $mime:expr),* $(,)?) => {
        &[$(Asset {
            path: $path,
            mime: $mime,
            bytes: include_bytes!(concat!(env!("CARGO_MANIFEST_DIR"), "/../../ui/src/", $path)),
        }),*]
    };
}

/// Every file of `ui/src` (a unit test keeps this list and the directory equal).
pub static ASSETS: &[Asset] = assets![
    "index.html" => "text/html; charset=utf-8",
    "style.css" => CSS,
    "app.js" => JS,
    "api.js" => JS,
    "dom.js" => JS,
    "charts.js" => JS,
    "pages/login.js" => JS,
    "pages/home.js" => JS,
    "pages/team.js" => JS,
    "pages/model.js" => JS,
    "pages/deployment.js" => JS,
    "pages/reviews.js" => JS,
    "pages/platform.js" => JS,
    "pages/cost.js" => JS,
    "reference.html" => "text/html; charset=utf-8",
    "reference.js" => JS,
    "vendor/uPlot.iife.min.js" => JS,
    "vendor/uPlot.min.css" => CSS,
    "vendor/uPlot.LICENSE" => "text/plain; charset=utf-8",
];

/// The page may load only its own files and talk only to this server: no CDN, no inline script.
const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; \
                   connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'";

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/ui", get(|| async { Redirect::permanent("/ui/") }))
        // The API reference: the OpenAPI document rendered by the page, offline.
        .route("/docs", get(|| async { Redirect::temporary("/ui/reference.html") }))
        .route("/ui/", get(|headers: HeaderMap| async move { serve("index.html", &headers) }))
        .route(
            "/ui/{*path}",
            get(|Path(path): Path<String>, headers: HeaderMap| async move {
                serve(&path, &headers)
            }),
        )
}

/// Each asset's entity tag: a hash of its bytes, computed once.
fn etags() -> &'static [String] {
    static TAGS: OnceLock<Vec<String>> = OnceLock::new();
    TAGS.get_or_init(|| {
        ASSETS
            .iter()
            .map(|a| {
                // Enough to tell two versions of a file apart.
                let hash = plinth_core::util::fnv1a(a.bytes);
                format!("\"{hash:016x}-{}\"", a.bytes.len())
            })
            .collect()
    })
}

fn serve(path: &str, headers: &HeaderMap) -> Response {
    let Some(i) = ASSETS.iter().position(|a| a.path == path) else {
        return ApiError::new(Code::RouteNotFound, format!("the dashboard has no file {path:?}"))
            .into_response();
    };
    let (asset, etag) = (&ASSETS[i], &etags()[i]);
    let fresh = headers.get(header::IF_NONE_MATCH).is_some_and(|v| {
        v.as_bytes().split(|b| *b == b',').any(|t| t.trim_ascii() == etag.as_bytes())
    });
    let mut response =
        if fresh { StatusCode::NOT_MODIFIED.into_response() } else { asset.bytes.into_response() };
    let h = response.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(asset.mime));
    // Revalidated on every load (a new binary may bring new files); unchanged ones answer 304.
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert(header::ETAG, HeaderValue::from_str(etag).expect("hex digits"));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    if asset.path.ends_with(".html") {
        h.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
        h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    }
    response
}

#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};

    use super::*;

    fn files(dir: &Path, base: &Path, out: &mut Vec<String>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                files(&path, base, out);
            } else {
                out.push(path.strip_prefix(base).unwrap().to_string_lossy().replace('\\', "/"));
            }
        }
    }

    /// The binary carries exactly the files of `ui/src`, byte for byte as they are in the
    /// repository (the page has no build step: its sources are its assets).
    #[test]
    fn every_file_of_the_page_is_embedded_as_it_is_in_the_repository() {
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../ui/src");
        let mut on_disk = Vec::new();
        files(&dir, &dir, &mut on_disk);
        on_disk.sort();
        let mut embedded: Vec<String> = ASSETS.iter().map(|a| a.path.to_string()).collect();
        embedded.sort();
        assert_eq!(embedded, on_disk, "ASSETS and ui/src differ: list every file of ui/src");
        for a in ASSETS {
            assert_eq!(a.bytes, std::fs::read(dir.join(a.path)).unwrap().as_slice(), "{}", a.path);
        }
    }

    #[test]
    fn an_unchanged_file_answers_not_modified() {
        let first = serve("app.js", &HeaderMap::new());
        assert_eq!(first.status(), StatusCode::OK);
        let tag = first.headers()[header::ETAG].clone();
        let mut headers = HeaderMap::new();
        headers.insert(header::IF_NONE_MATCH, tag);
        assert_eq!(serve("app.js", &headers).status(), StatusCode::NOT_MODIFIED);
        assert_eq!(serve("nope.js", &HeaderMap::new()).status(), StatusCode::NOT_FOUND);
        let index = serve("index.html", &HeaderMap::new());
        assert!(
            index.headers()[header::CONTENT_SECURITY_POLICY]
                .to_str()
                .unwrap()
                .contains("default-src 'self'")
        );
    }
}
