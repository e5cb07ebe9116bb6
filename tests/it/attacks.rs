//! The server under abuse and overload, as an attacker or an unlucky operator
//! would meet it (issue 11, items 1 and 2): stream floods, huge declared
//! messages, idle and half-open sockets, stalled bodies, descriptor
//! exhaustion, overload, and expired deadlines. Every attack is bounded in
//! time and count and aims at 127.0.0.1 only; raw HTTP/2 frames or the `h2`
//! crate are used where a well-behaved client (tonic, reqwest) would refuse
//! to misbehave.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use roomservice::grpc::pb::room_service_client::RoomServiceClient;
use roomservice::grpc::pb::{CreateRoomRequest, GetRoomRequest, ListRoomsRequest};
use roomservice::server::{BODY_TIMEOUT, FIRST_REQUEST_TIMEOUT, Limits, MAX_CONCURRENT_STREAMS};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tonic::Code;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

use crate::harness::*;

/* ------------------------------ bounds and helpers ------------------------------ */

/// How long after its deadline (10 s) an idle or stalled connection may still
/// be open: the server's timers are 10 s, plus a 1 s grace to finish closing,
/// plus scheduling slack on a loaded 2-core machine.
const CLOSED_WITHIN: Duration = Duration::from_secs(14);
/// Timers never fire early: anything closed sooner than this was closed for
/// another reason than the deadline under test, and the test is void.
const NOT_BEFORE: Duration = Duration::from_secs(8);
/// The goal for a normal call during an attack.
const NORMAL_CALL_WITHIN: Duration = Duration::from_secs(1);

const HEALTH_CHECK: &str = "/grpc.health.v1.Health/Check";
const CREATE_ROOM: &str = "/rooms.v1.RoomService/CreateRoom";

/// Fails the test instead of hanging it.
async fn bounded<T>(what: &str, limit: Duration, future: impl Future<Output = T>) -> T {
    match tokio::time::timeout(limit, future).await {
        Ok(value) => value,
        Err(_) => panic!("{what}: nothing after {limit:?}"),
    }
}

/// A normal authenticated call (ListRooms) on a fresh connection, as grpcurl
/// would make it; returns how long the call took, connection set-up excluded.
async fn try_normal_call(addr: &str) -> Result<Duration, String> {
    let channel = tokio::time::timeout(
        Duration::from_secs(5),
        tonic::transport::Channel::from_shared(format!("http://{addr}"))
            .unwrap()
            .connect(),
    )
    .await
    .map_err(|_| "no connection within 5 s".to_owned())?
    .map_err(|e| format!("cannot connect: {e}"))?;
    let mut client = RoomServiceClient::new(channel);
    let started = Instant::now();
    let answer = tokio::time::timeout(
        Duration::from_secs(5),
        client.list_rooms(authed(ListRoomsRequest::default(), &acme_token())),
    )
    .await;
    let took = started.elapsed();
    match answer {
        Ok(Ok(_)) => Ok(took),
        Ok(Err(status)) => Err(format!("{status:?}")),
        Err(_) => Err("no answer within 5 s".to_owned()),
    }
}

async fn normal_call(addr: &str) -> Duration {
    try_normal_call(addr)
        .await
        .unwrap_or_else(|e| panic!("a normal call failed: {e}"))
}

async fn assert_normal_call_is_fast(addr: &str, during: &str) {
    let took = normal_call(addr).await;
    assert!(
        took < NORMAL_CALL_WITHIN,
        "a normal call during {during} took {took:?}"
    );
}

async fn health_status(addr: &str) -> ServingStatus {
    let channel = tonic::transport::Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .expect("connect for a health check");
    HealthClient::new(channel)
        .check(HealthCheckRequest::default())
        .await
        .expect("health answers")
        .into_inner()
        .status()
}

/// Reads and discards until the peer closes (EOF or reset); returns what it
/// read, at most 4 KiB of it.
async fn read_until_closed(stream: &mut (impl AsyncReadExt + Unpin)) -> Vec<u8> {
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return seen,
            Ok(n) => {
                let room = 4096usize.saturating_sub(seen.len());
                seen.extend_from_slice(&buf[..n.min(room)]);
            }
        }
    }
}

/// Asserts the server closed a connection opened at `opened` by one of its
/// 10 s deadlines: not before `NOT_BEFORE`, not after `CLOSED_WITHIN`.
fn assert_closed_by_deadline(what: &str, opened: Instant, closed: Option<Instant>, seen: &[u8]) {
    let Some(closed) = closed else {
        panic!(
            "{what}: still open {CLOSED_WITHIN:?} after connecting (server sent {:?})",
            String::from_utf8_lossy(seen)
        );
    };
    let after = closed - opened;
    eprintln!(
        "{what}: closed after {after:?}; the server sent {:?}",
        String::from_utf8_lossy(&seen[..seen.len().min(200)])
    );
    assert!(
        after >= NOT_BEFORE,
        "{what}: closed after only {after:?}, before any 10 s deadline; the server sent {:?}",
        String::from_utf8_lossy(seen)
    );
    assert!(after <= CLOSED_WITHIN, "{what}: closed after {after:?}");
}

/* ------------------------------------ raw HTTP/2 ------------------------------------ */

/// Hand-made HTTP/2 frames, for what no client library will send: more
/// streams than the server allows, half a frame.
mod raw {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    pub const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

    pub const DATA: u8 = 0x0;
    pub const HEADERS: u8 = 0x1;
    pub const RST_STREAM: u8 = 0x3;
    pub const SETTINGS: u8 = 0x4;
    pub const GOAWAY: u8 = 0x7;

    pub const END_STREAM: u8 = 0x1;
    pub const END_HEADERS: u8 = 0x4;

    pub const REFUSED_STREAM: u32 = 0x7;
    pub const CANCEL: u32 = 0x8;

    #[derive(Debug)]
    pub struct Frame {
        pub kind: u8,
        pub stream: u32,
        pub payload: Vec<u8>,
    }

    impl Frame {
        /// The error code of a RST_STREAM frame.
        pub fn reset_code(&self) -> Option<u32> {
            (self.kind == RST_STREAM && self.payload.len() == 4)
                .then(|| u32::from_be_bytes(self.payload[..4].try_into().unwrap()))
        }
    }

    pub fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
        let len = payload.len() as u32;
        let mut out = Vec::with_capacity(9 + payload.len());
        out.extend_from_slice(&len.to_be_bytes()[1..]);
        out.push(kind);
        out.push(flags);
        out.extend_from_slice(&(stream & 0x7fff_ffff).to_be_bytes());
        out.extend_from_slice(payload);
        out
    }

    /// The client preface and an empty SETTINGS frame.
    pub fn handshake() -> Vec<u8> {
        let mut out = PREFACE.to_vec();
        out.extend(frame(SETTINGS, 0, 0, &[]));
        out
    }

    /// An HPACK integer with an N-bit prefix (RFC 7541 §5.1), first byte's
    /// high bits zero.
    fn integer(value: usize, prefix_bits: u32, out: &mut Vec<u8>) {
        let max = (1usize << prefix_bits) - 1;
        if value < max {
            out.push(value as u8);
            return;
        }
        out.push(max as u8);
        let mut rest = value - max;
        while rest >= 128 {
            out.push((rest % 128 + 128) as u8);
            rest /= 128;
        }
        out.push(rest as u8);
    }

    /// A header block of literal fields without indexing, no Huffman: no
    /// state shared with the server's decoder beyond this block.
    pub fn header_block(headers: &[(&str, &str)]) -> Vec<u8> {
        let mut out = Vec::new();
        for (name, value) in headers {
            out.push(0x00);
            integer(name.len(), 7, &mut out);
            out.extend_from_slice(name.as_bytes());
            integer(value.len(), 7, &mut out);
            out.extend_from_slice(value.as_bytes());
        }
        out
    }

    /// The header block of a gRPC call to `path`.
    pub fn grpc_headers(authority: &str, path: &str) -> Vec<u8> {
        header_block(&[
            (":method", "POST"),
            (":scheme", "http"),
            (":authority", authority),
            (":path", path),
            ("content-type", "application/grpc"),
            ("te", "trailers"),
        ])
    }

    pub async fn read_frame(reader: &mut (impl AsyncReadExt + Unpin)) -> std::io::Result<Frame> {
        let mut head = [0u8; 9];
        reader.read_exact(&mut head).await?;
        let len = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
        let mut payload = vec![0u8; len];
        reader.read_exact(&mut payload).await?;
        Ok(Frame {
            kind: head[3],
            stream: u32::from_be_bytes(head[5..9].try_into().unwrap()) & 0x7fff_ffff,
            payload,
        })
    }

    pub async fn write(writer: &mut (impl AsyncWriteExt + Unpin), bytes: &[u8]) {
        writer.write_all(bytes).await.expect("the server reads");
    }
}

/// A raw HTTP/2 connection whose incoming frames are read by a task of its
/// own and handed over one by one.
struct RawH2 {
    writer: tokio::net::tcp::OwnedWriteHalf,
    frames: tokio::sync::mpsc::UnboundedReceiver<raw::Frame>,
    authority: String,
}

impl RawH2 {
    async fn connect(addr: &str) -> RawH2 {
        let stream = TcpStream::connect(addr).await.expect("connect");
        stream.set_nodelay(true).unwrap();
        let (mut reader, mut writer) = stream.into_split();
        raw::write(&mut writer, &raw::handshake()).await;
        let (tx, frames) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Ok(frame) = raw::read_frame(&mut reader).await {
                if tx.send(frame).is_err() {
                    return;
                }
            }
        });
        RawH2 {
            writer,
            frames,
            authority: addr.to_owned(),
        }
    }

    /// Opens `stream` with a gRPC call's headers; its body never comes.
    async fn open(&mut self, stream: u32, path: &str) {
        self.open_with(stream, path, &[]).await;
    }

    /// [`RawH2::open`] with more headers.
    async fn open_with(&mut self, stream: u32, path: &str, extra: &[(&str, &str)]) {
        let mut block = raw::grpc_headers(&self.authority, path);
        block.extend(raw::header_block(extra));
        let frame = raw::frame(raw::HEADERS, raw::END_HEADERS, stream, &block);
        raw::write(&mut self.writer, &frame).await;
    }

    /// Sends `body` as one DATA frame that ends the stream.
    async fn finish(&mut self, stream: u32, body: &[u8]) {
        let frame = raw::frame(raw::DATA, raw::END_STREAM, stream, body);
        raw::write(&mut self.writer, &frame).await;
    }

    /// A whole Health/Check call on `stream`: headers and an empty message.
    async fn health_check(&mut self, stream: u32) {
        self.open(stream, HEALTH_CHECK).await;
        let data = raw::frame(raw::DATA, raw::END_STREAM, stream, &[0, 0, 0, 0, 0]);
        raw::write(&mut self.writer, &data).await;
    }

    async fn reset(&mut self, stream: u32, code: u32) {
        let frame = raw::frame(raw::RST_STREAM, 0, stream, &code.to_be_bytes());
        raw::write(&mut self.writer, &frame).await;
    }

    /// Frames until `done` says so or `limit` passes; returns them all.
    async fn collect_until(
        &mut self,
        limit: Duration,
        mut done: impl FnMut(&[raw::Frame]) -> bool,
    ) -> Vec<raw::Frame> {
        let deadline = tokio::time::Instant::now() + limit;
        let mut frames = Vec::new();
        while !done(&frames) {
            match tokio::time::timeout_at(deadline, self.frames.recv()).await {
                Ok(Some(frame)) => frames.push(frame),
                Ok(None) | Err(_) => break,
            }
        }
        frames
    }
}

/* --------------------------------- the h2 crate --------------------------------- */

/// An HTTP/2 client connection (the `h2` crate) whose connection task runs in
/// the background.
async fn h2_connect(addr: &str) -> h2::client::SendRequest<Bytes> {
    let tcp = TcpStream::connect(addr).await.expect("connect");
    tcp.set_nodelay(true).unwrap();
    let (client, connection) = h2::client::handshake(tcp).await.expect("h2 handshake");
    tokio::spawn(async move {
        let _ = connection.await;
    });
    client
}

fn grpc_request(addr: &str, path: &str, extra: &[(&str, &str)]) -> http::Request<()> {
    let mut request = http::Request::builder()
        .method("POST")
        .uri(format!("http://{addr}{path}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers");
    for (name, value) in extra {
        request = request.header(*name, *value);
    }
    request.body(()).unwrap()
}

/// Opens a stream (waiting for the server to allow one more).
async fn h2_send(
    client: &mut h2::client::SendRequest<Bytes>,
    request: http::Request<()>,
) -> (h2::client::ResponseFuture, h2::SendStream<Bytes>) {
    let mut ready = client.clone().ready().await.expect("connection usable");
    let sent = ready.send_request(request, false).expect("stream opened");
    *client = ready;
    sent
}

/// A gRPC message frame: the 5-byte prefix and the encoded message.
fn grpc_frame(message: &impl prost::Message) -> Bytes {
    let body = message.encode_to_vec();
    let mut out = vec![0u8];
    out.extend_from_slice(&(body.len() as u32).to_be_bytes());
    out.extend_from_slice(&body);
    out.into()
}

/// The gRPC status a response ends with, from its headers (trailers-only) or
/// its trailers.
async fn grpc_status(response: h2::client::ResponseFuture) -> Result<tonic::Status, h2::Error> {
    let response = response.await?;
    if let Some(status) = tonic::Status::from_header_map(response.headers()) {
        return Ok(status);
    }
    let mut body = response.into_body();
    while let Some(chunk) = body.data().await {
        let chunk = chunk?;
        let _ = body.flow_control().release_capacity(chunk.len());
    }
    let trailers = body.trailers().await?.unwrap_or_default();
    Ok(tonic::Status::from_header_map(&trailers)
        .unwrap_or_else(|| tonic::Status::unknown("response without grpc-status")))
}

/* ----------------------------- the binary, logs kept ----------------------------- */

/// `roomservice serve` with the test keys and JSON logs, every stderr line
/// kept for the test to read. Killed when dropped.
struct Binary {
    service: Service,
    addr: String,
    pid: u32,
    logs: Arc<Mutex<Vec<String>>>,
    _keys: TempDir,
}

impl Binary {
    /// `max_open_files`: run it under `ulimit -n` of that many descriptors.
    fn start(max_open_files: Option<u32>) -> Binary {
        let keys = TempDir::new();
        let keys_file = keys.write("keys.toml", KEYS_TOML);
        let binary = env!("CARGO_BIN_EXE_roomservice");
        let mut command = match max_open_files {
            None => Command::new(binary),
            Some(n) => {
                let mut command = Command::new("bash");
                command
                    .arg("-c")
                    .arg(format!("ulimit -n {n} && exec \"$0\" \"$@\""))
                    .arg(binary);
                command
            }
        };
        for (name, _) in std::env::vars() {
            if name.starts_with("ROOMSERVICE_") {
                command.env_remove(name);
            }
        }
        let child = command
            .args(["serve", "--listen", "127.0.0.1:0", "--log-format", "json"])
            .args(["--keys-file", &keys_file])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start the binary");
        let pid = child.id();
        let mut service = Service::adopt(child);
        let stderr = service.child_mut().stderr.take().unwrap();
        let logs = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let kept = logs.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if line.contains("roomservice listening") {
                    let _ = tx.send(line.clone());
                }
                kept.lock().unwrap().push(line);
            }
        });
        let line = rx
            .recv_timeout(Duration::from_secs(20))
            .expect("the binary logs that it listens");
        let log: serde_json::Value = serde_json::from_str(&line).expect("json log line");
        let addr = log["fields"]["address"].as_str().unwrap().to_owned();
        Binary {
            service,
            addr,
            pid,
            logs,
            _keys: keys,
        }
    }

    fn log_lines_with(&self, needle: &str) -> usize {
        self.logs
            .lock()
            .unwrap()
            .iter()
            .filter(|line| line.contains(needle))
            .count()
    }

    fn logs(&self) -> String {
        self.logs.lock().unwrap().join("\n")
    }

    /// Resident memory, in bytes.
    fn rss(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid)).unwrap();
        let kib: u64 = status
            .lines()
            .find_map(|line| line.strip_prefix("VmRSS:"))
            .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmRSS in /proc/<pid>/status");
        kib * 1024
    }

    /// CPU time used so far (user + system).
    fn cpu_time(&self) -> Duration {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid)).unwrap();
        // Fields after the command name, which is in parentheses and may hold
        // spaces: state is field 3, utime 14 and stime 15.
        let rest = &stat[stat.rfind(')').unwrap() + 2..];
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
        Duration::from_secs_f64(ticks as f64 / clock_ticks_per_second() as f64)
    }
}

fn clock_ticks_per_second() -> u64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|out| String::from_utf8(out.stdout).ok())
        .and_then(|text| text.trim().parse().ok())
        .unwrap_or(100)
}

/// `n` REST creates that send their headers and 10 of their 100 bytes of
/// body, then nothing, until their body times out (10 s) or their connection
/// is dropped.
async fn stall_rest_creates(addr: &str, n: usize) -> Vec<TcpStream> {
    let token = acme_token();
    let mut stalled = Vec::new();
    for _ in 0..n {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        let head = format!(
            "POST /v2/rooms HTTP/1.1\r\nHost: {addr}\r\nAuthorization: {token}\r\n\
             Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{{\"region\":"
        );
        stream.write_all(head.as_bytes()).await.unwrap();
        stalled.push(stream);
    }
    stalled
}

/* ------------------------------------- attacks ------------------------------------- */

/// One connection opens 150 streams of headers only (Health/Check, no token
/// needed, body never sent). The server takes 100 and refuses the rest with
/// REFUSED_STREAM; closing one makes room for one more; other connections are
/// served as usual meanwhile.
#[tokio::test]
async fn streams_beyond_the_cap_are_refused() {
    let server = TestServer::start().await;
    let addr = server.addr.to_string();
    let cap = MAX_CONCURRENT_STREAMS;
    assert_eq!(cap, 100, "the issue's figure");
    let mut h2 = RawH2::connect(&addr).await;

    let opened: Vec<u32> = (0..cap + 50).map(|i| 2 * i + 1).collect();
    for &stream in &opened {
        h2.open(stream, HEALTH_CHECK).await;
    }
    let refused = |frames: &[raw::Frame]| -> Vec<u32> {
        frames
            .iter()
            .filter(|f| f.reset_code() == Some(raw::REFUSED_STREAM))
            .map(|f| f.stream)
            .collect()
    };
    let frames = h2
        .collect_until(Duration::from_secs(5), |frames| refused(frames).len() >= 50)
        .await;
    let mut refused_streams = refused(&frames);
    refused_streams.sort_unstable();
    assert_eq!(
        refused_streams,
        opened[cap as usize..],
        "exactly the streams beyond {cap} are refused; frames: {frames:?}"
    );
    assert!(
        !frames
            .iter()
            .any(|f| f.kind == raw::GOAWAY || (f.kind == raw::RST_STREAM && f.stream <= 199)),
        "the first {cap} streams stay open: {frames:?}"
    );

    // While 100 streams hang on that connection, another is served at once.
    assert_normal_call_is_fast(&addr, "a 150-stream flood").await;

    // Still full: a whole call on a 151st stream is refused too.
    let next = opened.last().unwrap() + 2;
    h2.health_check(next).await;
    let frames = h2
        .collect_until(Duration::from_secs(5), |frames| {
            frames.iter().any(|f| f.stream == next)
        })
        .await;
    let last = frames.iter().find(|f| f.stream == next);
    assert_eq!(
        last.and_then(raw::Frame::reset_code),
        Some(raw::REFUSED_STREAM),
        "a call beyond the cap: {last:?}"
    );

    // The cap is on streams open at once: cancel one, and a call fits again.
    h2.reset(1, raw::CANCEL).await;
    let next = next + 2;
    h2.health_check(next).await;
    let frames = h2
        .collect_until(Duration::from_secs(5), |frames| {
            frames.iter().any(|f| f.stream == next)
        })
        .await;
    let answer = frames.iter().find(|f| f.stream == next);
    assert_eq!(
        answer.map(|f| f.kind),
        Some(raw::HEADERS),
        "a call after one stream closed is answered: {answer:?}"
    );
}

/// The memory attack, on the real binary: Health/Check streams each
/// declaring a 4 MiB−1 message and sending all of it but the last byte. Each
/// is refused with RESOURCE_EXHAUSTED as soon as its length prefix arrives,
/// without waiting for (or buffering) the rest; the process's memory stays
/// put and a normal call is still served at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn huge_declared_messages_are_refused_without_buffering() {
    let binary = Binary::start(None);
    let addr = binary.addr.clone();
    assert_normal_call_is_fast(&addr, "warm-up").await;
    let rss_before = binary.rss();

    const STREAMS: usize = 50;
    const DECLARED: u32 = 4 * 1024 * 1024 - 1;
    // One buffer shared by every stream: the prefix, then all but the last
    // byte of the declared message.
    let mut message = vec![0u8; 5 + DECLARED as usize - 1];
    message[1..5].copy_from_slice(&DECLARED.to_be_bytes());
    let message = Bytes::from(message);

    let mut client = h2_connect(&addr).await;
    let started = Instant::now();
    let mut calls = Vec::new();
    let mut senders = Vec::new();
    for _ in 0..STREAMS {
        let (response, mut body) =
            h2_send(&mut client, grpc_request(&addr, HEALTH_CHECK, &[])).await;
        // Queued in the client and sent as the server's windows allow.
        body.send_data(message.clone(), false)
            .expect("queue the body");
        senders.push(body);
        calls.push(tokio::spawn(grpc_status(response)));
    }
    for call in calls {
        let status = bounded("an oversized Health/Check", Duration::from_secs(5), call)
            .await
            .unwrap()
            .expect("answered with a status, not a reset");
        assert_eq!(
            status.code(),
            Code::ResourceExhausted,
            "{}",
            status.message()
        );
    }
    let answered_in = started.elapsed();
    assert!(
        answered_in < BODY_TIMEOUT / 2,
        "{STREAMS} oversized messages took {answered_in:?}: the server waited for their bodies"
    );

    // The connection is still open (and its streams' data may still be in
    // flight): measure now, and serve a normal call beside it.
    assert_normal_call_is_fast(&addr, "oversized messages").await;
    let rss_after = binary.rss();
    let growth = rss_after.saturating_sub(rss_before);
    eprintln!(
        "{STREAMS} oversized streams answered in {answered_in:?}; RSS {} → {} KiB",
        rss_before >> 10,
        rss_after >> 10
    );
    assert!(
        growth < 64 * 1024 * 1024,
        "RSS grew by {} MiB ({} → {} MiB)",
        growth >> 20,
        rss_before >> 20,
        rss_after >> 20
    );
    assert!(rss_after < 256 * 1024 * 1024, "RSS {} MiB", rss_after >> 20);
    drop(senders);
}

/// Four sockets that never deliver a request, side by side: TCP only; the
/// HTTP/2 preface only; half a HEADERS frame; an HTTP/1.1 request dripped a
/// byte a second. Each is closed by the server ~10 s after it connected.
/// And a fifth: an HTTP/1.1 connection that made one request, then drips the
/// next one's headers — the header read timeout, not the first-request one.
#[tokio::test]
async fn idle_and_half_open_connections_are_closed() {
    assert_eq!(FIRST_REQUEST_TIMEOUT, Duration::from_secs(10));
    let server = TestServer::start().await;
    let addr = server.addr.to_string();

    // Connects, sends `prefix`, then waits for the server to close.
    let silent = |prefix: Vec<u8>| {
        let addr = addr.clone();
        async move {
            let mut stream = TcpStream::connect(&addr).await.unwrap();
            let opened = Instant::now();
            stream.write_all(&prefix).await.unwrap();
            let seen = tokio::time::timeout(CLOSED_WITHIN, read_until_closed(&mut stream)).await;
            let closed = seen.is_ok().then(Instant::now);
            (opened, closed, seen.unwrap_or_default())
        }
    };
    // Connects, sends `first` whole, then `dripped` a byte a second until the
    // server closes.
    let dripping = |first: Vec<u8>, dripped: Vec<u8>| {
        let addr = addr.clone();
        async move {
            let stream = TcpStream::connect(&addr).await.unwrap();
            stream.set_nodelay(true).unwrap();
            let mut opened = Instant::now();
            let (mut reader, mut writer) = stream.into_split();
            writer.write_all(&first).await.unwrap();
            if !first.is_empty() {
                // Wait for the first answer, then start the clock.
                let mut buf = [0u8; 4096];
                let n = reader.read(&mut buf).await.unwrap();
                assert!(
                    buf[..n].starts_with(b"HTTP/1.1 200"),
                    "{:?}",
                    String::from_utf8_lossy(&buf[..n])
                );
                opened = Instant::now();
            }
            let drip = async {
                for byte in dripped.iter().cycle() {
                    if writer.write_all(&[*byte]).await.is_err() {
                        break;
                    }
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
                std::future::pending::<()>().await
            };
            let seen = tokio::time::timeout(CLOSED_WITHIN, async {
                tokio::select! {
                    seen = read_until_closed(&mut reader) => seen,
                    () = drip => unreachable!(),
                }
            })
            .await;
            let closed = seen.is_ok().then(Instant::now);
            (opened, closed, seen.unwrap_or_default())
        }
    };

    let mut half_headers = raw::handshake();
    let block = raw::grpc_headers(&addr, HEALTH_CHECK);
    let whole = raw::frame(raw::HEADERS, raw::END_HEADERS, 1, &block);
    half_headers.extend_from_slice(&whole[..9 + block.len() / 2]);
    let drip_head = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Drip: ".to_vec();
    let keepalive_then_drip = format!("GET /healthz HTTP/1.1\r\nHost: {addr}\r\n\r\n").into_bytes();

    let (tcp_only, preface_only, half_frame, drip, drip_after_one) = tokio::join!(
        silent(Vec::new()),
        silent(raw::PREFACE.to_vec()),
        silent(half_headers),
        dripping(Vec::new(), drip_head.clone()),
        dripping(keepalive_then_drip, drip_head),
    );
    for (what, (opened, closed, seen)) in [
        ("TCP only", tcp_only),
        ("HTTP/2 preface only", preface_only),
        ("half a HEADERS frame", half_frame),
        ("HTTP/1.1 headers dripped", drip),
        ("HTTP/1.1 second request's headers dripped", drip_after_one),
    ] {
        assert_closed_by_deadline(what, opened, closed, &seen);
    }
    assert_normal_call_is_fast(&addr, "after idle sockets").await;
}

/// Requests whose bodies stall after a part: gRPC over HTTP/2 (the message
/// declares 100 bytes, 10 come), REST over HTTP/1.1 and over HTTP/2
/// (Content-Length 100, 10 bytes). Each is failed ~10 s after its headers
/// arrived instead of holding its stream (and its slot) for ever.
#[tokio::test]
async fn stalled_bodies_are_failed() {
    assert_eq!(BODY_TIMEOUT, Duration::from_secs(10));
    let server = TestServer::start().await;
    let addr = server.addr.to_string();
    let token = acme_token();
    let partial = {
        let mut bytes = vec![0u8];
        bytes.extend_from_slice(&100u32.to_be_bytes());
        bytes.extend_from_slice(&[0u8; 10]);
        Bytes::from(bytes)
    };

    let grpc = async {
        let mut client = h2_connect(&addr).await;
        let request = grpc_request(&addr, CREATE_ROOM, &[("authorization", &token)]);
        let (response, mut body) = h2_send(&mut client, request).await;
        let opened = Instant::now();
        body.send_data(partial.clone(), false).unwrap();
        let status = tokio::time::timeout(CLOSED_WITHIN, grpc_status(response)).await;
        (opened, status.is_ok().then(Instant::now), status, body)
    };
    let rest_h1 = async {
        let mut stream = TcpStream::connect(&addr).await.unwrap();
        let head = format!(
            "POST /v2/rooms HTTP/1.1\r\nHost: {addr}\r\nAuthorization: {token}\r\n\
             Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{{\"region\":"
        );
        stream.write_all(head.as_bytes()).await.unwrap();
        let opened = Instant::now();
        let seen = tokio::time::timeout(CLOSED_WITHIN, async {
            // An answer, or the connection closed, ends the wait.
            let mut buf = [0u8; 4096];
            match stream.read(&mut buf).await {
                Ok(n) => buf[..n].to_vec(),
                Err(_) => Vec::new(),
            }
        })
        .await;
        let closed = seen.is_ok().then(Instant::now);
        (opened, closed, seen.unwrap_or_default())
    };
    let rest_h2 = async {
        let mut client = h2_connect(&addr).await;
        let request = http::Request::builder()
            .method("POST")
            .uri(format!("http://{addr}/v2/rooms"))
            .header("authorization", &token)
            .header("content-type", "application/json")
            .header("content-length", "100")
            .body(())
            .unwrap();
        let (response, mut body) = h2_send(&mut client, request).await;
        let opened = Instant::now();
        body.send_data(Bytes::from_static(b"{\"region\":"), false)
            .unwrap();
        let answer = tokio::time::timeout(CLOSED_WITHIN, response).await;
        let answered = answer.is_ok().then(Instant::now);
        let (status, shown) = match answer {
            Ok(Ok(response)) => (
                Some(response.status()),
                format!("HTTP {}", response.status()),
            ),
            Ok(Err(e)) => (None, format!("reset: {e}")),
            Err(_) => (None, String::new()),
        };
        (opened, answered, status, shown, body)
    };

    let ((g_opened, g_closed, g_status, _g_body), (h1_opened, h1_closed, h1_seen), rest_h2) =
        tokio::join!(grpc, rest_h1, rest_h2);
    let (h2_opened, h2_closed, h2_status, h2_shown, _h2_body) = rest_h2;

    let shown = format!("{g_status:?}");
    assert_closed_by_deadline("stalled gRPC body", g_opened, g_closed, shown.as_bytes());
    let status = g_status.unwrap().expect("a status, not a reset");
    eprintln!("stalled gRPC body: {status:?}");
    assert_ne!(status.code(), Code::Ok);
    // The caller sent too little: not the server's fault, so not INTERNAL.
    assert_ne!(status.code(), Code::Internal, "{status:?}");

    assert_closed_by_deadline("stalled HTTP/1.1 body", h1_opened, h1_closed, &h1_seen);
    assert_closed_by_deadline(
        "stalled HTTP/2 REST body",
        h2_opened,
        h2_closed,
        h2_shown.as_bytes(),
    );
    // The client sent too little, too slowly: 408 Request Timeout, which
    // blames the client, never a 5xx, which would blame the server.
    let h1_status_line = String::from_utf8_lossy(&h1_seen)
        .lines()
        .next()
        .unwrap_or_default()
        .to_owned();
    assert!(
        h1_status_line.starts_with("HTTP/1.1 408 "),
        "stalled HTTP/1.1 REST body: {:?}",
        String::from_utf8_lossy(&h1_seen)
    );
    assert_eq!(
        h2_status,
        Some(http::StatusCode::REQUEST_TIMEOUT),
        "stalled HTTP/2 REST body: {h2_shown}"
    );
}

/// SIGTERM with only idle connections open: one silent TCP socket, one
/// HTTP/2 connection that never sent a request, one that made a call and is
/// idle now. The shutdown grace is 30 s; the process must not wait for any of
/// them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_does_not_wait_for_idle_connections() {
    let binary = Binary::start(None);
    let addr = binary.addr.clone();

    let _silent = TcpStream::connect(&addr).await.unwrap();
    let _fresh = h2_connect(&addr).await;
    let mut used = h2_connect(&addr).await;
    let (response, mut body) = h2_send(&mut used, grpc_request(&addr, HEALTH_CHECK, &[])).await;
    body.send_data(grpc_frame(&HealthCheckRequest::default()), true)
        .unwrap();
    let status = bounded(
        "a health check",
        Duration::from_secs(5),
        grpc_status(response),
    )
    .await
    .unwrap();
    assert_eq!(status.code(), Code::Ok);
    // Let the server accept and start serving every socket.
    tokio::time::sleep(Duration::from_millis(300)).await;

    let Binary { service, logs, .. } = binary;
    let started = Instant::now();
    let exit = tokio::task::spawn_blocking(move || service.stop())
        .await
        .unwrap();
    let took = started.elapsed();
    let logs = logs.lock().unwrap().join("\n");
    eprintln!("exit after {took:?}: {exit:?}");
    assert!(exit.success(), "{exit:?}\n{logs}");
    assert!(
        took < Duration::from_secs(2),
        "exit took {took:?} with only idle connections\n{logs}"
    );
    assert!(!logs.contains("still running"), "{logs}");
}

/// The bound on calls in flight (4 here): four calls being served hold
/// every slot. A fifth call is refused at once — gRPC with
/// RESOURCE_EXHAUSTED, REST with 503, Retry-After and code
/// "resource_exhausted" — while health checks still answer; once the held
/// calls end, calls are served again.
#[tokio::test]
async fn calls_beyond_max_in_flight_are_refused_at_once() {
    let (server, mut holding) = TestServer::start_holding(Limits {
        max_in_flight: 4,
        ..Default::default()
    })
    .await;
    let addr = server.addr.to_string();
    let token = acme_token();
    let mut client = server.rooms().await;
    let http = server.http();

    holding.hold(&server, 4).await;

    // Wait (briefly) for the first refusal.
    let give_up = Instant::now() + Duration::from_secs(2);
    let refusal = loop {
        let started = Instant::now();
        let answer = client
            .get_room(authed(
                GetRoomRequest {
                    room_id: "no-such-room".into(),
                },
                &token,
            ))
            .await;
        let took = started.elapsed();
        match answer {
            Err(status) if status.code() == Code::ResourceExhausted => break (status, took),
            other => {
                assert_eq!(
                    other.unwrap_err().code(),
                    Code::NotFound,
                    "admitted while slots were free"
                );
                assert!(
                    Instant::now() < give_up,
                    "never refused with 4 held calls holding 4 slots"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };
    let (status, took) = refusal;
    assert!(status.message().contains("overloaded"), "{status:?}");
    // gRPC clients with a retry policy wait as long as the server asks: the
    // jittered 0.5-1.5 s of a refusal while refusals are few. `hold` was
    // refused just before, so this return may queue one spacing (1/64 s, 16
    // ms) behind that one's.
    let pushback = pushback_ms(&status);
    assert!((500..1516).contains(&pushback), "pushback {pushback} ms");
    assert!(
        took < NORMAL_CALL_WITHIN,
        "refused after {took:?}, not at once"
    );

    let started = Instant::now();
    let response = http
        .get(format!("{}/v2/rooms", server.url()))
        .header(http::header::AUTHORIZATION, &token)
        .send()
        .await
        .unwrap();
    let took = started.elapsed();
    assert_eq!(response.status(), http::StatusCode::SERVICE_UNAVAILABLE);
    assert!(
        took < NORMAL_CALL_WITHIN,
        "refused after {took:?}, not at once"
    );
    let retry_after = retry_after_seconds(&response);
    assert!(
        (1..=60).contains(&retry_after),
        "Retry-After: {retry_after}"
    );
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["code"], "resource_exhausted", "{body}");

    // Health is never shed.
    assert_eq!(health_status(&addr).await, ServingStatus::Serving);
    for path in ["/healthz", "/readyz"] {
        let response = http
            .get(format!("{}{path}", server.url()))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), http::StatusCode::OK, "{path}");
    }

    // Slots are given back when the held calls end.
    holding.release().await;
    let give_up = Instant::now() + Duration::from_secs(5);
    loop {
        let answer = client
            .list_rooms(authed(ListRoomsRequest::default(), &token))
            .await;
        match answer {
            Ok(_) => break,
            Err(status) if status.code() == Code::ResourceExhausted => {
                assert!(Instant::now() < give_up, "slots never given back");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(status) => panic!("{status:?}"),
        }
    }
    let response = http
        .get(format!("{}/v2/rooms", server.url()))
        .header(http::header::AUTHORIZATION, &token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), http::StatusCode::OK);
}

/// A crowd refused at once is not told to come back at once: each refusal
/// promises a return time of its own, spread so that the returns arrive at
/// a bounded rate (here, with nothing admitted, 64 a second), up to 10 s
/// ahead. With a fixed 0.5–1.5 s pushback, 300 callers would come back
/// within one second and cost the server 300 more refusals there.
#[tokio::test]
async fn a_refused_crowd_is_told_to_come_back_spread_out() {
    let (server, mut holding) = TestServer::start_holding(Limits {
        max_in_flight: 4,
        ..Default::default()
    })
    .await;
    let token = acme_token();
    holding.hold(&server, 4).await;
    let client = server.rooms().await;

    let calls = (0..300).map(|_| {
        let mut client = client.clone();
        let token = token.clone();
        async move {
            let status = client
                .get_room(authed(
                    GetRoomRequest {
                        room_id: "no-such-room".into(),
                    },
                    &token,
                ))
                .await
                .expect_err("every slot is held");
            assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
            // A client waits from when the refusal reaches it: the return
            // times do not then depend on how fast the server refused.
            Instant::now() + Duration::from_millis(pushback_ms(&status))
        }
    });
    let started = Instant::now();
    let mut returns: Vec<Instant> = futures::future::join_all(calls).await;
    returns.sort();
    let ms = |at: &Instant| at.saturating_duration_since(started).as_millis();
    assert!(
        ms(&returns[0]) >= 500,
        "first return {} ms after the crowd",
        ms(&returns[0])
    );
    // 300 returns at 64 a second reach about 5 s ahead; never past 10 s
    // (plus the time the crowd took to be refused).
    let last = ms(returns.last().unwrap());
    assert!(
        (4_000..12_000).contains(&last),
        "last return after {last} ms"
    );
    // At most 64 a second, with room for the refusals' travel times.
    for (i, from) in returns.iter().enumerate() {
        let within = returns[i..]
            .iter()
            .take_while(|at| at.duration_since(*from) < Duration::from_secs(1))
            .count();
        assert!(
            within <= 80,
            "{within} returns within a second of {} ms",
            ms(from)
        );
    }

    // A REST caller refused now is told to wait past the promised returns
    // (from 3 s, allowing for the time the crowd took to be refused; a
    // fixed 0.5-1.5 s pushback would say 1 or 2).
    let response = server
        .http()
        .get(format!("{}/v2/rooms", server.url()))
        .header(http::header::AUTHORIZATION, &token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), http::StatusCode::SERVICE_UNAVAILABLE);
    let retry_after = retry_after_seconds(&response);
    assert!(
        (3..=11).contains(&retry_after),
        "Retry-After: {retry_after}"
    );
    holding.release().await;
}

/// The wait a gRPC refusal asks for (`grpc-retry-pushback-ms`).
fn pushback_ms(status: &tonic::Status) -> u64 {
    status
        .metadata()
        .get("grpc-retry-pushback-ms")
        .expect("grpc-retry-pushback-ms on a refusal")
        .to_str()
        .unwrap()
        .parse()
        .expect("grpc-retry-pushback-ms in milliseconds")
}

/// The wait a REST refusal asks for (`Retry-After`).
fn retry_after_seconds(response: &reqwest::Response) -> u64 {
    response
        .headers()
        .get(http::header::RETRY_AFTER)
        .expect("Retry-After")
        .to_str()
        .unwrap()
        .parse()
        .expect("Retry-After in seconds")
}

/// A call whose message has not arrived waits on its client, so it holds no
/// slot of `--max-in-flight` (4 here) meanwhile. Otherwise anyone, token or
/// not, could fill every slot with headers alone and keep them filled. With
/// 20 REST creates stalled mid-body and 20 gRPC calls stalled after their
/// headers (no token at all), a normal call is still served at once.
#[tokio::test]
async fn stalled_bodies_hold_no_slot() {
    let server = TestServer::start_with_limits(Limits {
        max_in_flight: 4,
        ..Default::default()
    })
    .await;
    let addr = server.addr.to_string();
    let _stalled = stall_rest_creates(&addr, 20).await;
    let mut h2 = RawH2::connect(&addr).await;
    let streams: Vec<u32> = (0..20).map(|i| 2 * i + 1).collect();
    for &stream in &streams {
        h2.open_with(stream, "/rooms.v1.RoomService/GetRoom", &[])
            .await;
    }
    // Let every stalled request reach the server first.
    tokio::time::sleep(Duration::from_millis(300)).await;
    for _ in 0..5 {
        assert_normal_call_is_fast(&addr, "40 stalled bodies").await;
    }
}

/// The client's deadline, `grpc-timeout`, sent by hand over raw HTTP/2 (a
/// tonic client would enforce it itself and never reach the server): already
/// passed ("0m") → DEADLINE_EXCEEDED and nothing done; passing while the call
/// waits for its body → DEADLINE_EXCEEDED at the deadline, long before the
/// body timeout; malformed → INVALID_ARGUMENT; ample → served.
#[tokio::test]
async fn grpc_timeout_is_honoured() {
    let server = TestServer::start().await;
    let addr = server.addr.to_string();
    let token = acme_token();
    let mut client = h2_connect(&addr).await;
    let create = grpc_frame(&CreateRoomRequest::default());

    let mut call = async |timeout: &str, body: Option<Bytes>| {
        let request = grpc_request(
            &addr,
            CREATE_ROOM,
            &[("authorization", &token), ("grpc-timeout", timeout)],
        );
        let (response, mut send) = h2_send(&mut client, request).await;
        match body {
            Some(body) => send.send_data(body, true).unwrap(),
            // Declares a message, sends none of it, never ends.
            None => send
                .send_data(Bytes::from_static(&[0, 0, 0, 0, 9]), false)
                .unwrap(),
        }
        let started = Instant::now();
        let status = bounded(
            "a call with grpc-timeout",
            CLOSED_WITHIN,
            grpc_status(response),
        )
        .await
        .expect("a status, not a reset");
        (status, started.elapsed(), send)
    };
    let rooms = || async {
        let mut rooms = server.rooms().await;
        rooms
            .list_rooms(authed(ListRoomsRequest::default(), &acme_token()))
            .await
            .unwrap()
            .into_inner()
            .data
            .len()
    };

    let (status, _, _) = call("0m", Some(create.clone())).await;
    assert_eq!(status.code(), Code::DeadlineExceeded, "{status:?}");
    let (status, _, _) = call("0n", Some(create.clone())).await;
    assert_eq!(status.code(), Code::DeadlineExceeded, "{status:?}");
    assert_eq!(rooms().await, 0, "a call past its deadline was started");

    let (status, took, _stalled) = call("1S", None).await;
    assert_eq!(status.code(), Code::DeadlineExceeded, "{status:?}");
    assert!(
        took >= Duration::from_millis(900) && took < BODY_TIMEOUT / 2,
        "a 1 s deadline ended the call after {took:?}"
    );

    let (status, _, _) = call("soon", Some(create.clone())).await;
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert_eq!(rooms().await, 0);

    let (status, _, _) = call("5S", Some(create)).await;
    assert_eq!(status.code(), Code::Ok, "{status:?}");
    assert_eq!(rooms().await, 1);
}

/// The real binary under `ulimit -n 64`, then 80 idle connections: accept
/// fails with EMFILE. The loop must back off (low CPU), log the failure a
/// few times rather than thousands, and serve again once descriptors free up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn out_of_descriptors_backs_off_and_recovers() {
    let binary = Binary::start(Some(64));
    let addr = binary.addr.clone();
    assert_normal_call_is_fast(&addr, "warm-up").await;

    // The kernel completes these handshakes into the listen backlog whether
    // or not the server can accept them.
    let idle: Vec<std::net::TcpStream> = (0..80)
        .map(|_| std::net::TcpStream::connect(&addr).expect("connect"))
        .collect();
    let wait_for = Instant::now() + Duration::from_secs(3);
    while binary.log_lines_with("accept failed") == 0 {
        assert!(
            Instant::now() < wait_for,
            "80 connections under ulimit -n 64 never made accept fail\n{}",
            binary.logs()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Out of descriptors now, and for the next few seconds (idle connections
    // are closed 10 s after they were accepted).
    let cpu_before = binary.cpu_time();
    let window = Instant::now();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let cpu = binary.cpu_time() - cpu_before;
    let window = window.elapsed();
    eprintln!("out of descriptors: {cpu:?} of CPU in {window:?}");
    assert!(
        cpu < Duration::from_millis(500),
        "{cpu:?} of CPU in {window:?} while out of descriptors: the accept loop spins"
    );
    let logged = binary.log_lines_with("accept failed");
    assert!(
        logged <= 5,
        "\"accept failed\" logged {logged} times in ~3 s\n{}",
        binary.logs()
    );

    drop(idle);
    let give_up = Instant::now() + Duration::from_secs(5);
    let took = loop {
        match try_normal_call(&addr).await {
            Ok(took) => break took,
            Err(e) => assert!(
                Instant::now() < give_up,
                "never served again: {e}\n{}",
                binary.logs()
            ),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(took < NORMAL_CALL_WITHIN, "a normal call took {took:?}");
    assert!(
        binary.log_lines_with("accepting connections again") >= 1,
        "{}",
        binary.logs()
    );
}

/// Overload refusals on one HTTP/2 connection, many more than 1,024 of them:
/// each is a RESOURCE_EXHAUSTED answer to its own call, and the connection
/// stays up for the calls it carries (admitted ones included). A server that
/// answers before reading the request's body must not count each such stream
/// against h2's per-connection budget of locally reset streams, or it would
/// GOAWAY (ENHANCE_YOUR_CALM) a busy client's connection mid-overload.
#[tokio::test]
async fn refusals_do_not_break_the_connection() {
    let (server, mut holding) = TestServer::start_holding(Limits {
        max_in_flight: 1,
        ..Default::default()
    })
    .await;
    let addr = server.addr.to_string();
    let token = acme_token();

    // One call being served holds the only slot.
    holding.hold(&server, 1).await;

    const CALLS: usize = 3000;
    const CONCURRENT: usize = 100;
    let message = grpc_frame(&GetRoomRequest {
        room_id: "no-such-room".into(),
    });
    let client = h2_connect(&addr).await;
    let started = Instant::now();
    let mut codes = std::collections::BTreeMap::<String, usize>::new();
    let mut pending = futures::stream::FuturesUnordered::new();
    let mut sent = 0;
    let get_room = "/rooms.v1.RoomService/GetRoom";
    while sent < CALLS || !pending.is_empty() {
        while sent < CALLS && pending.len() < CONCURRENT {
            let mut client = client.clone();
            let request = grpc_request(&addr, get_room, &[("authorization", &token)]);
            let message = message.clone();
            pending.push(async move {
                let mut ready = client.ready().await?;
                let (response, mut body) = ready.send_request(request, false)?;
                body.send_data(message, true)?;
                client = ready;
                drop(client);
                grpc_status(response).await
            });
            sent += 1;
        }
        let outcome = bounded(
            "refused calls",
            Duration::from_secs(10),
            futures::StreamExt::next(&mut pending),
        )
        .await
        .unwrap();
        let key = match outcome {
            Ok(status) => format!("{:?}", status.code()),
            Err(e) => format!("h2 error: {e}"),
        };
        *codes.entry(key).or_default() += 1;
    }
    eprintln!("{CALLS} calls in {:?}: {codes:?}", started.elapsed());
    assert_eq!(
        codes.get("ResourceExhausted"),
        Some(&CALLS),
        "every call refused on its own, the connection kept: {codes:?}"
    );

    // The same connection serves once the slot is free again.
    holding.release().await;
    let give_up = Instant::now() + Duration::from_secs(5);
    loop {
        let mut client = client.clone();
        let request = grpc_request(&addr, get_room, &[("authorization", &token)]);
        let (response, mut body) = h2_send(&mut client, request).await;
        body.send_data(message.clone(), true).unwrap();
        let status = grpc_status(response).await.expect("the connection is up");
        match status.code() {
            Code::NotFound => break,
            Code::ResourceExhausted if Instant::now() < give_up => {
                tokio::time::sleep(Duration::from_millis(50)).await
            }
            _ => panic!("{status:?}"),
        }
    }
}

/// Refusals whose request message trails the headers: a busy client, a
/// message still being written. Answering at the headers would reset the
/// stream (NO_ERROR); h2 remembers at most 50 reset streams, for 1 s, and a
/// DATA frame for a forgotten one counts as a "locally reset" stream, of which
/// h2 allows 1,024 over a connection's life before it sends GOAWAY
/// (ENHANCE_YOUR_CALM, "too_many_internal_resets"). Under sustained overload
/// that would end busy clients' connections, admitted calls on them included.
/// So admission is decided only once the call's (small) body has arrived.
/// 30 rounds of 100 calls whose messages come 200 ms after their headers
/// must each be refused, and the connection must then serve a call.
#[tokio::test]
async fn late_bodies_of_refused_calls_do_not_end_the_connection() {
    let (server, mut holding) = TestServer::start_holding(Limits {
        max_in_flight: 1,
        ..Default::default()
    })
    .await;
    let addr = server.addr.to_string();
    let token = acme_token();

    holding.hold(&server, 1).await;

    let get_room = "/rooms.v1.RoomService/GetRoom";
    let message = grpc_frame(&GetRoomRequest {
        room_id: "no-such-room".into(),
    });
    let auth = [("authorization", token.as_str())];
    let mut h2 = RawH2::connect(&addr).await;
    let mut next = 1u32;
    let mut refused = 0;
    for round in 0..30 {
        let streams: Vec<u32> = (0..MAX_CONCURRENT_STREAMS).map(|i| next + 2 * i).collect();
        next += 2 * MAX_CONCURRENT_STREAMS;
        for &stream in &streams {
            h2.open_with(stream, get_room, &auth).await;
        }
        // The messages, late.
        tokio::time::sleep(Duration::from_millis(200)).await;
        for &stream in &streams {
            h2.finish(stream, &message).await;
        }
        let last = *streams.last().unwrap();
        let frames = h2
            .collect_until(Duration::from_secs(5), |frames| {
                frames.iter().any(|f| f.kind == raw::GOAWAY)
                    || frames
                        .iter()
                        .filter(|f| {
                            f.kind == raw::HEADERS && f.stream >= streams[0] && f.stream <= last
                        })
                        .count()
                        == streams.len()
            })
            .await;
        if let Some(goaway) = frames.iter().find(|f| f.kind == raw::GOAWAY) {
            let code = u32::from_be_bytes(goaway.payload[4..8].try_into().unwrap());
            let debug = String::from_utf8_lossy(&goaway.payload[8..]).into_owned();
            panic!(
                "round {round}, after {refused} refusals: GOAWAY with error code {code} ({debug:?})"
            );
        }
        refused += frames.iter().filter(|f| f.kind == raw::HEADERS).count();
    }
    assert_eq!(refused, 30 * MAX_CONCURRENT_STREAMS as usize);

    // The slot freed, the same connection serves a call.
    holding.release().await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    h2.open_with(next, get_room, &auth).await;
    h2.finish(next, &message).await;
    let frames = h2
        .collect_until(Duration::from_secs(5), |frames| {
            frames
                .iter()
                .any(|f| f.stream == next || f.kind == raw::GOAWAY)
        })
        .await;
    let answer = frames
        .iter()
        .find(|f| f.stream == next || f.kind == raw::GOAWAY);
    assert_eq!(
        answer.map(|f| (f.kind, f.stream)),
        Some((raw::HEADERS, next)),
        "{answer:?}"
    );
}

/// A connection that sent its first request and then stays open past the
/// first-request deadline costs nothing: the deadline timer fires once.
/// (It used to stay ready, and every such connection spun a core.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_kept_open_past_the_first_request_deadline_cost_no_cpu() {
    let binary = Binary::start(None);
    let mut clients = Vec::new();
    for _ in 0..4 {
        let mut client = RoomServiceClient::connect(format!("http://{}", binary.addr))
            .await
            .unwrap();
        let _ = client
            .get_room(authed(
                GetRoomRequest {
                    room_id: "no-such-room".into(),
                },
                &acme_token(),
            ))
            .await;
        clients.push(client);
    }
    tokio::time::sleep(FIRST_REQUEST_TIMEOUT + Duration::from_secs(1)).await;
    let before = binary.cpu_time();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let used = binary.cpu_time() - before;
    assert!(
        used < Duration::from_millis(300),
        "4 idle connections used {used:?} of CPU in 2 s"
    );
    // And they still serve.
    for client in &mut clients {
        let status = client
            .get_room(authed(
                GetRoomRequest {
                    room_id: "no-such-room".into(),
                },
                &acme_token(),
            ))
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::NotFound);
    }
}
