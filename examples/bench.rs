//! Throughput and latency benchmark (issue 10, item 1): the real
//! `roomservice` binary against a bare tonic server that answers every call
//! with a fixed room, each pinned to one CPU and one worker thread.
//!
//! ```text
//! cargo build --release --bin roomservice --example bench
//! cargo run --release --example bench -- --call get --target both            # 4 connections, 64 in flight
//! cargo run --release --example bench -- --call create --target both --redis  # own redis-server
//! cargo run --release --example bench -- --call get --settings-bytes 4096 \
//!     --target roomservice --in-flight 1 --connections 1                      # latency mode
//! cargo run --release --example bench -- --help
//! ```
//!
//! A closed loop: `--in-flight` callers, spread round-robin over
//! `--connections` HTTP/2 connections (a lean `h2` client,
//! `support/raw_grpc.rs`: requests encoded once, replies not decoded), each
//! sending its next call as soon as the last one is answered, all on one load thread (a current-thread tokio
//! runtime; `--load-threads` for more). `rest-get` uses one HTTP/1.1
//! keep-alive connection per caller (HTTP/1.1 has no multiplexing), so
//! `--connections` does not apply to it.
//!
//! Every answer's grpc-status (HTTP status for REST) is read: only OK answers
//! count toward throughput and latency; the others are counted by code and
//! one message of each is printed. Each run is `--warmup` seconds, then
//! `--duration` seconds measured: calls that start and end inside the window
//! count. Around the window the program reads `/proc/<pid>/stat` (utime +
//! stime) of the server, of the Redis it started, and of itself, and prints
//! CPU time per OK call and how busy each was.
//!
//! Targets:
//! - `roomservice`: `target/release/roomservice` (next to this example, or
//!   `--server-bin`), started as a child with `TOKIO_WORKER_THREADS=1` (which
//!   tokio's `Runtime::new()` honours) under `taskset -c <--server-cpu>`,
//!   with an API key of its own; memory store, or `--redis` (a
//!   `redis-server` this program starts on a free port and kills at the end)
//!   or `--redis-url` (keys under `bench<pid>:`, deleted at the end).
//! - `bare`: this program again (`--serve-bare`), one worker thread, same
//!   CPU: tonic's own `Server` with the generated `RoomServiceServer` and a
//!   trivial implementation (no auth, no storage) that returns a fixed room
//!   of the same shape and settings size as the one roomservice returns; a
//!   hyper HTTP/1.1 server on a second port answers any GET with that room
//!   as JSON, for `rest-get`.
//! - `both`: both started once; runs alternate bare, roomservice, bare, ...
//!   for `--rounds` rounds; prints roomservice/bare per round and the median.
//!
//! The load thread is pinned to `--load-cpu` and the Redis it starts to
//! `--redis-cpu` (both CPU 1 by default, the server on CPU 0): on a 2-core
//! machine the load generator and Redis share one core.

#[path = "support/proc_stat.rs"]
mod proc_stat;
#[path = "support/raw_grpc.rs"]
mod raw_grpc;
#[path = "support/redis_admin.rs"]
mod redis_admin;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpListener as StdListener, TcpStream as StdStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use clap::{Parser, ValueEnum};
use http_body_util::{BodyExt, Empty, Full};
use hyper_util::rt::TokioIo;
use prost::Message;
use raw_grpc::{RawCall, RawClient};
use roomservice::grpc::pb;
use roomservice::grpc::pb::room_service_client::RoomServiceClient;
use roomservice::grpc::pb::room_service_server::{RoomService, RoomServiceServer};
use serde_json::{Map, Value, json};
use tonic::metadata::{Ascii, MetadataValue};
use tonic::transport::Channel;
use tonic::{Request, Response, Status};

const API_KEY: &str = "benchkey";
const SECRET: &str = "bench-secret-not-for-production";
/// Rooms a `list` fixture holds: one default page.
const LIST_ROOMS: usize = 20;

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Call {
    /// GetRoom of one room with --settings-bytes of settings.
    Get,
    /// CreateRoom with --settings-bytes of settings, a new room each call.
    Create,
    /// ListRooms, first page of 20 rooms.
    List,
    /// ValidateRoom of one room.
    Validate,
    /// UpdateRoomStatus of one room, each caller alternating disabled/enabled.
    Status,
    /// `GET /v2/rooms/{roomId}` over HTTP/1.1 keep-alive, one connection per caller.
    RestGet,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Target {
    Roomservice,
    Bare,
    Both,
}

#[derive(Parser, Debug, Clone)]
#[command(
    about = "Closed-loop load on roomservice and on a bare tonic server: throughput, latency, server CPU per call"
)]
struct Args {
    /// The call to make.
    #[arg(long, value_enum, default_value = "get")]
    call: Call,

    /// The server(s) to load.
    #[arg(long, value_enum, default_value = "both")]
    target: Target,

    /// HTTP/2 connections the callers share, round-robin (gRPC calls only).
    #[arg(long, default_value_t = 4)]
    connections: usize,

    /// Calls in flight in total.
    #[arg(long, default_value_t = 64)]
    in_flight: usize,

    /// Seconds of load before each measured window.
    #[arg(long, default_value_t = 2)]
    warmup: u64,

    /// Seconds measured per run.
    #[arg(long, default_value_t = 10)]
    duration: u64,

    /// With --target both: how many bare + roomservice pairs to run.
    #[arg(long, default_value_t = 3)]
    rounds: usize,

    /// Size of the room's settings (autoStartConfig) as JSON, in bytes; 0 for none.
    #[arg(long, default_value_t = 300)]
    settings_bytes: usize,

    /// Start a redis-server (from PATH) on a free port for roomservice.
    #[arg(long, conflicts_with = "redis_url")]
    redis: bool,

    /// Store roomservice's rooms in this Redis, under the prefix `bench<pid>:`.
    #[arg(long, value_name = "URL")]
    redis_url: Option<String>,

    /// The roomservice binary [default: `roomservice` next to this example's
    /// directory, i.e. target/release/roomservice].
    #[arg(long, value_name = "PATH")]
    server_bin: Option<PathBuf>,

    /// CPU (taskset list) the server runs on.
    #[arg(long, default_value = "0")]
    server_cpu: String,

    /// CPU (taskset list) the load generator runs on; "none" leaves it unpinned.
    #[arg(long, default_value = "1")]
    load_cpu: String,

    /// CPU (taskset list) of the redis-server that --redis starts.
    #[arg(long, default_value = "1")]
    redis_cpu: String,

    /// Run the servers, the Redis started here and the load generator at this
    /// nice level, and their autogroup too where the kernel has autogroups
    /// (negative needs root): on a machine busy with other work, e.g. -15
    /// keeps that work from taking most of the benchmark's CPUs.
    #[arg(long, default_value_t = 0, allow_hyphen_values = true)]
    nice: i32,

    /// Threads of the load generator: 1 is a current-thread runtime.
    #[arg(long, default_value_t = 1)]
    load_threads: usize,

    /// Record the server with `perf record -g` during the measured window of
    /// the first roomservice run, into this file (that run is slowed by it).
    #[arg(long, value_name = "FILE")]
    perf: Option<PathBuf>,

    /// Internal: serve the bare baseline and print its addresses.
    #[arg(long, hide = true)]
    serve_bare: bool,
}

fn main() -> ExitCode {
    let args = Args::parse();
    if args.serve_bare {
        return bare::serve(args.settings_bytes);
    }
    if args.in_flight == 0
        || args.connections == 0
        || args.duration == 0
        || args.rounds == 0
        || args.load_threads == 0
    {
        eprintln!(
            "--in-flight, --connections, --duration, --rounds and --load-threads must be positive"
        );
        return ExitCode::from(2);
    }
    let machine = machine();
    // Before any other thread exists: they inherit the mask and the nice level.
    if args.load_cpu != "none" {
        pin(std::process::id(), &args.load_cpu);
    }
    if args.nice != 0 {
        renice(std::process::id(), args.nice);
        // With sched_autogroup_enabled, nice only ranks tasks within their
        // autogroup (session); the group as a whole competes with others at
        // the group's own nice. This program, its servers and Redis share one.
        if std::path::Path::new("/proc/self/autogroup").exists()
            && let Err(e) = std::fs::write("/proc/self/autogroup", args.nice.to_string())
        {
            eprintln!("warning: cannot set the autogroup's nice level: {e}");
        }
    }
    let runtime = if args.load_threads == 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(args.load_threads)
            .enable_all()
            .build()
    }
    .expect("a runtime");
    match runtime.block_on(run(args, machine)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bench: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `taskset -a -p -c CPU PID`: every thread of PID onto CPU.
fn pin(pid: u32, cpu: &str) {
    let status = Command::new("taskset")
        .args(["-a", "-p", "-c", cpu, &pid.to_string()])
        .stdout(Stdio::null())
        .status();
    if !matches!(status, Ok(s) if s.success()) {
        eprintln!("warning: cannot pin pid {pid} to CPU {cpu} with taskset; running unpinned");
    }
}

fn renice(pid: u32, nice: i32) {
    let status = Command::new("renice")
        .args(["-n", &nice.to_string(), "-p", &pid.to_string()])
        .stdout(Stdio::null())
        .status();
    if !matches!(status, Ok(s) if s.success()) {
        eprintln!("warning: cannot renice pid {pid} to {nice}");
    }
}

/// `nice -n N taskset -c CPU program`: a child on one CPU at the nice level.
fn pinned(cpu: &str, nice: i32, program: impl AsRef<std::ffi::OsStr>) -> Command {
    let mut command = Command::new("nice");
    command
        .args(["-n", &nice.to_string(), "taskset", "-c", cpu])
        .arg(program);
    command
}

async fn run(args: Args, machine: String) -> Result<(), String> {
    let ticks = proc_stat::clock_ticks();
    let settings = settings(args.settings_bytes);
    let mut redis = None;
    let mut redis_url = args.redis_url.clone();
    let prefix = format!("bench{}:", std::process::id());
    let wants_roomservice = matches!(args.target, Target::Roomservice | Target::Both);
    if args.redis && wants_roomservice {
        let server = RedisProcess::start(&args.redis_cpu, args.nice)?;
        redis_url = Some(server.url());
        redis = Some(server);
    }

    println!("machine:   {machine}");
    let mut targets: Vec<Server> = Vec::new();
    if matches!(args.target, Target::Bare | Target::Both) {
        targets.push(Server::bare(&args)?);
    }
    if wants_roomservice {
        targets.push(Server::roomservice(&args, redis_url.as_deref(), &prefix)?);
    }
    let store = match (&redis, &args.redis_url) {
        (Some(r), _) => format!("redis {} (started here, CPU {})", r.url(), args.redis_cpu),
        (None, Some(url)) => format!("redis {url}, prefix {prefix}"),
        (None, None) => "memory".to_owned(),
    };
    println!(
        "call:      {:?}, settings {} B, {} in flight over {}, {} s warm-up + {} s measured per run",
        args.call,
        args.settings_bytes,
        args.in_flight,
        if args.call == Call::RestGet {
            format!(
                "{} HTTP/1.1 keep-alive connections (one per caller)",
                args.in_flight
            )
        } else {
            format!("{} HTTP/2 connections", args.connections)
        },
        args.warmup,
        args.duration
    );
    println!(
        "load:      {} load thread(s), CPU {}; servers: 1 worker thread, CPU {}; nice {}; roomservice store: {store}",
        args.load_threads, args.load_cpu, args.server_cpu, args.nice
    );

    let token: MetadataValue<Ascii> = mint()?.parse().map_err(|e| format!("token: {e}"))?;
    let mut fixtures = Vec::new();
    for target in &targets {
        let fixture = Fixture::prepare(&args, target, &token, &settings).await?;
        println!(
            "{:<12} pid {}, {} ({}), response {} B",
            target.name,
            target.child.id(),
            target.describe,
            target.grpc,
            fixture.response_bytes
        );
        fixtures.push(fixture);
    }
    println!();
    println!(
        "{:<12} {:>5} {:>10} {:>8} {:>8} {:>8} {:>13} {:>7} {:>11} {:>11} {:>8}",
        "target",
        "round",
        "ok/s",
        "p50 ms",
        "p99 ms",
        "p99.9 ms",
        "server us/ok",
        "busy",
        "redis us/ok",
        "load us/ok",
        "errors"
    );

    let rounds = if args.target == Target::Both {
        args.rounds
    } else {
        1
    };
    let mut results: Vec<Vec<Measured>> = vec![Vec::new(); targets.len()];
    let mut errors: BTreeMap<String, String> = BTreeMap::new();
    let mut perf = args.perf.clone();
    for round in 1..=rounds {
        for (i, (target, fixture)) in targets.iter().zip(&fixtures).enumerate() {
            let record = if target.name == "roomservice" {
                perf.take()
            } else {
                None
            };
            let measured = measure(
                &args,
                target,
                fixture,
                &token,
                &settings,
                ticks,
                redis
                    .as_ref()
                    .filter(|_| target.name == "roomservice")
                    .map(|r| r.child.id()),
                record,
            )
            .await;
            measured.print(target.name, round);
            for (code, message) in &measured.examples {
                errors
                    .entry(format!("{} {code}", target.name))
                    .or_insert_with(|| message.clone());
            }
            results[i].push(measured);
        }
    }
    for (what, message) in &errors {
        println!("  e.g. {what}: {message}");
    }

    if targets.len() == 2 {
        println!();
        let (bare, real) = (&results[0], &results[1]);
        let mut throughput = Vec::new();
        let mut cpu = Vec::new();
        for (round, (b, r)) in bare.iter().zip(real).enumerate() {
            let t = r.throughput() / b.throughput().max(f64::MIN_POSITIVE);
            let c = r.server_cpu_per_ok() / b.server_cpu_per_ok().max(f64::MIN_POSITIVE);
            println!(
                "round {}: roomservice/bare throughput {:.2}x, server CPU per call {:.2}x",
                round + 1,
                t,
                c
            );
            throughput.push(t);
            cpu.push(c);
        }
        println!(
            "median:  roomservice/bare throughput {:.2}x, server CPU per call {:.2}x",
            median(&mut throughput),
            median(&mut cpu)
        );
    }

    drop(targets);
    if let Some(url) = args.redis_url.as_deref().filter(|_| wants_roomservice) {
        match cleanup(url, &prefix).await {
            Ok(n) => println!("cleanup:   deleted {n} keys with prefix {prefix:?}"),
            Err(e) => eprintln!("cleanup failed, delete {prefix}* by hand: {e}"),
        }
    }
    drop(redis);
    Ok(())
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    let n = values.len();
    if n == 0 {
        return f64::NAN;
    }
    if n % 2 == 1 {
        values[n / 2]
    } else {
        (values[n / 2 - 1] + values[n / 2]) / 2.0
    }
}

async fn cleanup(url: &str, prefix: &str) -> Result<usize, String> {
    let client = redis::Client::open(url).map_err(|e| e.to_string())?;
    let mut admin = client
        .get_multiplexed_async_connection()
        .await
        .map_err(|e| e.to_string())?;
    redis_admin::delete_keys_with_prefix(&mut admin, prefix)
        .await
        .map_err(|e| e.to_string())
}

fn machine() -> String {
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find_map(|l| l.strip_prefix("model name"))
                .map(|m| m.trim_start_matches([' ', '\t', ':']).to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".to_owned());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let memory = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|kb| kb.trim().trim_end_matches(" kB").parse::<u64>().ok())
        })
        .map_or(String::new(), |kb| {
            format!(", {:.0} GiB", kb as f64 / 1024.0 / 1024.0)
        });
    format!("{model}, {cores} CPUs{memory}, kernel {}", kernel())
}

fn kernel() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_owned())
        .unwrap_or_else(|_| "unknown".to_owned())
}

/// A room's settings: a realistic autoStartConfig, padded to `bytes` of JSON.
fn settings(bytes: usize) -> Option<Map<String, Value>> {
    if bytes == 0 {
        return None;
    }
    let mut map = json!({
        "recording": {
            "config": {
                "layout": {"type": "GRID", "priority": "SPEAKER", "gridSize": 4},
                "theme": "DARK",
                "mode": "video-and-audio",
                "quality": "high",
                "orientation": "landscape"
            },
            "awsDirPath": "/meetings/recordings/"
        },
        "transcription": {"enabled": true, "summary": {"enabled": false}},
        "pad": ""
    });
    let base = map.to_string().len();
    if bytes < base {
        map = json!({ "pad": "" });
    }
    let base = map.to_string().len();
    let pad = "x".repeat(bytes.saturating_sub(base));
    map["pad"] = Value::String(pad);
    match map {
        Value::Object(map) => Some(map),
        _ => unreachable!(),
    }
}

fn to_struct(map: &Map<String, Value>) -> prost_types::Struct {
    fn value(v: &Value) -> prost_types::Value {
        use prost_types::value::Kind;
        let kind = match v {
            Value::Null => Kind::NullValue(0),
            Value::Bool(b) => Kind::BoolValue(*b),
            Value::Number(n) => Kind::NumberValue(n.as_f64().unwrap_or_default()),
            Value::String(s) => Kind::StringValue(s.clone()),
            Value::Array(items) => Kind::ListValue(prost_types::ListValue {
                values: items.iter().map(value).collect(),
            }),
            Value::Object(map) => Kind::StructValue(to_struct(map)),
        };
        prost_types::Value { kind: Some(kind) }
    }
    prost_types::Struct {
        fields: map.iter().map(|(k, v)| (k.clone(), value(v))).collect(),
    }
}

/// The claims the official SDKs mint, valid for an hour.
fn mint() -> Result<String, String> {
    let now = jiff::Timestamp::now().as_second();
    let claims = json!({
        "apikey": API_KEY,
        "permissions": ["allow_join", "allow_mod"],
        "version": 2,
        "roles": ["crawler"],
        "iat": now,
        "exp": now + 3600,
    });
    jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .map_err(|e| format!("cannot sign a token: {e}"))
}

fn free_port() -> Result<u16, String> {
    StdListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| format!("no free port: {e}"))
}

fn wait_for_port(addr: SocketAddr, child: &mut Child, what: &str) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if StdStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return Ok(());
        }
        if let Ok(Some(status)) = child.try_wait() {
            return Err(format!("{what} exited at startup: {status}"));
        }
        if Instant::now() > deadline {
            return Err(format!("{what} did not listen on {addr} within 20 s"));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A server under test: a child process, killed when dropped.
struct Server {
    name: &'static str,
    describe: String,
    child: Child,
    grpc: SocketAddr,
    http: SocketAddr,
}

impl Server {
    fn roomservice(args: &Args, redis_url: Option<&str>, prefix: &str) -> Result<Server, String> {
        let bin = match &args.server_bin {
            Some(bin) => bin.clone(),
            None => std::env::current_exe()
                .map_err(|e| format!("cannot find this program: {e}"))?
                .parent()
                .and_then(Path::parent)
                .map(|dir| dir.join("roomservice"))
                .ok_or("cannot find the target directory")?,
        };
        if !bin.is_file() {
            return Err(format!(
                "{} not found: build it with `cargo build --release --bin roomservice`, or pass --server-bin",
                bin.display()
            ));
        }
        let port = free_port()?;
        let addr: SocketAddr = ([127, 0, 0, 1], port).into();
        let mut command = pinned(&args.server_cpu, args.nice, &bin);
        command
            .args(["--listen", &addr.to_string()])
            .args(["--keys", &format!("{API_KEY}:{SECRET}")])
            .args(["--max-rooms-per-account", "1000000000"])
            .args(["--max-in-flight", &args.in_flight.max(256).to_string()])
            .args(["--log", "error"])
            .env("TOKIO_WORKER_THREADS", "1")
            .env_remove("ROOMSERVICE_REDIS_URL")
            .stdin(Stdio::null())
            .stdout(Stdio::null());
        if let Some(url) = redis_url {
            command.args(["--redis-url", url]);
            if args.redis_url.is_some() {
                command.args(["--redis-prefix", prefix]);
            }
        }
        let mut child = command
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", bin.display()))?;
        wait_for_port(addr, &mut child, "roomservice")?;
        Ok(Server {
            name: "roomservice",
            describe: format!(
                "{}, {}",
                bin.display(),
                if redis_url.is_some() {
                    "redis store"
                } else {
                    "memory store"
                }
            ),
            child,
            grpc: addr,
            http: addr,
        })
    }

    fn bare(args: &Args) -> Result<Server, String> {
        let me = std::env::current_exe().map_err(|e| format!("cannot find this program: {e}"))?;
        let mut child = pinned(&args.server_cpu, args.nice, &me)
            .arg("--serve-bare")
            .args(["--settings-bytes", &args.settings_bytes.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot start the bare server: {e}"))?;
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("piped"))
            .read_line(&mut line)
            .map_err(|e| format!("bare server: {e}"))?;
        let mut parts = line.split_whitespace();
        let (Some(grpc), Some(http)) = (
            parts.next().and_then(|a| a.parse().ok()),
            parts.next().and_then(|a| a.parse().ok()),
        ) else {
            let _ = child.kill();
            return Err(format!("bare server said {line:?}"));
        };
        Ok(Server {
            name: "bare",
            describe: "tonic Server + trivial RoomService, hyper HTTP/1.1 for REST".to_owned(),
            child,
            grpc,
            http,
        })
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

struct RedisProcess {
    child: Child,
    port: u16,
    dir: PathBuf,
}

impl RedisProcess {
    fn start(cpu: &str, nice: i32) -> Result<RedisProcess, String> {
        let port = free_port()?;
        let dir = std::env::temp_dir().join(format!("bench-redis-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let mut child = pinned(cpu, nice, "redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(&dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot start redis-server (is it on PATH?): {e}"))?;
        wait_for_port(([127, 0, 0, 1], port).into(), &mut child, "redis-server")?;
        Ok(RedisProcess { child, port, dir })
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }
}

impl Drop for RedisProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// What the calls of one target need: connections and the room(s) to read.
struct Fixture {
    /// The connections, for the measured calls.
    raw_clients: Vec<RawClient>,
    room_id: String,
    response_bytes: usize,
}

impl Fixture {
    async fn prepare(
        args: &Args,
        target: &Server,
        token: &MetadataValue<Ascii>,
        settings: &Option<Map<String, Value>>,
    ) -> Result<Fixture, String> {
        let mut clients = Vec::new();
        let mut raw_clients = Vec::new();
        for _ in 0..args.connections {
            let channel = Channel::from_shared(format!("http://{}", target.grpc))
                .expect("an http URL")
                .connect()
                .await
                .map_err(|e| format!("cannot connect to {}: {e}", target.grpc))?;
            clients.push(RoomServiceClient::new(channel));
            raw_clients.push(RawClient::connect(&target.grpc.to_string()).await?);
        }
        let create = || {
            let mut request = Request::new(pb::CreateRoomRequest {
                auto_start_config: settings.as_ref().map(to_struct),
                ..Default::default()
            });
            request
                .metadata_mut()
                .insert("authorization", token.clone());
            request
        };
        // The store may still be connecting: retry for a while.
        let deadline = Instant::now() + Duration::from_secs(15);
        let room = loop {
            match clients[0].clone().create_room(create()).await {
                Ok(room) => break room.into_inner(),
                Err(status) if Instant::now() < deadline => {
                    let _ = status;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(status) => {
                    return Err(format!(
                        "{}: cannot create a room: {:?} {}",
                        target.name,
                        status.code(),
                        status.message()
                    ));
                }
            }
        };
        if args.call == Call::List {
            for _ in 1..LIST_ROOMS {
                clients[0]
                    .clone()
                    .create_room(create())
                    .await
                    .map_err(|s| format!("{}: create: {s:?}", target.name))?;
            }
        }
        let mut fixture = Fixture {
            raw_clients,
            room_id: room.room_id,
            response_bytes: 0,
        };
        // One call of the kind measured, to check it works, that its answer
        // is the message the method returns (the measured calls do not
        // decode theirs), and to size it.
        let mut caller = Caller::new(args.call, &fixture, 0, target, token, settings);
        if let Caller::Grpc {
            client,
            requests,
            token,
            ..
        } = &mut caller
        {
            let reply = client
                .call(&requests[0], token)
                .await
                .map_err(|s| format!("{}: {:?}: {}", target.name, s.code(), s.message()))?;
            check_reply(args.call, &reply).map_err(|e| format!("{}: {e}", target.name))?;
        }
        fixture.response_bytes = caller
            .call()
            .await
            .map_err(|(code, message)| format!("{}: {code}: {message}", target.name))?;
        Ok(fixture)
    }
}

/// Decodes a measured call's answer as the message its method returns.
fn check_reply(call: Call, reply: &[u8]) -> Result<(), String> {
    let decoded = match call {
        Call::Get | Call::Create | Call::Status | Call::Validate => {
            pb::Room::decode(reply).map(|_| ())
        }
        Call::List => pb::ListRoomsResponse::decode(reply).map(|_| ()),
        Call::RestGet => Ok(()),
    };
    decoded.map_err(|e| format!("the answer is not the method's message: {e}"))
}

/// One caller's connection and the request it repeats.
enum Caller {
    Grpc {
        client: RawClient,
        token: http::HeaderValue,
        /// The requests this caller sends, in turn (two for `status`, which
        /// alternates disabled/enabled so that every call writes).
        requests: Vec<RawCall>,
        next: usize,
    },
    Rest {
        addr: SocketAddr,
        path: String,
        token: String,
        sender: Option<hyper::client::conn::http1::SendRequest<Empty<Bytes>>>,
    },
}

type Failure = (String, String);

impl Caller {
    fn new(
        call: Call,
        fixture: &Fixture,
        index: usize,
        target: &Server,
        token: &MetadataValue<Ascii>,
        settings: &Option<Map<String, Value>>,
    ) -> Caller {
        if call == Call::RestGet {
            return Caller::Rest {
                addr: target.http,
                path: format!("/v2/rooms/{}", fixture.room_id),
                token: token.to_str().expect("ASCII").to_owned(),
                sender: None,
            };
        }
        let room_id = fixture.room_id.clone();
        let requests = match call {
            Call::Get => vec![RawCall::new("GetRoom", &pb::GetRoomRequest { room_id })],
            Call::Validate => vec![RawCall::new(
                "ValidateRoom",
                &pb::ValidateRoomRequest { room_id },
            )],
            Call::Create => vec![RawCall::new(
                "CreateRoom",
                &pb::CreateRoomRequest {
                    auto_start_config: settings.as_ref().map(to_struct),
                    ..Default::default()
                },
            )],
            Call::List => vec![RawCall::new("ListRooms", &pb::ListRoomsRequest::default())],
            Call::Status => ["disabled", "enabled"]
                .into_iter()
                .map(|status| {
                    RawCall::new(
                        "UpdateRoomStatus",
                        &pb::UpdateRoomStatusRequest {
                            room_id: room_id.clone(),
                            status: status.to_owned(),
                        },
                    )
                })
                .collect(),
            Call::RestGet => unreachable!("a REST caller"),
        };
        Caller::Grpc {
            client: fixture.raw_clients[index % fixture.raw_clients.len()].clone(),
            token: http::HeaderValue::from_bytes(token.as_bytes()).expect("a header value"),
            requests,
            next: 0,
        }
    }

    /// One call: the encoded size of an OK answer, or the code and message.
    async fn call(&mut self) -> Result<usize, Failure> {
        match self {
            Caller::Grpc {
                client,
                token,
                requests,
                next,
            } => {
                let request = &requests[*next % requests.len()];
                *next += 1;
                client
                    .call(request, token)
                    .await
                    .map(|reply| reply.len())
                    .map_err(|s| (format!("{:?}", s.code()), s.message().to_owned()))
            }
            Caller::Rest {
                addr,
                path,
                token,
                sender,
            } => {
                if sender.as_ref().is_none_or(|s| s.is_closed()) {
                    let stream = tokio::net::TcpStream::connect(*addr)
                        .await
                        .map_err(|e| ("connect".to_owned(), e.to_string()))?;
                    let _ = stream.set_nodelay(true);
                    let (s, connection) =
                        hyper::client::conn::http1::handshake(TokioIo::new(stream))
                            .await
                            .map_err(|e| ("handshake".to_owned(), e.to_string()))?;
                    tokio::spawn(connection);
                    *sender = Some(s);
                }
                let s = sender.as_mut().expect("connected");
                s.ready()
                    .await
                    .map_err(|e| ("connection".to_owned(), e.to_string()))?;
                let request = http::Request::get(path.as_str())
                    .header(http::header::HOST, addr.to_string())
                    .header(http::header::AUTHORIZATION, token.as_str())
                    .body(Empty::<Bytes>::new())
                    .expect("a request");
                let response = s
                    .send_request(request)
                    .await
                    .map_err(|e| ("request".to_owned(), e.to_string()))?;
                let status = response.status();
                let body = response
                    .into_body()
                    .collect()
                    .await
                    .map_err(|e| ("body".to_owned(), e.to_string()))?
                    .to_bytes();
                if status == http::StatusCode::OK {
                    Ok(body.len())
                } else {
                    Err((
                        format!("HTTP {}", status.as_u16()),
                        String::from_utf8_lossy(&body[..body.len().min(300)]).into_owned(),
                    ))
                }
            }
        }
    }
}

#[derive(Clone, Copy)]
struct Cpu {
    server: f64,
    redis: f64,
    load: f64,
    /// All work on the server's CPU, and what the hypervisor stole from it.
    core_busy: f64,
    core_steal: f64,
    /// All work on the load generator's CPU.
    load_core_busy: f64,
}

impl Cpu {
    fn read(
        server: u32,
        redis: Option<u32>,
        core: Option<usize>,
        load_core: Option<usize>,
        ticks: f64,
    ) -> Cpu {
        let (core_busy, core_steal) = proc_stat::core_seconds(core, ticks);
        let (load_core_busy, _) = proc_stat::core_seconds(load_core, ticks);
        Cpu {
            server: proc_stat::cpu_seconds(server, ticks),
            redis: redis.map_or(f64::NAN, |pid| proc_stat::cpu_seconds(pid, ticks)),
            load: proc_stat::cpu_seconds(std::process::id(), ticks),
            core_busy,
            core_steal,
            load_core_busy,
        }
    }
}

#[derive(Default)]
struct Tally {
    ok: Vec<u32>,
    errors: BTreeMap<String, u64>,
    examples: BTreeMap<String, String>,
}

/// What one run measured.
#[derive(Clone)]
struct Measured {
    window: Duration,
    /// Latencies of the OK calls, sorted, in microseconds.
    ok: Vec<u32>,
    errors: BTreeMap<String, u64>,
    examples: BTreeMap<String, String>,
    server_cpu: f64,
    redis_cpu: f64,
    load_cpu: f64,
    /// CPU time others (not the server) used on the server's CPU.
    others_on_core: f64,
    steal: f64,
    /// CPU time others (not this program, not Redis) used on the load CPU.
    others_on_load_core: f64,
}

#[allow(clippy::too_many_arguments)]
async fn measure(
    args: &Args,
    target: &Server,
    fixture: &Fixture,
    token: &MetadataValue<Ascii>,
    settings: &Option<Map<String, Value>>,
    ticks: f64,
    redis_pid: Option<u32>,
    perf: Option<PathBuf>,
) -> Measured {
    let start = tokio::time::Instant::now();
    let measured_from = start + Duration::from_secs(args.warmup);
    let end = measured_from + Duration::from_secs(args.duration);
    let server_pid = target.child.id();
    let core: Option<usize> = args.server_cpu.parse().ok();
    let load_core: Option<usize> = args.load_cpu.parse().ok();
    let mut callers = Vec::with_capacity(args.in_flight);
    for i in 0..args.in_flight {
        let mut caller = Caller::new(args.call, fixture, i, target, token, settings);
        callers.push(tokio::spawn(async move {
            let mut tally = Tally::default();
            loop {
                let sent = tokio::time::Instant::now();
                if sent >= end {
                    return tally;
                }
                let answer = caller.call().await;
                let done = tokio::time::Instant::now();
                let counted = sent >= measured_from && done <= end;
                match answer {
                    Ok(_) if counted => {
                        let micros = (done - sent).as_micros();
                        tally.ok.push(u32::try_from(micros).unwrap_or(u32::MAX));
                    }
                    Ok(_) => {}
                    Err((code, message)) => {
                        if counted {
                            tally.examples.entry(code.clone()).or_insert(message);
                            *tally.errors.entry(code).or_default() += 1;
                        }
                        // A broken connection would otherwise spin.
                        tokio::time::sleep(Duration::from_millis(1)).await;
                    }
                }
            }
        }));
    }
    let duration = Duration::from_secs(args.duration);
    let sampler = tokio::spawn(async move {
        tokio::time::sleep_until(measured_from).await;
        let before = Cpu::read(server_pid, redis_pid, core, load_core, ticks);
        let began = Instant::now();
        let recorder = perf.and_then(|file| {
            Command::new("perf")
                .args(["record", "-g", "-p", &server_pid.to_string(), "-o"])
                .arg(&file)
                .args(["--", "sleep", &duration.as_secs().to_string()])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .map_err(|e| eprintln!("cannot run perf record: {e}"))
                .ok()
        });
        tokio::time::sleep_until(end).await;
        let after = Cpu::read(server_pid, redis_pid, core, load_core, ticks);
        let window = began.elapsed();
        if let Some(mut recorder) = recorder {
            let _ = tokio::task::spawn_blocking(move || recorder.wait()).await;
        }
        (before, after, window)
    });
    let mut tally = Tally::default();
    for caller in callers {
        let t = caller.await.expect("a caller does not panic");
        tally.ok.extend(t.ok);
        for (code, n) in t.errors {
            *tally.errors.entry(code).or_default() += n;
        }
        for (code, message) in t.examples {
            tally.examples.entry(code).or_insert(message);
        }
    }
    let (before, after, window) = sampler.await.expect("the sampler does not panic");
    tally.ok.sort_unstable();
    Measured {
        window,
        ok: tally.ok,
        errors: tally.errors,
        examples: tally.examples,
        server_cpu: after.server - before.server,
        redis_cpu: after.redis - before.redis,
        load_cpu: after.load - before.load,
        others_on_core: (after.core_busy - before.core_busy) - (after.server - before.server),
        steal: after.core_steal - before.core_steal,
        others_on_load_core: (after.load_core_busy - before.load_core_busy)
            - (after.load - before.load)
            - (after.redis - before.redis).max(0.0),
    }
}

impl Measured {
    fn throughput(&self) -> f64 {
        self.ok.len() as f64 / self.window.as_secs_f64()
    }

    fn server_cpu_per_ok(&self) -> f64 {
        self.server_cpu / self.ok.len().max(1) as f64
    }

    /// Nearest-rank percentile of the OK calls' latencies.
    fn percentile(&self, p: f64) -> Option<Duration> {
        if self.ok.is_empty() {
            return None;
        }
        let rank = ((p * self.ok.len() as f64).ceil() as usize).clamp(1, self.ok.len());
        Some(Duration::from_micros(u64::from(self.ok[rank - 1])))
    }

    fn print(&self, name: &str, round: usize) {
        let ms = |p: f64| {
            self.percentile(p).map_or("n/a".to_owned(), |d| {
                format!("{:.3}", d.as_secs_f64() * 1e3)
            })
        };
        let per_ok = |cpu: f64| {
            if cpu.is_nan() || self.ok.is_empty() {
                "-".to_owned()
            } else {
                format!("{:.1}", cpu * 1e6 / self.ok.len() as f64)
            }
        };
        let errors: u64 = self.errors.values().sum();
        let errors = if errors == 0 {
            "0".to_owned()
        } else {
            let parts: Vec<String> = self
                .errors
                .iter()
                .map(|(c, n)| format!("{c}:{n}"))
                .collect();
            parts.join(",")
        };
        let busy = self.server_cpu / self.window.as_secs_f64() * 100.0;
        let secs = self.window.as_secs_f64();
        let load_busy = self.load_cpu / secs * 100.0;
        let others = (self.others_on_core / secs * 100.0).max(0.0);
        let steal = self.steal / secs * 100.0;
        let load_others = (self.others_on_load_core / secs * 100.0).max(0.0);
        println!(
            "{:<12} {:>5} {:>10.0} {:>8} {:>8} {:>8} {:>13} {:>6.0}% {:>11} {:>11} {:>8}   (load busy {:.0}%, others on its CPU {:.0}%; others on the server's CPU {:.0}%, steal {:.0}%)",
            name,
            round,
            self.throughput(),
            ms(0.5),
            ms(0.99),
            ms(0.999),
            per_ok(self.server_cpu),
            busy,
            per_ok(self.redis_cpu),
            per_ok(self.load_cpu),
            errors,
            load_busy,
            load_others,
            others,
            steal
        );
    }
}

/// The baseline: tonic's own server, a trivial RoomService, one worker.
mod bare {
    use super::*;

    struct Bare {
        room: pb::Room,
    }

    #[tonic::async_trait]
    impl RoomService for Bare {
        async fn create_room(
            &self,
            _: Request<pb::CreateRoomRequest>,
        ) -> Result<Response<pb::Room>, Status> {
            Ok(Response::new(self.room.clone()))
        }

        async fn get_room(
            &self,
            _: Request<pb::GetRoomRequest>,
        ) -> Result<Response<pb::Room>, Status> {
            Ok(Response::new(self.room.clone()))
        }

        async fn list_rooms(
            &self,
            _: Request<pb::ListRoomsRequest>,
        ) -> Result<Response<pb::ListRoomsResponse>, Status> {
            Ok(Response::new(pb::ListRoomsResponse {
                page_info: Some(pb::PageInfo {
                    current_page: 1,
                    per_page: 20,
                    last_page: 1,
                    total: LIST_ROOMS as i64,
                }),
                data: vec![self.room.clone(); LIST_ROOMS],
            }))
        }

        async fn validate_room(
            &self,
            _: Request<pb::ValidateRoomRequest>,
        ) -> Result<Response<pb::Room>, Status> {
            Ok(Response::new(self.room.clone()))
        }

        async fn deactivate_room(
            &self,
            _: Request<pb::DeactivateRoomRequest>,
        ) -> Result<Response<pb::Room>, Status> {
            Ok(Response::new(self.room.clone()))
        }

        async fn update_room_status(
            &self,
            _: Request<pb::UpdateRoomStatusRequest>,
        ) -> Result<Response<pb::Room>, Status> {
            Ok(Response::new(self.room.clone()))
        }
    }

    const ROOM_ID: &str = "b3nc-hm4r-k001";
    const USER_ID: &str = "9a535cbfa5ba668debd6d5c5";
    const ID: &str = "6b0972a312c07a7bfca4e5d2";
    const AT: &str = "2026-01-01T12:00:00.000Z";

    /// Shaped as roomservice's answer for a room made by `Fixture::prepare`.
    fn room(base: &str, settings_bytes: usize) -> pb::Room {
        pb::Room {
            room_id: ROOM_ID.to_owned(),
            user_id: USER_ID.to_owned(),
            created_at: AT.to_owned(),
            updated_at: AT.to_owned(),
            id: ID.to_owned(),
            links: Some(pb::Links {
                get_room: format!("{base}/v2/rooms/{ROOM_ID}"),
                get_session: format!("{base}/v2/sessions/"),
            }),
            auto_start_config: settings(settings_bytes).as_ref().map(to_struct),
            ..Default::default()
        }
    }

    /// Shaped as roomservice's `GET /v2/rooms/{roomId}` body.
    fn room_json(base: &str, settings_bytes: usize) -> Bytes {
        let mut body = json!({
            "roomId": ROOM_ID,
            "customRoomId": null,
            "user": {"id": USER_ID, "name": null, "email": null, "discontinuedReason": null},
            "disabled": false,
            "createdAt": AT,
            "updatedAt": AT,
            "id": ID,
            "links": {
                "get_room": format!("{base}/v2/rooms/{ROOM_ID}"),
                "get_session": format!("{base}/v2/sessions/"),
            },
        });
        if let Some(settings) = settings(settings_bytes) {
            body["autoStartConfig"] = Value::Object(settings);
        }
        Bytes::from(body.to_string())
    }

    pub fn serve(settings_bytes: usize) -> ExitCode {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("a runtime");
        runtime.block_on(async move {
            let grpc = tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .expect("bind");
            let http = tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .expect("bind");
            let grpc_addr = grpc.local_addr().expect("bound");
            let http_addr = http.local_addr().expect("bound");
            let base = format!("http://{grpc_addr}");
            let room = room(&base, settings_bytes);
            let body = room_json(&base, settings_bytes);
            println!("{grpc_addr} {http_addr}");
            // The parent reads one line; then stdout goes nowhere.
            use std::io::Write;
            let _ = std::io::stdout().flush();

            tokio::spawn(async move {
                loop {
                    let Ok((stream, _)) = http.accept().await else {
                        continue;
                    };
                    let _ = stream.set_nodelay(true);
                    let body = body.clone();
                    tokio::spawn(async move {
                        let service = hyper::service::service_fn(move |_request| {
                            let body = body.clone();
                            async move {
                                let response = http::Response::builder()
                                    .header(http::header::CONTENT_TYPE, "application/json")
                                    .body(Full::new(body))
                                    .expect("a response");
                                Ok::<_, std::convert::Infallible>(response)
                            }
                        });
                        let _ = hyper::server::conn::http1::Builder::new()
                            .serve_connection(TokioIo::new(stream), service)
                            .await;
                    });
                }
            });

            let incoming = async_stream_of(grpc);
            tonic::transport::Server::builder()
                .add_service(RoomServiceServer::new(Bare { room }))
                .serve_with_incoming(incoming)
                .await
                .expect("the bare server runs");
        });
        ExitCode::SUCCESS
    }

    /// Accepted connections with TCP_NODELAY, as roomservice sets it.
    fn async_stream_of(
        listener: tokio::net::TcpListener,
    ) -> impl tokio_stream::Stream<Item = std::io::Result<tokio::net::TcpStream>> {
        use tokio_stream::StreamExt;
        tokio_stream::wrappers::TcpListenerStream::new(listener).map(|stream| {
            let stream = stream?;
            stream.set_nodelay(true)?;
            Ok(stream)
        })
    }
}
