//! Redis faults done to real redis-server processes: killed, hung, restarted,
//! absent at startup. Calls must fail fast with UNAVAILABLE, health must say
//! so, and the service must recover without a restart and without losing an
//! acknowledged room.

use std::sync::Arc;
use std::time::{Duration, Instant};

use roomservice::grpc::pb::{CreateRoomRequest, GetRoomRequest, Room, UpdateRoomStatusRequest};
use roomservice::store::{RedisConfig, RedisStore};
use tonic::Code;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

use crate::harness::*;
use crate::redis_harness::*;

async fn redis_backed_server(redis: &RedisServer) -> TestServer {
    let store = connected_store(vec![redis.url()], false, unique_prefix()).await;
    TestServer::start_with(Arc::new(store), false).await
}

async fn create(server: &TestServer, custom: Option<&str>) -> Result<Room, tonic::Status> {
    let request = CreateRoomRequest {
        custom_room_id: custom.map(str::to_owned),
        ..Default::default()
    };
    let mut client = server.rooms().await;
    client
        .create_room(authed(request, &acme_token()))
        .await
        .map(|r| r.into_inner())
}

async fn get(server: &TestServer, key: &str) -> Result<Room, tonic::Status> {
    let mut client = server.rooms().await;
    let request = GetRoomRequest {
        room_id: key.into(),
    };
    client
        .get_room(authed(request, &acme_token()))
        .await
        .map(|r| r.into_inner())
}

pub(crate) async fn health(server: &TestServer) -> ServingStatus {
    let mut client = HealthClient::new(server.channel().await);
    let request = HealthCheckRequest {
        service: "rooms.v1.RoomService".into(),
    };
    client.check(request).await.unwrap().into_inner().status()
}

pub(crate) async fn wait_for_health(server: &TestServer, wanted: ServingStatus, within: Duration) {
    let deadline = Instant::now() + within;
    while health(server).await != wanted {
        assert!(Instant::now() < deadline, "health never became {wanted:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Every call fails with UNAVAILABLE within one second and says why. Only
/// the call is timed: the client is connected beforehand.
async fn assert_fails_fast(server: &TestServer, room_id: &str) {
    let mut client = server.rooms().await;
    let token = acme_token();
    for attempt in 0..3 {
        let started = Instant::now();
        let request = authed(
            GetRoomRequest {
                room_id: room_id.into(),
            },
            &token,
        );
        let err = client.get_room(request).await.unwrap_err();
        let elapsed = started.elapsed();
        assert_eq!(
            err.code(),
            Code::Unavailable,
            "get attempt {attempt}: {err:?}"
        );
        assert_eq!(
            err.message(),
            "storage unavailable, retry",
            "no internals reach the caller"
        );
        assert!(
            elapsed <= Duration::from_secs(1),
            "get attempt {attempt} took {elapsed:?}"
        );

        let started = Instant::now();
        let request = authed(
            CreateRoomRequest {
                custom_room_id: Some("during-outage".into()),
                ..Default::default()
            },
            &token,
        );
        let err = client.create_room(request).await.unwrap_err();
        let elapsed = started.elapsed();
        assert_eq!(
            err.code(),
            Code::Unavailable,
            "create attempt {attempt}: {err:?}"
        );
        assert!(
            elapsed <= Duration::from_secs(1),
            "create attempt {attempt} took {elapsed:?}"
        );
    }
}

/// Polls CreateRoom until it succeeds; returns how long that took.
async fn time_to_recover(server: &TestServer, limit: Duration) -> Duration {
    let started = Instant::now();
    loop {
        if create(server, None).await.is_ok() {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < limit,
            "calls still failing after {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_redis_fails_fast_and_recovers_without_restart() {
    let mut redis = RedisServer::start();
    let server = redis_backed_server(&redis).await;
    let room = create(&server, Some("before-outage")).await.unwrap();
    assert_eq!(health(&server).await, ServingStatus::Serving);

    redis.kill();
    assert_fails_fast(&server, &room.room_id).await;
    wait_for_health(&server, ServingStatus::NotServing, Duration::from_secs(3)).await;

    redis.restart();
    let recovered_in = time_to_recover(&server, Duration::from_secs(2)).await;
    assert!(
        recovered_in <= Duration::from_secs(2),
        "recovered in {recovered_in:?}"
    );
    wait_for_health(&server, ServingStatus::Serving, Duration::from_secs(3)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hung_redis_fails_fast_instead_of_hanging() {
    let redis = RedisServer::start();
    let server = redis_backed_server(&redis).await;
    let room = create(&server, Some("before-hang")).await.unwrap();

    redis.pause();
    assert_fails_fast(&server, &room.room_id).await;
    wait_for_health(&server, ServingStatus::NotServing, Duration::from_secs(3)).await;

    redis.resume();
    time_to_recover(&server, Duration::from_secs(2)).await;
    assert_eq!(
        get(&server, &room.room_id).await.unwrap(),
        room,
        "nothing was lost while hung"
    );
    wait_for_health(&server, ServingStatus::Serving, Duration::from_secs(3)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_rooms_survive_a_redis_crash_with_appendonly() {
    let mut redis = RedisServer::start_with(&[
        "--save",
        "",
        "--appendonly",
        "yes",
        "--appendfsync",
        "always",
    ]);
    let server = redis_backed_server(&redis).await;
    let creates = (0..100).map(|i| {
        let custom = format!("durable-{i}");
        let server = &server;
        async move { create(server, Some(&custom)).await.unwrap() }
    });
    let acknowledged = futures::future::join_all(creates).await;

    redis.kill();
    redis.restart();
    time_to_recover(&server, Duration::from_secs(5)).await;
    for room in &acknowledged {
        assert_eq!(&get(&server, &room.room_id).await.unwrap(), room);
        assert_eq!(
            &get(&server, room.custom_room_id.as_deref().unwrap())
                .await
                .unwrap(),
            room
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn service_starts_while_redis_is_down_and_serves_once_it_is_up() {
    let mut redis = RedisServer::start();
    let url = redis.url();
    redis.kill();

    let store = RedisStore::new(RedisConfig {
        urls: vec![url],
        cluster: false,
        prefix: unique_prefix(),
        ..RedisConfig::default()
    });
    let server = TestServer::start_with(Arc::new(store), false).await;
    wait_for_health(&server, ServingStatus::NotServing, Duration::from_secs(3)).await;
    let err = create(&server, None).await.unwrap_err();
    assert_eq!(err.code(), Code::Unavailable);
    assert_eq!(
        err.message(),
        "storage unavailable, retry",
        "no internals reach the caller"
    );

    redis.restart();
    // The connection is retried with backoff capped at 5 s.
    wait_for_health(&server, ServingStatus::Serving, Duration::from_secs(10)).await;
    create(&server, Some("after-start")).await.unwrap();
}

/// A dead cluster primary makes health NOT_SERVING (a PING to a live node
/// would still answer) and calls for its slots fail fast; once it is back,
/// both recover without a service restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_cluster_primary_is_reported_and_recovered_from() {
    let mut cluster = RedisCluster::start();
    let store = connected_store(cluster.seed_urls(), true, unique_prefix()).await;
    let server = TestServer::start_with(Arc::new(store), false).await;
    let room = create(&server, Some("clustered")).await.unwrap();
    assert_eq!(health(&server).await, ServingStatus::Serving);

    // The primary that holds Acme's keys: the one node with keys at all.
    let owner = cluster
        .nodes
        .iter()
        .position(|node| !node.command(&["DBSIZE"]).starts_with(":0"))
        .expect("some node holds the room");
    cluster.nodes[owner].kill();

    wait_for_health(&server, ServingStatus::NotServing, Duration::from_secs(5)).await;
    let started = Instant::now();
    let err = get(&server, &room.room_id).await.unwrap_err();
    assert_eq!(err.code(), Code::Unavailable, "{err:?}");
    assert!(
        started.elapsed() <= Duration::from_secs(1),
        "took {:?}",
        started.elapsed()
    );

    cluster.nodes[owner].restart();
    wait_for_health(&server, ServingStatus::Serving, Duration::from_secs(15)).await;
    time_to_recover(&server, Duration::from_secs(5)).await;
}

/// Graceful shutdown: a call already running when the server is told to stop
/// gets its answer, and the server stops only after it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_lets_in_flight_calls_finish() {
    let redis = RedisServer::start();
    let server = redis_backed_server(&redis).await;
    let room = create(&server, Some("in-flight")).await.unwrap();
    let mut client = server.rooms().await;

    // Hold the call inside the server: Redis is paused (well within the
    // store's 500 ms reply timeout).
    redis.pause();
    let call = tokio::spawn(async move {
        let request = authed(
            GetRoomRequest {
                room_id: "in-flight".into(),
            },
            &acme_token(),
        );
        client.get_room(request).await
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    let stopping = tokio::spawn(server.stop());
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(
        !stopping.is_finished(),
        "shutdown waits for the in-flight call"
    );

    redis.resume();
    let answer = call
        .await
        .unwrap()
        .expect("the in-flight call gets its answer");
    assert_eq!(answer.into_inner(), room);
    tokio::time::timeout(Duration::from_secs(5), stopping)
        .await
        .expect("the server stops once the call is done")
        .unwrap();
}

/// The primary that holds the account's keys dies and the cluster promotes
/// its replica: the service follows on its own. Calls succeed again without
/// a restart; the room made before (replicated before the kill) is still
/// there and can be changed, and reads through the room cache see the
/// change; health is SERVING again. (Calls while no primary serves the slot
/// fail fast: `dead_cluster_primary_is_reported_and_recovered_from`.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failover_to_a_replica_is_followed_without_a_restart() {
    let mut cluster = RedisCluster::start_with_replicas(1);
    let store = connected_store(cluster.seed_urls(), true, unique_prefix()).await;
    let server = TestServer::start_with(Arc::new(store), false).await;
    let room = create(&server, Some("failover")).await.unwrap();
    assert_eq!(get(&server, &room.room_id).await.unwrap(), room);
    assert_eq!(get(&server, &room.room_id).await.unwrap(), room, "cached");

    let slot = cluster.slot_of_account(ACME_USER);
    let is_master = |node: &RedisServer| {
        resp_lines(&node.command(&["ROLE"]))
            .first()
            .is_some_and(|role| role == "master")
    };
    let owner = (0..cluster.nodes.len())
        .find(|&i| is_master(&cluster.nodes[i]) && cluster.keys_in_slot(i, slot) > 0)
        .expect("a master holds the account's keys");
    let owner_port = cluster.nodes[owner].port.to_string();
    let replica = (0..cluster.nodes.len())
        .find(|&i| {
            cluster.nodes[i]
                .info("replication")
                .contains(&format!("master_port:{owner_port}"))
        })
        .expect("the owner has a replica");
    // Replication is asynchronous: kill only once the replica has the room.
    let deadline = Instant::now() + Duration::from_secs(10);
    while cluster.keys_in_slot(replica, slot) != cluster.keys_in_slot(owner, slot) {
        assert!(Instant::now() < deadline, "the replica never caught up");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    cluster.nodes[owner].kill();
    let deadline = Instant::now() + Duration::from_secs(20);
    while !is_master(&cluster.nodes[replica]) {
        assert!(Instant::now() < deadline, "the replica was never promoted");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let recovered_in = time_to_recover(&server, Duration::from_secs(10)).await;
    eprintln!("calls succeed again {recovered_in:?} after the promotion");
    assert_eq!(get(&server, &room.room_id).await.unwrap(), room);
    let mut client = server.rooms().await;
    let disabled = client
        .update_room_status(authed(
            UpdateRoomStatusRequest {
                room_id: room.room_id.clone(),
                status: "disabled".into(),
            },
            &acme_token(),
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(disabled.disabled);
    for _ in 0..2 {
        assert_eq!(get(&server, &room.room_id).await.unwrap(), disabled);
    }
    wait_for_health(&server, ServingStatus::Serving, Duration::from_secs(10)).await;
}
