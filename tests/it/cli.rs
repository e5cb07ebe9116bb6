//! The `roomservice` binary as an operator runs it.

use std::process::Stdio;

use roomservice::grpc::pb::CreateRoomRequest;
use roomservice::grpc::pb::room_service_client::RoomServiceClient;

use crate::harness::*;

fn token_output(args: &[&str]) -> std::process::Output {
    roomservice().arg("token").args(args).output().unwrap()
}

fn claims_of(token: &str) -> serde_json::Value {
    use base64::Engine;
    let payload = token.split('.').nth(1).unwrap();
    serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload)
            .unwrap(),
    )
    .unwrap()
}

#[test]
fn token_prints_only_a_jwt_with_the_sdk_claims() {
    let output = token_output(&[]);
    assert!(output.status.success());
    let stdout = String::from_utf8(output.stdout).unwrap();
    let token = stdout.trim_end();
    assert_eq!(stdout, format!("{token}\n"), "one line, nothing else");
    assert_eq!(token.split('.').count(), 3);
    let claims = claims_of(token);
    assert_eq!(claims["apikey"], "devkey");
    assert_eq!(
        claims["permissions"],
        serde_json::json!(["allow_join", "allow_mod"])
    );
    assert_eq!(claims["version"], 2);
    assert_eq!(claims["roles"], serde_json::json!(["crawler"]));
    let lifetime = claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap();
    assert_eq!(lifetime, 24 * 3600);
}

#[test]
fn token_options_shape_the_claims() {
    let output = token_output(&[
        "--api-key",
        ACME_KEY,
        "--secret",
        ACME_SECRET,
        "--ttl",
        "2h",
        "--permissions",
        "ask_join",
        "--roles",
        "rtc",
        "--room-id",
        "standup",
    ]);
    assert!(output.status.success(), "{output:?}");
    let claims = claims_of(String::from_utf8(output.stdout).unwrap().trim());
    assert_eq!(claims["apikey"], ACME_KEY);
    assert_eq!(claims["permissions"], serde_json::json!(["ask_join"]));
    assert_eq!(claims["roles"], serde_json::json!(["rtc"]));
    assert_eq!(claims["roomId"], "standup");
    assert_eq!(
        claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap(),
        7200
    );

    let bad = token_output(&["--permissions", "fly"]);
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("unknown permission"));
    assert!(bad.stdout.is_empty());
    let bad = token_output(&["--ttl", "forever"]);
    assert!(!bad.status.success());
}

#[test]
fn token_finds_the_secret_in_the_keys_file() {
    let dir = TempDir::new();
    let keys = dir.write("keys.toml", KEYS_TOML);
    let output = token_output(&["--keys-file", &keys, "--api-key", GLOBEX_KEY]);
    assert!(output.status.success(), "{output:?}");
    let token = String::from_utf8(output.stdout).unwrap();
    let verifier = roomservice::auth::Verifier::new(keyring(), false);
    let caller = verifier
        .verify(Some(token.trim()))
        .expect("the server accepts it");
    assert_eq!(caller.api_key, GLOBEX_KEY);

    let ambiguous = token_output(&["--keys-file", &keys]);
    assert!(!ambiguous.status.success());
    assert!(String::from_utf8_lossy(&ambiguous.stderr).contains("--api-key"));
    let unknown = token_output(&["--keys-file", &keys, "--api-key", "nope"]);
    assert!(!unknown.status.success());
}

#[test]
fn bad_keys_file_stops_startup_naming_file_and_line() {
    let dir = TempDir::new();
    let keys = dir.write(
        "keys.toml",
        "[[keys]]\napi_key = \"a\"\nsecret = \"s\"\nuser_id = \"not-hex\"\n",
    );
    let output = roomservice()
        .args(["serve", "--listen", "127.0.0.1:0", "--keys-file", &keys])
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("keys.toml") && stderr.contains("line 4") && stderr.contains("user_id"),
        "{stderr}"
    );

    let missing = roomservice()
        .args([
            "--listen",
            "127.0.0.1:0",
            "--keys-file",
            "/nonexistent/keys.toml",
        ])
        .output()
        .unwrap();
    assert!(!missing.status.success());
    assert!(String::from_utf8_lossy(&missing.stderr).contains("/nonexistent/keys.toml"));
}

#[test]
fn dev_mode_is_refused_off_loopback() {
    let output = roomservice()
        .args(["serve", "--listen", "0.0.0.0:0"])
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("refusing dev mode") && stderr.contains("0.0.0.0"),
        "{stderr}"
    );
    // With keys configured, a non-loopback listen address is fine (checked by env twin).
    let child = roomservice()
        .args(["--listen", "0.0.0.0:0"])
        .env("ROOMSERVICE_KEYS", "k:s")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut service = Service::adopt(child);
    // Links built from 0.0.0.0 reach nobody: the operator is told so.
    let warning = wait_for_logs(
        service.child_mut(),
        &["without --public-url", "roomservice listening"],
    );
    assert!(warning.contains("0.0.0.0"), "{warning}");
    assert!(service.stop().success());
}

#[test]
fn keys_and_keys_file_together_are_a_usage_error() {
    let dir = TempDir::new();
    let keys = dir.write("keys.toml", "[[keys]]\napi_key = \"a\"\nsecret = \"s\"\n");
    for args in [
        vec!["serve", "--keys-file", &keys, "--keys", "k:s"],
        vec!["token", "--keys-file", &keys, "--keys", "k:s"],
    ] {
        let output = roomservice().args(&args).output().unwrap();
        assert_eq!(output.status.code(), Some(2), "{args:?}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            stderr.contains("--keys") && stderr.contains("cannot be used with"),
            "{stderr}"
        );
    }
    // The environment twin counts too: a keys list silently ignored would
    // leave the operator wondering why a key is refused.
    let output = roomservice()
        .args(["token", "--keys-file", &keys])
        .env("ROOMSERVICE_KEYS", "k:s")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
}

#[test]
fn bad_cors_origins_stop_startup_naming_the_flag() {
    let output = roomservice()
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--cors-origins",
            "app.example.com",
        ])
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("--cors-origins") && stderr.contains("app.example.com"),
        "{stderr}"
    );
}

// Multi-threaded so the client's connection task keeps running while the test
// thread blocks waiting for the process to exit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_serves_tokens_it_minted_and_stops_on_sigterm() {
    let (service, address) = spawn_binary(&[]);
    let token = String::from_utf8(token_output(&[]).stdout).unwrap();
    let mut client = RoomServiceClient::connect(format!("http://{address}"))
        .await
        .unwrap();
    let room = client
        .create_room(authed(CreateRoomRequest::default(), token.trim()))
        .await
        .expect("dev token accepted")
        .into_inner();
    assert!(
        room.links
            .unwrap()
            .get_room
            .starts_with(&format!("http://{address}/v2/rooms/"))
    );

    let status = service.stop();
    assert!(status.success(), "graceful exit: {status:?}");
}
