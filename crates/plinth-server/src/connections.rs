//! Client connections: the accept loop and each connection's life.
//!
//! A connection is counted in the engine's [`Clients`] while it is open: the serving runners
//! read the count (one client alone never has a second request to batch with) and `/metrics`
//! reports it. Its requests are read first by [`crate::h1`], which answers the serving hot path
//! itself; at the first request it does not answer, the connection goes to hyper and the router
//! for good, with the bytes already read handed over first.

use std::convert::Infallible;
use std::io;
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use axum::extract::Request;
use axum::http::header::{CONNECTION, HeaderValue};
use axum::response::Response;
use bytes::{Buf, BytesMut};
use http_body::{Body as HttpBody, Frame, SizeHint};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tower::ServiceExt;

use crate::{AppState, busy_poll, h1};

/// The application the routed requests go to ([`crate::app`]): cloned per connection, and
/// `Unpin` so that a finished connection's socket can be taken back from hyper.
pub(crate) trait App:
    tower::Service<Request, Response = Response, Error = Infallible, Future: Send + 'static>
    + Clone
    + Send
    + Unpin
    + 'static
{
}

impl<S> App for S where
    S: tower::Service<Request, Response = Response, Error = Infallible, Future: Send + 'static>
        + Clone
        + Send
        + Unpin
        + 'static
{
}

/// Accepts connections on `listener` until `shutdown` resolves, then lets the open ones finish
/// the request in hand (for at most `grace`) and close.
pub(crate) async fn serve(
    listener: TcpListener,
    state: AppState,
    app: impl App,
    shutdown: impl Future<Output = ()>,
    grace: Duration,
) -> io::Result<()> {
    let poll = busy_poll::global();
    if let Some(poll) = poll {
        poll.watch(&listener);
    }
    // Every connection holds a receiver: the sender closes once they are all gone.
    let (stopping, stop) = watch::channel(false);
    let mut shutdown = pin!(shutdown);
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    accept_failed(e).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        // Answers go out as soon as they are written.
        let _ = stream.set_nodelay(true);
        if let Some(poll) = poll {
            poll.watch(&stream);
        }
        let counted = state.core.engine().clients.connect();
        let (state, app, stop) = (state.clone(), app.clone(), stop.clone());
        tokio::spawn(async move {
            connection(stream, state, app, stop).await;
            drop(counted);
        });
    }
    drop(listener);
    drop(stop);
    let _ = stopping.send(true);
    if tokio::time::timeout(grace, stopping.closed()).await.is_err() {
        tracing::warn!(
            "graceful shutdown took longer than {grace:?}; closing remaining connections"
        );
    }
    Ok(())
}

/// An accept that failed: a connection reset before it was taken is nothing; anything else
/// (out of file descriptors, say) is logged and waited out, as hyper's servers do.
async fn accept_failed(e: io::Error) {
    use io::ErrorKind::{ConnectionAborted, ConnectionRefused, ConnectionReset};
    if matches!(e.kind(), ConnectionRefused | ConnectionAborted | ConnectionReset) {
        return;
    }
    tracing::error!(error = %e, "cannot accept a connection; retrying in 1 s");
    tokio::time::sleep(Duration::from_secs(1)).await;
}

/// One connection, from its first byte to its close.
async fn connection(
    mut stream: TcpStream,
    state: AppState,
    app: impl App,
    mut stop: watch::Receiver<bool>,
) {
    let Some(read) = h1::serve(&mut stream, &state, &mut stop).await else { return };
    let io = TokioIo::new(Prefixed { read, io: stream });
    // Boxed: the connection is polled without being pinned, so that its socket can be taken
    // back at the end (routed requests are not the hot path).
    let service = hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
        let read = Arc::new(AtomicBool::new(req.body().is_end_stream()));
        let req = req.map(|body| Body::new(Watched { body, read: read.clone() }));
        let answer = app.clone().oneshot(req);
        Box::pin(async move {
            let mut response = answer.await?;
            // Answered before its body was read (a refused upload, say): hyper will not read
            // the rest, so the connection cannot carry another request. Say so, or the client
            // may send its next request on it and find it closed (`linger` below).
            if !read.load(Ordering::Relaxed) {
                response.headers_mut().insert(CONNECTION, HeaderValue::from_static("close"));
            }
            Ok::<_, Infallible>(response)
        })
    });
    let mut conn = hyper::server::conn::http1::Builder::new().serve_connection(io, service);
    let mut stopping = false;
    let done = loop {
        tokio::select! {
            done = std::future::poll_fn(|cx| conn.poll_without_shutdown(cx)) => break done,
            _ = stop.wait_for(|stopping| *stopping), if !stopping => stopping = true,
        }
        Pin::new(&mut conn).graceful_shutdown();
    };
    if done.is_ok() {
        let stream = conn.into_parts().io.into_inner().io;
        linger(stream, &mut stop).await;
    }
}

/// Closes a connection hyper is done with without losing its last answer. hyper closes a
/// connection when it answered a request before reading all of its body (a refused upload, say);
/// closing a socket with unread data resets it, and the client may lose the answer it was sent.
/// So, like nginx's lingering close: end the writing side, then read and discard what the client
/// still sends (at most 1 MiB, for at most a second, or until the server stops).
async fn linger(mut stream: TcpStream, stop: &mut watch::Receiver<bool>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    if stream.shutdown().await.is_err() {
        return;
    }
    let drain = async {
        let mut sink = [0u8; 8192];
        let mut left = 1usize << 20;
        while let Ok(n @ 1..) = stream.read(&mut sink).await {
            left = left.saturating_sub(n);
            if left == 0 {
                break;
            }
        }
    };
    tokio::select! {
        _ = tokio::time::timeout(Duration::from_secs(1), drain) => {}
        _ = stop.wait_for(|stopping| *stopping) => {}
    }
}

/// A request body that records when it has been read to its end.
struct Watched {
    body: hyper::body::Incoming,
    read: Arc<AtomicBool>,
}

impl HttpBody for Watched {
    type Data = bytes::Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let frame = Pin::new(&mut self.body).poll_frame(cx);
        if matches!(frame, Poll::Ready(None)) || self.body.is_end_stream() {
            self.read.store(true, Ordering::Relaxed);
        }
        frame
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// A connection whose first bytes were already read: they are read again first.
struct Prefixed {
    read: BytesMut,
    io: TcpStream,
}

impl AsyncRead for Prefixed {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.read.is_empty() {
            return Pin::new(&mut self.io).poll_read(cx, buf);
        }
        let n = self.read.len().min(buf.remaining());
        buf.put_slice(&self.read[..n]);
        self.read.advance(n);
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for Prefixed {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}
