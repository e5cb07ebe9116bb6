//! What the service does about Redis's memory policy, against real
//! redis-server processes: a Redis that may evict keys (`maxmemory-policy`
//! other than `noeviction`) is refused, at startup and when its policy
//! changes at runtime, unless `--allow-evicting-redis`; a Redis at
//! `maxmemory` under `noeviction` refuses writes, which fail UNAVAILABLE,
//! write nothing and are counted. And the per-account room limit
//! (`--max-rooms-per-account`) as callers see it.

use std::sync::Arc;
use std::time::{Duration, Instant};

use http::{StatusCode, header};
use roomservice::grpc::pb::{CreateRoomRequest, DeactivateRoomRequest, GetRoomRequest, Room};
use roomservice::server::Limits;
use roomservice::store::{RedisConfig, RedisStore, Store, StoreError};
use serde_json::Value;
use tonic::Code;
use tonic_health::pb::health_check_response::ServingStatus;

use crate::harness::*;
use crate::redis_faults::{health, wait_for_health};
use crate::redis_harness::*;

const EVICTING: &[&str] = &[
    "--save",
    "",
    "--appendonly",
    "no",
    "--maxmemory-policy",
    "allkeys-lru",
];

/// The cause a refused call or ping carries for a single node with
/// `allkeys-lru`.
const ALLKEYS_LRU_REFUSAL: &str = "redis maxmemory-policy is allkeys-lru: it may evict rooms; \
     set maxmemory-policy noeviction, or start with --allow-evicting-redis (dangerous)";

/// A store on `urls` that has made its first connection, whether or not
/// Redis's policy lets it serve: `connected_store` would wait forever for an
/// evicting Redis.
async fn linked_store(urls: Vec<String>, cluster: bool, allow_evicting: bool) -> Arc<RedisStore> {
    let store = Arc::new(RedisStore::new(RedisConfig {
        urls,
        cluster,
        prefix: unique_prefix(),
        allow_evicting,
        ..RedisConfig::default()
    }));
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match store.ping().await {
            Err(StoreError::Unavailable(cause)) if cause.starts_with("not connected") => {
                assert!(Instant::now() < deadline, "never connected: {cause}");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            _ => return store,
        }
    }
}

async fn create(server: &TestServer, custom: &str) -> Result<Room, tonic::Status> {
    let request = CreateRoomRequest {
        custom_room_id: Some(custom.to_owned()),
        ..Default::default()
    };
    let mut client = server.rooms().await;
    client
        .create_room(authed(request, &acme_token()))
        .await
        .map(|r| r.into_inner())
}

async fn get(server: &TestServer, key: &str) -> Result<Room, tonic::Status> {
    let request = GetRoomRequest {
        room_id: key.to_owned(),
    };
    let mut client = server.rooms().await;
    client
        .get_room(authed(request, &acme_token()))
        .await
        .map(|r| r.into_inner())
}

/// The call failed as every storage failure does: UNAVAILABLE with the fixed
/// message, no internals.
fn assert_storage_unavailable(result: Result<Room, tonic::Status>, what: &str) {
    let status = result.expect_err(what);
    assert_eq!(status.code(), Code::Unavailable, "{what}: {status:?}");
    assert_eq!(status.message(), "storage unavailable, retry", "{what}");
}

async fn readyz(server: &TestServer) -> StatusCode {
    server
        .http()
        .get(format!("{}/readyz", server.url()))
        .send()
        .await
        .unwrap()
        .status()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn evicting_redis_is_refused_until_its_policy_is_noeviction() {
    let redis = RedisServer::start_with(EVICTING);
    let store = linked_store(vec![redis.url()], false, false).await;
    let error = store.ping().await.unwrap_err();
    assert!(
        matches!(&error, StoreError::Unavailable(cause) if cause == ALLKEYS_LRU_REFUSAL),
        "{error:?}"
    );

    let server = TestServer::start_with(store.clone(), false).await;
    assert_eq!(health(&server).await, ServingStatus::NotServing);
    assert_eq!(readyz(&server).await, StatusCode::SERVICE_UNAVAILABLE);
    assert_storage_unavailable(create(&server, "while-evicting").await, "create");
    assert_storage_unavailable(get(&server, "while-evicting").await, "get");
    assert_eq!(
        redis.scan_keys(),
        Vec::<String>::new(),
        "nothing was written"
    );

    // Fixed at runtime: served again within a probe interval or two.
    assert!(
        redis
            .command(&["CONFIG", "SET", "maxmemory-policy", "noeviction"])
            .starts_with("+OK")
    );
    wait_for_health(&server, ServingStatus::Serving, Duration::from_secs(2)).await;
    let room = create(&server, "after-fix").await.unwrap();
    assert_eq!(get(&server, "after-fix").await.unwrap(), room);
    assert_eq!(readyz(&server).await, StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_policy_changed_at_runtime_is_caught() {
    let redis = RedisServer::start();
    let store = linked_store(vec![redis.url()], false, false).await;
    store
        .ping()
        .await
        .expect("noeviction, the default, is served");
    let server = TestServer::start_with(store.clone(), false).await;
    let room = create(&server, "before-change").await.unwrap();
    assert_eq!(health(&server).await, ServingStatus::Serving);

    for policy in ["volatile-lru", "allkeys-random"] {
        assert!(
            redis
                .command(&["CONFIG", "SET", "maxmemory-policy", policy])
                .starts_with("+OK")
        );
        wait_for_health(&server, ServingStatus::NotServing, Duration::from_secs(2)).await;
        // Every call is refused, reads included: the rooms they would read
        // may already be gone.
        assert_storage_unavailable(get(&server, "before-change").await, policy);
        assert_storage_unavailable(create(&server, "during-change").await, policy);
        let error = store.ping().await.unwrap_err().to_string();
        assert!(
            error.contains(&format!(
                "redis maxmemory-policy is {policy}: it may evict rooms"
            )),
            "{error}"
        );

        assert!(
            redis
                .command(&["CONFIG", "SET", "maxmemory-policy", "noeviction"])
                .starts_with("+OK")
        );
        wait_for_health(&server, ServingStatus::Serving, Duration::from_secs(2)).await;
        assert_eq!(get(&server, "before-change").await.unwrap(), room);
    }
    assert_eq!(
        get(&server, "during-change").await.unwrap_err().code(),
        Code::NotFound,
        "no refused create was written"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allow_evicting_serves_an_evicting_redis() {
    let redis = RedisServer::start_with(EVICTING);
    let store = linked_store(vec![redis.url()], false, true).await;
    store.ping().await.expect("allowed");
    let server = TestServer::start_with(store, false).await;
    assert_eq!(health(&server).await, ServingStatus::Serving);
    let room = create(&server, "allowed").await.unwrap();
    assert_eq!(get(&server, "allowed").await.unwrap(), room);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_cluster_primary_is_checked() {
    let cluster = RedisCluster::start();
    let store = linked_store(cluster.seed_urls(), true, false).await;
    store.ping().await.expect("all noeviction");
    let server = TestServer::start_with(store.clone(), false).await;
    create(&server, "clustered").await.unwrap();

    let node = &cluster.nodes[1];
    assert!(
        node.command(&["CONFIG", "SET", "maxmemory-policy", "allkeys-lfu"])
            .starts_with("+OK")
    );
    let error = store.ping().await.unwrap_err().to_string();
    assert!(
        error.contains(&format!(
            "redis maxmemory-policy is allkeys-lfu on node 127.0.0.1:{}: it may evict rooms",
            node.port
        )),
        "{error}"
    );
    wait_for_health(&server, ServingStatus::NotServing, Duration::from_secs(2)).await;
    assert_storage_unavailable(get(&server, "clustered").await, "get");

    assert!(
        node.command(&["CONFIG", "SET", "maxmemory-policy", "noeviction"])
            .starts_with("+OK")
    );
    wait_for_health(&server, ServingStatus::Serving, Duration::from_secs(2)).await;
    get(&server, "clustered").await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_refused_at_maxmemory_fail_unavailable_write_nothing_and_are_counted() {
    let redis = RedisServer::start();
    let store = linked_store(vec![redis.url()], false, false).await;
    store.ping().await.unwrap();
    let server = TestServer::start_with(store.clone(), false).await;
    let room = create(&server, "before-full").await.unwrap();
    let keys_before = redis.scan_keys();
    assert_eq!(store.oom_refusals(), 0);

    // Any used memory is now over maxmemory; noeviction frees nothing.
    assert!(
        redis
            .command(&["CONFIG", "SET", "maxmemory", "1"])
            .starts_with("+OK")
    );
    assert_storage_unavailable(create(&server, "when-full").await, "create");
    assert_eq!(store.oom_refusals(), 1);
    let mut client = server.rooms().await;
    let deactivate = DeactivateRoomRequest {
        room_id: room.room_id.clone(),
    };
    assert_storage_unavailable(
        client
            .deactivate_room(authed(deactivate, &acme_token()))
            .await
            .map(|r| r.into_inner()),
        "deactivate",
    );
    assert_eq!(store.oom_refusals(), 2);
    assert_eq!(redis.scan_keys(), keys_before, "no key was added");
    // Reads still work, and see nothing half-written.
    assert_eq!(get(&server, "before-full").await.unwrap(), room);
    assert_eq!(
        get(&server, "when-full").await.unwrap_err().code(),
        Code::NotFound
    );
    assert_eq!(health(&server).await, ServingStatus::Serving);

    assert!(
        redis
            .command(&["CONFIG", "SET", "maxmemory", "0"])
            .starts_with("+OK")
    );
    create(&server, "when-full").await.unwrap();
    assert_eq!(store.oom_refusals(), 2);
}

/// `--max-rooms-per-account`: RESOURCE_EXHAUSTED over gRPC, 429 over REST,
/// with a message naming the limit; a repeat of an existing customRoomId is
/// still answered.
#[tokio::test]
async fn rooms_past_the_account_limit_are_resource_exhausted() {
    let server = TestServer::start_with_limits(Limits {
        max_rooms_per_account: 2,
        ..Limits::default()
    })
    .await;
    let first = create(&server, "one").await.unwrap();
    create(&server, "two").await.unwrap();
    let status = create(&server, "three").await.unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert_eq!(
        status.message(),
        "room limit reached: an account may hold at most 2 rooms"
    );
    assert_eq!(
        create(&server, "one").await.unwrap(),
        first,
        "a repeat adds nothing"
    );

    let reply = server
        .http()
        .post(format!("{}/v2/rooms", server.url()))
        .header(header::AUTHORIZATION, acme_token())
        .header(header::CONTENT_TYPE, "application/json")
        .body(r#"{"customRoomId":"three"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(reply.status(), StatusCode::TOO_MANY_REQUESTS);
    let body: Value = serde_json::from_str(&reply.text().await.unwrap()).unwrap();
    assert_eq!(body["code"], "resource_exhausted");
    assert_eq!(
        body["error"],
        "room limit reached: an account may hold at most 2 rooms"
    );

    // The limit is per account.
    let mut client = server.rooms().await;
    let request = CreateRoomRequest {
        custom_room_id: Some("three".into()),
        ..Default::default()
    };
    client
        .create_room(authed(request, &globex_token()))
        .await
        .expect("another account has room to spare");
}
