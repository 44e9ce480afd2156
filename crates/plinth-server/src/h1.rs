//! The serving hot path's own HTTP/1.1 reader and writer.
//!
//! Every connection starts here. A request that is plainly `POST /v2/models/{name}/infer` over
//! HTTP/1.1 with a `Content-Length` body within the OIP limit is read from the connection's
//! buffer (the body is not copied), answered by the routed handler's own code
//! ([`crate::routes::oip::infer_read`]) and written back in one write. It skips hyper's
//! dispatcher, the body channel and the tower stack: about a third of a 1-row request's CPU.
//!
//! Anything else, or anything unusual about such a request (chunked, `Expect`, `Connection`,
//! `Upgrade`, a query string, a percent-encoded name, a malformed head, over 32 headers, a
//! body over the limit), ends this reader: the connection goes to hyper and the router with the
//! bytes read so far, and every later request on it takes that path, so whatever is not plain
//! gets hyper's answer exactly as before.

use std::ops::Range;
use std::panic::AssertUnwindSafe;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::http::header;
use axum::response::{IntoResponse, Response};
use bytes::{Bytes, BytesMut};
use futures_util::FutureExt;
use plinth_api::Code;
use plinth_core::util::push_int;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;

use crate::error::ApiError;
use crate::routes::oip;
use crate::routes::serving::PREDICT_BODY_LIMIT;
use crate::{AppState, REQUEST_ID, X_REQUEST_ID, extract};

/// More headers than this, or a head longer than [`MAX_HEAD`], is not a plain request: hyper
/// reads it (and takes up to 100 headers).
const MAX_HEADERS: usize = 32;
const MAX_HEAD: usize = 16 * 1024;

/// Serves the connection's plain inference requests. Answers the bytes read but not served
/// when the connection is to go on through hyper, `None` once it is closed (by the client, an
/// error, or the server's shutdown while it waits for a request).
pub(crate) async fn serve(
    stream: &mut TcpStream,
    state: &AppState,
    stop: &mut watch::Receiver<bool>,
) -> Option<BytesMut> {
    let mut buf = BytesMut::with_capacity(4096);
    let mut out = Vec::with_capacity(1024);
    loop {
        let head = loop {
            match parse(&buf) {
                Parsed::Plain(head) => break head,
                Parsed::Partial if buf.len() < MAX_HEAD => {}
                Parsed::Partial | Parsed::Other => return Some(buf),
            }
            buf.reserve(4096);
            let read = if buf.is_empty() {
                // Waiting for the next request: the server's shutdown closes the connection.
                tokio::select! {
                    biased;
                    read = stream.read_buf(&mut buf) => read,
                    _ = stop.wait_for(|stopping| *stopping) => return None,
                }
            } else {
                stream.read_buf(&mut buf).await
            };
            if !matches!(read, Ok(n) if n > 0) {
                return None;
            }
        };
        let whole = head.len + head.body;
        while buf.len() < whole {
            // Room for what arrives, not for what is announced: a client that announces 64 MiB
            // and sends nothing holds no more memory than it sent.
            buf.reserve((whole - buf.len()).min(64 * 1024));
            if !matches!(stream.read_buf(&mut buf).await, Ok(n) if n > 0) {
                return None;
            }
        }
        let mut request = buf.split_to(whole);
        let body = request.split_off(head.len).freeze();
        let id = crate::request_id(head.field(&request, &head.request_id));
        let answered = REQUEST_ID.scope(id.clone(), answer(state, &request, &head, body));
        let answered = AssertUnwindSafe(answered).catch_unwind().await.unwrap_or_else(|_| {
            Answered::Other(ApiError::new(Code::Internal, "internal error").into_response())
        });
        match answered {
            Answered::Inference(answer) => write_answer(&mut out, &answer, &id),
            Answered::Other(response) => write_response(&mut out, response, &id).await,
        }
        if stream.write_all(&out).await.is_err() {
            return None;
        }
    }
}

/// A plain inference request's head: where its parts are in the bytes read.
struct Head {
    /// Bytes of the head, up to and with the blank line.
    len: usize,
    /// Bytes of the body (`Content-Length`).
    body: usize,
    name: Range<usize>,
    authorization: Option<Range<usize>>,
    x_api_key: Option<Range<usize>>,
    request_id: Option<Range<usize>>,
    header_length: Option<Range<usize>>,
}

impl Head {
    fn field<'a>(&self, request: &'a [u8], at: &Option<Range<usize>>) -> Option<&'a [u8]> {
        at.clone().map(|r| &request[r])
    }
}

enum Parsed {
    Plain(Head),
    Partial,
    Other,
}

fn parse(buf: &[u8]) -> Parsed {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    let len = match req.parse(buf) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Parsed::Partial,
        Err(_) => return Parsed::Other,
    };
    if req.method != Some("POST") || req.version != Some(1) {
        return Parsed::Other;
    }
    let Some(name) = req.path.and_then(|p| oip::infer_path_name(p.as_bytes())) else {
        return Parsed::Other;
    };
    // Where a slice of `buf` starts and ends in it.
    let at = |part: &[u8]| {
        let start = part.as_ptr() as usize - buf.as_ptr() as usize;
        start..start + part.len()
    };
    let mut head = Head {
        len,
        body: usize::MAX,
        name: at(name.as_bytes()),
        authorization: None,
        x_api_key: None,
        request_id: None,
        header_length: None,
    };
    for h in req.headers.iter() {
        let is = |name: &str| h.name.eq_ignore_ascii_case(name);
        // The first of a repeated header counts, as with `HeaderMap::get`.
        let keep = |slot: &mut Option<Range<usize>>| {
            slot.get_or_insert_with(|| at(h.value));
        };
        if is("content-length") {
            match content_length(h.value) {
                Some(n) if head.body == usize::MAX => head.body = n,
                _ => return Parsed::Other,
            }
        } else if is("transfer-encoding") || is("expect") || is("upgrade") {
            return Parsed::Other;
        } else if is("connection") {
            if !h.value.eq_ignore_ascii_case(b"keep-alive") {
                return Parsed::Other;
            }
        } else if is("authorization") {
            keep(&mut head.authorization);
        } else if is("x-api-key") {
            keep(&mut head.x_api_key);
        } else if is(X_REQUEST_ID.as_str()) {
            keep(&mut head.request_id);
        } else if is("inference-header-content-length") {
            keep(&mut head.header_length);
        }
    }
    if head.body > PREDICT_BODY_LIMIT {
        // No length (usize::MAX), or more than the limit: hyper and the router answer.
        return Parsed::Other;
    }
    Parsed::Plain(head)
}

/// A `Content-Length` value: decimal digits only.
fn content_length(v: &[u8]) -> Option<usize> {
    if v.is_empty() || v.len() > 18 || !v.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(v.iter().fold(0, |n, d| n * 10 + usize::from(d - b'0')))
}

/// A header value as text, where `HeaderValue::to_str` would give it.
fn text(v: &[u8]) -> Option<&str> {
    if v.iter().all(|&b| b == b'\t' || (0x20..0x7f).contains(&b)) {
        std::str::from_utf8(v).ok()
    } else {
        None
    }
}

/// What a request got: an inference, or another response (a refusal).
enum Answered {
    Inference(oip::InferAnswer),
    Other(Response),
}

/// The routed handler's work: its caller (a key is optional, and refused when invalid), then
/// the inference.
async fn answer(state: &AppState, request: &[u8], head: &Head, body: Bytes) -> Answered {
    let authorization = head.field(request, &head.authorization);
    let x_api_key = head.field(request, &head.x_api_key);
    let who = if authorization.is_none() && x_api_key.is_none() {
        None
    } else {
        let key = extract::api_key(authorization.and_then(text), x_api_key.and_then(text));
        match extract::authenticate(state, key).await {
            Ok(principal) => Some(principal),
            Err(refused) => return Answered::Other(refused.into_response()),
        }
    };
    // Checked by `infer_path_name`: ASCII.
    let name = String::from_utf8_lossy(&request[head.name.clone()]).into_owned();
    match oip::infer_read(state.clone(), who, name, head.field(request, &head.header_length), body)
        .await
    {
        Ok(answer) => Answered::Inference(answer),
        Err(refused) => Answered::Other(refused),
    }
}

/// A successful inference as HTTP/1.1 bytes in `out`.
fn write_answer(out: &mut Vec<u8>, answer: &oip::InferAnswer, id: &str) {
    out.clear();
    out.extend_from_slice(b"HTTP/1.1 200 OK\r\n");
    push_header(out, header::CONTENT_TYPE.as_str(), answer.content_type().as_bytes());
    if let Some(len) = answer.json_len {
        out.extend_from_slice(b"inference-header-content-length: ");
        push_int(out, len);
        out.extend_from_slice(b"\r\n");
    }
    finish(out, id, &answer.body);
}

/// A refusal (any response) as HTTP/1.1 bytes in `out`.
async fn write_response(out: &mut Vec<u8>, response: Response, id: &str) {
    let (parts, body) = response.into_parts();
    // The handler's bodies are whole: collecting them takes their one buffer.
    let body = axum::body::to_bytes(body, usize::MAX).await.unwrap_or_default();
    out.clear();
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(parts.status.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(parts.status.canonical_reason().unwrap_or("").as_bytes());
    out.extend_from_slice(b"\r\n");
    for (name, value) in &parts.headers {
        if name != header::CONTENT_LENGTH && name != X_REQUEST_ID && name != header::DATE {
            push_header(out, name.as_str(), value.as_bytes());
        }
    }
    finish(out, id, &body);
}

fn push_header(out: &mut Vec<u8>, name: &str, value: &[u8]) {
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// The headers every answer ends with (the request id, the length, the date), then `body`.
fn finish(out: &mut Vec<u8>, id: &str, body: &[u8]) {
    out.extend_from_slice(b"x-request-id: ");
    out.extend_from_slice(id.as_bytes());
    out.extend_from_slice(b"\r\ncontent-length: ");
    push_int(out, body.len());
    out.extend_from_slice(b"\r\ndate: ");
    push_date(out);
    out.extend_from_slice(b"\r\n\r\n");
    out.extend_from_slice(body);
}

/// The `Date` header's value, formatted once a second per thread.
fn push_date(out: &mut Vec<u8>) {
    use std::cell::RefCell;
    thread_local! {
        static DATE: RefCell<(u64, String)> = const { RefCell::new((u64::MAX, String::new())) };
    }
    let now = SystemTime::now();
    let second = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    DATE.with_borrow_mut(|(at, text)| {
        if *at != second {
            *at = second;
            *text = httpdate::fmt_http_date(now);
        }
        out.extend_from_slice(text.as_bytes());
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plain(req: &str) -> Option<Head> {
        match parse(req.as_bytes()) {
            Parsed::Plain(h) => Some(h),
            _ => None,
        }
    }

    #[test]
    fn plain_inference_requests_are_read_here_and_the_rest_goes_to_hyper() {
        let base = "POST /v2/models/m.1/infer HTTP/1.1\r\nhost: x\r\ncontent-length: 12\r\n";
        let h = plain(&format!("{base}x-request-id: r1\r\n\r\n{{}}")).expect("plain");
        let req = format!("{base}x-request-id: r1\r\n\r\n");
        assert_eq!((h.len, h.body), (req.len(), 12));
        assert_eq!(&req.as_bytes()[h.name.clone()], b"m.1");
        assert_eq!(h.field(req.as_bytes(), &h.request_id), Some(&b"r1"[..]));
        // Every prefix of a head is a partial one, whichever byte it ends at.
        for end in 0..req.len() {
            assert!(matches!(parse(&req.as_bytes()[..end]), Parsed::Partial), "{end} bytes");
        }
        for other in [
            "GET /v2/models/m/infer HTTP/1.1\r\n\r\n",
            "POST /v2/models/m/infer HTTP/1.0\r\ncontent-length: 2\r\n\r\n",
            "POST /v2/models/m/infer?x=1 HTTP/1.1\r\ncontent-length: 2\r\n\r\n",
            "POST /v2/models/m%2e/infer HTTP/1.1\r\ncontent-length: 2\r\n\r\n",
            "POST /v2/models/m/versions/1/infer HTTP/1.1\r\ncontent-length: 2\r\n\r\n",
            "POST /v2/models//infer HTTP/1.1\r\ncontent-length: 2\r\n\r\n",
            "POST /v2/models/m/infer HTTP/1.1\r\n\r\n",
            "POST /v2/models/m/infer HTTP/1.1\r\ncontent-length: 2\r\ncontent-length: 2\r\n\r\n",
            "POST /v2/models/m/infer HTTP/1.1\r\ncontent-length: +2\r\n\r\n",
            "POST /v2/models/m/infer HTTP/1.1\r\ntransfer-encoding: chunked\r\n\r\n",
            "POST /v2/models/m/infer HTTP/1.1\r\ncontent-length: 2\r\nexpect: 100-continue\r\n\r\n",
            "POST /v2/models/m/infer HTTP/1.1\r\ncontent-length: 2\r\nconnection: close\r\n\r\n",
            "POST /v2/models/m/infer HTTP/1.1\r\ncontent-length: 99999999999\r\n\r\n",
            "POST /v2/models/m/infer HTTP/1.1\r\nbad header\r\n\r\n",
        ] {
            assert!(matches!(parse(other.as_bytes()), Parsed::Other), "{other}");
        }
        let many: String = (0..40).map(|i| format!("h{i}: v\r\n")).collect();
        let req = format!("{base}{many}\r\n");
        assert!(matches!(parse(req.as_bytes()), Parsed::Other), "over {MAX_HEADERS} headers");
    }

    #[test]
    fn header_text_is_what_header_value_to_str_gives() {
        assert_eq!(text(b"Bearer k\tx"), Some("Bearer k\tx"));
        assert_eq!(text(b"caf\xc3\xa9"), None);
        for v in [&b"Bearer k\tx"[..], b"caf\xc3\xa9", b"x\xff"] {
            let value = axum::http::HeaderValue::from_bytes(v).unwrap();
            assert_eq!(text(v), value.to_str().ok());
        }
    }
}
