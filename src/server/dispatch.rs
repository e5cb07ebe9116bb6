//! What happens to each request before a transport sees it: it is sent to
//! gRPC or to the REST gateway, refused at once when the server is full,
//! given a deadline for its body, and (gRPC) held to the client's deadline.

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
use hyper::body::Incoming;
use tokio::sync::Semaphore;
use tokio::time::Sleep;
use tower::ServiceExt;

use super::listener::ConnectionService;
use crate::gateway::ApiError;

/// A request's body must have arrived in full within this long of its
/// headers; a stream that stalls is failed and its resources freed.
pub const BODY_TIMEOUT: Duration = Duration::from_secs(10);

/// The two transports and the bound on calls in flight, shared by every
/// connection.
#[derive(Clone)]
pub struct Dispatch {
    pub grpc: Router,
    pub rest: Router,
    /// One permit per call being served; none left means refuse at once.
    pub in_flight: Arc<Semaphore>,
}

impl ConnectionService for Dispatch {
    type Service = tower::util::BoxCloneSyncService<Request<Incoming>, Response<Body>, Infallible>;

    fn for_connection(&self, first_request: Arc<AtomicBool>) -> Self::Service {
        let dispatch = self.clone();
        tower::util::BoxCloneSyncService::new(tower::service_fn(move |request| {
            first_request.store(true, Ordering::Relaxed);
            let dispatch = dispatch.clone();
            async move { Ok::<_, Infallible>(dispatch.handle(request).await) }
        }))
    }
}

impl Dispatch {
    async fn handle(self, request: Request<Incoming>) -> Response<Body> {
        let grpc = is_grpc(&request);
        // Health checks are never shed: an orchestrator that sees them fail
        // under load would restart a server that is merely busy.
        let _permit = if is_health_check(&request) {
            None
        } else {
            match self.in_flight.clone().try_acquire_owned() {
                Ok(permit) => Some(permit),
                Err(_) => return overloaded(grpc),
            }
        };
        let request = request.map(|body| Body::new(DeadlineBody::new(body, BODY_TIMEOUT)));
        if !grpc {
            return answer(self.rest.oneshot(request).await);
        }
        match grpc_timeout(request.headers()) {
            None => answer(self.grpc.oneshot(request).await),
            Some(Err(())) => grpc_refusal(tonic::Status::invalid_argument(
                "malformed grpc-timeout header",
            )),
            Some(Ok(limit)) if limit.is_zero() => grpc_refusal(tonic::Status::deadline_exceeded(
                "the call's deadline had passed when it arrived",
            )),
            Some(Ok(limit)) => {
                match tokio::time::timeout(limit, self.grpc.oneshot(request)).await {
                    Ok(response) => answer(response),
                    Err(_) => grpc_refusal(tonic::Status::deadline_exceeded(
                        "the call's deadline passed",
                    )),
                }
            }
        }
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

fn is_health_check<B>(request: &Request<B>) -> bool {
    let path = request.uri().path();
    path.starts_with("/grpc.health.v1.Health/") || path == "/healthz" || path == "/readyz"
}

fn overloaded(grpc: bool) -> Response<Body> {
    if grpc {
        grpc_refusal(tonic::Status::resource_exhausted(
            "server overloaded: too many calls in flight, retry shortly",
        ))
    } else {
        ApiError::overloaded().into_response()
    }
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
