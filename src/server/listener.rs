//! The accept loop and the per-connection rules of the one public port.
//!
//! Our own loop over hyper-util's auto (HTTP/1.1 + HTTP/2) builder, rather
//! than tonic's `Server` or `axum::serve`: neither sets `TCP_NODELAY` on
//! sockets it did not accept itself, and neither exposes the limits a public
//! listener needs against slow, idle or greedy clients.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use http::{Request, Response};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use super::tls::ServerTls;

/// A connection must deliver its first complete request (HTTP/1.1 headers,
/// or an HTTP/2 preface and a stream's headers) within this long of being
/// accepted, TLS handshake included, or it is closed: idle and half-open sockets cost a descriptor
/// each and an attacker nothing.
pub const FIRST_REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// HTTP/1.1: every request's headers must arrive within this long, however
/// slowly they trickle in.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// HTTP/2 streams one connection may have open at once. gRPC clients
/// multiplex calls over one connection; 100 is the spec's recommended floor.
pub const MAX_CONCURRENT_STREAMS: u32 = 100;
/// HTTP/2 flow-control windows: how much request data a client may send
/// before we read it. Requests are a few KiB; small windows bound the memory a
/// client can park in our buffers.
const STREAM_WINDOW: u32 = 64 * 1024;
const CONNECTION_WINDOW: u32 = 256 * 1024;
/// Request headers larger than this are refused (HTTP/2 header list, HTTP/1.1
/// read buffer).
const MAX_HEADER_BYTES: u32 = 16 * 1024;
const HTTP1_MAX_BUFFER: usize = 64 * 1024;
/// Idle HTTP/2 connections are pinged this often, and closed when a ping is
/// not answered in time: peers that vanished without a FIN do not linger.
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(30);
const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(10);
/// After a failed `accept` (out of file descriptors, say), wait this long
/// before the next: retrying at once would spin a core and starve the
/// connections that are being served.
const ACCEPT_ERROR_BACKOFF: Duration = Duration::from_millis(100);
/// A connection told to close because it sent nothing gets this long to
/// finish closing before it is dropped outright.
const CLOSE_GRACE: Duration = Duration::from_secs(1);

/// Makes the service for one connection; `first_request` is set by that
/// service when the connection's first request arrives.
pub trait ConnectionService: Clone + Send + 'static {
    type Service: hyper::service::Service<
            Request<Incoming>,
            Response = Response<axum::body::Body>,
            Error = Infallible,
            Future: Send + 'static,
        > + Clone
        + Send
        + 'static;

    fn for_connection(&self, first_request: Arc<AtomicBool>) -> Self::Service;
}

/// Accepts connections until `shutdown` completes, serving each on its own
/// task (with `tls`, after a TLS handshake in that task); then closes the listener, tells every connection to close (idle
/// ones close at once, HTTP/2 gets GOAWAY) and returns once the calls in
/// flight have finished.
pub async fn accept_loop(
    listener: TcpListener,
    tls: Option<Arc<ServerTls>>,
    services: impl ConnectionService,
    shutdown: impl Future<Output = ()> + Send,
) -> std::io::Result<()> {
    let builder = Arc::new(connection_builder());
    // Every connection task holds a sender; `recv` returns None once all
    // have ended.
    let (alive_tx, mut alive_rx) = mpsc::channel::<()>(1);
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut shutdown = std::pin::pin!(shutdown);
    let mut accept_failures: u64 = 0;
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    accept_failures += 1;
                    // Logged at the first failure and then every 100th, so a
                    // descriptor shortage is visible without flooding the log.
                    if accept_failures % 100 == 1 {
                        tracing::warn!(%error, failures = accept_failures, "accept failed; pausing before the next");
                    }
                    tokio::time::sleep(ACCEPT_ERROR_BACKOFF).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        if accept_failures > 0 {
            tracing::info!(failures = accept_failures, "accepting connections again");
            accept_failures = 0;
        }
        // Responses are written whole; Nagle's algorithm would hold back the
        // tail of every response over one segment for the peer's delayed ACK
        // (~40 ms per call).
        if let Err(error) = stream.set_nodelay(true) {
            tracing::debug!(%error, %peer, "cannot set TCP_NODELAY");
        }
        // The first-request budget starts at the accept: with TLS, the
        // handshake spends from it too, so a client that connects and never
        // finishes its handshake is closed as surely as one that never sends
        // a request.
        let first_request_deadline = Instant::now() + FIRST_REQUEST_TIMEOUT;
        let first_request = Arc::new(AtomicBool::new(false));
        let service = services.for_connection(first_request.clone());
        let builder = builder.clone();
        let alive = alive_tx.clone();
        let mut stop = stop_rx.clone();
        // Taken here, at the accept: a reload after this point is for the
        // connections accepted after it.
        let acceptor = tls.as_ref().map(|tls| tls.acceptor());
        tokio::spawn(async move {
            let _alive = alive;
            let connection = Connection {
                builder,
                service,
                first_request,
                first_request_deadline,
                peer,
            };
            let Some(acceptor) = acceptor else {
                connection.serve(stream, stop).await;
                return;
            };
            // The handshake runs in the connection's task, never in the
            // accept loop: a slow client delays only itself.
            let handshake = tokio::select! {
                handshake = tokio::time::timeout_at(first_request_deadline, acceptor.accept(stream)) => handshake,
                _ = stop.changed() => return,
            };
            match handshake {
                Ok(Ok(stream)) => connection.serve(stream, stop).await,
                Ok(Err(error)) => {
                    tracing::debug!(%error, %peer, "tls handshake failed");
                }
                Err(_) => {
                    tracing::debug!(%peer, "closing a connection whose tls handshake did not finish in time");
                }
            }
        });
    }
    drop(listener);
    let _ = stop_tx.send(true);
    drop(alive_tx);
    let _ = alive_rx.recv().await;
    Ok(())
}

/// One accepted connection, ready to serve once its transport (plain TCP
/// or a finished TLS handshake) is.
struct Connection<S> {
    builder: Arc<auto::Builder<TokioExecutor>>,
    service: S,
    first_request: Arc<AtomicBool>,
    /// When the connection must have sent its first request (see
    /// [`FIRST_REQUEST_TIMEOUT`]), counted from the accept.
    first_request_deadline: Instant,
    peer: SocketAddr,
}

impl<S> Connection<S>
where
    S: hyper::service::Service<
            Request<Incoming>,
            Response = Response<axum::body::Body>,
            Error = Infallible,
            Future: Send + 'static,
        > + Clone
        + Send
        + 'static,
{
    /// Serves requests until the client closes, the connection breaks, it
    /// sent nothing in time, or the server stops (`stop`).
    async fn serve<I>(self, io: I, mut stop: watch::Receiver<bool>)
    where
        I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let Connection {
            builder,
            service,
            first_request,
            first_request_deadline,
            peer,
        } = self;
        let connection = builder
            .serve_connection(TokioIo::new(io), service)
            .into_owned();
        let mut connection = std::pin::pin!(connection);
        let first_request_deadline = tokio::time::sleep_until(first_request_deadline);
        let mut first_request_deadline = std::pin::pin!(first_request_deadline);
        // A completed Sleep stays ready: each timer branch is disabled
        // once it has fired, or the loop would spin on it.
        let mut first_request_checked = false;
        let mut closing = false;
        let mut hard_deadline = std::pin::pin!(tokio::time::sleep(Duration::MAX));
        let result = loop {
            tokio::select! {
                result = connection.as_mut() => break result,
                _ = stop.changed(), if !closing => {
                    // Server shutdown: finish what is in flight, no more.
                    connection.as_mut().graceful_shutdown();
                    closing = true;
                }
                () = &mut first_request_deadline, if !closing && !first_request_checked => {
                    first_request_checked = true;
                    if !first_request.load(Ordering::Relaxed) {
                        tracing::debug!(%peer, "closing a connection that sent no request in time");
                        connection.as_mut().graceful_shutdown();
                        closing = true;
                        hard_deadline.set(tokio::time::sleep(CLOSE_GRACE));
                    }
                }
                () = &mut hard_deadline, if closing => {
                    tracing::debug!(%peer, "dropping a connection that did not close in time");
                    return;
                }
            }
        };
        if let Err(error) = result {
            tracing::debug!(%error, %peer, "connection ended with an error");
        }
    }
}

fn connection_builder() -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .max_buf_size(HTTP1_MAX_BUFFER);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(MAX_CONCURRENT_STREAMS)
        .initial_stream_window_size(STREAM_WINDOW)
        .initial_connection_window_size(CONNECTION_WINDOW)
        .max_header_list_size(MAX_HEADER_BYTES)
        .keep_alive_interval(KEEPALIVE_INTERVAL)
        .keep_alive_timeout(KEEPALIVE_TIMEOUT);
    builder
}
