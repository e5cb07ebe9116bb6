//! What every call leaves behind: a request id (kept from the caller or
//! made here) on its response and on every log line written while serving
//! it, a `tracing` span, one access-log line, and its metrics. Also the
//! `/metrics` answer itself, on the main port or on a port of its own.

use std::collections::HashSet;
use std::convert::Infallible;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::body::Body;
use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, Response, StatusCode, header};
use http_body::{Body as HttpBody, Frame, SizeHint};
use hyper::body::Incoming;
use prost::Message;
use tonic::Code;
use tracing::Span;

use super::listener::ConnectionService;
use crate::gateway::ROUTES;
use crate::telemetry::{AccessLogLevel, metrics};

/// The header (gRPC: metadata key) that carries a call's request id, both ways.
pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
/// A caller's request id is kept only if it is at most this long and all
/// printable ASCII: it is written to every log line of the call.
const MAX_REQUEST_ID_BYTES: usize = 128;
/// The route label of REST requests that match no route.
const UNMATCHED: &str = "unmatched";
/// The method label of gRPC calls to a method no service has.
const UNKNOWN_METHOD: &str = "unknown";
/// The target of access-log lines, so a log filter can single them out
/// (`--log info,roomservice::access=off`).
const ACCESS_TARGET: &str = "roomservice::access";

/// The caller's `x-request-id` if it is acceptable, else a new one.
pub fn request_id(headers: &HeaderMap) -> HeaderValue {
    match headers.get(&REQUEST_ID) {
        Some(given) if acceptable_request_id(given.as_bytes()) => given.clone(),
        _ => new_request_id(),
    }
}

fn acceptable_request_id(id: &[u8]) -> bool {
    !id.is_empty()
        && id.len() <= MAX_REQUEST_ID_BYTES
        && id.iter().all(|b| (b' '..=b'~').contains(b))
}

/// 16 random bytes, hex. Made for every call that brings no id, so without
/// `format!` per byte.
fn new_request_id() -> HeaderValue {
    let (high, low): (u64, u64) = rand::random();
    let mut hex = String::with_capacity(32);
    crate::domain::push_hex(&mut hex, high, 16);
    crate::domain::push_hex(&mut hex, low, 16);
    HeaderValue::try_from(hex).expect("hex digits make a header value")
}

/// The full names (`package.Service/Method`) of every gRPC method served,
/// read once from the descriptor sets the server is built from.
fn grpc_methods() -> &'static HashSet<String> {
    static METHODS: OnceLock<HashSet<String>> = OnceLock::new();
    METHODS.get_or_init(|| {
        let sets = [
            crate::grpc::FILE_DESCRIPTOR_SET,
            tonic_health::pb::FILE_DESCRIPTOR_SET,
            tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET,
            tonic_reflection::pb::v1alpha::FILE_DESCRIPTOR_SET,
        ];
        let mut methods = HashSet::new();
        for encoded in sets {
            let set = match prost_types::FileDescriptorSet::decode(encoded) {
                Ok(set) => set,
                Err(error) => {
                    tracing::warn!(%error, "a built-in descriptor set does not decode; its methods are labelled unknown");
                    continue;
                }
            };
            for file in set.file {
                for service in &file.service {
                    for method in &service.method {
                        methods.insert(format!(
                            "{}.{}/{}",
                            file.package(),
                            service.name(),
                            method.name()
                        ));
                    }
                }
            }
        }
        methods
    })
}

/// The metric label of a gRPC path: `rooms.v1.RoomService/GetRoom`, or
/// `unknown` for a method no service has.
pub fn grpc_method(path: &str) -> &'static str {
    path.strip_prefix('/')
        .and_then(|name| grpc_methods().get(name))
        .map_or(UNKNOWN_METHOD, String::as_str)
}

/// The route template a REST path falls under (`/v2/rooms/{roomId}`), as
/// axum's router would pick it (literal segments beat parameters), or
/// `unmatched`. Known before routing, so refusals (overload, oversized
/// bodies) are labelled with the route they were for.
pub fn rest_route(path: &str) -> &'static str {
    let mut best: Option<(usize, &'static str)> = None;
    for (_, template) in ROUTES {
        let Some(literals) = match_template(template, path) else {
            continue;
        };
        if best.is_none_or(|(most, _)| literals > most) {
            best = Some((literals, template));
        }
    }
    best.map_or(UNMATCHED, |(_, template)| template)
}

/// How many literal segments `template` matches in `path`; `None` if it does
/// not match. A `{parameter}` matches one non-empty segment.
fn match_template(template: &str, path: &str) -> Option<usize> {
    let mut templates = template.split('/');
    let mut segments = path.split('/');
    let mut literals = 0;
    loop {
        match (templates.next(), segments.next()) {
            (None, None) => return Some(literals),
            (Some(expected), Some(segment)) => {
                if expected.starts_with('{') {
                    if segment.is_empty() {
                        return None;
                    }
                } else if expected == segment {
                    literals += 1;
                } else {
                    return None;
                }
            }
            _ => return None,
        }
    }
}

/// The metric label of an HTTP method: the standard ones, else `OTHER`.
fn http_method(method: &Method) -> &'static str {
    match method.as_str() {
        "GET" => "GET",
        "POST" => "POST",
        "PUT" => "PUT",
        "PATCH" => "PATCH",
        "DELETE" => "DELETE",
        "HEAD" => "HEAD",
        "OPTIONS" => "OPTIONS",
        "CONNECT" => "CONNECT",
        "TRACE" => "TRACE",
        _ => "OTHER",
    }
}

/// gRPC status codes by their names in the gRPC specification.
pub fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

/// What a call is, in metric labels.
#[derive(Clone, Copy)]
enum Kind {
    Grpc {
        method: &'static str,
    },
    Rest {
        method: &'static str,
        route: &'static str,
    },
}

/// One call being served: started when its headers arrive, finished when
/// its response has been sent (or abandoned).
pub struct Call {
    span: Span,
    started: Instant,
    kind: Kind,
    request_id: HeaderValue,
    access_log: AccessLogLevel,
}

impl Call {
    /// `metrics_route`: the request is a scrape of `/metrics` on this port.
    pub fn start<B>(
        request: &Request<B>,
        grpc: bool,
        metrics_route: bool,
        access_log: AccessLogLevel,
    ) -> Call {
        let request_id = request_id(request.headers());
        // Acceptable ids and made ones are ASCII.
        let id = request_id.to_str().unwrap_or_default();
        let path = request.uri().path();
        let kind = if grpc {
            Kind::Grpc {
                method: grpc_method(path),
            }
        } else {
            Kind::Rest {
                method: http_method(request.method()),
                route: if metrics_route {
                    "/metrics"
                } else {
                    rest_route(path)
                },
            }
        };
        // Probes and scrapes come every few seconds from every orchestrator
        // and scraper: their access lines go to debug, so that the log at
        // info is the API's traffic.
        let probe = match kind {
            Kind::Grpc { method } => method.starts_with("grpc.health.v1.Health/"),
            Kind::Rest { route, .. } => matches!(route, "/healthz" | "/readyz" | "/metrics"),
        };
        let access_log = match access_log {
            AccessLogLevel::Off => AccessLogLevel::Off,
            _ if probe => AccessLogLevel::Debug,
            level => level,
        };
        // At ERROR level so that no log filter disables the span: a warning
        // or an error logged while serving the call must carry its id.
        // `account` is recorded once the token is verified.
        let span = match kind {
            Kind::Grpc { method } => tracing::error_span!(
                "call",
                request_id = id,
                method,
                account = tracing::field::Empty
            ),
            Kind::Rest { method, route } => tracing::error_span!(
                "call",
                request_id = id,
                method,
                route,
                account = tracing::field::Empty
            ),
        };
        Call {
            span,
            started: Instant::now(),
            kind,
            request_id,
            access_log,
        }
    }

    pub fn span(&self) -> &Span {
        &self.span
    }

    pub fn transport(&self) -> &'static str {
        match self.kind {
            Kind::Grpc { .. } => "grpc",
            Kind::Rest { .. } => "rest",
        }
    }

    /// Puts the request id on `response` and wraps its body, so the call is
    /// counted and logged once the body has been sent (a gRPC call's status
    /// is often in its trailers) or dropped.
    pub fn finish(self, response: Response<Body>) -> Response<Body> {
        let (mut parts, body) = response.into_parts();
        parts.headers.insert(REQUEST_ID, self.request_id);
        let outcome = match self.kind {
            Kind::Grpc { method } => Outcome::Grpc {
                method,
                // Set here for a trailers-only answer (errors, refusals).
                code: parts
                    .headers
                    .get("grpc-status")
                    .map(|status| Code::from_bytes(status.as_bytes())),
            },
            Kind::Rest { method, route } => Outcome::Rest {
                method,
                route,
                status: parts.status.as_u16(),
            },
        };
        let body = ObservedBody {
            inner: body,
            span: self.span,
            pending: Some(Pending {
                started: self.started,
                outcome,
                access_log: self.access_log,
            }),
        };
        Response::from_parts(parts, Body::new(body))
    }
}

enum Outcome {
    Grpc {
        method: &'static str,
        code: Option<Code>,
    },
    Rest {
        method: &'static str,
        route: &'static str,
        status: u16,
    },
}

/// How a response body ended.
#[derive(Clone, Copy, PartialEq, Eq)]
enum End {
    /// Sent in full.
    Complete,
    /// Dropped before its end: the client went away, or the connection broke.
    Abandoned,
}

/// What is left to record of a call once its response ends.
struct Pending {
    started: Instant,
    outcome: Outcome,
    access_log: AccessLogLevel,
}

impl Pending {
    /// Records the call's metrics and writes its access line (within the
    /// call's span, which carries the request id, method and account).
    fn record(self, end: End) {
        let elapsed = self.started.elapsed();
        match self.outcome {
            Outcome::Grpc { method, code } => {
                let code = match (code, end) {
                    (Some(code), _) => code,
                    // A gRPC response that ended without a status is broken.
                    (None, End::Complete) => Code::Unknown,
                    (None, End::Abandoned) => Code::Cancelled,
                };
                let code = code_name(code);
                metrics::grpc_call(method, code, elapsed);
                access_line(self.access_log, Status::Grpc(code), elapsed);
            }
            Outcome::Rest {
                method,
                route,
                status,
            } => {
                metrics::http_request(method, route, status, elapsed);
                access_line(self.access_log, Status::Http(status), elapsed);
            }
        }
    }
}

enum Status {
    Grpc(&'static str),
    Http(u16),
}

/// One access-log line at `level`. gRPC calls and REST requests name their
/// status in differently named fields (a code name, an HTTP status number),
/// so a log store can type each field.
fn access_line(level: AccessLogLevel, status: Status, elapsed: Duration) {
    // Microsecond precision, in milliseconds.
    let latency_ms = elapsed.as_micros() as f64 / 1000.0;
    // tracing fixes an event's level where it is written: one arm per level.
    macro_rules! line {
        ($level:expr) => {
            match status {
                Status::Grpc(code) => {
                    tracing::event!(target: ACCESS_TARGET, $level, grpc_code = code, latency_ms, "access")
                }
                Status::Http(status) => {
                    tracing::event!(target: ACCESS_TARGET, $level, http_status = status, latency_ms, "access")
                }
            }
        };
    }
    match level {
        AccessLogLevel::Off => {}
        AccessLogLevel::Error => line!(tracing::Level::ERROR),
        AccessLogLevel::Warn => line!(tracing::Level::WARN),
        AccessLogLevel::Info => line!(tracing::Level::INFO),
        AccessLogLevel::Debug => line!(tracing::Level::DEBUG),
    }
}

/// A response body that records its call when it ends, and serves (polls)
/// within the call's span, so that a streaming response's logs carry the
/// request id too.
struct ObservedBody {
    inner: Body,
    span: Span,
    /// `None` once recorded.
    pending: Option<Pending>,
}

impl ObservedBody {
    fn record(&mut self, end: End) {
        if let Some(pending) = self.pending.take() {
            let _entered = self.span.enter();
            pending.record(end);
        }
    }
}

impl HttpBody for ObservedBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let this = &mut *self;
        let polled = {
            let _entered = this.span.enter();
            Pin::new(&mut this.inner).poll_frame(cx)
        };
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(trailers) = frame.trailers_ref() {
                    if let Some(Pending {
                        outcome: Outcome::Grpc { code, .. },
                        ..
                    }) = &mut this.pending
                        && code.is_none()
                    {
                        *code = trailers
                            .get("grpc-status")
                            .map(|status| Code::from_bytes(status.as_bytes()));
                    }
                    // Trailers are a body's last frame.
                    this.record(End::Complete);
                }
            }
            Poll::Ready(Some(Err(_))) => this.record(End::Abandoned),
            Poll::Ready(None) => this.record(End::Complete),
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for ObservedBody {
    /// A body hyper never polls (it is empty) or stops polling (the client
    /// went away) still records its call.
    fn drop(&mut self) {
        let end = if self.inner.is_end_stream() {
            End::Complete
        } else {
            End::Abandoned
        };
        self.record(end);
    }
}

/// The answer to `/metrics`: the exporter's text for GET (and HEAD).
pub fn scrape(method: &Method) -> Response<Body> {
    if method != Method::GET && method != Method::HEAD {
        let mut response = Response::new(Body::from("use GET\n"));
        *response.status_mut() = StatusCode::METHOD_NOT_ALLOWED;
        response
            .headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
        return response;
    }
    let mut response = Response::new(Body::from(metrics::render()));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(metrics::CONTENT_TYPE),
    );
    response
}

/// `--metrics-listen`: a plain-HTTP port that serves `/metrics` and nothing
/// else, behind the same accept loop (and connection limits) as the main one.
#[derive(Clone)]
pub struct MetricsPort;

#[derive(Clone)]
pub struct MetricsConnection {
    first_request: Arc<AtomicBool>,
}

impl ConnectionService for MetricsPort {
    type Service = MetricsConnection;

    fn for_connection(&self, first_request: Arc<AtomicBool>) -> MetricsConnection {
        MetricsConnection { first_request }
    }
}

impl hyper::service::Service<Request<Incoming>> for MetricsConnection {
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = std::future::Ready<Result<Response<Body>, Infallible>>;

    fn call(&self, request: Request<Incoming>) -> Self::Future {
        self.first_request.store(true, Ordering::Relaxed);
        let response = if request.uri().path() == "/metrics" {
            scrape(request.method())
        } else {
            let mut response = Response::new(Body::from("not found: metrics are at /metrics\n"));
            *response.status_mut() = StatusCode::NOT_FOUND;
            response
        };
        std::future::ready(Ok(response))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids() {
        let with = |value: &[u8]| {
            let mut headers = HeaderMap::new();
            headers.insert(REQUEST_ID, HeaderValue::from_bytes(value).unwrap());
            request_id(&headers)
        };
        assert_eq!(with(b"abc-123"), "abc-123");
        assert_eq!(with(b"with space"), "with space");
        let longest = "x".repeat(MAX_REQUEST_ID_BYTES);
        assert_eq!(with(longest.as_bytes()), longest.as_str());
        for refused in [
            "y".repeat(MAX_REQUEST_ID_BYTES + 1).into_bytes(),
            b"tab\there".to_vec(),
            "caf\u{e9}".as_bytes().to_vec(),
        ] {
            let made = with(&refused);
            assert_ne!(made.as_bytes(), refused.as_slice());
            assert_eq!(made.len(), 32);
            assert!(made.as_bytes().iter().all(u8::is_ascii_hexdigit));
        }
        assert_ne!(request_id(&HeaderMap::new()), request_id(&HeaderMap::new()));
    }

    #[test]
    fn routes_are_templates() {
        assert_eq!(rest_route("/v2/rooms"), "/v2/rooms");
        assert_eq!(rest_route("/v2/rooms/abc-defg-hij"), "/v2/rooms/{roomId}");
        assert_eq!(rest_route("/v2/rooms/deactivate"), "/v2/rooms/deactivate");
        assert_eq!(
            rest_route("/v2/rooms/validate/x"),
            "/v2/rooms/validate/{roomId}"
        );
        assert_eq!(rest_route("/v2/sessions/"), "/v2/sessions/");
        assert_eq!(rest_route("/v2/sessions/end"), "/v2/sessions/end");
        assert_eq!(
            rest_route("/v2/sessions/s1/participants/active"),
            "/v2/sessions/{sessionId}/participants/active"
        );
        assert_eq!(
            rest_route("/v2/sessions/participants/remove"),
            "/v2/sessions/participants/remove"
        );
        for unmatched in ["/", "/v2/rooms/", "/v2/rooms/a/b", "/nope", "/v2/rooms//x"] {
            assert_eq!(rest_route(unmatched), UNMATCHED, "{unmatched}");
        }
    }

    #[test]
    fn grpc_methods_are_the_served_ones() {
        assert_eq!(
            grpc_method("/rooms.v1.RoomService/GetRoom"),
            "rooms.v1.RoomService/GetRoom"
        );
        assert_eq!(
            grpc_method("/grpc.health.v1.Health/Check"),
            "grpc.health.v1.Health/Check"
        );
        assert_eq!(
            grpc_method("/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo"),
            "grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo"
        );
        assert_eq!(grpc_method("/rooms.v1.RoomService/Nope"), UNKNOWN_METHOD);
        assert_eq!(grpc_method("rooms.v1.RoomService/GetRoom"), UNKNOWN_METHOD);
    }
}
