//! Stopping the binary: readiness goes first, a call that outlives the grace
//! period makes the exit non-zero, and a second signal stops at once.

use std::process::{Child, Command};
use std::time::{Duration, Instant};

use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

use crate::harness::*;

fn signal(child: &Child, name: &str) {
    Command::new("kill")
        .args([&format!("-{name}"), &child.id().to_string()])
        .status()
        .unwrap();
}

fn wait_for_exit(child: &mut Child, within: Duration) -> std::process::ExitStatus {
    let deadline = Instant::now() + within;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        assert!(Instant::now() < deadline, "still running after {within:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

async fn health(address: &str, service: &str) -> ServingStatus {
    let channel = tonic::transport::Channel::from_shared(format!("http://{address}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut client = HealthClient::new(channel);
    let answer = client
        .check(HealthCheckRequest {
            service: service.into(),
        })
        .await
        .unwrap();
    ServingStatus::try_from(answer.into_inner().status).unwrap()
}

/// A REST create whose body never comes: a call in flight for up to the
/// body deadline (10 s).
async fn stalled_call(address: &str) -> TcpStream {
    let mut stream = TcpStream::connect(address).await.unwrap();
    let head = format!(
        "POST /v2/rooms HTTP/1.1\r\nHost: {address}\r\nAuthorization: {}\r\n\
         Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{{",
        acme_token()
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    // Let the server read the headers and start the call.
    tokio::time::sleep(Duration::from_millis(200)).await;
    stream
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_goes_first_then_the_listener_closes() {
    let dir = TempDir::new();
    let keys = dir.write("keys.toml", KEYS_TOML);
    let (mut service, address) = spawn_binary(&["--keys-file", &keys, "--shutdown-delay", "2s"]);
    assert_eq!(health(&address, "").await, ServingStatus::Serving);
    assert_eq!(health(&address, "liveness").await, ServingStatus::Serving);

    signal(service.child_mut(), "TERM");
    tokio::time::sleep(Duration::from_millis(500)).await;
    // Still serving, but saying it is going away.
    assert_eq!(health(&address, "").await, ServingStatus::NotServing);
    assert_eq!(
        health(&address, "rooms.v1.RoomService").await,
        ServingStatus::NotServing
    );
    assert_eq!(health(&address, "liveness").await, ServingStatus::Serving);
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    let ready = http
        .get(format!("http://{address}/readyz"))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), http::StatusCode::SERVICE_UNAVAILABLE);
    let live = http
        .get(format!("http://{address}/healthz"))
        .send()
        .await
        .unwrap();
    assert_eq!(live.status(), http::StatusCode::OK);
    let call = http
        .get(format!("http://{address}/v2/rooms"))
        .header("authorization", acme_token())
        .send()
        .await
        .unwrap();
    assert_eq!(
        call.status(),
        http::StatusCode::OK,
        "calls are still served"
    );

    let status = wait_for_exit(service.child_mut(), Duration::from_secs(10));
    assert!(status.success(), "a clean stop exits 0: {status:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_that_outlives_the_grace_period_makes_the_exit_non_zero() {
    let dir = TempDir::new();
    let keys = dir.write("keys.toml", KEYS_TOML);
    let (mut service, address) = spawn_binary(&["--keys-file", &keys, "--shutdown-grace", "1s"]);
    let _stalled = stalled_call(&address).await;
    let started = Instant::now();
    signal(service.child_mut(), "TERM");
    let status = wait_for_exit(service.child_mut(), Duration::from_secs(8));
    assert!(
        !status.success(),
        "a forced stop is not a clean one: {status:?}"
    );
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "waited for the grace period"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_signal_stops_at_once() {
    let dir = TempDir::new();
    let keys = dir.write("keys.toml", KEYS_TOML);
    let (mut service, address) = spawn_binary(&["--keys-file", &keys, "--shutdown-grace", "60s"]);
    let _stalled = stalled_call(&address).await;
    signal(service.child_mut(), "TERM");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        service.child_mut().try_wait().unwrap().is_none(),
        "the first signal waits for the call"
    );
    signal(service.child_mut(), "INT");
    let status = wait_for_exit(service.child_mut(), Duration::from_secs(2));
    assert_eq!(status.code(), Some(130), "{status:?}");
}
