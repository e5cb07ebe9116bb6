//! Idempotency keys for creates: a create retried with its key returns the
//! room the first attempt made, even when that attempt's answer was lost.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use roomservice::grpc::pb::{CreateRoomRequest, ListRoomsRequest};
use serde_json::{Value, json};
use tonic::Code;

use crate::harness::*;
use crate::redis_harness::*;

fn with_key(
    request: CreateRoomRequest,
    token: &str,
    key: &str,
) -> tonic::Request<CreateRoomRequest> {
    let mut request = authed(request, token);
    request
        .metadata_mut()
        .insert("idempotency-key", key.parse().unwrap());
    request
}

async fn total_rooms(server: &TestServer, token: &str) -> i64 {
    server
        .rooms()
        .await
        .list_rooms(authed(ListRoomsRequest::default(), token))
        .await
        .unwrap()
        .into_inner()
        .page_info
        .unwrap()
        .total
}

#[tokio::test]
async fn a_repeated_grpc_create_with_its_key_returns_the_first_room() {
    let server = TestServer::start().await;
    let mut client = server.rooms().await;
    let token = acme_token();
    let first = client
        .create_room(with_key(CreateRoomRequest::default(), &token, "order-42"))
        .await
        .unwrap()
        .into_inner();
    let again = client
        .create_room(with_key(CreateRoomRequest::default(), &token, "order-42"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(again, first);
    assert_eq!(total_rooms(&server, &token).await, 1);

    // Another key, or no key, makes another room.
    let other = client
        .create_room(with_key(CreateRoomRequest::default(), &token, "order-43"))
        .await
        .unwrap()
        .into_inner();
    assert_ne!(other.room_id, first.room_id);
    // Another account's key of the same name is its own.
    let globex = client
        .create_room(with_key(
            CreateRoomRequest::default(),
            &globex_token(),
            "order-42",
        ))
        .await
        .unwrap()
        .into_inner();
    assert_ne!(globex.room_id, first.room_id);
    assert_eq!(total_rooms(&server, &token).await, 2);
}

#[tokio::test]
async fn a_key_reused_for_another_request_is_refused() {
    let server = TestServer::start().await;
    let mut client = server.rooms().await;
    let token = acme_token();
    client
        .create_room(with_key(CreateRoomRequest::default(), &token, "k"))
        .await
        .unwrap();
    let different = CreateRoomRequest {
        custom_room_id: Some("something-else".into()),
        ..Default::default()
    };
    let refused = client
        .create_room(with_key(different, &token, "k"))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::FailedPrecondition, "{refused:?}");
    assert!(refused.message().contains("idempotency-key"), "{refused:?}");
    assert_eq!(total_rooms(&server, &token).await, 1, "nothing was written");
}

#[tokio::test]
async fn malformed_keys_are_refused_by_name() {
    let server = TestServer::start().await;
    let mut client = server.rooms().await;
    let token = acme_token();
    for bad in ["x".repeat(256), "tab\there".to_owned()] {
        let refused = client
            .create_room(with_key(CreateRoomRequest::default(), &token, &bad))
            .await
            .unwrap_err();
        assert_eq!(
            refused.code(),
            Code::InvalidArgument,
            "{bad:?}: {refused:?}"
        );
        assert!(refused.message().contains("idempotency-key"), "{refused:?}");
    }
    assert_eq!(total_rooms(&server, &token).await, 0);
}

#[tokio::test]
async fn rest_creates_take_the_idempotency_key_header() {
    let server = TestServer::start().await;
    let http = server.http();
    let post = |body: Value, key: &str| {
        http.post(format!("{}/v2/rooms", server.url()))
            .header("authorization", acme_token())
            .header("idempotency-key", key)
            .json(&body)
            .send()
    };
    let first: Value = post(json!({}), "rest-1")
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let again: Value = post(json!({}), "rest-1")
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(again["roomId"], first["roomId"]);
    let conflict = post(json!({"customRoomId": "other"}), "rest-1")
        .await
        .unwrap();
    assert_eq!(conflict.status(), http::StatusCode::CONFLICT);
    let body: Value = conflict.json().await.unwrap();
    assert_eq!(body["code"], "failed_precondition", "{body}");
    let bad = post(json!({}), &"k".repeat(300)).await.unwrap();
    assert_eq!(bad.status(), http::StatusCode::BAD_REQUEST);
    let body: Value = bad.json().await.unwrap();
    assert!(
        body["error"].as_str().unwrap().contains("idempotency-key"),
        "{body}"
    );
}

/// The measurement: creates sent while Redis is stalled answer
/// UNAVAILABLE, yet Redis runs them once it resumes. Retried with their
/// keys they return those rooms: one room per key, not two.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn creates_retried_after_a_stall_make_one_room_each() {
    let redis = RedisServer::start();
    let store = connected_store(vec![redis.url()], false, unique_prefix()).await;
    let server = TestServer::start_with(Arc::new(store), false).await;
    let token = acme_token();
    let keys: Vec<String> = (0..10).map(|i| format!("stall-{i}")).collect();

    redis.pause();
    let client = server.rooms().await;
    let attempts = keys.iter().map(|key| {
        let mut client = client.clone();
        let request = with_key(CreateRoomRequest::default(), &token, key);
        async move { client.create_room(request).await }
    });
    let answers = futures::future::join_all(attempts).await;
    redis.resume();
    for answer in &answers {
        let status = answer.as_ref().expect_err("stalled creates fail");
        assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    }
    // Redis has now run the stalled scripts; the retries find their rooms.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut room_ids = HashSet::new();
    for key in &keys {
        let mut client = client.clone();
        let room = client
            .create_room(with_key(CreateRoomRequest::default(), &token, key))
            .await
            .expect("the retry succeeds")
            .into_inner();
        room_ids.insert(room.room_id);
    }
    assert_eq!(room_ids.len(), keys.len());
    assert_eq!(total_rooms(&server, &token).await, keys.len() as i64);
}
