//! `--rate-limit`: per account, per server; the excess is refused with when
//! to retry, over gRPC and REST alike, and other accounts are not affected.

use std::time::Duration;

use roomservice::grpc::pb::GetRoomRequest;
use roomservice::ratelimit::RateLimit;
use roomservice::server::Limits;
use tonic::Code;
use tonic_types::StatusExt;

use crate::harness::*;

async fn limited(per_second: f64, burst: f64) -> TestServer {
    TestServer::start_with_limits(Limits {
        rate_limit: Some(RateLimit { per_second, burst }),
        ..Limits::default()
    })
    .await
}

fn get(token: &str) -> tonic::Request<GetRoomRequest> {
    authed(
        GetRoomRequest {
            room_id: "no-such-room".into(),
        },
        token,
    )
}

#[tokio::test]
async fn calls_past_the_burst_are_refused_with_when_to_retry() {
    // One token every 2 s: the burst's calls and the refused ones must come
    // before the next token, even on a loaded machine.
    let server = limited(0.5, 3.0).await;
    let mut client = server.rooms().await;
    let acme = acme_token();
    for _ in 0..3 {
        let answer = client.get_room(get(&acme)).await.unwrap_err();
        assert_eq!(
            answer.code(),
            Code::NotFound,
            "within the burst: {answer:?}"
        );
    }
    let refused = client.get_room(get(&acme)).await.unwrap_err();
    assert_eq!(refused.code(), Code::ResourceExhausted, "{refused:?}");
    assert!(refused.message().contains("rate limit"), "{refused:?}");
    let retry = refused
        .get_details_retry_info()
        .and_then(|info| info.retry_delay)
        .expect("a RetryInfo detail");
    assert!(
        retry > Duration::ZERO && retry <= Duration::from_secs(2),
        "retry in {retry:?}"
    );

    // REST shares the account's bucket: 429 with Retry-After.
    let response = server
        .http()
        .get(format!("{}/v2/rooms", server.url()))
        .header("authorization", &acme)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), http::StatusCode::TOO_MANY_REQUESTS);
    // The rest of the 2 s, rounded up to whole seconds.
    let retry_after = response.headers()["retry-after"].to_str().unwrap();
    assert!(
        ["1", "2"].contains(&retry_after),
        "Retry-After: {retry_after}"
    );
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["code"], "resource_exhausted", "{body}");

    // Another account has a bucket of its own.
    let other = client.get_room(get(&globex_token())).await.unwrap_err();
    assert_eq!(other.code(), Code::NotFound, "{other:?}");

    // Once the bucket has refilled, calls go through again.
    tokio::time::sleep(retry + Duration::from_millis(50)).await;
    let again = client.get_room(get(&acme)).await.unwrap_err();
    assert_eq!(again.code(), Code::NotFound, "{again:?}");
}

#[tokio::test]
async fn without_a_limit_nothing_is_refused() {
    let server = TestServer::start().await;
    let mut client = server.rooms().await;
    let acme = acme_token();
    for _ in 0..200 {
        let answer = client.get_room(get(&acme)).await.unwrap_err();
        assert_eq!(answer.code(), Code::NotFound);
    }
}

#[test]
fn the_flag_refuses_a_malformed_rate_by_name() {
    let output = roomservice()
        .args(["serve", "--listen", "127.0.0.1:0", "--rate-limit", "lots"])
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("--rate-limit"), "{stderr}");
    assert!(stderr.contains("RATE/s"), "{stderr}");
}
