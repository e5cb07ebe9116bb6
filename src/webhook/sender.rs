//! One delivery attempt of a signed webhook, and what to do next.
//!
//! The SSRF guard lives here. The host is resolved when the attempt is made,
//! by the connector's own resolver, which drops every forbidden address
//! before the connector sees the list: the addresses checked are the
//! addresses connected to, so a DNS answer that changes between a check and
//! the connect (rebinding) cannot slip through. IP literals never reach a
//! resolver, so they are checked before the request is made. The client
//! follows no redirects and uses no proxy, so nothing else picks a
//! destination.

use std::error::Error as StdError;
use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Uri};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::connect::dns::Name;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use tokio::time::Instant;
use url::{Host, Url};

use super::address::forbidden_reason;

const USER_AGENT: &str = concat!("roomservice-webhooks/", env!("CARGO_PKG_VERSION"));
const SIGNATURE: HeaderName = HeaderName::from_static("videosdk-signature");
const WEBHOOK_ID: HeaderName = HeaderName::from_static("webhook-id");
const WEBHOOK_TIMESTAMP: HeaderName = HeaderName::from_static("webhook-timestamp");

/// How a [`Sender`] behaves.
#[derive(Clone, Debug)]
pub struct SenderConfig {
    /// Let webhooks reach loopback, private and other non-public addresses:
    /// for development and for deployments whose receivers are internal.
    pub allow_private: bool,
    /// Per attempt: resolution, connect, request, response headers and the
    /// part of the body that is read.
    pub timeout: Duration,
    /// The most of a response body read; the rest is never received.
    pub max_response_bytes: usize,
}

impl Default for SenderConfig {
    fn default() -> SenderConfig {
        SenderConfig {
            allow_private: false,
            timeout: Duration::from_secs(10),
            max_response_bytes: 4096,
        }
    }
}

/// Why a [`Sender`] could not be built.
#[derive(Debug, thiserror::Error)]
pub enum SenderError {
    #[error("tls configuration: {0}")]
    Tls(#[from] rustls::Error),
}

/// One webhook request, signed by the caller.
#[derive(Clone, Copy, Debug)]
pub struct Outgoing<'a> {
    pub endpoint: &'a str,
    pub body: &'a [u8],
    /// The `videosdk-signature` header: base64 RSA-SHA256 of `body`.
    pub signature: &'a str,
    pub webhook_id: &'a str,
    /// Unix seconds.
    pub timestamp: i64,
}

/// The outcome of one attempt, and so what the caller does next.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Attempt {
    /// 2xx.
    Delivered { status: u16 },
    /// 408, 429, 5xx, a timeout, a refused or reset connection, a DNS failure:
    /// the receiver may be fine later, so try again.
    Retry { status: Option<u16>, reason: String },
    /// Any other status (3xx, as redirects are never followed; other 4xx), a
    /// malformed URL, a scheme other than http(s), or a forbidden address:
    /// trying again cannot help.
    Failed { status: Option<u16>, reason: String },
}

type Connector = HttpsConnector<HttpConnector<GuardedResolver>>;

/// Sends webhooks. Cheap to clone: clones share one connection pool.
#[derive(Clone, Debug)]
pub struct Sender {
    client: Client<Connector, Full<Bytes>>,
    config: SenderConfig,
}

impl Sender {
    pub fn new(config: SenderConfig) -> Result<Sender, SenderError> {
        let mut http = HttpConnector::new_with_resolver(GuardedResolver {
            allow_private: config.allow_private,
        });
        // The https connector wraps this one; it must accept https URLs.
        http.enforce_http(false);
        http.set_nodelay(true);
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls_config()?)
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        // hyper's client follows no redirects and reads no proxy settings:
        // both would choose a destination the guard did not check.
        let client = Client::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .build(connector);
        Ok(Sender { client, config })
    }

    /// Makes one attempt; never panics, every failure is an [`Attempt`].
    pub async fn send(&self, outgoing: &Outgoing<'_>) -> Attempt {
        let request = match self.request(outgoing) {
            Ok(request) => request,
            Err(reason) => return failed(reason),
        };
        let deadline = Instant::now() + self.config.timeout;
        let response = match tokio::time::timeout_at(deadline, self.client.request(request)).await {
            Err(_) => return self.timed_out(),
            Ok(Err(e)) => return transport_failure(&e),
            Ok(Ok(response)) => response,
        };
        let status = response.status().as_u16();
        // The status is the answer; the body is read (within the same deadline)
        // only so that a small one frees the connection for reuse.
        let _ = tokio::time::timeout_at(
            deadline,
            read_at_most(response.into_body(), self.config.max_response_bytes),
        )
        .await;
        judge_status(status)
    }

    /// The request, or why it must not be made.
    fn request(&self, outgoing: &Outgoing<'_>) -> Result<Request<Full<Bytes>>, String> {
        let mut url = Url::parse(outgoing.endpoint).map_err(|e| format!("malformed url: {e}"))?;
        match url.scheme() {
            "http" | "https" => {}
            other => return Err(format!("scheme {other} not allowed (http or https only)")),
        }
        // The domain layer refuses such endpoints; hyper would silently drop
        // the credentials rather than send them as an Authorization header.
        if !url.username().is_empty() || url.password().is_some() {
            return Err("url must not contain user info".to_owned());
        }
        let literal = match url.host() {
            None => return Err("url has no host".to_owned()),
            Some(Host::Ipv4(ip)) => Some(IpAddr::V4(ip)),
            Some(Host::Ipv6(ip)) => Some(IpAddr::V6(ip)),
            Some(Host::Domain(_)) => None,
        };
        if let Some(ip) = literal
            && !self.config.allow_private
            && let Some(reason) = forbidden_reason(ip)
        {
            return Err(format!("address {ip} is {reason}"));
        }
        // Fragments are never sent.
        url.set_fragment(None);
        let uri = Uri::try_from(url.as_str()).map_err(|e| format!("malformed url: {e}"))?;

        let mut request = Request::new(Full::new(Bytes::copy_from_slice(outgoing.body)));
        *request.method_mut() = Method::POST;
        *request.uri_mut() = uri;
        *request.headers_mut() = headers(outgoing)?;
        Ok(request)
    }

    fn timed_out(&self) -> Attempt {
        Attempt::Retry {
            status: None,
            reason: format!("timed out after {}", describe(self.config.timeout)),
        }
    }
}

fn headers(outgoing: &Outgoing<'_>) -> Result<HeaderMap, String> {
    let value = |name: &HeaderName, text: &str| {
        HeaderValue::from_str(text).map_err(|_| format!("{name} is not a valid header value"))
    };
    let mut headers = HeaderMap::new();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    headers.insert(header::USER_AGENT, HeaderValue::from_static(USER_AGENT));
    headers.insert(SIGNATURE, value(&SIGNATURE, outgoing.signature)?);
    headers.insert(WEBHOOK_ID, value(&WEBHOOK_ID, outgoing.webhook_id)?);
    headers.insert(WEBHOOK_TIMESTAMP, HeaderValue::from(outgoing.timestamp));
    Ok(headers)
}

/// Reads and discards up to about `limit` bytes (a frame may overshoot by
/// one read buffer), then drops the body: an unread rest closes the
/// connection instead of being downloaded.
async fn read_at_most(mut body: Incoming, limit: usize) -> usize {
    let mut read = 0;
    while read < limit {
        match body.frame().await {
            Some(Ok(frame)) => read += frame.data_ref().map_or(0, Bytes::len),
            Some(Err(_)) | None => break,
        }
    }
    read
}

fn judge_status(status: u16) -> Attempt {
    match status {
        200..=299 => Attempt::Delivered { status },
        300..=399 => Attempt::Failed {
            status: Some(status),
            reason: format!("redirect not followed (http {status})"),
        },
        408 | 429 | 500..=599 => Attempt::Retry {
            status: Some(status),
            reason: format!("http {status}"),
        },
        _ => Attempt::Failed {
            status: Some(status),
            reason: format!("http {status}"),
        },
    }
}

/// Names a failure before any status, from the innermost cause we know.
fn transport_failure(error: &hyper_util::client::legacy::Error) -> Attempt {
    let mut source: Option<&(dyn StdError + 'static)> = Some(error);
    while let Some(current) = source {
        if let Some(refused) = current.downcast_ref::<ResolveError>() {
            return match refused {
                ResolveError::Forbidden { .. } => failed(refused.to_string()),
                _ => retry(refused.to_string()),
            };
        }
        if let Some(io_error) = current.downcast_ref::<io::Error>() {
            return retry(describe_io(io_error));
        }
        if let Some(hyper_error) = current.downcast_ref::<hyper::Error>()
            && hyper_error.is_incomplete_message()
        {
            return retry("connection closed before a response".to_owned());
        }
        source = current.source();
    }
    retry(format!("request failed: {}", root_cause(error)))
}

fn failed(reason: String) -> Attempt {
    Attempt::Failed {
        status: None,
        reason,
    }
}

fn retry(reason: String) -> Attempt {
    Attempt::Retry {
        status: None,
        reason,
    }
}

fn describe(duration: Duration) -> String {
    if duration.subsec_millis() == 0 && duration.as_secs() > 0 {
        format!("{} s", duration.as_secs())
    } else {
        format!("{} ms", duration.as_millis())
    }
}

fn describe_io(mut error: &io::Error) -> String {
    // TLS failures arrive as an io error wrapping rustls's, sometimes inside
    // another io error; `source()` skips such wrapped errors, `get_ref()` does not.
    while let Some(inner) = error.get_ref() {
        if let Some(tls) = inner.downcast_ref::<rustls::Error>() {
            return format!("tls: {tls}");
        }
        match inner.downcast_ref::<io::Error>() {
            Some(io_error) => error = io_error,
            None => break,
        }
    }
    match error.kind() {
        io::ErrorKind::ConnectionRefused => "connection refused".to_owned(),
        io::ErrorKind::ConnectionReset => "connection reset".to_owned(),
        io::ErrorKind::ConnectionAborted => "connection aborted".to_owned(),
        io::ErrorKind::BrokenPipe => "connection closed by the receiver".to_owned(),
        io::ErrorKind::TimedOut => "connect timed out".to_owned(),
        io::ErrorKind::HostUnreachable => "host unreachable".to_owned(),
        io::ErrorKind::NetworkUnreachable => "network unreachable".to_owned(),
        io::ErrorKind::UnexpectedEof => "connection closed before a response".to_owned(),
        _ => format!("connection failed: {error}"),
    }
}

fn root_cause(error: &(dyn StdError + 'static)) -> String {
    let mut current = error;
    while let Some(next) = current.source() {
        current = next;
    }
    current.to_string()
}

/// aws-lc-rs, the crate's only provider, passed explicitly rather than
/// installed as the process default; the Mozilla roots compiled in.
fn tls_config() -> Result<rustls::ClientConfig, rustls::Error> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let roots = rustls::RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

/// Resolves with the system resolver and keeps only the addresses a webhook
/// may reach; the connector connects to nothing else.
#[derive(Clone, Debug)]
struct GuardedResolver {
    allow_private: bool,
}

#[derive(Debug, thiserror::Error)]
enum ResolveError {
    #[error("dns lookup failed for {host}: {message}")]
    Lookup { host: String, message: String },
    #[error("dns lookup for {host} returned no addresses")]
    Empty { host: String },
    #[error("address {ip} ({host}) is {reason}")]
    Forbidden {
        host: String,
        ip: IpAddr,
        reason: &'static str,
    },
}

impl tower::Service<Name> for GuardedResolver {
    type Response = std::vec::IntoIter<SocketAddr>;
    type Error = ResolveError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, ResolveError>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), ResolveError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, name: Name) -> Self::Future {
        Box::pin(resolve(name.as_str().to_owned(), self.allow_private))
    }
}

async fn resolve(
    host: String,
    allow_private: bool,
) -> Result<std::vec::IntoIter<SocketAddr>, ResolveError> {
    // Port 0: the connector puts in the URL's port.
    let lookup = tokio::net::lookup_host((host.as_str(), 0))
        .await
        .map(|addresses| addresses.collect::<Vec<SocketAddr>>());
    let resolved = match lookup {
        Ok(addresses) => addresses,
        Err(e) => {
            let message = e.to_string();
            let message = message
                .strip_prefix("failed to lookup address information: ")
                .unwrap_or(&message)
                .to_lowercase();
            return Err(ResolveError::Lookup { host, message });
        }
    };
    if resolved.is_empty() {
        return Err(ResolveError::Empty { host });
    }
    if allow_private {
        return Ok(resolved.into_iter());
    }
    let mut refused = None;
    let allowed: Vec<SocketAddr> = resolved
        .into_iter()
        .filter(|address| match forbidden_reason(address.ip()) {
            None => true,
            Some(reason) => {
                refused.get_or_insert((address.ip(), reason));
                false
            }
        })
        .collect();
    match refused {
        Some((ip, reason)) if allowed.is_empty() => {
            Err(ResolveError::Forbidden { host, ip, reason })
        }
        Some((ip, reason)) => {
            // Harmless as the forbidden ones are dropped, but a public name
            // with private addresses is worth an operator's look.
            tracing::warn!(%host, %ip, reason, "webhook host also resolves to a forbidden address; skipped");
            Ok(allowed.into_iter())
        }
        None => Ok(allowed.into_iter()),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};

    use super::*;

    /// A request as the receiver saw it.
    #[derive(Clone, Debug)]
    struct Recorded {
        method: String,
        target: String,
        headers: Vec<(String, String)>,
        body: Vec<u8>,
    }

    impl Recorded {
        fn header(&self, name: &str) -> Option<&str> {
            self.headers
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, v)| v.as_str())
        }
    }

    /// What the receiver answers every request with.
    #[derive(Clone)]
    enum Reply {
        Status(u16, Vec<(String, String)>),
        /// Reads the request, then says nothing.
        Silent,
        /// 200 with a body of this many bytes, written until the peer goes.
        Huge(usize),
    }

    #[derive(Debug)]
    struct HugeOutcome {
        written: usize,
        error: Option<io::ErrorKind>,
    }

    #[derive(Default)]
    struct Seen {
        connections: AtomicUsize,
        requests: Mutex<Vec<Recorded>>,
        huge: Mutex<Option<HugeOutcome>>,
    }

    /// A minimal HTTP/1.1 receiver on 127.0.0.1 that records what it gets.
    struct Receiver {
        port: u16,
        seen: Arc<Seen>,
    }

    impl Receiver {
        async fn start(reply: Reply) -> Receiver {
            Receiver::start_with(|_| reply).await
        }

        /// For replies that name the receiver's own port.
        async fn start_with(make_reply: impl FnOnce(u16) -> Reply) -> Receiver {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let port = listener.local_addr().unwrap().port();
            let reply = make_reply(port);
            let seen = Arc::new(Seen::default());
            let accepted = seen.clone();
            tokio::spawn(async move {
                while let Ok((stream, _)) = listener.accept().await {
                    accepted.connections.fetch_add(1, Ordering::SeqCst);
                    tokio::spawn(serve(stream, reply.clone(), accepted.clone()));
                }
            });
            Receiver { port, seen }
        }

        fn url(&self, path: &str) -> String {
            format!("http://127.0.0.1:{}{path}", self.port)
        }

        fn connections(&self) -> usize {
            self.seen.connections.load(Ordering::SeqCst)
        }

        fn requests(&self) -> Vec<Recorded> {
            self.seen.requests.lock().unwrap().clone()
        }
    }

    async fn serve(mut stream: TcpStream, reply: Reply, seen: Arc<Seen>) {
        let mut buffer = Vec::new();
        while let Some(request) = read_request(&mut stream, &mut buffer).await {
            seen.requests.lock().unwrap().push(request);
            match &reply {
                Reply::Status(status, headers) => {
                    let mut head = format!("HTTP/1.1 {status} Whatever\r\n");
                    if *status != 204 {
                        head.push_str("content-length: 0\r\n");
                    }
                    for (name, value) in headers {
                        head.push_str(&format!("{name}: {value}\r\n"));
                    }
                    head.push_str("\r\n");
                    if stream.write_all(head.as_bytes()).await.is_err() {
                        return;
                    }
                }
                Reply::Silent => {
                    tokio::time::sleep(Duration::from_secs(60)).await;
                    return;
                }
                Reply::Huge(length) => {
                    let outcome = write_huge(&mut stream, *length).await;
                    *seen.huge.lock().unwrap() = Some(outcome);
                    return;
                }
            }
        }
    }

    async fn write_huge(stream: &mut TcpStream, length: usize) -> HugeOutcome {
        let head = format!("HTTP/1.1 200 OK\r\ncontent-length: {length}\r\n\r\n");
        if let Err(e) = stream.write_all(head.as_bytes()).await {
            return HugeOutcome {
                written: 0,
                error: Some(e.kind()),
            };
        }
        let chunk = vec![b'x'; 64 * 1024];
        let mut written = 0;
        while written < length {
            let n = chunk.len().min(length - written);
            match stream.write_all(&chunk[..n]).await {
                Ok(()) => written += n,
                Err(e) => {
                    return HugeOutcome {
                        written,
                        error: Some(e.kind()),
                    };
                }
            }
        }
        HugeOutcome {
            written,
            error: None,
        }
    }

    async fn read_request(stream: &mut TcpStream, buffer: &mut Vec<u8>) -> Option<Recorded> {
        let head_end = loop {
            if let Some(at) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
                break at;
            }
            read_more(stream, buffer).await?;
        };
        let head = String::from_utf8(buffer[..head_end].to_vec()).ok()?;
        let mut lines = head.split("\r\n");
        let mut request_line = lines.next()?.split(' ');
        let method = request_line.next()?.to_owned();
        let target = request_line.next()?.to_owned();
        let headers: Vec<(String, String)> = lines
            .filter_map(|line| line.split_once(':'))
            .map(|(name, value)| (name.trim().to_ascii_lowercase(), value.trim().to_owned()))
            .collect();
        let length: usize = headers
            .iter()
            .find(|(name, _)| name == "content-length")
            .and_then(|(_, value)| value.parse().ok())
            .unwrap_or(0);
        buffer.drain(..head_end + 4);
        while buffer.len() < length {
            read_more(stream, buffer).await?;
        }
        let body = buffer.drain(..length).collect();
        Some(Recorded {
            method,
            target,
            headers,
            body,
        })
    }

    async fn read_more(stream: &mut TcpStream, buffer: &mut Vec<u8>) -> Option<()> {
        let mut chunk = [0; 4096];
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => None,
            Ok(n) => {
                buffer.extend_from_slice(&chunk[..n]);
                Some(())
            }
        }
    }

    fn sender(allow_private: bool) -> Sender {
        Sender::new(SenderConfig {
            allow_private,
            timeout: Duration::from_secs(5),
            max_response_bytes: 4096,
        })
        .unwrap()
    }

    const BODY: &[u8] =
        "{\"webhookType\": \"session-started\",\n \"data\": {\"name\": \"caf\u{e9} \u{1f3a5}\"}}\n"
            .as_bytes();

    fn outgoing(endpoint: &str) -> Outgoing<'_> {
        Outgoing {
            endpoint,
            body: BODY,
            signature: "c2lnbmF0dXJl+/==",
            webhook_id: "wh_0123456789",
            timestamp: 1_767_225_600,
        }
    }

    #[tokio::test]
    async fn request_carries_the_signed_body_and_headers() {
        let receiver = Receiver::start(Reply::Status(200, Vec::new())).await;
        let sender = sender(true);
        let url = receiver.url("/hooks/in?token=abc");

        assert_eq!(
            sender.send(&outgoing(&url)).await,
            Attempt::Delivered { status: 200 }
        );

        let requests = receiver.requests();
        assert_eq!(requests.len(), 1);
        let request = &requests[0];
        assert_eq!(request.method, "POST");
        assert_eq!(request.target, "/hooks/in?token=abc");
        assert_eq!(request.body, BODY);
        let host = format!("127.0.0.1:{}", receiver.port);
        assert_eq!(request.header("host"), Some(host.as_str()));
        assert_eq!(request.header("content-type"), Some("application/json"));
        assert_eq!(
            request.header("content-length"),
            Some(BODY.len().to_string().as_str())
        );
        assert_eq!(
            request.header("videosdk-signature"),
            Some("c2lnbmF0dXJl+/==")
        );
        assert_eq!(request.header("webhook-id"), Some("wh_0123456789"));
        assert_eq!(request.header("webhook-timestamp"), Some("1767225600"));
        let user_agent = format!("roomservice-webhooks/{}", env!("CARGO_PKG_VERSION"));
        assert_eq!(request.header("user-agent"), Some(user_agent.as_str()));

        // The small response was read through, so the connection is reused.
        assert_eq!(
            sender.send(&outgoing(&url)).await,
            Attempt::Delivered { status: 200 }
        );
        assert_eq!(receiver.requests().len(), 2);
        assert_eq!(receiver.connections(), 1);
    }

    #[tokio::test]
    async fn a_real_signature_arrives_intact() {
        let key = crate::webhook::SigningKey::generate().unwrap();
        let signature = key.sign(BODY).unwrap();
        let receiver = Receiver::start(Reply::Status(204, Vec::new())).await;
        let url = receiver.url("/");
        let attempt = sender(true)
            .send(&Outgoing {
                signature: &signature,
                ..outgoing(&url)
            })
            .await;
        assert_eq!(attempt, Attempt::Delivered { status: 204 });
        let requests = receiver.requests();
        assert_eq!(
            requests[0].header("videosdk-signature"),
            Some(signature.as_str())
        );
        assert_eq!(requests[0].body, BODY);
    }

    #[tokio::test]
    async fn statuses_decide_what_happens_next() {
        let sender = sender(true);
        for status in [200, 201, 204] {
            let receiver = Receiver::start(Reply::Status(status, Vec::new())).await;
            let attempt = sender.send(&outgoing(&receiver.url("/"))).await;
            assert_eq!(attempt, Attempt::Delivered { status }, "http {status}");
        }
        for status in [408, 429, 500, 502, 503] {
            let receiver = Receiver::start(Reply::Status(status, Vec::new())).await;
            let attempt = sender.send(&outgoing(&receiver.url("/"))).await;
            let expected = Attempt::Retry {
                status: Some(status),
                reason: format!("http {status}"),
            };
            assert_eq!(attempt, expected);
        }
        for status in [400, 401, 404, 410, 413] {
            let receiver = Receiver::start(Reply::Status(status, Vec::new())).await;
            let attempt = sender.send(&outgoing(&receiver.url("/"))).await;
            let expected = Attempt::Failed {
                status: Some(status),
                reason: format!("http {status}"),
            };
            assert_eq!(attempt, expected);
        }
    }

    #[tokio::test]
    async fn redirects_are_not_followed() {
        for status in [301, 302, 307, 308] {
            let receiver = Receiver::start_with(|port| {
                let location = format!("http://127.0.0.1:{port}/elsewhere");
                Reply::Status(status, vec![("location".to_owned(), location)])
            })
            .await;
            let attempt = sender(true).send(&outgoing(&receiver.url("/hook"))).await;
            let expected = Attempt::Failed {
                status: Some(status),
                reason: format!("redirect not followed (http {status})"),
            };
            assert_eq!(attempt, expected);

            tokio::time::sleep(Duration::from_millis(50)).await;
            let targets: Vec<String> = receiver.requests().into_iter().map(|r| r.target).collect();
            assert_eq!(targets, ["/hook"]);
        }
    }

    #[tokio::test]
    async fn a_silent_receiver_times_out() {
        let receiver = Receiver::start(Reply::Silent).await;
        let sender = Sender::new(SenderConfig {
            allow_private: true,
            timeout: Duration::from_millis(300),
            ..SenderConfig::default()
        })
        .unwrap();
        let started = std::time::Instant::now();
        let attempt = sender.send(&outgoing(&receiver.url("/"))).await;
        assert_eq!(
            attempt,
            Attempt::Retry {
                status: None,
                reason: "timed out after 300 ms".to_owned()
            }
        );
        assert!(started.elapsed() < Duration::from_secs(2));
        assert_eq!(receiver.requests().len(), 1);
    }

    /// A huge answer is not downloaded: the sender stops reading and closes,
    /// and the receiver's writes fail. 64 MiB is more than loopback socket
    /// buffers can hold, so the receiver cannot finish before the close.
    #[tokio::test]
    async fn a_huge_response_body_is_not_downloaded() {
        const LENGTH: usize = 64 * 1024 * 1024;
        let receiver = Receiver::start(Reply::Huge(LENGTH)).await;
        let started = std::time::Instant::now();
        let attempt = sender(true).send(&outgoing(&receiver.url("/"))).await;
        assert_eq!(attempt, Attempt::Delivered { status: 200 });
        assert!(started.elapsed() < Duration::from_secs(2));

        let outcome = loop {
            if let Some(outcome) = receiver.seen.huge.lock().unwrap().take() {
                break outcome;
            }
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "receiver never finished"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        };
        assert!(outcome.error.is_some(), "{outcome:?}");
        assert!(outcome.written < LENGTH, "{outcome:?}");
    }

    #[tokio::test]
    async fn read_at_most_stops_early() {
        let receiver = Receiver::start(Reply::Huge(1024 * 1024)).await;
        let sender = sender(true);
        let url = receiver.url("/");
        let request = sender.request(&outgoing(&url)).unwrap();
        let response = sender.client.request(request).await.unwrap();
        let read = read_at_most(response.into_body(), 4096).await;
        // One read buffer at most past the limit.
        assert!((4096..=4096 + 512 * 1024).contains(&read), "read {read}");
    }

    #[tokio::test]
    async fn loopback_is_refused_without_connecting() {
        let receiver = Receiver::start(Reply::Status(200, Vec::new())).await;
        let sender = sender(false);
        let port = receiver.port;
        let endpoints = [
            format!("http://127.0.0.1:{port}/"),
            format!("http://localhost:{port}/"),
            format!("http://[::ffff:127.0.0.1]:{port}/"),
            format!("http://[::1]:{port}/"),
            format!("http://0x7f.1:{port}/"),
        ];
        for endpoint in &endpoints {
            match sender.send(&outgoing(endpoint)).await {
                Attempt::Failed {
                    status: None,
                    reason,
                } => assert!(reason.ends_with("is loopback"), "{endpoint}: {reason}"),
                other => panic!("{endpoint}: {other:?}"),
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(receiver.connections(), 0);
    }

    #[tokio::test]
    async fn forbidden_reasons_name_the_address() {
        let sender = sender(false);
        let attempt = sender.send(&outgoing("http://10.0.0.1/")).await;
        assert_eq!(attempt, failed("address 10.0.0.1 is private".to_owned()));
        let attempt = sender
            .send(&outgoing("https://169.254.169.254/latest"))
            .await;
        assert_eq!(
            attempt,
            failed("address 169.254.169.254 is link-local".to_owned())
        );
        let attempt = sender.send(&outgoing("http://localhost:1/")).await;
        let Attempt::Failed {
            status: None,
            reason,
        } = attempt
        else {
            panic!("{attempt:?}");
        };
        assert!(reason.starts_with("address "), "{reason}");
        assert!(reason.ends_with(" (localhost) is loopback"), "{reason}");
    }

    #[tokio::test]
    async fn localhost_is_reached_when_private_addresses_are_allowed() {
        let receiver = Receiver::start(Reply::Status(200, Vec::new())).await;
        let url = format!("http://localhost:{}/", receiver.port);
        let attempt = sender(true).send(&outgoing(&url)).await;
        assert_eq!(attempt, Attempt::Delivered { status: 200 });
    }

    #[tokio::test]
    async fn a_refused_connection_is_retried() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        drop(listener);
        let url = format!("http://127.0.0.1:{port}/");
        let attempt = sender(true).send(&outgoing(&url)).await;
        assert_eq!(attempt, retry("connection refused".to_owned()));
    }

    #[tokio::test]
    async fn a_connection_closed_without_an_answer_is_retried() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                let mut buffer = Vec::new();
                let _ = read_request(&mut stream, &mut buffer).await;
                drop(stream);
            }
        });
        let url = format!("http://127.0.0.1:{port}/");
        let attempt = sender(true).send(&outgoing(&url)).await;
        assert_eq!(
            attempt,
            retry("connection closed before a response".to_owned())
        );
    }

    /// Exercises the TLS setup (aws-lc-rs, explicitly; no process default is
    /// installed) against a receiver that answers a handshake with plain HTTP.
    #[tokio::test]
    async fn https_to_a_plain_http_receiver_is_a_tls_failure() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                let _ = stream
                    .write_all(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n")
                    .await;
            }
        });
        let url = format!("https://127.0.0.1:{port}/");
        match sender(true).send(&outgoing(&url)).await {
            Attempt::Retry {
                status: None,
                reason,
            } => assert!(reason.starts_with("tls: "), "{reason}"),
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn bad_urls_fail_without_retry() {
        let sender = sender(true);
        let cases = [
            ("ftp://x", "scheme ftp not allowed (http or https only)"),
            (
                "file:///etc/passwd",
                "scheme file not allowed (http or https only)",
            ),
            ("not a url", "malformed url: relative URL without a base"),
            ("http://", "malformed url: empty host"),
            (
                "http://exa mple.com/",
                "malformed url: invalid international domain name",
            ),
            (
                "http://user:pw@example.com/",
                "url must not contain user info",
            ),
        ];
        for (endpoint, reason) in cases {
            let attempt = sender.send(&outgoing(endpoint)).await;
            assert_eq!(attempt, failed(reason.to_owned()), "{endpoint}");
        }
    }

    #[tokio::test]
    async fn header_values_that_cannot_be_sent_fail() {
        let receiver = Receiver::start(Reply::Status(200, Vec::new())).await;
        let url = receiver.url("/");
        let attempt = sender(true)
            .send(&Outgoing {
                webhook_id: "id\r\ninjected: yes",
                ..outgoing(&url)
            })
            .await;
        assert_eq!(
            attempt,
            failed("webhook-id is not a valid header value".to_owned())
        );
        assert_eq!(receiver.connections(), 0);
    }

    #[test]
    fn durations_read_naturally() {
        assert_eq!(describe(Duration::from_secs(10)), "10 s");
        assert_eq!(describe(Duration::from_millis(300)), "300 ms");
        assert_eq!(describe(Duration::from_millis(1500)), "1500 ms");
    }
}
