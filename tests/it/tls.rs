//! TLS and mTLS on the listener, and what SIGHUP reloads, against the real
//! binary. Certificates are made at test time with the `openssl` binary;
//! clients are rustls (aws-lc-rs, as the server) under tonic and hyper.
//! The async tests are multi-threaded: the clients' connection tasks must
//! keep running (and answer the server's close) while the test thread waits
//! for the process to exit.

use std::net::SocketAddr;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use roomservice::grpc::pb::CreateRoomRequest;
use roomservice::grpc::pb::room_service_client::RoomServiceClient;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use tonic::transport::{Channel, Endpoint};

use crate::harness::*;

/// A test CA and the certificates it signs, in a temporary directory.
struct Pki {
    dir: TempDir,
}

impl Pki {
    fn new() -> Pki {
        let pki = Pki {
            dir: TempDir::new(),
        };
        pki.openssl(&[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-days",
            "2",
            "-subj",
            "/CN=roomservice test CA",
        ]);
        pki
    }

    fn path(&self, name: &str) -> String {
        self.dir.path().join(name).to_str().unwrap().to_owned()
    }

    fn openssl(&self, args: &[&str]) {
        let output = Command::new("openssl")
            .current_dir(self.dir.path())
            .args(args)
            .output()
            .expect("the openssl binary runs");
        assert!(
            output.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }

    /// A server certificate for 127.0.0.1 named `{name}.pem` / `{name}.key`,
    /// with this serial and `CN={name}`.
    fn server(&self, name: &str, serial: u32) -> (String, String) {
        self.leaf(
            name,
            serial,
            "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n",
        )
    }

    /// A client certificate signed by this CA.
    fn client(&self, name: &str) -> (String, String) {
        self.leaf(name, 7, "extendedKeyUsage=clientAuth\n")
    }

    fn leaf(&self, name: &str, serial: u32, extensions: &str) -> (String, String) {
        let (csr, ext, pem, key) = (
            format!("{name}.csr"),
            format!("{name}.ext"),
            format!("{name}.pem"),
            format!("{name}.key"),
        );
        self.dir.write(&ext, extensions);
        self.openssl(&[
            "req",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            &key,
            "-out",
            &csr,
            "-subj",
            &format!("/CN={name}"),
        ]);
        self.openssl(&[
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-set_serial",
            &serial.to_string(),
            "-days",
            "2",
            "-out",
            &pem,
            "-extfile",
            &ext,
        ]);
        (self.path(&pem), self.path(&key))
    }

    /// A client config trusting this CA, offering `alpn`, with an optional
    /// client certificate.
    fn client_config(
        &self,
        alpn: &[&[u8]],
        identity: Option<(&str, &str)>,
    ) -> Arc<rustls::ClientConfig> {
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(CertificateDer::from_pem_file(self.path("ca.pem")).unwrap())
            .unwrap();
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots);
        let mut config = match identity {
            None => builder.with_no_client_auth(),
            Some((cert, key)) => builder
                .with_client_auth_cert(
                    vec![CertificateDer::from_pem_file(cert).unwrap()],
                    PrivateKeyDer::from_pem_file(key).unwrap(),
                )
                .unwrap(),
        };
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Arc::new(config)
    }
}

fn der_of(pem_file: &str) -> CertificateDer<'static> {
    CertificateDer::from_pem_file(pem_file).unwrap()
}

/// A `roomservice serve` whose log lines can be waited for at any time
/// (the harness's `spawn_binary` reads them only until it is listening).
struct Server {
    service: Service,
    address: String,
    logs: mpsc::UnboundedReceiver<String>,
}

impl Server {
    async fn start(args: &[&str]) -> Server {
        let (tx, logs) = mpsc::unbounded_channel();
        let args: Vec<&str> = ["--log", "info,roomservice=debug"]
            .into_iter()
            .chain(args.iter().copied())
            .collect();
        let service = spawn_forwarding_logs(&args, move |line| {
            let _ = tx.send(line);
        });
        let mut server = Server {
            service,
            address: String::new(),
            logs,
        };
        let line = server.wait_for(&["roomservice listening"]).await;
        let log: Value = serde_json::from_str(&line).expect("json log line");
        server.address = log["fields"]["address"].as_str().unwrap().to_owned();
        server
    }

    /// The next log line holding every needle.
    async fn wait_for(&mut self, needles: &[&str]) -> String {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            let line = tokio::time::timeout_at(deadline, self.logs.recv())
                .await
                .unwrap_or_else(|_| panic!("{needles:?} never logged"))
                .unwrap_or_else(|| panic!("the server exited before logging {needles:?}"));
            if needles.iter().all(|needle| line.contains(needle)) {
                return line;
            }
        }
    }

    fn hangup(&mut self) {
        let status = Command::new("kill")
            .args(["-HUP", &self.service.child_mut().id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    fn addr(&self) -> SocketAddr {
        self.address.parse().unwrap()
    }

    /// A TLS connection to the server.
    async fn tls(
        &self,
        config: Arc<rustls::ClientConfig>,
    ) -> std::io::Result<TlsStream<TcpStream>> {
        let tcp = TcpStream::connect(self.addr()).await?;
        TlsConnector::from(config)
            .connect(ServerName::try_from("127.0.0.1").unwrap(), tcp)
            .await
    }

    /// A gRPC channel over TLS (ALPN h2).
    async fn grpc(
        &self,
        config: Arc<rustls::ClientConfig>,
    ) -> Result<Channel, tonic::transport::Error> {
        let addr = self.addr();
        Endpoint::from_shared(format!("http://{addr}"))
            .unwrap()
            .connect_with_connector(tower::service_fn(move |_: http::Uri| {
                let config = config.clone();
                async move {
                    let tcp = TcpStream::connect(addr).await?;
                    let tls = TlsConnector::from(config)
                        .connect(ServerName::try_from("127.0.0.1").unwrap(), tcp)
                        .await?;
                    Ok::<_, std::io::Error>(TokioIo::new(tls))
                }
            }))
            .await
    }
}

/// An HTTP/1.1 connection over TLS, kept open across requests.
struct Rest {
    sender: hyper::client::conn::http1::SendRequest<Empty<Bytes>>,
    /// The certificate the server presented on this connection.
    peer_certificate: CertificateDer<'static>,
}

impl Rest {
    async fn connect(server: &Server, config: Arc<rustls::ClientConfig>) -> std::io::Result<Rest> {
        let stream = server.tls(config).await?;
        let (_, session) = stream.get_ref();
        assert_eq!(session.alpn_protocol(), Some(&b"http/1.1"[..]));
        let peer_certificate = session.peer_certificates().unwrap()[0].clone().into_owned();
        let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(std::io::Error::other)?;
        tokio::spawn(connection);
        Ok(Rest {
            sender,
            peer_certificate,
        })
    }

    /// GET `path` with Acme's token: the status and the body.
    async fn get(&mut self, path: &str) -> Result<(u16, String), hyper::Error> {
        let request = http::Request::get(path)
            .header("host", "127.0.0.1")
            .header("authorization", acme_token())
            .body(Empty::new())
            .unwrap();
        let response = self.sender.send_request(request).await?;
        let status = response.status().as_u16();
        let body = response.into_body().collect().await?.to_bytes();
        Ok((status, String::from_utf8_lossy(&body).into_owned()))
    }
}

async fn create_room(channel: Channel, token: &str) -> Result<String, tonic::Status> {
    let mut client = RoomServiceClient::new(channel);
    let room = client
        .create_room(authed(CreateRoomRequest::default(), token))
        .await?
        .into_inner();
    Ok(room.room_id)
}

const H2: &[&[u8]] = &[b"h2"];
const HTTP1: &[&[u8]] = &[b"http/1.1"];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_and_rest_speak_tls_and_plain_text_is_refused() {
    let pki = Pki::new();
    let (cert, key) = pki.server("server-1", 1001);
    let keys = pki.dir.write("keys.toml", KEYS_TOML);
    let mut server =
        Server::start(&["--tls-cert", &cert, "--tls-key", &key, "--keys-file", &keys]).await;

    // gRPC over h2.
    let stream = server.tls(pki.client_config(H2, None)).await.unwrap();
    assert_eq!(stream.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    drop(stream);
    let channel = server.grpc(pki.client_config(H2, None)).await.unwrap();
    let room_id = create_room(channel, &acme_token())
        .await
        .expect("a call over tls");

    // REST over HTTP/1.1, on the same port.
    let mut rest = Rest::connect(&server, pki.client_config(HTTP1, None))
        .await
        .unwrap();
    assert_eq!(rest.peer_certificate, der_of(&cert));
    let (status, body) = rest.get(&format!("/v2/rooms/{room_id}")).await.unwrap();
    assert_eq!(status, 200, "{body}");
    // Links point at https when no --public-url says otherwise.
    assert!(
        body.contains(&format!("https://{}/", server.address)),
        "{body}"
    );

    // A plain-text gRPC client gets nowhere.
    let plain = async {
        let channel = Channel::from_shared(format!("http://{}", server.address))
            .unwrap()
            .connect()
            .await
            .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
        create_room(channel, &acme_token()).await
    };
    let plain = tokio::time::timeout(Duration::from_secs(15), plain)
        .await
        .expect("a plain-text client is answered, not left hanging");
    assert!(plain.is_err(), "plain text reached the service: {plain:?}");

    // Nor does a plain-text HTTP/1.1 request get an HTTP answer.
    let mut tcp = TcpStream::connect(server.addr()).await.unwrap();
    tcp.write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(15), tcp.read_to_end(&mut answer)).await;
    assert!(!answer.starts_with(b"HTTP/"), "{answer:?}");
    server.wait_for(&["tls handshake failed"]).await;

    assert!(server.service.stop().success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_needs_a_client_certificate_from_the_ca() {
    let pki = Pki::new();
    let (cert, key) = pki.server("server-1", 1001);
    let (client_cert, client_key) = pki.client("client-1");
    let keys = pki.dir.write("keys.toml", KEYS_TOML);
    let mut server = Server::start(&[
        "--tls-cert",
        &cert,
        "--tls-key",
        &key,
        "--tls-client-ca",
        &pki.path("ca.pem"),
        "--keys-file",
        &keys,
    ])
    .await;

    // Without a certificate: refused. (With TLS 1.3 the client's side of
    // the handshake may finish before the server's refusal arrives, so
    // what fails can be the connect or the call.)
    let anonymous = async {
        let channel = server
            .grpc(pki.client_config(H2, None))
            .await
            .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
        create_room(channel, &acme_token()).await
    };
    let anonymous = tokio::time::timeout(Duration::from_secs(15), anonymous)
        .await
        .expect("answered");
    assert!(anonymous.is_err(), "{anonymous:?}");
    server.wait_for(&["tls handshake failed"]).await;

    // A certificate of another CA: refused too.
    let stranger = Pki::new();
    let (stranger_cert, stranger_key) = stranger.client("intruder");
    let intruder = async {
        let channel = server
            .grpc(pki.client_config(H2, Some((&stranger_cert, &stranger_key))))
            .await
            .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
        create_room(channel, &acme_token()).await
    };
    let intruder = tokio::time::timeout(Duration::from_secs(15), intruder)
        .await
        .expect("answered");
    assert!(intruder.is_err(), "{intruder:?}");

    // With a certificate the CA signed: gRPC and REST work.
    let identity = Some((client_cert.as_str(), client_key.as_str()));
    let channel = server.grpc(pki.client_config(H2, identity)).await.unwrap();
    let room_id = create_room(channel, &acme_token())
        .await
        .expect("a client with a certificate is served");
    let mut rest = Rest::connect(&server, pki.client_config(HTTP1, identity))
        .await
        .unwrap();
    let (status, body) = rest.get(&format!("/v2/rooms/{room_id}")).await.unwrap();
    assert_eq!(status, 200, "{body}");

    assert!(server.service.stop().success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_serves_new_connections_the_new_certificate_and_keeps_open_ones() {
    let pki = Pki::new();
    let (cert1, key1) = pki.server("server-1", 1001);
    let (cert2, key2) = pki.server("server-2", 2002);
    let cert = pki.path("live.pem");
    let key = pki.path("live.key");
    std::fs::copy(&cert1, &cert).unwrap();
    std::fs::copy(&key1, &key).unwrap();
    let keys = pki.dir.write("keys.toml", KEYS_TOML);
    let mut server =
        Server::start(&["--tls-cert", &cert, "--tls-key", &key, "--keys-file", &keys]).await;

    let mut before = Rest::connect(&server, pki.client_config(HTTP1, None))
        .await
        .unwrap();
    assert_eq!(before.peer_certificate, der_of(&cert1));
    let (status, _) = before.get("/v2/rooms").await.unwrap();
    assert_eq!(status, 200);
    let grpc_before = server.grpc(pki.client_config(H2, None)).await.unwrap();

    std::fs::copy(&cert2, &cert).unwrap();
    std::fs::copy(&key2, &key).unwrap();
    server.hangup();
    let reloaded = server
        .wait_for(&["tls certificate, key and client CA reloaded"])
        .await;
    assert!(reloaded.contains("live.pem"), "{reloaded}");

    // A new connection gets the new certificate (serial 2002, CN=server-2).
    let mut after = Rest::connect(&server, pki.client_config(HTTP1, None))
        .await
        .unwrap();
    assert_eq!(after.peer_certificate, der_of(&cert2));
    assert_ne!(after.peer_certificate, der_of(&cert1));
    let serial = Command::new("openssl")
        .args(["x509", "-noout", "-serial", "-subject", "-in", &cert2])
        .output()
        .unwrap();
    let serial = String::from_utf8_lossy(&serial.stdout);
    assert!(
        serial.contains("serial=07D2") && serial.contains("server-2"),
        "{serial}"
    );
    assert_eq!(after.get("/v2/rooms").await.unwrap().0, 200);

    // Connections opened before the reload keep working, on both protocols.
    let (status, body) = before.get("/v2/rooms").await.unwrap();
    assert_eq!(status, 200, "{body}");
    create_room(grpc_before, &acme_token())
        .await
        .expect("a channel opened before the reload still serves calls");

    assert!(server.service.stop().success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_with_broken_files_keeps_the_old_configuration_and_says_why() {
    let pki = Pki::new();
    let (cert1, key1) = pki.server("server-1", 1001);
    let (cert2, _) = pki.server("server-2", 2002);
    let cert = pki.path("live.pem");
    let key = pki.path("live.key");
    std::fs::copy(&cert1, &cert).unwrap();
    std::fs::copy(&key1, &key).unwrap();
    let keys = pki.dir.write("keys.toml", KEYS_TOML);
    let mut server =
        Server::start(&["--tls-cert", &cert, "--tls-key", &key, "--keys-file", &keys]).await;

    // A certificate file cut short, as by a copy still under way.
    let full = std::fs::read_to_string(&cert2).unwrap();
    std::fs::write(&cert, &full[..full.len() / 2]).unwrap();
    server.hangup();
    let warning = server.wait_for(&["tls not reloaded"]).await;
    assert!(
        warning.contains("WARN") && warning.contains("--tls-cert") && warning.contains("live.pem"),
        "{warning}"
    );
    assert!(warning.contains("malformed PEM"), "{warning}");
    let rest = Rest::connect(&server, pki.client_config(HTTP1, None))
        .await
        .unwrap();
    assert_eq!(rest.peer_certificate, der_of(&cert1), "the old certificate");

    // A whole certificate with the wrong key: refused, naming the key.
    std::fs::copy(&cert2, &cert).unwrap();
    server.hangup();
    let warning = server.wait_for(&["tls not reloaded"]).await;
    assert!(
        warning.contains("--tls-key") && warning.contains("does not match"),
        "{warning}"
    );
    let mut rest = Rest::connect(&server, pki.client_config(HTTP1, None))
        .await
        .unwrap();
    assert_eq!(rest.peer_certificate, der_of(&cert1), "still the old one");
    assert_eq!(rest.get("/v2/rooms").await.unwrap().0, 200);

    assert!(server.service.stop().success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_the_keys_file() {
    let dir = TempDir::new();
    // Acme only; Globex joins later.
    let acme_only = KEYS_TOML
        .split("[[keys]]")
        .nth(1)
        .map(|entry| format!("[[keys]]{entry}"))
        .unwrap();
    assert!(acme_only.contains(ACME_KEY) && !acme_only.contains(GLOBEX_KEY));
    let keys = dir.write("keys.toml", &acme_only);
    let mut server = Server::start(&["--keys-file", &keys]).await;
    let url = format!("http://{}", server.address);
    let channel = || async {
        Channel::from_shared(url.clone())
            .unwrap()
            .connect()
            .await
            .unwrap()
    };

    let refused = create_room(channel().await, &globex_token()).await;
    assert_eq!(refused.unwrap_err().code(), tonic::Code::Unauthenticated);

    dir.write("keys.toml", KEYS_TOML);
    server.hangup();
    let reloaded = server.wait_for(&["api keys reloaded"]).await;
    assert!(
        reloaded.contains("keys.toml") && reloaded.contains(r#""keys":4"#),
        "{reloaded}"
    );
    create_room(channel().await, &globex_token())
        .await
        .expect("the new key works without a restart");

    // A broken file: the keys in force stay, and the log says where.
    dir.write("keys.toml", "[[keys]]\napi_key = \"a\"\n");
    server.hangup();
    let warning = server.wait_for(&["api keys not reloaded"]).await;
    assert!(
        warning.contains("WARN") && warning.contains("keys.toml") && warning.contains("line 1"),
        "{warning}"
    );
    create_room(channel().await, &globex_token())
        .await
        .expect("the keys loaded before stay in force");
    create_room(channel().await, &acme_token()).await.unwrap();

    assert!(server.service.stop().success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handshake_that_never_completes_is_closed_and_blocks_nobody() {
    let pki = Pki::new();
    let (cert, key) = pki.server("server-1", 1001);
    let keys = pki.dir.write("keys.toml", KEYS_TOML);
    let server =
        Server::start(&["--tls-cert", &cert, "--tls-key", &key, "--keys-file", &keys]).await;

    // The start of a TLS record announcing a 512-byte ClientHello, and then
    // nothing; and a connection that sends nothing at all.
    let started = Instant::now();
    let mut stalled = TcpStream::connect(server.addr()).await.unwrap();
    stalled
        .write_all(&[0x16, 0x03, 0x01, 0x02, 0x00])
        .await
        .unwrap();
    let mut silent = TcpStream::connect(server.addr()).await.unwrap();

    // Meanwhile everyone else is served at once.
    let quick = Instant::now();
    let channel = server.grpc(pki.client_config(H2, None)).await.unwrap();
    create_room(channel, &acme_token()).await.unwrap();
    assert!(
        quick.elapsed() < Duration::from_secs(3),
        "{:?}",
        quick.elapsed()
    );

    for stream in [&mut stalled, &mut silent] {
        let mut buffer = [0u8; 64];
        let read = tokio::time::timeout(Duration::from_secs(15), stream.read(&mut buffer))
            .await
            .expect("closed by the server within the first-request timeout");
        // Closed (0 bytes), reset, or an alert and then closed.
        if let Ok(n) = read
            && n > 0
        {
            let rest =
                tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut Vec::new()))
                    .await
                    .expect("closed after the alert");
            let _ = rest;
        }
    }
    let elapsed = started.elapsed();
    assert!(
        elapsed >= Duration::from_secs(9) && elapsed < Duration::from_secs(13),
        "closed after {elapsed:?}"
    );
}

#[test]
fn bad_tls_files_stop_startup_naming_the_file() {
    let pki = Pki::new();
    let (cert, key) = pki.server("server-1", 1001);
    let (_, other_key) = pki.server("server-2", 2002);
    let garbage = pki.dir.write("garbage.pem", "not a certificate\n");
    let missing = pki.path("missing.pem");
    let cases: [(&[&str], &[&str]); 5] = [
        (
            &["--tls-cert", &missing, "--tls-key", &key],
            &["--tls-cert", "missing.pem", "cannot read"],
        ),
        (
            &["--tls-cert", &garbage, "--tls-key", &key],
            &["--tls-cert", "garbage.pem", "no certificate"],
        ),
        (
            &["--tls-cert", &cert, "--tls-key", &garbage],
            &["--tls-key", "garbage.pem", "no private key"],
        ),
        (
            &["--tls-cert", &cert, "--tls-key", &other_key],
            &[
                "--tls-key",
                "server-2.key",
                "does not match",
                "server-1.pem",
            ],
        ),
        (
            &[
                "--tls-cert",
                &cert,
                "--tls-key",
                &key,
                "--tls-client-ca",
                &garbage,
            ],
            &["--tls-client-ca", "garbage.pem", "no certificate"],
        ),
    ];
    for (args, needles) in cases {
        let output = roomservice()
            .args(["serve", "--listen", "127.0.0.1:0"])
            .args(args)
            .output()
            .unwrap();
        assert_eq!(output.status.code(), Some(1), "{args:?}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        for needle in needles {
            assert!(
                stderr.contains(needle),
                "{args:?}: {needle:?} not in {stderr}"
            );
        }
    }
}

#[test]
fn tls_flags_come_in_pairs() {
    let cases: [(Vec<&str>, &str); 3] = [
        (vec!["--tls-cert", "c.pem"], "--tls-key"),
        (vec!["--tls-key", "k.pem"], "--tls-cert"),
        (vec!["--tls-client-ca", "ca.pem"], "--tls-cert"),
    ];
    for (args, missing) in cases {
        let output = roomservice()
            .args(["serve", "--listen", "127.0.0.1:0"])
            .args(&args)
            .output()
            .unwrap();
        assert_eq!(output.status.code(), Some(2), "{args:?}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            stderr.contains("required arguments were not provided") && stderr.contains(missing),
            "{args:?}: {stderr}"
        );
    }
    // The environment twins count as given.
    let output = roomservice()
        .args(["serve", "--listen", "127.0.0.1:0"])
        .env("ROOMSERVICE_TLS_CERT", "c.pem")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("--tls-key"));
}
