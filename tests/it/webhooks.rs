//! Webhooks end to end, as a receiver sees them: a real HTTP receiver on
//! 127.0.0.1 records every request (headers and exact body bytes, in arrival
//! order) and answers what each test tells it to. Covers the lifecycle
//! events and their contract fields, signatures checked with the `openssl`
//! binary, subscription patterns, media-published events, retries, dead
//! letters and their replay, redirects, the private-address guard, per-room
//! isolation of a slow receiver, WatchEvents (resume, filters, scope,
//! retention) and the REST listings' validation.

use std::collections::{HashSet, VecDeque};
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;
use http::StatusCode;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use jiff::Timestamp;
use roomservice::grpc::pb::event_service_client::EventServiceClient;
use roomservice::grpc::pb::session_service_client::SessionServiceClient;
use roomservice::grpc::pb::{
    self, AutoCloseConfig, CreateRoomRequest, ListDeliveriesRequest, ParticipantLeftRequest,
    PublishRoomEventRequest, WatchEventsRequest, Webhook,
};
use roomservice::server::WebhookSettings;
use roomservice::service::DeliveryConfig;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::task::{JoinHandle, JoinSet};
use tonic::transport::Channel;
use tonic::{Code, Status, Streaming};
use tonic_types::StatusExt;

use crate::harness::*;
use crate::redis_harness::*;
use crate::sessions_api::start_session;

/* -------------------------------- receiver --------------------------------- */

/// What the receiver answers to one request.
#[derive(Clone, Debug)]
struct Reply {
    status: u16,
    /// Waited before answering (the request is recorded on arrival).
    delay: Duration,
    /// A `Location` header.
    location: Option<String>,
}

impl Reply {
    fn status(status: u16) -> Reply {
        Reply {
            status,
            delay: Duration::ZERO,
            location: None,
        }
    }

    fn ok() -> Reply {
        Reply::status(200)
    }

    fn after(self, delay: Duration) -> Reply {
        Reply { delay, ..self }
    }

    fn redirect(to: &str) -> Reply {
        Reply {
            location: Some(to.to_owned()),
            ..Reply::status(302)
        }
    }
}

/// One request as the receiver got it.
#[derive(Clone, Debug)]
struct Received {
    method: String,
    path: String,
    headers: http::HeaderMap,
    body: Vec<u8>,
    arrived: Instant,
    /// The status it was (or is being) answered with.
    answer: u16,
}

impl Received {
    fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_else(|| panic!("no {name} header in {:?}", self.headers))
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "a JSON body ({e}): {:?}",
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    fn kind(&self) -> String {
        self.json()["webhookType"]
            .as_str()
            .expect("webhookType is a string")
            .to_owned()
    }

    fn data(&self) -> Value {
        self.json()["data"].clone()
    }

    fn webhook_id(&self) -> &str {
        self.header("webhook-id")
    }
}

struct ReceiverState {
    received: Vec<Received>,
    /// Answers for the next requests, in order; then `default`.
    script: VecDeque<Reply>,
    default: Reply,
    connections: usize,
}

/// A webhook receiver on 127.0.0.1:0; stops when dropped.
struct Receiver {
    addr: SocketAddr,
    state: Arc<Mutex<ReceiverState>>,
    task: JoinHandle<()>,
}

impl Receiver {
    /// Answers 200 to everything.
    async fn start() -> Receiver {
        Receiver::answering(Reply::ok()).await
    }

    async fn answering(default: Reply) -> Receiver {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the receiver");
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(Mutex::new(ReceiverState {
            received: Vec::new(),
            script: VecDeque::new(),
            default,
            connections: 0,
        }));
        let shared = state.clone();
        let task = tokio::spawn(async move {
            // Dropped (so every connection aborted) when the receiver is.
            let mut connections = JoinSet::new();
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                shared.lock().unwrap().connections += 1;
                let state = shared.clone();
                connections.spawn(async move {
                    let service = service_fn(move |request| answer(state.clone(), request));
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
                while connections.try_join_next().is_some() {}
            }
        });
        Receiver { addr, state, task }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// What to answer from now on (after any scripted answers).
    fn set_reply(&self, reply: Reply) {
        self.state.lock().unwrap().default = reply;
    }

    /// Answers for the next requests, before the default one.
    fn script(&self, replies: impl IntoIterator<Item = Reply>) {
        self.state.lock().unwrap().script.extend(replies);
    }

    fn received(&self) -> Vec<Received> {
        self.state.lock().unwrap().received.clone()
    }

    fn count(&self) -> usize {
        self.state.lock().unwrap().received.len()
    }

    /// TCP connections accepted.
    fn connections(&self) -> usize {
        self.state.lock().unwrap().connections
    }

    /// Waits until at least `n` requests have arrived; returns them all.
    async fn wait_for(&self, n: usize, within: Duration) -> Vec<Received> {
        let deadline = Instant::now() + within;
        loop {
            let got = self.received();
            if got.len() >= n {
                return got;
            }
            assert!(
                Instant::now() < deadline,
                "expected {n} requests within {within:?}, got {}: {:?}",
                got.len(),
                summary(&got)
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits for exactly `n` requests: at least `n` within `within`, and
    /// still `n` after a few more delivery polls.
    async fn exactly(&self, n: usize, within: Duration) -> Vec<Received> {
        self.wait_for(n, within).await;
        tokio::time::sleep(Duration::from_millis(400)).await;
        let got = self.received();
        assert_eq!(got.len(), n, "exactly {n} requests: {:?}", summary(&got));
        got
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn answer(
    state: Arc<Mutex<ReceiverState>>,
    request: http::Request<Incoming>,
) -> Result<http::Response<Full<Bytes>>, Infallible> {
    let (parts, body) = request.into_parts();
    let body = match body.collect().await {
        Ok(collected) => collected.to_bytes().to_vec(),
        Err(_) => Vec::new(),
    };
    let reply = {
        let mut state = state.lock().unwrap();
        let scripted = state.script.pop_front();
        let reply = scripted.unwrap_or_else(|| state.default.clone());
        state.received.push(Received {
            method: parts.method.to_string(),
            path: parts.uri.path().to_owned(),
            headers: parts.headers,
            body,
            arrived: Instant::now(),
            answer: reply.status,
        });
        reply
    };
    if !reply.delay.is_zero() {
        tokio::time::sleep(reply.delay).await;
    }
    let mut response = http::Response::builder().status(reply.status);
    if let Some(location) = &reply.location {
        response = response.header(http::header::LOCATION, location);
    }
    Ok(response
        .body(Full::new(Bytes::from_static(b"{}")))
        .expect("a response"))
}

/// (path, webhookType, webhook-id, answer) of each request, for messages.
fn summary(received: &[Received]) -> Vec<(String, String, String, u16)> {
    received
        .iter()
        .map(|r| {
            let kind = serde_json::from_slice::<Value>(&r.body)
                .ok()
                .and_then(|v| v["webhookType"].as_str().map(str::to_owned))
                .unwrap_or_default();
            let id = r
                .headers
                .get("webhook-id")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned();
            (r.path.clone(), kind, id, r.answer)
        })
        .collect()
}

fn kinds(received: &[Received]) -> Vec<String> {
    received.iter().map(Received::kind).collect()
}

/* --------------------------------- helpers ---------------------------------- */

/// The media plane's token: signed by the `service = true` key.
fn media_token() -> String {
    sign(&sdk_claims(MEDIA_KEY), MEDIA_SECRET)
}

/// An Acme token that works for one room only.
fn scoped_token(room: &str) -> String {
    let mut claims = sdk_claims(ACME_KEY);
    claims["roomId"] = room.into();
    sign(&claims, ACME_SECRET)
}

async fn events(server: &TestServer) -> EventServiceClient<Channel> {
    EventServiceClient::new(server.channel().await)
}

fn hook(end_point: &str, events: &[&str]) -> Webhook {
    Webhook {
        end_point: end_point.to_owned(),
        events: events.iter().map(|e| e.to_string()).collect(),
    }
}

/// An Acme room with this customRoomId, optionally a webhook and an
/// auto-close after `close_after` seconds (`session-ends`).
async fn create_room(
    server: &TestServer,
    custom: &str,
    webhook: Option<Webhook>,
    close_after: Option<i32>,
) -> pb::Room {
    server
        .rooms()
        .await
        .create_room(authed(
            CreateRoomRequest {
                custom_room_id: Some(custom.to_owned()),
                webhook,
                auto_close_config: close_after.map(|seconds| AutoCloseConfig {
                    r#type: "session-ends".into(),
                    duration: None,
                    duration_seconds: Some(seconds),
                }),
                ..Default::default()
            },
            &acme_token(),
        ))
        .await
        .unwrap_or_else(|s| panic!("create room {custom}: {s:?}"))
        .into_inner()
}

fn to_struct(value: Value) -> prost_types::Struct {
    let Value::Object(map) = value else {
        panic!("data must be a JSON object");
    };
    prost_types::Struct {
        fields: map
            .into_iter()
            .map(|(k, v)| (k, to_proto_value(v)))
            .collect(),
    }
}

fn to_proto_value(value: Value) -> prost_types::Value {
    use prost_types::value::Kind;
    let kind = match value {
        Value::Null => Kind::NullValue(0),
        Value::Bool(b) => Kind::BoolValue(b),
        Value::Number(n) => Kind::NumberValue(n.as_f64().unwrap()),
        Value::String(s) => Kind::StringValue(s),
        Value::Array(items) => Kind::ListValue(prost_types::ListValue {
            values: items.into_iter().map(to_proto_value).collect(),
        }),
        object @ Value::Object(_) => Kind::StructValue(to_struct(object)),
    };
    prost_types::Value { kind: Some(kind) }
}

async fn publish_as(
    server: &TestServer,
    token: &str,
    room: &str,
    kind: &str,
    data: Value,
) -> Result<pb::RoomEvent, Status> {
    events(server)
        .await
        .publish_room_event(authed(
            PublishRoomEventRequest {
                room_id: room.to_owned(),
                webhook_type: kind.to_owned(),
                data: Some(to_struct(data)),
                user_id: ACME_USER.to_owned(),
            },
            token,
        ))
        .await
        .map(tonic::Response::into_inner)
}

/// The media plane publishes an event of an Acme room.
async fn publish(server: &TestServer, room: &str, kind: &str, data: Value) -> pb::RoomEvent {
    publish_as(server, &media_token(), room, kind, data)
        .await
        .unwrap_or_else(|s| panic!("publish {kind} in {room}: {s:?}"))
}

/// The media plane reports that `participant` left `room` for `reason`.
async fn leave(server: &TestServer, room: &str, participant: &str, reason: &str) -> pb::Session {
    SessionServiceClient::new(server.channel().await)
        .participant_left(authed(
            ParticipantLeftRequest {
                user_id: ACME_USER.into(),
                room_id: room.into(),
                participant_id: participant.into(),
                reason: reason.into(),
            },
            &media_token(),
        ))
        .await
        .unwrap_or_else(|s| panic!("leave of {participant} from {room}: {s:?}"))
        .into_inner()
}

/// A REST call: the status and the JSON body (null when there is none).
async fn rest(
    server: &TestServer,
    method: reqwest::Method,
    path: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let mut request = server
        .http()
        .request(method, format!("{}{path}", server.url()));
    if let Some(token) = token {
        request = request.header("authorization", token);
    }
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.expect("the server answers");
    let status = response.status();
    let bytes = response.bytes().await.expect("a body");
    let json = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    (status, json)
}

/// `GET path` (a deliveries listing) with `token`: its `data` array.
async fn listing(server: &TestServer, path: &str, token: &str) -> Vec<Value> {
    let (status, body) = rest(server, reqwest::Method::GET, path, Some(token), None).await;
    assert_eq!(status, StatusCode::OK, "{path}: {body}");
    body["data"].as_array().expect("a data array").clone()
}

/// Polls `probe` until it returns something, for at most `within`.
async fn eventually<T, F, Fut>(what: &str, within: Duration, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + within;
    loop {
        if let Some(found) = probe().await {
            return found;
        }
        assert!(Instant::now() < deadline, "{what}: not within {within:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// An event id as an ordered pair (`<ms>-<seq>`).
fn id_key(id: &str) -> (u64, u64) {
    let (ms, seq) = id
        .split_once('-')
        .unwrap_or_else(|| panic!("{id:?} is no event id"));
    (ms.parse().unwrap(), seq.parse().unwrap())
}

fn webhook_id_of(event_id: &str) -> String {
    format!("evt_{ACME_USER}_{event_id}")
}

/// A `data` timestamp in the contract's form: milliseconds and `+00:00`.
fn webhook_time(value: &Value) -> Timestamp {
    let text = value
        .as_str()
        .unwrap_or_else(|| panic!("{value} is no string"));
    assert!(text.ends_with("+00:00"), "{text} ends in +00:00");
    let (_, fraction) = text
        .trim_end_matches("+00:00")
        .rsplit_once('.')
        .unwrap_or_else(|| panic!("{text} has milliseconds"));
    assert_eq!(fraction.len(), 3, "{text} has milliseconds");
    text.parse()
        .unwrap_or_else(|e| panic!("{text} is a timestamp: {e}"))
}

fn keys_of(value: &Value) -> Vec<&str> {
    let mut keys: Vec<&str> = value
        .as_object()
        .unwrap_or_else(|| panic!("{value} is no object"))
        .keys()
        .map(String::as_str)
        .collect();
    keys.sort_unstable();
    keys
}

/// Whether `openssl dgst -sha256 -verify` accepts `signature` (base64) of
/// `body` with the SPKI PEM `public_key`.
fn openssl_verifies(public_key: &str, signature: &str, body: &[u8]) -> bool {
    let dir = TempDir::new();
    let key_path = dir.write("pub.pem", public_key);
    let signature_path = dir.write("sig.bin", "");
    std::fs::write(
        &signature_path,
        STANDARD.decode(signature).expect("a base64 signature"),
    )
    .unwrap();
    let body_path = dir.write("body.bin", "");
    std::fs::write(&body_path, body).unwrap();
    let output = std::process::Command::new("openssl")
        .args(["dgst", "-sha256", "-verify", &key_path, "-signature"])
        .args([&signature_path, &body_path])
        .output()
        .expect("openssl runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(
        output.status.success(),
        stdout.contains("Verified OK"),
        "openssl: {stdout} {}",
        String::from_utf8_lossy(&output.stderr)
    );
    output.status.success()
}

fn bad_field(status: &Status) -> String {
    let details = status.get_error_details();
    let bad_request = details
        .bad_request()
        .unwrap_or_else(|| panic!("a BadRequest detail in {status:?}"));
    bad_request.field_violations[0].field.clone()
}

/* ------------------------------ 1. lifecycle -------------------------------- */

#[tokio::test]
async fn a_short_session_delivers_signed_lifecycle_webhooks_in_order() {
    let server = TestServer::start().await;
    let receiver = Receiver::start().await;
    let room = create_room(
        &server,
        "short-call",
        Some(hook(&receiver.url("/hook"), &["*"])),
        Some(2),
    )
    .await;
    let before = now();
    let session = start_session(&server, "short-call", "alice").await;

    let got = receiver.exactly(3, Duration::from_secs(6)).await;
    assert_eq!(
        kinds(&got),
        ["session-started", "participant-joined", "session-ended"]
    );
    let room_id = room.room_id.as_str();
    let session_start: Timestamp = session.start.parse().unwrap();

    let started = got[0].data();
    assert_eq!(keys_of(&started), ["meetingId", "sessionId", "start"]);
    assert_eq!(started["sessionId"], session.id.as_str());
    assert_eq!(started["meetingId"], room_id);
    assert_eq!(webhook_time(&started["start"]), session_start);

    let joined = got[1].data();
    assert_eq!(
        keys_of(&joined),
        ["meetingId", "participantId", "participantName", "sessionId"]
    );
    assert_eq!(joined["sessionId"], session.id.as_str());
    assert_eq!(joined["meetingId"], room_id);
    assert_eq!(joined["participantId"], "alice");
    assert_eq!(joined["participantName"], "alice (name)");

    let ended = got[2].data();
    assert_eq!(
        keys_of(&ended),
        ["end", "error", "meetingId", "reason", "sessionId", "start"]
    );
    assert_eq!(ended["sessionId"], session.id.as_str());
    assert_eq!(ended["meetingId"], room_id);
    assert_eq!(ended["reason"], "auto-close");
    assert_eq!(ended["error"], Value::Null);
    assert_eq!(webhook_time(&ended["start"]), session_start);
    let length = webhook_time(&ended["end"]).as_millisecond() - session_start.as_millisecond();
    assert!(
        (1900..=2100).contains(&length),
        "ended {length} ms after the start, not at the 2 s auto-close"
    );

    // The public key, without a token.
    let (status, body) = rest(
        &server,
        reqwest::Method::GET,
        "/v2/public/rsa-public-key",
        None,
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(keys_of(&body), ["publicKey"]);
    let pem = body["publicKey"].as_str().unwrap();
    assert!(pem.starts_with("-----BEGIN PUBLIC KEY-----"), "{pem}");

    let after = now();
    let mut ids = HashSet::new();
    for request in &got {
        assert_eq!(request.method, "POST");
        assert_eq!(request.path, "/hook");
        assert_eq!(request.header("content-type"), "application/json");
        assert!(
            request.body.starts_with(br#"{"webhookType":"#),
            "{}",
            String::from_utf8_lossy(&request.body)
        );
        assert!(
            !request.body.contains(&b'\n') && !request.body.windows(2).any(|w| w == b": "),
            "a compact body"
        );
        let signature = request.header("videosdk-signature");
        assert!(
            openssl_verifies(pem, signature, &request.body),
            "the signature of {} verifies",
            request.kind()
        );
        let mut tampered = request.body.clone();
        let at = tampered.len() - 3;
        tampered[at] ^= 0x01;
        assert!(
            !openssl_verifies(pem, signature, &tampered),
            "a tampered body does not verify"
        );
        let id = request.webhook_id();
        assert!(
            id.starts_with(&format!("evt_{ACME_USER}_")),
            "webhook-id {id}"
        );
        id_key(id.rsplit('_').next().unwrap());
        assert!(ids.insert(id.to_owned()), "webhook-id {id} repeated");
        let timestamp: i64 = request
            .header("webhook-timestamp")
            .parse()
            .expect("webhook-timestamp is a number");
        assert!(
            (before - 1..=after + 1).contains(&timestamp),
            "webhook-timestamp {timestamp} is unix seconds between {before} and {after}"
        );
    }
}

/* ------------------------------- 2. leaving --------------------------------- */

#[tokio::test]
async fn leave_reasons_and_end_by_api_reach_the_receiver() {
    let server = TestServer::start().await;
    let receiver = Receiver::start().await;
    let room = create_room(
        &server,
        "leaving",
        Some(hook(&receiver.url("/"), &["*"])),
        None,
    )
    .await;
    for participant in ["alice", "bob", "carol", "dave"] {
        start_session(&server, "leaving", participant).await;
    }
    leave(&server, "leaving", "alice", "connection-error").await;
    let (status, body) = rest(
        &server,
        reqwest::Method::POST,
        "/v2/sessions/participants/remove",
        Some(&acme_token()),
        Some(json!({"roomId": "leaving", "participantId": "bob"})),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    // An empty reason is user-left.
    leave(&server, "leaving", "carol", "").await;
    let (status, ended) = rest(
        &server,
        reqwest::Method::POST,
        "/v2/sessions/end",
        Some(&acme_token()),
        Some(json!({"roomId": "leaving"})),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{ended}");

    let got = receiver.exactly(9, Duration::from_secs(5)).await;
    assert_eq!(
        kinds(&got),
        [
            "session-started",
            "participant-joined",
            "participant-joined",
            "participant-joined",
            "participant-joined",
            "participant-left",
            "participant-left",
            "participant-left",
            // dave, still present, gets no participant-left.
            "session-ended",
        ]
    );
    let session_id = ended["id"].as_str().expect("the session's id");
    let left: Vec<(String, String)> = got[5..8]
        .iter()
        .map(|r| {
            let data = r.data();
            assert_eq!(
                keys_of(&data),
                [
                    "meetingId",
                    "participantId",
                    "participantName",
                    "reason",
                    "sessionId"
                ]
            );
            assert_eq!(data["meetingId"], room.room_id.as_str());
            assert_eq!(data["sessionId"], session_id);
            assert_eq!(
                data["participantName"],
                format!("{} (name)", data["participantId"].as_str().unwrap())
            );
            (
                data["participantId"].as_str().unwrap().to_owned(),
                data["reason"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        left,
        [
            ("alice".to_owned(), "connection-error".to_owned()),
            ("bob".to_owned(), "removed".to_owned()),
            ("carol".to_owned(), "user-left".to_owned()),
        ]
    );
    let end = got[8].data();
    assert_eq!(end["reason"], "ended-by-api");
    assert_eq!(end["sessionId"], session_id);
    assert_eq!(end["error"], Value::Null);
}

/* ------------------------- 3. subscriptions, publish ------------------------ */

#[tokio::test]
async fn each_room_gets_exactly_the_events_it_subscribes_to() {
    let server = TestServer::start().await;
    let participants = Receiver::start().await;
    let ended = Receiver::start().await;
    let recording = Receiver::start().await;
    let rooms = [
        create_room(
            &server,
            "subs-participants",
            Some(hook(&participants.url("/p"), &["participant-*"])),
            None,
        )
        .await,
        create_room(
            &server,
            "subs-ended",
            Some(hook(&ended.url("/e"), &["session-ended"])),
            None,
        )
        .await,
        create_room(
            &server,
            "subs-recording",
            Some(hook(&recording.url("/r"), &["recording-*"])),
            None,
        )
        .await,
        create_room(&server, "subs-none", None, None).await,
    ];
    let given = json!({"filePath": "/rec/1.mp4", "size": 3, "tags": ["a", {"b": null}]});
    let mut published = Vec::new();
    for room in &rooms {
        let name = room.custom_room_id.as_deref().unwrap();
        start_session(&server, name, "alice").await;
        leave(&server, name, "alice", "user-left").await;
        published.push(publish(&server, name, "recording-started", given.clone()).await);
        publish(&server, name, "hls-started", json!({})).await;
        let (status, body) = rest(
            &server,
            reqwest::Method::POST,
            "/v2/sessions/end",
            Some(&acme_token()),
            Some(json!({"roomId": name})),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }

    let to_participants = participants.exactly(2, Duration::from_secs(5)).await;
    assert_eq!(
        kinds(&to_participants),
        ["participant-joined", "participant-left"]
    );
    let to_ended = ended.exactly(1, Duration::from_secs(5)).await;
    assert_eq!(kinds(&to_ended), ["session-ended"]);
    let to_recording = recording.exactly(1, Duration::from_secs(5)).await;
    assert_eq!(kinds(&to_recording), ["recording-started"]);
    // `data` as given, plus meetingId.
    let mut expected = given.clone();
    expected["meetingId"] = rooms[2].room_id.as_str().into();
    assert_eq!(to_recording[0].data(), expected);
    assert_eq!(
        to_recording[0].webhook_id(),
        webhook_id_of(&published[2].event_id)
    );
    // The returned event says the same.
    assert_eq!(published[2].webhook_type, "recording-started");
    assert_eq!(published[2].room_id, rooms[2].room_id);

    // The room without a webhook had nothing delivered.
    let records = listing(&server, "/v2/webhooks/deliveries", &acme_token()).await;
    assert_eq!(records.len(), 4, "{records:#?}");
    assert!(
        records
            .iter()
            .all(|r| r["roomId"] != rooms[3].room_id.as_str() && r["outcome"] == "delivered"),
        "{records:#?}"
    );
}

#[tokio::test]
async fn only_media_services_publish_known_non_lifecycle_events_of_existing_rooms() {
    let server = TestServer::start().await;
    create_room(&server, "publishing", None, None).await;

    let denied = publish_as(
        &server,
        &acme_token(),
        "publishing",
        "recording-started",
        json!({}),
    )
    .await
    .expect_err("an account token cannot publish");
    assert_eq!(denied.code(), Code::PermissionDenied, "{denied:?}");

    for kind in ["meeting-exploded", "session-started", "participant-left"] {
        let refused = publish_as(&server, &media_token(), "publishing", kind, json!({}))
            .await
            .expect_err("refused");
        assert_eq!(refused.code(), Code::InvalidArgument, "{kind}: {refused:?}");
        assert_eq!(bad_field(&refused), "webhookType", "{kind}");
        assert!(refused.message().contains("webhookType"), "{refused:?}");
    }

    let missing = publish_as(
        &server,
        &media_token(),
        "no-such-room",
        "recording-started",
        json!({}),
    )
    .await
    .expect_err("no such room");
    assert_eq!(missing.code(), Code::NotFound, "{missing:?}");

    // A meetingId given is kept.
    let kept = publish(
        &server,
        "publishing",
        "transcription-completed",
        json!({"meetingId": "given", "n": 1.5}),
    )
    .await;
    let data = kept.data.expect("data");
    assert_eq!(
        data.fields["meetingId"].kind,
        Some(prost_types::value::Kind::StringValue("given".into()))
    );
}

/* ------------------------------- 4. retries --------------------------------- */

#[tokio::test]
async fn retried_events_arrive_in_order_per_room_with_one_webhook_id() {
    let server = TestServer::start().await;
    let receiver = Receiver::start().await;
    receiver.script(std::iter::repeat_n(Reply::status(503), 4));
    create_room(
        &server,
        "retry-a",
        Some(hook(&receiver.url("/a"), &["*"])),
        None,
    )
    .await;
    create_room(
        &server,
        "retry-b",
        Some(hook(&receiver.url("/b"), &["*"])),
        None,
    )
    .await;
    let mut order: Vec<(&str, String)> = Vec::new();
    for (room, kind) in [
        ("retry-a", "recording-started"),
        ("retry-b", "hls-started"),
        ("retry-a", "recording-stopped"),
        ("retry-b", "hls-stopped"),
        ("retry-a", "transcription-completed"),
    ] {
        let event = publish(&server, room, kind, json!({})).await;
        order.push((room, event.event_id));
    }

    let got = receiver.exactly(9, Duration::from_secs(8)).await;
    for (room, path) in [("retry-a", "/a"), ("retry-b", "/b")] {
        let expected: Vec<String> = order
            .iter()
            .filter(|(r, _)| *r == room)
            .map(|(_, id)| webhook_id_of(id))
            .collect();
        // Runs of one webhook-id: each event's attempts, then the next.
        let mut runs: Vec<(String, Vec<u16>)> = Vec::new();
        for request in got.iter().filter(|r| r.path == path) {
            match runs.last_mut() {
                Some((id, answers)) if id == request.webhook_id() => answers.push(request.answer),
                _ => runs.push((request.webhook_id().to_owned(), vec![request.answer])),
            }
        }
        let run_ids: Vec<String> = runs.iter().map(|(id, _)| id.clone()).collect();
        assert_eq!(
            run_ids,
            expected,
            "{room}: in order, no event sent again after the next: {:?}",
            summary(&got)
        );
        for (id, answers) in &runs {
            let (last, earlier) = answers.split_last().unwrap();
            assert_eq!(*last, 200, "{id} ends delivered: {answers:?}");
            assert!(earlier.iter().all(|a| *a == 503), "{id}: {answers:?}");
        }
    }
    // One body per webhook-id: the retries send the same bytes.
    for request in &got {
        let first = got
            .iter()
            .find(|r| r.webhook_id() == request.webhook_id())
            .unwrap();
        assert_eq!(first.body, request.body);
    }

    let records = listing(&server, "/v2/webhooks/deliveries", &acme_token()).await;
    assert_eq!(records.len(), 9, "one record per attempt: {records:#?}");
    let at: Vec<Timestamp> = records
        .iter()
        .map(|r| r["at"].as_str().unwrap().parse().unwrap())
        .collect();
    assert!(at.windows(2).all(|w| w[0] >= w[1]), "newest first: {at:?}");
    for (room, event_id) in &order {
        let attempts: Vec<&Value> = records
            .iter()
            .filter(|r| r["eventId"] == event_id.as_str())
            .collect();
        let sent = got
            .iter()
            .filter(|r| r.webhook_id() == webhook_id_of(event_id))
            .count();
        assert_eq!(attempts.len(), sent, "{event_id}: {attempts:#?}");
        for (i, record) in attempts.iter().enumerate() {
            assert_eq!(record["attempt"], sent - i, "{record}");
            assert_eq!(record["webhookId"], webhook_id_of(event_id));
            assert_eq!(record["roomId"].as_str().unwrap().len(), 14);
            assert!(
                record["endPoint"]
                    .as_str()
                    .unwrap()
                    .ends_with(if *room == "retry-a" { "/a" } else { "/b" }),
                "{record}"
            );
            if i == 0 {
                assert_eq!(record["outcome"], "delivered", "{record}");
                assert_eq!(record["status"], 200, "{record}");
            } else {
                assert_eq!(record["outcome"], "retrying", "{record}");
                assert_eq!(record["status"], 503, "{record}");
                assert!(
                    record["error"].as_str().unwrap().contains("503"),
                    "{record}"
                );
            }
        }
    }
    // gRPC lists the same attempts.
    let listed = events(&server)
        .await
        .list_deliveries(authed(
            ListDeliveriesRequest { limit: Some(3) },
            &acme_token(),
        ))
        .await
        .expect("list deliveries")
        .into_inner()
        .deliveries;
    let ids: Vec<&str> = listed.iter().map(|d| d.event_id.as_str()).collect();
    let rest_ids: Vec<&str> = records[..3]
        .iter()
        .map(|r| r["eventId"].as_str().unwrap())
        .collect();
    assert_eq!(ids, rest_ids);
}

/* ----------------------------- 5. dead letters ------------------------------ */

#[tokio::test]
async fn a_refused_event_becomes_a_dead_letter_that_can_be_replayed_once() {
    let server = TestServer::start().await;
    let receiver = Receiver::start().await;
    receiver.script([Reply::status(404)]);
    let room = create_room(
        &server,
        "dead-end",
        Some(hook(&receiver.url("/hook"), &["*"])),
        None,
    )
    .await;
    let refused = publish(
        &server,
        "dead-end",
        "recording-failed",
        json!({"why": "disk"}),
    )
    .await;
    let later = publish(&server, "dead-end", "recording-stopped", json!({})).await;

    // The dead one does not hold up the room.
    let got = receiver.exactly(2, Duration::from_secs(5)).await;
    assert_eq!(
        summary(&got)
            .into_iter()
            .map(|(_, kind, _, answer)| (kind, answer))
            .collect::<Vec<_>>(),
        [
            ("recording-failed".to_owned(), 404),
            ("recording-stopped".to_owned(), 200)
        ]
    );
    let original = got[0].clone();
    assert_eq!(original.webhook_id(), webhook_id_of(&refused.event_id));

    let dead = listing(&server, "/v2/webhooks/dead-letters", &acme_token()).await;
    assert_eq!(dead.len(), 1, "{dead:#?}");
    let letter = &dead[0];
    assert_eq!(letter["eventId"], refused.event_id.as_str());
    assert_eq!(letter["webhookId"], webhook_id_of(&refused.event_id));
    assert_eq!(letter["roomId"], room.room_id.as_str());
    assert_eq!(letter["webhookType"], "recording-failed");
    assert_eq!(letter["endPoint"], receiver.url("/hook"));
    assert_eq!(letter["outcome"], "dead");
    assert_eq!(letter["status"], 404);
    assert_eq!(letter["attempt"], 1);
    assert!(
        letter["error"].as_str().unwrap().contains("404"),
        "{letter}"
    );
    let grpc_dead = events(&server)
        .await
        .list_dead_letters(authed(ListDeliveriesRequest { limit: None }, &acme_token()))
        .await
        .expect("list dead letters")
        .into_inner()
        .deliveries;
    assert_eq!(grpc_dead.len(), 1, "{grpc_dead:#?}");
    assert_eq!(grpc_dead[0].event_id, refused.event_id);
    assert_eq!(grpc_dead[0].outcome, "dead");
    assert_eq!(grpc_dead[0].status, Some(404));
    let records = listing(&server, "/v2/webhooks/deliveries", &acme_token()).await;
    assert_eq!(records.len(), 2, "{records:#?}");
    assert_eq!(records[0]["eventId"], later.event_id.as_str());
    assert_eq!(records[0]["outcome"], "delivered");
    assert_eq!(records[1]["outcome"], "dead");

    // Another account sees none and replays nothing.
    assert!(
        listing(&server, "/v2/webhooks/dead-letters", &globex_token())
            .await
            .is_empty()
    );
    let replay_path = format!("/v2/webhooks/dead-letters/{}/replay", refused.event_id);
    let (status, body) = rest(
        &server,
        reqwest::Method::POST,
        &replay_path,
        Some(&globex_token()),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    assert_eq!(
        listing(&server, "/v2/webhooks/dead-letters", &acme_token())
            .await
            .len(),
        1,
        "still there"
    );
    let (status, body) = rest(
        &server,
        reqwest::Method::POST,
        "/v2/webhooks/dead-letters/1-0/replay",
        Some(&acme_token()),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "an unknown id: {body}");

    // The receiver answers 200 again: the replay delivers the same request.
    let (status, replayed) = rest(
        &server,
        reqwest::Method::POST,
        &replay_path,
        Some(&acme_token()),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{replayed}");
    assert_eq!(replayed["replayOf"], refused.event_id.as_str());
    assert_eq!(replayed["webhookType"], "recording-failed");
    assert_eq!(replayed["roomId"], room.room_id.as_str());
    let replay_id = replayed["eventId"].as_str().unwrap().to_owned();
    assert!(id_key(&replay_id) > id_key(&later.event_id), "{replay_id}");

    let got = receiver.exactly(3, Duration::from_secs(5)).await;
    let again = &got[2];
    assert_eq!(again.answer, 200);
    assert_eq!(
        again.webhook_id(),
        original.webhook_id(),
        "the same webhook-id"
    );
    assert_eq!(again.body, original.body, "the same body");
    assert!(
        listing(&server, "/v2/webhooks/dead-letters", &acme_token())
            .await
            .is_empty(),
        "the dead letter is gone"
    );
    let records = listing(&server, "/v2/webhooks/deliveries", &acme_token()).await;
    assert_eq!(records[0]["eventId"], replay_id.as_str(), "{records:#?}");
    assert_eq!(records[0]["webhookId"], webhook_id_of(&refused.event_id));
    assert_eq!(records[0]["outcome"], "delivered");

    // Once only.
    let (status, body) = rest(
        &server,
        reqwest::Method::POST,
        &replay_path,
        Some(&acme_token()),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "a second replay: {body}");
}

/* ------------------------------ 6. redirects -------------------------------- */

#[tokio::test]
async fn a_redirect_is_not_followed_and_dead_letters_the_event() {
    let server = TestServer::start().await;
    let target = Receiver::start().await;
    let redirecting = Receiver::answering(Reply::redirect(&target.url("/elsewhere"))).await;
    create_room(
        &server,
        "moved",
        Some(hook(&redirecting.url("/hook"), &["*"])),
        None,
    )
    .await;
    let event = publish(&server, "moved", "hls-playable", json!({})).await;

    let dead = eventually("a dead letter", Duration::from_secs(5), || {
        let server = &server;
        async move {
            let dead = listing(server, "/v2/webhooks/dead-letters", &acme_token()).await;
            (!dead.is_empty()).then_some(dead)
        }
    })
    .await;
    assert_eq!(dead.len(), 1, "{dead:#?}");
    assert_eq!(dead[0]["eventId"], event.event_id.as_str());
    assert_eq!(dead[0]["status"], 302);
    assert_eq!(dead[0]["outcome"], "dead");
    assert!(
        dead[0]["error"].as_str().unwrap().contains("redirect"),
        "{}",
        dead[0]
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(redirecting.count(), 1, "asked once, never again");
    assert_eq!(target.count(), 0, "the redirect was not followed");
    assert_eq!(target.connections(), 0);
}

/* --------------------------- 7. private addresses --------------------------- */

#[tokio::test]
async fn loopback_endpoints_are_refused_without_allow_private() {
    let server = TestServer::start_opts(ServerOptions {
        webhooks: WebhookSettings {
            allow_private: false,
            ..test_webhooks()
        },
        ..ServerOptions::memory()
    })
    .await;
    let receiver = Receiver::start().await;
    let by_ip = receiver.url("/");
    let by_name = format!("http://localhost:{}/", receiver.addr.port());
    create_room(&server, "by-ip", Some(hook(&by_ip, &["*"])), None).await;
    create_room(&server, "by-name", Some(hook(&by_name, &["*"])), None).await;
    let first = publish(&server, "by-ip", "recording-started", json!({})).await;
    let second = publish(&server, "by-name", "recording-started", json!({})).await;

    let dead = eventually("two dead letters", Duration::from_secs(5), || {
        let server = &server;
        async move {
            let dead = listing(server, "/v2/webhooks/dead-letters", &acme_token()).await;
            (dead.len() >= 2).then_some(dead)
        }
    })
    .await;
    for (event, end_point) in [(&first, &by_ip), (&second, &by_name)] {
        let letter = dead
            .iter()
            .find(|d| d["eventId"] == event.event_id.as_str())
            .unwrap_or_else(|| panic!("a dead letter for {end_point}: {dead:#?}"));
        assert_eq!(letter["endPoint"], end_point.as_str());
        assert_eq!(letter["outcome"], "dead");
        assert_eq!(letter["attempt"], 1, "not retried: {letter}");
        assert_eq!(letter["status"], Value::Null, "{letter}");
        assert!(
            letter["error"].as_str().unwrap().contains("loopback"),
            "{letter}"
        );
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(receiver.connections(), 0, "no connection at all");
    assert_eq!(receiver.count(), 0);
}

/* ---------------------------- 8. slow receivers ----------------------------- */

#[tokio::test]
async fn a_slow_receiver_holds_up_its_own_room_only() {
    let server = TestServer::start().await;
    let slow = Receiver::answering(Reply::ok().after(Duration::from_secs(5))).await;
    let quick = Receiver::start().await;
    create_room(&server, "slow", Some(hook(&slow.url("/"), &["*"])), None).await;
    create_room(&server, "quick", Some(hook(&quick.url("/"), &["*"])), None).await;
    let start = Instant::now();
    let a1 = publish(&server, "slow", "recording-started", json!({})).await;
    let a2 = publish(&server, "slow", "recording-stopped", json!({})).await;
    let mut quick_ids = Vec::new();
    for kind in ["hls-started", "hls-playable", "hls-stopped"] {
        quick_ids.push(publish(&server, "quick", kind, json!({})).await.event_id);
    }

    let to_quick = quick.wait_for(3, Duration::from_millis(1500)).await;
    let first_slow = slow.wait_for(1, Duration::from_secs(1)).await;
    assert!(
        start.elapsed() < Duration::from_secs(2),
        "the quick room was served within {:?}",
        start.elapsed()
    );
    assert_eq!(
        to_quick
            .iter()
            .map(|r| r.webhook_id().to_owned())
            .collect::<Vec<_>>(),
        quick_ids
            .iter()
            .map(|id| webhook_id_of(id))
            .collect::<Vec<_>>()
    );
    assert_eq!(first_slow.len(), 1, "the slow room waits for its answer");
    let pending_since = first_slow[0].arrived;
    assert_eq!(first_slow[0].webhook_id(), webhook_id_of(&a1.event_id));
    assert!(
        to_quick
            .iter()
            .all(|r| r.arrived < pending_since + Duration::from_secs(5)),
        "while the slow room's first is pending"
    );

    // The next one needs no wait; it still comes after the first's answer.
    slow.set_reply(Reply::ok());
    let to_slow = slow.exactly(2, Duration::from_secs(8)).await;
    assert_eq!(to_slow[1].webhook_id(), webhook_id_of(&a2.event_id));
    assert!(
        to_slow[1].arrived >= pending_since + Duration::from_millis(4900),
        "the second was sent {:?} after the first, before its answer",
        to_slow[1].arrived - pending_since
    );
}

/* ------------------------------ 9. WatchEvents ------------------------------ */

async fn watch(
    server: &TestServer,
    token: &str,
    request: WatchEventsRequest,
) -> Result<Streaming<pb::RoomEvent>, Status> {
    events(server)
        .await
        .watch_events(authed(request, token))
        .await
        .map(tonic::Response::into_inner)
}

/// The next `n` events of `stream`, each within a few seconds.
async fn next_events(stream: &mut Streaming<pb::RoomEvent>, n: usize) -> Vec<pb::RoomEvent> {
    let mut got = Vec::new();
    while got.len() < n {
        let next = tokio::time::timeout(Duration::from_secs(3), stream.message())
            .await
            .unwrap_or_else(|_| panic!("event {} of {n} not within 3 s: {got:#?}", got.len()))
            .expect("the stream works")
            .expect("the stream goes on");
        got.push(next);
    }
    got
}

/// Nothing more on `stream` for a few of the watch's polls.
async fn quiet(stream: &mut Streaming<pb::RoomEvent>) {
    if let Ok(extra) = tokio::time::timeout(Duration::from_millis(700), stream.message()).await {
        panic!("expected no more events, got {extra:?}");
    }
}

fn types_and_ids(events: &[pb::RoomEvent]) -> Vec<(String, String)> {
    events
        .iter()
        .map(|e| (e.webhook_type.clone(), e.event_id.clone()))
        .collect()
}

fn assert_increasing(events: &[pb::RoomEvent]) {
    let keys: Vec<(u64, u64)> = events.iter().map(|e| id_key(&e.event_id)).collect();
    assert!(
        keys.windows(2).all(|w| w[0] < w[1]),
        "increasing ids: {keys:?}"
    );
}

#[tokio::test]
async fn watch_streams_resumes_and_filters_the_accounts_events() {
    let server = TestServer::start().await;
    let room_a = create_room(&server, "watch-a", None, None).await;
    let room_b = create_room(&server, "watch-b", None, None).await;

    let mut stream = watch(&server, &acme_token(), WatchEventsRequest::default())
        .await
        .expect("watch");
    let r1 = publish(&server, "watch-a", "recording-started", json!({})).await;
    let h1 = publish(&server, "watch-b", "hls-started", json!({})).await;
    start_session(&server, "watch-a", "alice").await;
    let r2 = publish(&server, "watch-b", "recording-stopped", json!({})).await;
    let first = next_events(&mut stream, 5).await;
    assert_eq!(
        first
            .iter()
            .map(|e| (e.webhook_type.as_str(), e.room_id.as_str()))
            .collect::<Vec<_>>(),
        [
            ("recording-started", room_a.room_id.as_str()),
            ("hls-started", room_b.room_id.as_str()),
            ("session-started", room_a.room_id.as_str()),
            ("participant-joined", room_a.room_id.as_str()),
            ("recording-stopped", room_b.room_id.as_str()),
        ]
    );
    assert_increasing(&first);
    assert_eq!(first[0].event_id, r1.event_id);
    assert_eq!(first[1].event_id, h1.event_id);
    assert_eq!(first[4].event_id, r2.event_id);
    assert_eq!(first[0], r1, "the stream carries the stored event");
    quiet(&mut stream).await;
    drop(stream);

    // Missed while disconnected.
    let mut missed = vec![publish(&server, "watch-b", "hls-stopped", json!({})).await];
    leave(&server, "watch-a", "alice", "user-left").await;
    missed.push(publish(&server, "watch-a", "recording-failed", json!({})).await);
    let last = first.last().unwrap().event_id.clone();
    let mut resumed = watch(
        &server,
        &acme_token(),
        WatchEventsRequest {
            after_event_id: Some(last.clone()),
            ..Default::default()
        },
    )
    .await
    .expect("resume");
    let again = next_events(&mut resumed, 3).await;
    assert_eq!(
        again
            .iter()
            .map(|e| e.webhook_type.as_str())
            .collect::<Vec<_>>(),
        ["hls-stopped", "participant-left", "recording-failed"]
    );
    assert!(id_key(&again[0].event_id) > id_key(&last), "none repeated");
    assert_eq!(again[0].event_id, missed[0].event_id);
    assert_eq!(again[2].event_id, missed[1].event_id);
    assert_increasing(&again);
    quiet(&mut resumed).await;
    // Still live after the catch-up.
    let live = publish(&server, "watch-a", "hls-failed", json!({})).await;
    assert_eq!(
        next_events(&mut resumed, 1).await[0].event_id,
        live.event_id
    );
    drop(resumed);

    let mut everything = first.clone();
    everything.extend(again);
    everything.push(live);
    let of_room = |room: &str| {
        everything
            .iter()
            .filter(|e| e.room_id == room)
            .cloned()
            .collect::<Vec<_>>()
    };

    // One room's, from the start of the log.
    let mut only_b = watch(
        &server,
        &acme_token(),
        WatchEventsRequest {
            room_id: Some("watch-b".into()),
            after_event_id: Some("0-0".into()),
            ..Default::default()
        },
    )
    .await
    .expect("watch one room");
    let expected = of_room(&room_b.room_id);
    assert_eq!(
        types_and_ids(&next_events(&mut only_b, expected.len()).await),
        types_and_ids(&expected)
    );
    quiet(&mut only_b).await;

    // Some types.
    let mut participants = watch(
        &server,
        &acme_token(),
        WatchEventsRequest {
            webhook_types: vec!["participant-*".into()],
            after_event_id: Some("0-0".into()),
            ..Default::default()
        },
    )
    .await
    .expect("watch some types");
    let expected: Vec<pb::RoomEvent> = everything
        .iter()
        .filter(|e| e.webhook_type.starts_with("participant-"))
        .cloned()
        .collect();
    assert_eq!(expected.len(), 2);
    assert_eq!(
        types_and_ids(&next_events(&mut participants, 2).await),
        types_and_ids(&expected)
    );
    quiet(&mut participants).await;

    // A token scoped to room A sees room A only, and may not ask for B.
    let mut scoped = watch(
        &server,
        &scoped_token("watch-a"),
        WatchEventsRequest {
            after_event_id: Some("0-0".into()),
            ..Default::default()
        },
    )
    .await
    .expect("a scoped watch");
    let expected = of_room(&room_a.room_id);
    assert_eq!(
        types_and_ids(&next_events(&mut scoped, expected.len()).await),
        types_and_ids(&expected)
    );
    quiet(&mut scoped).await;
    let denied = watch(
        &server,
        &scoped_token("watch-a"),
        WatchEventsRequest {
            room_id: Some("watch-b".into()),
            ..Default::default()
        },
    )
    .await
    .expect_err("another room than the token's");
    assert_eq!(denied.code(), Code::PermissionDenied, "{denied:?}");

    // Another account sees none of it.
    let mut foreign = watch(
        &server,
        &globex_token(),
        WatchEventsRequest {
            after_event_id: Some("0-0".into()),
            ..Default::default()
        },
    )
    .await
    .expect("globex watches its own account");
    quiet(&mut foreign).await;

    for bad in ["abc", "1-", "-1", "1-2-3"] {
        let refused = watch(
            &server,
            &acme_token(),
            WatchEventsRequest {
                after_event_id: Some(bad.into()),
                ..Default::default()
            },
        )
        .await
        .expect_err("a bad afterEventId");
        assert_eq!(refused.code(), Code::InvalidArgument, "{bad}: {refused:?}");
        assert_eq!(bad_field(&refused), "afterEventId", "{bad}");
    }
}

#[tokio::test]
async fn resuming_from_before_trimmed_events_is_out_of_range() {
    let server = forgetful_server().await;
    let receiver = Receiver::start().await;
    create_room(
        &server,
        "short-memory",
        Some(hook(&receiver.url("/"), &["*"])),
        None,
    )
    .await;
    let event = publish(&server, "short-memory", "recording-started", json!({})).await;
    receiver.wait_for(1, Duration::from_secs(5)).await;
    let (ms, _) = id_key(&event.event_id);
    let before_it = format!("{}-0", ms - 1);

    let started = Instant::now();
    let refused = eventually(
        "the delivered event trimmed (retention zero)",
        Duration::from_secs(5),
        || {
            let server = &server;
            let before_it = before_it.clone();
            async move {
                watch(
                    server,
                    &acme_token(),
                    WatchEventsRequest {
                        after_event_id: Some(before_it),
                        ..Default::default()
                    },
                )
                .await
                .err()
            }
        },
    )
    .await;
    assert_eq!(
        refused.code(),
        Code::OutOfRange,
        "a resume from before the trimmed event, {:?} after its delivery: {refused:?}",
        started.elapsed()
    );
}

/// A server that trims each event as soon as it is delivered.
async fn forgetful_server() -> TestServer {
    let defaults = test_webhooks();
    TestServer::start_opts(ServerOptions {
        webhooks: WebhookSettings {
            delivery: DeliveryConfig {
                retention: Duration::ZERO,
                ..defaults.delivery
            },
            ..defaults
        },
        ..ServerOptions::memory()
    })
    .await
}

#[tokio::test]
async fn a_live_watch_gets_each_event_or_out_of_range_never_a_silent_gap() {
    let server = forgetful_server().await;
    let receiver = Receiver::start().await;
    create_room(
        &server,
        "forgetful",
        Some(hook(&receiver.url("/"), &["*"])),
        None,
    )
    .await;
    let mut live = watch(&server, &acme_token(), WatchEventsRequest::default())
        .await
        .expect("watch from now");
    let event = publish(&server, "forgetful", "recording-started", json!({})).await;
    receiver.wait_for(1, Duration::from_secs(5)).await;
    // Delivered, so trimmed at once; the watcher, connected since before the
    // event was logged, must still get it, or be told it cannot.
    match tokio::time::timeout(Duration::from_secs(3), live.message()).await {
        Ok(Ok(Some(got))) => assert_eq!(got.event_id, event.event_id),
        Ok(Err(status)) => assert_eq!(status.code(), Code::OutOfRange, "{status:?}"),
        Ok(Ok(None)) => panic!("the stream ended without the event or an error"),
        Err(_) => panic!(
            "event {} was logged, delivered and trimmed while the watch was open; \
             the watch neither sent it nor ended with OUT_OF_RANGE (3 s)",
            event.event_id
        ),
    }
}

#[tokio::test]
async fn events_still_being_retried_are_not_trimmed() {
    let server = forgetful_server().await;
    let receiver = Receiver::start().await;
    receiver.script([Reply::status(503), Reply::status(500)]);
    create_room(
        &server,
        "keep-me",
        Some(hook(&receiver.url("/"), &["*"])),
        None,
    )
    .await;
    let first = publish(&server, "keep-me", "recording-started", json!({})).await;
    let second = publish(&server, "keep-me", "recording-stopped", json!({})).await;
    let got = receiver.exactly(4, Duration::from_secs(5)).await;
    assert_eq!(
        summary(&got)
            .into_iter()
            .map(|(_, _, id, answer)| (id, answer))
            .collect::<Vec<_>>(),
        [
            (webhook_id_of(&first.event_id), 503),
            (webhook_id_of(&first.event_id), 500),
            (webhook_id_of(&first.event_id), 200),
            (webhook_id_of(&second.event_id), 200),
        ]
    );
}

/* ------------------------------ 10. REST limits ----------------------------- */

#[tokio::test]
async fn delivery_listings_validate_limit_and_need_a_token() {
    let server = TestServer::start().await;
    for path in ["/v2/webhooks/deliveries", "/v2/webhooks/dead-letters"] {
        for bad in ["0", "abc", "1001", "-1"] {
            let (status, body) = rest(
                &server,
                reqwest::Method::GET,
                &format!("{path}?limit={bad}"),
                Some(&acme_token()),
                None,
            )
            .await;
            assert_eq!(
                status,
                StatusCode::BAD_REQUEST,
                "{path} limit={bad}: {body}"
            );
            assert!(
                body["error"].as_str().unwrap_or_default().contains("limit"),
                "{path} limit={bad}: {body}"
            );
            assert_eq!(body["fields"][0]["field"], "limit", "{body}");
        }
        for good in ["1", "1000"] {
            let (status, body) = rest(
                &server,
                reqwest::Method::GET,
                &format!("{path}?limit={good}"),
                Some(&acme_token()),
                None,
            )
            .await;
            assert_eq!(status, StatusCode::OK, "{path} limit={good}: {body}");
            assert_eq!(body, json!({"data": []}));
        }
        let (status, body) = rest(&server, reqwest::Method::GET, path, None, None).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{path}: {body}");
    }
    let (status, body) = rest(
        &server,
        reqwest::Method::POST,
        "/v2/webhooks/dead-letters/1-0/replay",
        None,
        None,
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");

    let refused = events(&server)
        .await
        .list_deliveries(authed(
            ListDeliveriesRequest { limit: Some(0) },
            &acme_token(),
        ))
        .await
        .expect_err("limit 0");
    assert_eq!(refused.code(), Code::InvalidArgument);
    assert_eq!(bad_field(&refused), "limit");
}

/// A server that stops does not wait for open watches (they never end by
/// themselves): each ends with UNAVAILABLE, telling the client to resume
/// elsewhere, and the stop completes.
#[tokio::test]
async fn stopping_the_server_ends_open_watches() {
    let server = TestServer::start().await;
    let mut stream = watch(&server, &acme_token(), WatchEventsRequest::default())
        .await
        .expect("watching");
    let stopped = tokio::time::timeout(Duration::from_secs(5), server.stop()).await;
    assert!(stopped.is_ok(), "the stop waited for the watch");
    let end = tokio::time::timeout(Duration::from_secs(3), stream.message())
        .await
        .expect("the watch ends at once");
    let status = end.expect_err("an error, not a clean end");
    assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
    assert!(status.message().contains("shutting down"), "{status:?}");
}

/// Each open watch polls the store several times a second, so one account
/// may only have `--max-watchers-per-account` of them open on a server
/// (2 here). The next is RESOURCE_EXHAUSTED naming the limit; another
/// account is not affected; and once a watcher goes away its place is free
/// again.
#[tokio::test]
async fn an_account_may_only_open_so_many_watches() {
    let server = TestServer::start_with_limits(roomservice::server::Limits {
        max_watchers_per_account: 2,
        ..Default::default()
    })
    .await;
    let first = watch(&server, &acme_token(), WatchEventsRequest::default())
        .await
        .expect("first watch");
    let _second = watch(&server, &acme_token(), WatchEventsRequest::default())
        .await
        .expect("second watch");
    let refused = watch(&server, &acme_token(), WatchEventsRequest::default())
        .await
        .expect_err("a third watch of the same account");
    assert_eq!(
        refused.code(),
        tonic::Code::ResourceExhausted,
        "{refused:?}"
    );
    assert!(
        refused.message().contains("at most 2 WatchEvents streams"),
        "{refused:?}"
    );
    let _other = watch(&server, &globex_token(), WatchEventsRequest::default())
        .await
        .expect("another account's watch");

    drop(first);
    // The stream's task notices within one of its polls.
    let give_up = Instant::now() + Duration::from_secs(5);
    loop {
        match watch(&server, &acme_token(), WatchEventsRequest::default()).await {
            Ok(_) => break,
            Err(status) if status.code() == tonic::Code::ResourceExhausted => {
                assert!(
                    Instant::now() < give_up,
                    "the closed watch's place never freed"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(status) => panic!("{status:?}"),
        }
    }
}

/// Twenty WatchEvents streams of one account, idle, cost Redis one poll of
/// where the log ends per interval between them, not a poll each; an event
/// published then still reaches every one of them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_accounts_watch_streams_share_one_poll() {
    const STREAMS: usize = 20;
    let redis = RedisServer::start();
    let store = connected_store(vec![redis.url()], false, unique_prefix()).await;
    let server = TestServer::start_opts(ServerOptions::quiet(Arc::new(store))).await;
    create_room(&server, "watched", None, None).await;
    let mut streams = Vec::new();
    for _ in 0..STREAMS {
        let stream = watch(&server, &acme_token(), WatchEventsRequest::default()).await;
        streams.push(stream.expect("a watch"));
    }
    // Past the streams' first reads.
    tokio::time::sleep(Duration::from_millis(500)).await;

    let monitor = Monitor::start(&redis);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let polls = monitor
        .client_commands(0)
        .into_iter()
        .filter(|c| matches!(c.as_str(), "xrange" | "xrevrange" | "hget"))
        .count();
    eprintln!("{polls} reads of the log in about a second, {STREAMS} idle streams");
    // One account: its newest id and trim point, 5 times a second. A poll
    // per stream would be 2 × 5 × 20 = 200.
    assert!(
        polls <= 16,
        "{polls} reads of the log in about a second for {STREAMS} idle streams"
    );

    let event = publish(&server, "watched", "recording-started", json!({})).await;
    for stream in &mut streams {
        let got = next_events(stream, 1).await;
        assert_eq!(got[0].event_id, event.event_id);
    }
}
