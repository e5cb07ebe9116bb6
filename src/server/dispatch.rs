//! What happens to each request before a transport sees it: it is admitted
//! or refused at once when the server is full, its body is read in full
//! within a deadline, it is sent to gRPC or to the REST gateway, and (gRPC)
//! it is held to the client's deadline. Every request, refusals included, is
//! observed (`observe`): request id, span, access line, metrics.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::response::IntoResponse;
use bytes::Bytes;
use http::{Request, Response};
use http_body::{Body as HttpBody, Frame, SizeHint};
use http_body_util::{BodyExt, LengthLimitError, Limited};
use hyper::body::Incoming;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Sleep;
use tower::ServiceExt;
use tracing::Instrument;

use super::listener::ConnectionService;
use super::observe::{self, Call};
use super::pushback::Pushback;
use crate::gateway::ApiError;
use crate::telemetry::AccessLogLevel;
use crate::telemetry::metrics::{self, InFlight};

/// A request's body must have arrived in full within this long of its
/// headers; a stream that stalls is failed and its resources freed.
pub const BODY_TIMEOUT: Duration = Duration::from_secs(10);
/// The largest request body read before a handler runs: the largest message
/// any service accepts (64 KiB) plus gRPC's 5-byte frame header.
const MAX_BODY_BYTES: usize = 64 * 1024 + 5;
/// How long a refused call's body is drained before the refusal is sent.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(1);

/// The two transports and the bound on calls in flight, shared by every
/// connection.
#[derive(Clone)]
pub struct Dispatch {
    pub grpc: Router,
    pub rest: Router,
    /// One permit per call being served; none left means refuse at once.
    pub in_flight: Arc<Semaphore>,
    /// How long refused callers are asked to wait.
    pub pushback: Arc<Pushback>,
    /// `--access-log-level`.
    pub access_log: AccessLogLevel,
    /// Answer `GET /metrics` here (no `--metrics-listen`).
    pub metrics_here: bool,
}

/// The hyper service of one connection.
#[derive(Clone)]
pub struct ConnectionDispatch {
    dispatch: Dispatch,
    /// Set at the connection's first request (see `listener`).
    first_request: Arc<AtomicBool>,
}

impl ConnectionService for Dispatch {
    type Service = ConnectionDispatch;

    fn for_connection(&self, first_request: Arc<AtomicBool>) -> ConnectionDispatch {
        ConnectionDispatch {
            dispatch: self.clone(),
            first_request,
        }
    }
}

/// One of the in-flight permits; counts the call in the in-flight gauge as
/// long as it is held.
struct Slot {
    _permit: OwnedSemaphorePermit,
    _gauge: InFlight,
}

/// Whether a call may run.
enum Admission {
    /// Holds one of the in-flight permits until the call is answered, except
    /// while it waits for the rest of its request (see [`Dispatch::handle`]).
    Admitted(Slot),
    /// Health checks run whatever the load: an orchestrator that saw them
    /// fail under load would restart a server that is merely busy. So do
    /// scrapes of `/metrics`: a server under load is the one to look at.
    Exempt,
    /// A scrape of `/metrics` on this port (exempt too).
    Scrape,
    Refused,
}

impl hyper::service::Service<Request<Incoming>> for ConnectionDispatch {
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response<Body>, Infallible>> + Send>>;

    /// Runs as soon as hyper has read a request's headers, before the call's
    /// task is scheduled: admission is decided here, so a server that is full
    /// refuses at once instead of queueing calls in the runtime (a call that
    /// then has to wait for its message gives its slot back meanwhile; see
    /// [`Dispatch::handle`]).
    fn call(&self, request: Request<Incoming>) -> Self::Future {
        self.first_request.store(true, Ordering::Relaxed);
        let grpc = is_grpc(&request);
        let scrape = !grpc && self.dispatch.metrics_here && request.uri().path() == "/metrics";
        let call = Call::start(&request, grpc, scrape, self.dispatch.access_log);
        let admission = if scrape {
            Admission::Scrape
        } else if is_health_check(&request) {
            Admission::Exempt
        } else {
            match self.dispatch.slot(call.transport()) {
                Some(slot) => Admission::Admitted(slot),
                None => Admission::Refused,
            }
        };
        let dispatch = self.dispatch.clone();
        let span = call.span().clone();
        let transport = call.transport();
        Box::pin(async move {
            let response = dispatch
                .handle(request, admission, transport)
                .instrument(span)
                .await;
            Ok(call.finish(response))
        })
    }
}

impl Dispatch {
    async fn handle(
        self,
        request: Request<Incoming>,
        admission: Admission,
        transport: &'static str,
    ) -> Response<Body> {
        let grpc = is_grpc(&request);
        if let Admission::Scrape = admission {
            return observe::scrape(request.method());
        }
        if let Admission::Refused = admission {
            // Answering before the body has arrived makes HTTP/2 reset the
            // stream, and a flood of such resets makes hyper close the whole
            // connection ("too many internal resets"): read the (small) body
            // first, briefly.
            let (_, body) = request.into_parts();
            let _ =
                tokio::time::timeout(DRAIN_TIMEOUT, Limited::new(body, MAX_BODY_BYTES).collect())
                    .await;
            return self.overloaded(grpc);
        }
        // Reflection is a bidirectional stream (grpcurl keeps sending on
        // it): its body is read as it comes, within the same total deadline.
        if is_reflection(&request) {
            let request = request.map(|body| Body::new(DeadlineBody::new(body, BODY_TIMEOUT)));
            return answer(self.grpc.oneshot(request).await);
        }
        // The client's deadline covers the whole call, the body's arrival
        // included.
        let deadline = if grpc {
            match grpc_timeout(request.headers()) {
                None => None,
                Some(Err(())) => {
                    return grpc_refusal(tonic::Status::invalid_argument(
                        "malformed grpc-timeout header",
                    ));
                }
                Some(Ok(limit)) if limit.is_zero() => {
                    return grpc_refusal(tonic::Status::deadline_exceeded(
                        "the call's deadline had passed when it arrived",
                    ));
                }
                Some(Ok(limit)) => Some(tokio::time::Instant::now() + limit),
            }
        } else {
            None
        };
        let call = async move {
            // Everything but reflection is unary: read the whole body before
            // any handler runs, so that no handler answers (and resets the
            // stream) while the client is still sending, and a stalled body
            // ties up no handler.
            //
            // The slot taken at the headers counts the call while it waits
            // to run. But a call whose message is not there when it first
            // runs waits on its client, not on this server: it gives its
            // slot back meanwhile and takes one again once the message is
            // in (or is refused then). Otherwise anyone, without a token,
            // could hold every slot with headers alone.
            let (parts, body) = request.into_parts();
            let read = read_body(body);
            let mut read = std::pin::pin!(read);
            let first = std::future::poll_fn(|cx| Poll::Ready(read.as_mut().poll(cx))).await;
            let (body, _slot) = match (first, admission) {
                (Poll::Ready(body), Admission::Admitted(slot)) => (body, Some(slot)),
                (Poll::Ready(body), _) => (body, None),
                (Poll::Pending, Admission::Admitted(slot)) => {
                    drop(slot);
                    let body = read.await;
                    // A body that failed is answered as such below.
                    let slot = match &body {
                        Ok(_) => match self.slot(transport) {
                            Some(slot) => Some(slot),
                            None => return self.overloaded(grpc),
                        },
                        Err(_) => None,
                    };
                    (body, slot)
                }
                (Poll::Pending, _) => (read.await, None),
            };
            let body = match body {
                Ok(bytes) => bytes,
                Err(problem) => return problem.answer(grpc),
            };
            let request = Request::from_parts(parts, Body::from(body));
            let router = if grpc { self.grpc } else { self.rest };
            answer(router.oneshot(request).await)
        };
        match deadline {
            None => call.await,
            Some(deadline) => match tokio::time::timeout_at(deadline, call).await {
                Ok(response) => response,
                Err(_) => grpc_refusal(tonic::Status::deadline_exceeded(
                    "the call's deadline passed",
                )),
            },
        }
    }
}

impl Dispatch {
    /// One of the in-flight permits, or `None` (counted as shed) when every
    /// one is taken.
    fn slot(&self, transport: &'static str) -> Option<Slot> {
        match self.in_flight.clone().try_acquire_owned() {
            Ok(permit) => {
                self.pushback.admitted();
                Some(Slot {
                    _permit: permit,
                    _gauge: InFlight::enter(),
                })
            }
            Err(_) => {
                metrics::shed(transport);
                None
            }
        }
    }

    /// The refusal of a call past the bound, with the wait it asks for.
    fn overloaded(&self, grpc: bool) -> Response<Body> {
        let wait = self
            .pushback
            .refused(tokio::time::Instant::now(), rand::random());
        if grpc {
            let mut response = grpc_refusal(tonic::Status::resource_exhausted(
                "server overloaded: too many calls in flight, retry shortly",
            ));
            // gRPC's retry design (A6): a client with a retry policy waits
            // this long before it tries again.
            let ms = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX);
            response
                .headers_mut()
                .insert("grpc-retry-pushback-ms", http::HeaderValue::from(ms));
            response
        } else {
            ApiError::overloaded(wait).into_response()
        }
    }
}

/// Why a request body could not be read.
enum BodyProblem {
    TooLarge,
    TimedOut,
    Broken,
}

impl BodyProblem {
    fn answer(self, grpc: bool) -> Response<Body> {
        match (self, grpc) {
            (BodyProblem::TooLarge, true) => {
                grpc_refusal(tonic::Status::resource_exhausted(format!(
                    "request message too large: at most {} bytes",
                    MAX_BODY_BYTES - 5
                )))
            }
            (BodyProblem::TooLarge, false) => ApiError::payload_too_large().into_response(),
            (BodyProblem::TimedOut, true) => {
                grpc_refusal(tonic::Status::deadline_exceeded(format!(
                    "request body not received within {} s",
                    BODY_TIMEOUT.as_secs()
                )))
            }
            (BodyProblem::TimedOut, false) => ApiError::body_timeout().into_response(),
            (BodyProblem::Broken, true) => {
                grpc_refusal(tonic::Status::cancelled("request body was not completed"))
            }
            (BodyProblem::Broken, false) => {
                ApiError::invalid("body", "could not read the request body").into_response()
            }
        }
    }
}

/// Reads a whole body: at most [`MAX_BODY_BYTES`], within [`BODY_TIMEOUT`]
/// however slowly it trickles in.
async fn read_body(body: Incoming) -> Result<Bytes, BodyProblem> {
    if body.is_end_stream() {
        return Ok(Bytes::new());
    }
    if body
        .size_hint()
        .exact()
        .is_some_and(|n| n > MAX_BODY_BYTES as u64)
    {
        return Err(BodyProblem::TooLarge);
    }
    match tokio::time::timeout(BODY_TIMEOUT, Limited::new(body, MAX_BODY_BYTES).collect()).await {
        Err(_) => Err(BodyProblem::TimedOut),
        Ok(Ok(collected)) => Ok(collected.to_bytes()),
        Ok(Err(e)) if e.is::<LengthLimitError>() => Err(BodyProblem::TooLarge),
        Ok(Err(_)) => Err(BodyProblem::Broken),
    }
}

fn answer(response: Result<Response<Body>, Infallible>) -> Response<Body> {
    match response {
        Ok(response) => response,
        Err(never) => match never {},
    }
}

/// gRPC requests are HTTP/2 with `content-type: application/grpc[+proto]`;
/// everything else is the REST gateway's.
pub fn is_grpc<B>(request: &Request<B>) -> bool {
    request.version() == http::Version::HTTP_2
        && request
            .headers()
            .get(http::header::CONTENT_TYPE)
            .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"))
}

fn is_reflection<B>(request: &Request<B>) -> bool {
    request.uri().path().starts_with("/grpc.reflection.")
}

fn is_health_check<B>(request: &Request<B>) -> bool {
    let path = request.uri().path();
    path.starts_with("/grpc.health.v1.Health/") || path == "/healthz" || path == "/readyz"
}

/// A trailers-only gRPC answer: HTTP 200 with the status in the headers.
fn grpc_refusal(status: tonic::Status) -> Response<Body> {
    status.into_http()
}

/// The `grpc-timeout` header: `None` when absent, `Err` when malformed. Its
/// value is at most 8 digits and a unit: H, M, S, m (ms), u (µs), n (ns).
fn grpc_timeout(headers: &http::HeaderMap) -> Option<Result<Duration, ()>> {
    let raw = headers.get("grpc-timeout")?.to_str().map_err(|_| ());
    Some(raw.and_then(parse_grpc_timeout))
}

fn parse_grpc_timeout(raw: &str) -> Result<Duration, ()> {
    let split = raw.len().checked_sub(1).ok_or(())?;
    let (digits, unit) = raw.split_at(split);
    if digits.is_empty() || digits.len() > 8 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(());
    }
    let value: u64 = digits.parse().map_err(|_| ())?;
    Ok(match unit {
        "H" => Duration::from_secs(value * 3600),
        "M" => Duration::from_secs(value * 60),
        "S" => Duration::from_secs(value),
        "m" => Duration::from_millis(value),
        "u" => Duration::from_micros(value),
        "n" => Duration::from_nanos(value),
        _ => return Err(()),
    })
}

/// A request body that fails once `limit` has passed since the request
/// arrived, however the data trickles in: a per-frame timeout would let a
/// client hold a call open for ever by sending a byte at a time.
struct DeadlineBody<B> {
    inner: B,
    deadline: Pin<Box<Sleep>>,
}

impl<B> DeadlineBody<B> {
    fn new(inner: B, limit: Duration) -> DeadlineBody<B> {
        DeadlineBody {
            inner,
            deadline: Box::pin(tokio::time::sleep(limit)),
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[error("request body not received within {} s", BODY_TIMEOUT.as_secs())]
struct BodyTimedOut;

impl<B> HttpBody for DeadlineBody<B>
where
    B: HttpBody<Data = Bytes> + Unpin,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        if let Poll::Ready(frame) = Pin::new(&mut self.inner).poll_frame(cx) {
            return Poll::Ready(frame.map(|f| f.map_err(Into::into)));
        }
        match self.deadline.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Some(Err(Box::new(BodyTimedOut)))),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_timeouts() {
        assert_eq!(parse_grpc_timeout("100m"), Ok(Duration::from_millis(100)));
        assert_eq!(parse_grpc_timeout("5S"), Ok(Duration::from_secs(5)));
        assert_eq!(parse_grpc_timeout("1H"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_grpc_timeout("0n"), Ok(Duration::ZERO));
        assert_eq!(
            parse_grpc_timeout("99999999u"),
            Ok(Duration::from_micros(99_999_999))
        );
        for bad in ["", "m", "100", "123456789S", "1.5S", "-1S", "10x", "１S"] {
            assert_eq!(parse_grpc_timeout(bad), Err(()), "{bad:?}");
        }
    }
}
