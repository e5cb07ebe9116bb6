//! Shared test harness: a real server on 127.0.0.1:0 with isolated state,
//! test accounts, token minting (valid and deliberately broken), and clients.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use roomservice::auth::{Keyring, Verifier};
use roomservice::domain::PublicUrl;
use roomservice::gateway::CorsOrigins;
use roomservice::grpc::pb::room_service_client::RoomServiceClient;
use roomservice::server::{self, App, Limits, Observability, WebhookSettings};
use roomservice::service::{Clock, DeliveryConfig, SessionConfig, SystemClock};
use roomservice::store::{EventStore, MemoryStore, SessionStore, Store};
use roomservice::telemetry::AccessLogLevel;
use roomservice::webhook::SigningKey;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tonic::transport::Channel;

/// An account with an explicit user_id, name and email.
pub const ACME_KEY: &str = "acme-key";
pub const ACME_SECRET: &str = "acme-secret-0123456789";
pub const ACME_USER: &str = "5f7edbb14c938bcd42944527";
/// A second key of the same account.
pub const ACME_KEY_2: &str = "acme-key-2";
pub const ACME_SECRET_2: &str = "acme-second-secret";
/// The media plane: an internal service account (`service = true`).
pub const MEDIA_KEY: &str = "media-plane";
pub const MEDIA_SECRET: &str = "media-plane-secret-5555";
/// Another account: its rooms must be invisible to Acme and vice versa.
pub const GLOBEX_KEY: &str = "globex-key";
pub const GLOBEX_SECRET: &str = "globex-secret-9876543210";

pub const KEYS_TOML: &str = r#"
[[keys]]
api_key = "acme-key"
secret = "acme-secret-0123456789"
user_id = "5f7edbb14c938bcd42944527"
name = "Acme"
email = "ops@acme.test"

[[keys]]
api_key = "acme-key-2"
secret = "acme-second-secret"
user_id = "5f7edbb14c938bcd42944527"

[[keys]]
api_key = "media-plane"
secret = "media-plane-secret-5555"
user_id = "0000000000000000000000aa"
name = "Media plane"
service = true

[[keys]]
api_key = "globex-key"
secret = "globex-secret-9876543210"
"#;

pub fn keyring() -> Keyring {
    Keyring::parse_toml(KEYS_TOML).expect("test keys parse")
}

/// A running server; shut down (gracefully) when dropped.
pub struct TestServer {
    pub addr: SocketAddr,
    pub store: Arc<dyn Store>,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

/// How a test server is set up; [`ServerOptions::memory`] is the default.
pub struct ServerOptions {
    pub store: Arc<dyn Store>,
    pub sessions: Arc<dyn SessionStore>,
    pub events: Arc<dyn EventStore>,
    pub allow_legacy_tokens: bool,
    pub cors: CorsOrigins,
    pub limits: Limits,
    pub session_config: SessionConfig,
    pub clock: Arc<dyn Clock>,
    pub sweeper: bool,
    pub webhooks: WebhookSettings,
    pub shutdown_delay: Duration,
    pub access_log: AccessLogLevel,
}

/// One signing key for every test server of this run (making RSA keys is
/// slow), webhooks allowed to reach 127.0.0.1, and retries in milliseconds
/// rather than seconds.
pub fn test_webhooks() -> WebhookSettings {
    static KEY: std::sync::OnceLock<Arc<SigningKey>> = std::sync::OnceLock::new();
    let key = KEY.get_or_init(|| Arc::new(SigningKey::generate().expect("an RSA key")));
    WebhookSettings {
        signing_key: Some(key.clone()),
        allow_private: true,
        delivery: DeliveryConfig {
            poll: Duration::from_millis(50),
            backoff_base: Duration::from_millis(100),
            backoff_max: Duration::from_secs(1),
            ..DeliveryConfig::default()
        },
        deliver: true,
    }
}

impl ServerOptions {
    /// A fresh memory store, default limits, the system clock.
    pub fn memory() -> ServerOptions {
        ServerOptions::with_store(Arc::new(MemoryStore::new()))
    }

    pub fn with_store<S: Store + SessionStore + EventStore>(store: Arc<S>) -> ServerOptions {
        ServerOptions {
            store: store.clone(),
            sessions: store.clone(),
            events: store,
            allow_legacy_tokens: false,
            cors: CorsOrigins::None,
            limits: Limits::default(),
            session_config: SessionConfig::default(),
            clock: Arc::new(SystemClock),
            sweeper: true,
            webhooks: test_webhooks(),
            shutdown_delay: Duration::ZERO,
            access_log: AccessLogLevel::default(),
        }
    }

    /// No session sweeper and no webhook delivery worker: only the calls
    /// under test touch the store, so what it sees can be counted.
    pub fn quiet<S: Store + SessionStore + EventStore>(store: Arc<S>) -> ServerOptions {
        ServerOptions {
            sweeper: false,
            webhooks: WebhookSettings {
                deliver: false,
                ..test_webhooks()
            },
            ..ServerOptions::with_store(store)
        }
    }
}

impl TestServer {
    pub async fn start() -> TestServer {
        Self::start_opts(ServerOptions::memory()).await
    }

    pub async fn start_with<S: Store + SessionStore + EventStore>(
        store: Arc<S>,
        allow_legacy_tokens: bool,
    ) -> TestServer {
        Self::start_opts(ServerOptions {
            allow_legacy_tokens,
            ..ServerOptions::with_store(store)
        })
        .await
    }

    /// A memory-store server answering CORS for `cors`.
    pub async fn start_with_cors(cors: CorsOrigins) -> TestServer {
        Self::start_opts(ServerOptions {
            cors,
            ..ServerOptions::memory()
        })
        .await
    }

    /// A memory-store server with these limits.
    pub async fn start_with_limits(limits: Limits) -> TestServer {
        Self::start_opts(ServerOptions {
            limits,
            ..ServerOptions::memory()
        })
        .await
    }

    pub async fn start_opts(options: ServerOptions) -> TestServer {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().unwrap();
        let app = App {
            store: options.store.clone(),
            verifier: Arc::new(Verifier::new(keyring(), options.allow_legacy_tokens)),
            public_url: PublicUrl::parse(&format!("http://{addr}")).unwrap(),
            cors: options.cors,
            limits: options.limits,
            sessions: options.sessions,
            events: options.events,
            session_config: options.session_config,
            clock: options.clock,
            sweeper: options.sweeper,
            webhooks: options.webhooks,
            shutdown_delay: options.shutdown_delay,
            tls: None,
            observability: Observability {
                access_log: options.access_log,
                metrics_listener: None,
            },
        };
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            server::serve(listener, app, async {
                let _ = rx.await;
            })
            .await
            .expect("server runs");
        });
        TestServer {
            addr,
            store: options.store,
            shutdown: Some(tx),
            task: Some(task),
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// An HTTP client for the REST gateway (HTTP/1.1, no proxy).
    pub fn http(&self) -> reqwest::Client {
        reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(10))
            .build()
            .expect("http client")
    }

    pub async fn channel(&self) -> Channel {
        Channel::from_shared(self.url())
            .unwrap()
            .connect()
            .await
            .expect("connect to test server")
    }

    pub async fn rooms(&self) -> RoomServiceClient<Channel> {
        RoomServiceClient::new(self.channel().await)
    }

    /// Stops accepting and waits for in-flight calls to finish.
    pub async fn stop(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            task.await.expect("server task ends cleanly");
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

pub fn now() -> i64 {
    jiff::Timestamp::now().as_second()
}

/// The claims the official SDKs mint, valid for an hour.
pub fn sdk_claims(api_key: &str) -> Value {
    json!({
        "apikey": api_key,
        "permissions": ["allow_join", "allow_mod"],
        "version": 2,
        "roles": ["crawler"],
        "iat": now(),
        "exp": now() + 3600,
    })
}

/// Signs arbitrary claims with HS256 (or another HMAC algorithm).
pub fn sign_with(alg: Algorithm, claims: &Value, secret: &str) -> String {
    jsonwebtoken::encode(
        &Header::new(alg),
        claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .unwrap()
}

pub fn sign(claims: &Value, secret: &str) -> String {
    sign_with(Algorithm::HS256, claims, secret)
}

/// A valid token for Acme.
pub fn acme_token() -> String {
    sign(&sdk_claims(ACME_KEY), ACME_SECRET)
}

pub fn globex_token() -> String {
    sign(&sdk_claims(GLOBEX_KEY), GLOBEX_SECRET)
}

/// Builds a JWT from raw JSON parts and a raw signature, for tokens no
/// library would mint (alg none, foreign algorithms).
pub fn raw_token(header: &Value, claims: &Value, signature: &str) -> String {
    let encode = |v: &Value| URL_SAFE_NO_PAD.encode(serde_json::to_vec(v).unwrap());
    format!("{}.{}.{}", encode(header), encode(claims), signature)
}

/// Wraps a message with an `authorization` value.
pub fn authed<T>(message: T, authorization: &str) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request
        .metadata_mut()
        .insert("authorization", authorization.parse().expect("ascii token"));
    request
}

/// The `roomservice` binary with no ROOMSERVICE_* variables from the
/// developer's shell: only what each test sets.
pub fn roomservice() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_roomservice"));
    for (name, _) in std::env::vars() {
        if name.starts_with("ROOMSERVICE_") {
            command.env_remove(name);
        }
    }
    command
}

/// Reads the child's stderr until every needle has appeared, in any order;
/// returns the line with the first needle. The rest of stderr keeps being
/// drained so the child never blocks on it.
pub fn wait_for_logs(child: &mut Child, needles: &[&str]) -> String {
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let mut missing: Vec<&str> = needles.to_vec();
    let mut first_line = None;
    let deadline = Instant::now() + Duration::from_secs(20);
    while !missing.is_empty() {
        assert!(Instant::now() < deadline, "{missing:?} never logged");
        let Ok(line) = rx.recv_timeout(Duration::from_millis(100)) else {
            continue;
        };
        if line.contains(needles[0]) {
            first_line = Some(line.clone());
        }
        missing.retain(|needle| !line.contains(needle));
    }
    first_line.expect("the first needle was seen")
}

/// Starts `roomservice serve` on a free port with JSON logs; returns the
/// process and the address it listens on. With `--redis-url`, returns only
/// once the store has connected, so the first call is not refused.
pub fn spawn_binary(args: &[&str]) -> (Service, String) {
    spawn_binary_with(roomservice(), args, args.contains(&"--redis-url"))
}

/// [`spawn_binary`] from a prepared command (extra environment, say).
pub fn spawn_binary_with(
    mut command: Command,
    args: &[&str],
    wait_for_redis: bool,
) -> (Service, String) {
    // Adopted at once, so that a failed wait below kills it too.
    let mut service = serve(&mut command, args);
    let needles: &[&str] = if wait_for_redis {
        // Quoted: "not connected to redis yet" appears in other lines.
        &["roomservice listening", r#""message":"connected to redis""#]
    } else {
        &["roomservice listening"]
    };
    let line = wait_for_logs(service.child_mut(), needles);
    let log: Value = serde_json::from_str(&line).expect("json log line");
    let address = log["fields"]["address"].as_str().unwrap().to_owned();
    (service, address)
}

/// `command serve` on a free port with JSON logs and `args`, its stderr
/// piped for the caller to read.
fn serve(command: &mut Command, args: &[&str]) -> Service {
    let child = command
        .args(["serve", "--listen", "127.0.0.1:0", "--log-format", "json"])
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    Service::adopt(child)
}

/// Starts `roomservice serve` on a free port with JSON logs and `args`, and
/// hands each line it writes to stderr to `forward`, on a thread of its own,
/// for as long as the process runs: for tests that wait for log lines at any
/// time, not only until the server listens ([`spawn_binary`]).
pub fn spawn_forwarding_logs(
    args: &[&str],
    mut forward: impl FnMut(String) + Send + 'static,
) -> Service {
    let mut service = serve(&mut roomservice(), args);
    let stderr = service.child_mut().stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            forward(line);
        }
    });
    service
}

/// A running `roomservice` process. Killed when dropped, so a failing test
/// never leaves one behind; [`Service::stop`] stops it gracefully instead.
pub struct Service(Option<Child>);

impl Service {
    pub fn adopt(child: Child) -> Service {
        Service(Some(child))
    }

    pub fn child_mut(&mut self) -> &mut Child {
        self.0.as_mut().expect("running")
    }

    /// SIGTERM, then the exit status.
    pub fn stop(mut self) -> std::process::ExitStatus {
        stop(self.0.take().expect("running"))
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        if let Some(mut child) = self.0.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// SIGTERM, then waits (at most 20 s) for the exit status.
pub fn stop(mut child: Child) -> std::process::ExitStatus {
    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        assert!(Instant::now() < deadline, "did not exit after SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A temporary directory, removed when dropped (also when a test panics).
pub struct TempDir(std::path::PathBuf);

impl TempDir {
    pub fn new() -> TempDir {
        static COUNTER: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("roomservice-test-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    pub fn path(&self) -> &std::path::Path {
        &self.0
    }

    /// Writes `name` in the directory; returns its path.
    pub fn write(&self, name: &str, contents: &str) -> String {
        let path = self.0.join(name);
        std::fs::write(&path, contents).unwrap();
        path.to_str().unwrap().to_owned()
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The roomId whose GetRoom a server from [`TestServer::start_holding`]
/// keeps waiting.
pub const HELD_ROOM_ID: &str = "hold-hold-hold";

/// A memory store whose GetRoom of [`HELD_ROOM_ID`] waits until released.
/// Such a call has arrived whole and is being served, so it holds a slot
/// of `--max-in-flight`: how tests fill a server.
struct HoldingStore {
    inner: Arc<MemoryStore>,
    released: tokio::sync::watch::Receiver<bool>,
}

#[async_trait::async_trait]
impl Store for HoldingStore {
    async fn create_room_once(
        &self,
        room: &roomservice::domain::Room,
        max_rooms: u64,
        key: Option<&roomservice::store::IdempotencyKey>,
    ) -> Result<roomservice::store::CreateOutcome, roomservice::store::StoreError> {
        self.inner.create_room_once(room, max_rooms, key).await
    }

    async fn get_room(
        &self,
        user_id: &roomservice::domain::UserId,
        key: &roomservice::store::RoomKey,
    ) -> Result<Option<roomservice::domain::Room>, roomservice::store::StoreError> {
        if key
            .room_id
            .as_ref()
            .is_some_and(|id| id.as_str() == HELD_ROOM_ID)
        {
            let mut released = self.released.clone();
            // Released when set, or when the holder is dropped.
            let _ = released.wait_for(|released| *released).await;
        }
        self.inner.get_room(user_id, key).await
    }

    async fn list_rooms(
        &self,
        user_id: &roomservice::domain::UserId,
        offset: usize,
        limit: usize,
    ) -> Result<(Vec<roomservice::domain::Room>, usize), roomservice::store::StoreError> {
        self.inner.list_rooms(user_id, offset, limit).await
    }

    async fn set_disabled(
        &self,
        user_id: &roomservice::domain::UserId,
        room_id: &roomservice::domain::RoomId,
        disabled: bool,
        now: jiff::Timestamp,
    ) -> Result<Option<roomservice::domain::Room>, roomservice::store::StoreError> {
        self.inner
            .set_disabled(user_id, room_id, disabled, now)
            .await
    }

    async fn ping(&self) -> Result<(), roomservice::store::StoreError> {
        self.inner.ping().await
    }
}

/// Holds slots of a server from [`TestServer::start_holding`]; dropping it
/// releases them.
pub struct Holding {
    release: tokio::sync::watch::Sender<bool>,
    calls: Vec<JoinHandle<()>>,
}

impl TestServer {
    /// A memory-store server with these limits whose GetRoom of
    /// [`HELD_ROOM_ID`] waits until the [`Holding`] releases it.
    pub async fn start_holding(limits: Limits) -> (TestServer, Holding) {
        let memory = Arc::new(MemoryStore::new());
        let (release, released) = tokio::sync::watch::channel(false);
        let store = Arc::new(HoldingStore {
            inner: memory.clone(),
            released,
        });
        let server = TestServer::start_opts(ServerOptions {
            store,
            limits,
            ..ServerOptions::with_store(memory)
        })
        .await;
        let holding = Holding {
            release,
            calls: Vec::new(),
        };
        (server, holding)
    }
}

impl Holding {
    /// Starts `n` GetRooms of [`HELD_ROOM_ID`] that wait inside `server`,
    /// and returns once it refuses a further call: with `n` its bound,
    /// every slot is then held.
    pub async fn hold(&mut self, server: &TestServer, n: usize) {
        for _ in 0..n {
            let mut client = server.rooms().await;
            self.calls.push(tokio::spawn(async move {
                let _ = client
                    .get_room(authed(
                        roomservice::grpc::pb::GetRoomRequest {
                            room_id: HELD_ROOM_ID.into(),
                        },
                        &acme_token(),
                    ))
                    .await;
            }));
        }
        let mut client = server.rooms().await;
        let give_up = Instant::now() + Duration::from_secs(5);
        loop {
            let answer = client
                .list_rooms(authed(
                    roomservice::grpc::pb::ListRoomsRequest::default(),
                    &acme_token(),
                ))
                .await;
            match answer {
                Err(status) if status.code() == tonic::Code::ResourceExhausted => return,
                _ => assert!(
                    Instant::now() < give_up,
                    "{n} held calls never filled the server"
                ),
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Lets the held calls finish (they answer NOT_FOUND), and waits for
    /// them.
    pub async fn release(mut self) {
        let _ = self.release.send(true);
        for call in self.calls.drain(..) {
            let _ = call.await;
        }
    }
}
