//! Real `redis-server` processes for tests: each on a free loopback port, in
//! its own temporary directory, removed afterwards. Never touches a Redis it
//! did not start. A watchdog kills each process if the test binary dies
//! without running destructors (shared instances live in statics, which are
//! never dropped).

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use roomservice::store::{RedisConfig, RedisStore, Store};

pub struct RedisServer {
    pub port: u16,
    dir: PathBuf,
    args: Vec<String>,
    child: Option<Child>,
}

/// A port that is free now, and whose cluster-bus twin (port + 10000) is too.
fn free_port() -> u16 {
    loop {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        if port < 55_000 && TcpListener::bind(("127.0.0.1", port + 10_000)).is_ok() {
            return port;
        }
    }
}

fn unique_dir(tag: &str) -> PathBuf {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!(
        "roomservice-redis-{}-{tag}-{n}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

impl RedisServer {
    /// A plain, non-persistent Redis.
    pub fn start() -> RedisServer {
        Self::start_with(&["--save", "", "--appendonly", "no"])
    }

    pub fn start_with(extra: &[&str]) -> RedisServer {
        let port = free_port();
        let dir = unique_dir(&port.to_string());
        let mut args: Vec<String> = [
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--dir",
            dir.to_str().unwrap(),
            "--daemonize",
            "no",
            "--logfile",
            "redis.log",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        args.extend(extra.iter().map(|s| s.to_string()));
        let mut server = RedisServer {
            port,
            dir,
            args,
            child: None,
        };
        server.spawn();
        server
    }

    /// A Redis that also listens with TLS on `tls_port`, with a certificate
    /// for 127.0.0.1 signed by a fresh CA (`ca_file()`), made with openssl.
    pub fn start_tls() -> (RedisServer, u16) {
        let tls_port = free_port();
        let dir = unique_dir("tls-certs");
        let openssl = |args: &[&str]| {
            let status = Command::new("openssl")
                .args(args)
                .current_dir(&dir)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .expect("openssl is installed");
            assert!(status.success(), "openssl {args:?} failed");
        };
        openssl(&[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=roomservice test CA",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
        ]);
        openssl(&[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            "/CN=127.0.0.1",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
        ]);
        std::fs::write(dir.join("san.ext"), "subjectAltName=IP:127.0.0.1\n").unwrap();
        openssl(&[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            "san.ext",
            "-out",
            "server.pem",
        ]);
        let path = |name: &str| dir.join(name).to_str().unwrap().to_owned();
        let server = RedisServer::start_with(&[
            "--save",
            "",
            "--appendonly",
            "no",
            "--tls-port",
            &tls_port.to_string(),
            "--tls-cert-file",
            &path("server.pem"),
            "--tls-key-file",
            &path("server.key"),
            "--tls-ca-cert-file",
            &path("ca.pem"),
            "--tls-auth-clients",
            "no",
        ]);
        // The certificates live beside the server's data and go with it.
        std::fs::rename(dir.join("ca.pem"), server.dir.join("ca.pem")).unwrap();
        let _ = std::fs::remove_dir_all(&dir);
        (server, tls_port)
    }

    /// The CA that signed a `start_tls` server's certificate.
    pub fn ca_file(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }

    fn spawn(&mut self) {
        let child = Command::new("redis-server")
            .args(&self.args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server is installed (scripts/test installs it)");
        watch(child.id(), &self.dir);
        self.child = Some(child);
        wait_until_ready(self.port);
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// SIGKILL: no chance to flush or say goodbye.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGSTOP: the process hangs without closing connections, like a Redis
    /// stuck on a slow disk or a long command.
    pub fn pause(&self) {
        self.signal("-STOP");
    }

    /// SIGCONT after [`RedisServer::pause`].
    pub fn resume(&self) {
        self.signal("-CONT");
    }

    fn signal(&self, signal: &str) {
        let pid = self.child.as_ref().expect("running").id().to_string();
        assert!(
            Command::new("kill")
                .args([signal, &pid])
                .status()
                .unwrap()
                .success()
        );
    }

    /// Starts it again on the same port, with the same data directory.
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    /// Sends one command and returns the raw RESP answer.
    pub fn command(&self, args: &[&str]) -> String {
        command(self.port, args)
    }

    pub fn info(&self, section: &str) -> String {
        self.command(&["INFO", section])
    }

    /// Every key, as `redis-cli --scan` shows them.
    pub fn scan_keys(&self) -> Vec<String> {
        let output = Command::new("redis-cli")
            .args(["-p", &self.port.to_string(), "--scan"])
            .output()
            .expect("redis-cli is installed");
        let mut keys: Vec<String> = String::from_utf8(output.stdout)
            .unwrap()
            .lines()
            .map(str::to_owned)
            .collect();
        keys.sort();
        keys
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        if self.child.is_some() {
            // A paused process still dies of SIGKILL, but resume it anyway so
            // that it can release its port promptly.
            self.resume();
        }
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Kills `pid` and removes `dir` once this test process is gone.
fn watch(pid: u32, dir: &std::path::Path) {
    let script = format!(
        "while kill -0 {parent} 2>/dev/null; do sleep 1; done; kill -9 {pid} 2>/dev/null; rm -rf '{dir}'",
        parent = std::process::id(),
        dir = dir.display()
    );
    let _ = Command::new("sh")
        .args(["-c", &script])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn();
}

fn wait_until_ready(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if TcpStream::connect(("127.0.0.1", port)).is_ok()
            && command(port, &["PING"]).contains("PONG")
        {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("redis-server on port {port} did not start");
}

/// A minimal RESP client: enough for PING, INFO, CONFIG and the CLUSTER
/// commands of a reshard.
fn command(port: u16, args: &[&str]) -> String {
    let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)) else {
        return String::new();
    };
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut request = format!("*{}\r\n", args.len());
    for arg in args {
        request.push_str(&format!("${}\r\n{arg}\r\n", arg.len()));
    }
    if stream.write_all(request.as_bytes()).is_err() {
        return String::new();
    }
    let mut answer = Vec::new();
    let mut buf = [0u8; 65536];
    loop {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                answer.extend_from_slice(&buf[..n]);
                if resp_complete(&answer) {
                    break;
                }
            }
        }
    }
    String::from_utf8_lossy(&answer).into_owned()
}

/// Whether a simple-string, error, integer, bulk-string or array answer is
/// complete.
fn resp_complete(answer: &[u8]) -> bool {
    resp_end(answer, 0) == Some(answer.len())
}

/// Where the RESP value starting at `at` ends, if all of it is there.
fn resp_end(answer: &[u8], at: usize) -> Option<usize> {
    let line_end = at + answer.get(at..)?.windows(2).position(|w| w == b"\r\n")?;
    let after_line = line_end + 2;
    let number = || -> i64 {
        String::from_utf8_lossy(&answer[at + 1..line_end])
            .parse()
            .unwrap_or(0)
    };
    match answer[at] {
        b'+' | b'-' | b':' => Some(after_line),
        b'$' if number() < 0 => Some(after_line),
        b'$' => {
            let end = after_line + number() as usize + 2;
            (answer.len() >= end).then_some(end)
        }
        b'*' => (0..number().max(0)).try_fold(after_line, |at, _| resp_end(answer, at)),
        _ => None,
    }
}

/// A 3-master Redis Cluster on free loopback ports.
pub struct RedisCluster {
    pub nodes: Vec<RedisServer>,
}

impl RedisCluster {
    pub fn start() -> RedisCluster {
        Self::start_with_replicas(0)
    }

    /// 3 masters, each with `replicas` replicas (which node is which is
    /// `redis-cli`'s choice: ask a node its `ROLE`).
    pub fn start_with_replicas(replicas: usize) -> RedisCluster {
        let nodes: Vec<RedisServer> = (0..3 * (1 + replicas))
            .map(|_| {
                RedisServer::start_with(&[
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                    "--cluster-enabled",
                    "yes",
                    "--cluster-config-file",
                    "nodes.conf",
                    "--cluster-node-timeout",
                    "2000",
                ])
            })
            .collect();
        let addresses: Vec<String> = nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port))
            .collect();
        let status = Command::new("redis-cli")
            .arg("--cluster")
            .arg("create")
            .args(&addresses)
            .args(["--cluster-replicas", &replicas.to_string(), "--cluster-yes"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("redis-cli is installed");
        assert!(status.success(), "redis-cli --cluster create failed");
        let deadline = Instant::now() + Duration::from_secs(30);
        // Replicas count once they have synced: until then a failover
        // would have nothing to promote.
        while !nodes.iter().all(|n| {
            n.command(&["CLUSTER", "INFO"]).contains("cluster_state:ok")
                && !n.info("replication").contains("master_link_status:down")
                && !n.info("replication").contains("master_sync_in_progress:1")
        }) {
            assert!(Instant::now() < deadline, "cluster never reached state ok");
            std::thread::sleep(Duration::from_millis(100));
        }
        RedisCluster { nodes }
    }

    pub fn seed_urls(&self) -> Vec<String> {
        self.nodes.iter().map(RedisServer::url).collect()
    }

    /// The slot of an account's keys: their hash tag is the userId.
    pub fn slot_of_account(&self, user_id: &str) -> u16 {
        let tag = format!("{{{user_id}}}");
        resp_integer(&self.nodes[0].command(&["CLUSTER", "KEYSLOT", &tag])) as u16
    }

    /// How many keys node `node` holds in `slot`.
    pub fn keys_in_slot(&self, node: usize, slot: u16) -> i64 {
        let slot = slot.to_string();
        resp_integer(&self.nodes[node].command(&["CLUSTER", "COUNTKEYSINSLOT", &slot]))
    }

    /// Reshards `slot` from node `from` to node `to` as `redis-cli --cluster
    /// reshard` does: [`RedisCluster::begin_slot_move`], then
    /// [`RedisCluster::finish_slot_move`].
    pub fn move_slot(&self, slot: u16, from: usize, to: usize) {
        self.begin_slot_move(slot, from, to);
        self.finish_slot_move(slot, from, to);
    }

    /// The first half of a reshard: `slot` IMPORTING on `to` and MIGRATING
    /// on `from`, and every key MIGRATEd. Until the second half, `from`
    /// still owns the slot and answers ASK for the keys it no longer has.
    pub fn begin_slot_move(&self, slot: u16, from: usize, to: usize) {
        let slot = slot.to_string();
        let (source, target) = (&self.nodes[from], &self.nodes[to]);
        assert_ok(
            target.command(&["CLUSTER", "SETSLOT", &slot, "IMPORTING", &node_id(source)]),
            "IMPORTING",
        );
        assert_ok(
            source.command(&["CLUSTER", "SETSLOT", &slot, "MIGRATING", &node_id(target)]),
            "MIGRATING",
        );
        let port = target.port.to_string();
        loop {
            let keys = resp_lines(&source.command(&["CLUSTER", "GETKEYSINSLOT", &slot, "100"]));
            if keys.is_empty() {
                break;
            }
            let mut migrate = vec!["MIGRATE", "127.0.0.1", &port, "", "0", "5000", "KEYS"];
            migrate.extend(keys.iter().map(String::as_str));
            assert_ok(source.command(&migrate), "MIGRATE");
        }
    }

    /// The second half of a reshard: `slot` assigned to `to` on every node,
    /// the two it moves between first.
    pub fn finish_slot_move(&self, slot: u16, from: usize, to: usize) {
        let slot = slot.to_string();
        let target_id = node_id(&self.nodes[to]);
        let others = (0..self.nodes.len()).filter(|i| *i != from && *i != to);
        for i in [to, from].into_iter().chain(others) {
            assert_ok(
                self.nodes[i].command(&["CLUSTER", "SETSLOT", &slot, "NODE", &target_id]),
                "SETSLOT NODE",
            );
        }
    }
}

fn node_id(node: &RedisServer) -> String {
    resp_lines(&node.command(&["CLUSTER", "MYID"]))
        .pop()
        .expect("CLUSTER MYID answers")
}

fn assert_ok(answer: String, what: &str) {
    assert!(answer.starts_with("+OK"), "{what}: {answer}");
}

/// The number in a RESP integer answer (`:N`).
pub fn resp_integer(answer: &str) -> i64 {
    answer
        .trim()
        .strip_prefix(':')
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("not an integer answer: {answer:?}"))
}

/// The string values of a RESP answer (simple, bulk, or an array of them),
/// in order; no value may contain CR or LF.
pub fn resp_lines(answer: &str) -> Vec<String> {
    let mut values = Vec::new();
    let mut lines = answer.split("\r\n");
    while let Some(line) = lines.next() {
        match line.as_bytes().first() {
            Some(b'$') if line != "$-1" => values.push(lines.next().unwrap_or_default().to_owned()),
            Some(b'+') => values.push(line[1..].to_owned()),
            _ => {}
        }
    }
    values
}

/// One Redis and one cluster shared by the tests that only need isolation
/// by key prefix (conformance); fault tests start their own.
pub fn shared_redis() -> &'static RedisServer {
    static SHARED: OnceLock<RedisServer> = OnceLock::new();
    SHARED.get_or_init(RedisServer::start)
}

pub fn shared_cluster() -> &'static RedisCluster {
    static SHARED: OnceLock<RedisCluster> = OnceLock::new();
    SHARED.get_or_init(RedisCluster::start)
}

/// A key prefix no other test uses.
pub fn unique_prefix() -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    format!(
        "t{}-{}:",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

/// A RedisStore that has connected (stores connect in the background).
pub async fn connected_store(urls: Vec<String>, cluster: bool, prefix: String) -> RedisStore {
    let store = RedisStore::new(RedisConfig {
        urls,
        cluster,
        prefix,
        ..RedisConfig::default()
    });
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        match store.ping().await {
            Ok(()) => return store,
            Err(e) if Instant::now() > deadline => panic!("store never connected: {e}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

/// Watches a Redis with MONITOR and keeps the commands clients send. Commands
/// a Lua script runs show up tagged `lua` and are not kept: what remains is
/// exactly what costs a round trip.
pub struct Monitor {
    commands: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    stream: TcpStream,
}

impl Monitor {
    pub fn start(redis: &RedisServer) -> Monitor {
        use std::io::BufRead;
        let mut stream = TcpStream::connect(("127.0.0.1", redis.port)).unwrap();
        stream.write_all(b"MONITOR\r\n").unwrap();
        let mut reader = std::io::BufReader::new(stream.try_clone().unwrap());
        let mut ok = String::new();
        reader.read_line(&mut ok).unwrap();
        assert!(ok.starts_with("+OK"), "MONITOR refused: {ok}");
        let commands = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let sink = commands.clone();
        std::thread::spawn(move || {
            // Lines look like: +1700000000.123456 [0 127.0.0.1:5555] "evalsha" "..."
            for line in reader.lines().map_while(Result::ok) {
                let Some((client, rest)) = line.split_once("] ") else {
                    continue;
                };
                if client.ends_with(" lua") {
                    continue;
                }
                let name = rest
                    .trim_start_matches('"')
                    .split('"')
                    .next()
                    .unwrap_or_default();
                sink.lock().unwrap().push(name.to_ascii_lowercase());
            }
        });
        Monitor { commands, stream }
    }

    /// The client commands seen so far, less the health probe's PING and
    /// the test's own INFO/CONFIG, once `expected` many have arrived (or 2 s).
    pub fn client_commands(&self, expected: usize) -> Vec<String> {
        let relevant = || {
            self.commands
                .lock()
                .unwrap()
                .iter()
                // Health probes, and the session sweeper's reads of the
                // deadline index (background work, not the call's).
                .filter(|c| {
                    !matches!(
                        c.as_str(),
                        "ping" | "info" | "config" | "cluster" | "zrangebyscore"
                    )
                })
                .cloned()
                .collect::<Vec<_>>()
        };
        let deadline = Instant::now() + Duration::from_secs(2);
        while relevant().len() < expected && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        // Anything more would arrive right behind: give it a moment to show.
        std::thread::sleep(Duration::from_millis(100));
        relevant()
    }
}

impl Drop for Monitor {
    fn drop(&mut self) {
        let _ = self.stream.shutdown(std::net::Shutdown::Both);
    }
}
