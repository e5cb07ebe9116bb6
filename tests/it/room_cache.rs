//! GetRoom by roomId on Redis is served from each replica's memory, and is
//! never stale: a change made through one replica is seen by the next read
//! through any other, even when the reader had the room cached; a lost
//! connection forgets the cache; the cache stays within its bound.

use std::sync::Arc;
use std::time::{Duration, Instant};

use jiff::Timestamp;
use roomservice::domain::{Room, RoomId, UserId};
use roomservice::grpc::pb::room_service_client::RoomServiceClient;
use roomservice::grpc::pb::{
    CreateRoomRequest, DeactivateRoomRequest, GetRoomRequest, Room as PbRoom,
    UpdateRoomStatusRequest,
};
use roomservice::store::{RedisConfig, RedisStore, RoomKey, Store};
use tonic::transport::Channel;

use crate::harness::*;
use crate::redis_harness::*;

/// A replica: a server on its own store (own connection, own cache) over a
/// Redis shared with the other replicas through the same key prefix.
struct Replica {
    store: Arc<RedisStore>,
    client: RoomServiceClient<Channel>,
    _server: TestServer,
}

impl Replica {
    async fn start(urls: Vec<String>, cluster: bool, prefix: &str) -> Replica {
        let store = Arc::new(connected_store(urls, cluster, prefix.to_owned()).await);
        let server = TestServer::start_opts(ServerOptions::quiet(store.clone())).await;
        let client = server.rooms().await;
        Replica {
            store,
            client,
            _server: server,
        }
    }

    fn hits(&self) -> u64 {
        self.store.room_cache_stats().expect("cache on").hits
    }

    async fn get(&mut self, room_id: &str) -> PbRoom {
        let request = GetRoomRequest {
            room_id: room_id.into(),
        };
        self.client
            .get_room(authed(request, &acme_token()))
            .await
            .unwrap_or_else(|e| panic!("GetRoom {room_id}: {e:?}"))
            .into_inner()
    }

    async fn create(&mut self, custom: &str) -> PbRoom {
        let request = CreateRoomRequest {
            custom_room_id: Some(custom.into()),
            ..Default::default()
        };
        self.client
            .create_room(authed(request, &acme_token()))
            .await
            .unwrap()
            .into_inner()
    }

    async fn set_status(&mut self, room_id: &str, disabled: bool, deactivate: bool) -> PbRoom {
        let token = acme_token();
        let reply = if deactivate {
            let request = DeactivateRoomRequest {
                room_id: room_id.into(),
            };
            self.client.deactivate_room(authed(request, &token)).await
        } else {
            let request = UpdateRoomStatusRequest {
                room_id: room_id.into(),
                status: if disabled { "disabled" } else { "enabled" }.into(),
            };
            self.client
                .update_room_status(authed(request, &token))
                .await
        };
        reply.unwrap().into_inner()
    }
}

/// What a reader must see after a change: the room as the writer returned it.
fn assert_fresh(read: &PbRoom, written: &PbRoom, who: &str, iteration: usize) {
    assert_eq!(
        (
            read.room_id.as_str(),
            read.disabled,
            read.updated_at.as_str()
        ),
        (
            written.room_id.as_str(),
            written.disabled,
            written.updated_at.as_str()
        ),
        "iteration {iteration}: {who} read a stale room"
    );
}

/// 1,000 times: read through B and check that it came from B's cache (the
/// read after the previous change refilled it), change the room through A,
/// and at once read through B and A.
async fn changes_through_one_replica_are_seen_by_the_other(urls: Vec<String>, cluster: bool) {
    let prefix = unique_prefix();
    let mut a = Replica::start(urls.clone(), cluster, &prefix).await;
    let mut b = Replica::start(urls, cluster, &prefix).await;
    let mut room = a.create("cache-0").await;
    let mut disabled = false;
    b.get(&room.room_id).await;
    for i in 0..1000 {
        if i % 100 == 99 {
            // A new room, made through A, read through B at once by roomId:
            // B cannot have it cached, and must not have cached its absence.
            room = a.create(&format!("cache-{i}")).await;
            disabled = false;
            let read = b.get(&room.room_id).await;
            assert_fresh(&read, &room, "B (new room)", i);
        }
        let hits = b.hits();
        let warm = b.get(&room.room_id).await;
        assert_eq!(b.hits(), hits + 1, "iteration {i}: B's cache was not warm");
        assert_eq!(warm.disabled, disabled, "iteration {i}");

        disabled = !disabled;
        let written = a
            .set_status(&room.room_id, disabled, disabled && i % 4 == 0)
            .await;
        assert_eq!(written.disabled, disabled);
        let through_b = b.get(&room.room_id).await;
        assert_fresh(&through_b, &written, "B", i);
        let through_a = a.get(&room.room_id).await;
        assert_fresh(&through_a, &written, "A", i);
    }
    assert!(b.hits() >= 1000, "B served {} hits", b.hits());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_on_one_redis_never_read_stale() {
    changes_through_one_replica_are_seen_by_the_other(vec![shared_redis().url()], false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_on_a_cluster_never_read_stale() {
    changes_through_one_replica_are_seen_by_the_other(shared_cluster().seed_urls(), true).await;
}

fn user() -> UserId {
    UserId::parse(ACME_USER).unwrap()
}

fn stored_room(room_id: &str, disabled: bool) -> Room {
    let at = Timestamp::now();
    Room {
        room_id: RoomId::parse(room_id).unwrap(),
        user_id: user(),
        custom_room_id: None,
        disabled,
        created_at: at,
        updated_at: at,
        settings: Default::default(),
    }
}

fn by_room_id(room_id: &str) -> RoomKey {
    RoomKey::parse(room_id).unwrap()
}

/// Reads until the store answers again (it reconnects on its own).
async fn read_when_back(store: &RedisStore, room_id: &str) -> Option<Room> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match store.get_room(&user(), &by_room_id(room_id)).await {
            Ok(found) => return found,
            Err(e) => {
                assert!(Instant::now() < deadline, "store never came back: {e}");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_cached_before_a_lost_connection_is_served() {
    let mut redis = RedisServer::start();
    let prefix = unique_prefix();
    let reader = connected_store(vec![redis.url()], false, prefix.clone()).await;
    let room_id = "cach-ed00-0001";
    reader
        .create_room(&stored_room(room_id, false), u64::MAX)
        .await
        .unwrap();
    for _ in 0..2 {
        let found = reader.get_room(&user(), &by_room_id(room_id)).await;
        assert!(!found.unwrap().unwrap().disabled);
    }
    let before = reader.room_cache_stats().unwrap();
    assert_eq!(before.hits, 1, "the second read was a hit: {before:?}");

    // Redis restarts empty; another writer stores the room changed before
    // the reader has reconnected.
    redis.restart();
    let writer = connected_store(vec![redis.url()], false, prefix.clone()).await;
    writer
        .create_room(&stored_room(room_id, true), u64::MAX)
        .await
        .unwrap();
    let found = read_when_back(&reader, room_id).await;
    assert!(found.unwrap().disabled, "the reader served its old cache");
    // Forgotten because the connection was lost (its Disconnection push, or
    // a barrier that failed on it), not by luck: Redis client ids restart
    // with Redis, so the new connection's id may equal the old one's.
    assert!(reader.room_cache_stats().unwrap().flushes >= 1);

    // And a room gone from Redis altogether (FLUSHALL) is gone for readers.
    for _ in 0..2 {
        assert!(read_when_back(&reader, room_id).await.is_some());
    }
    let hits = reader.room_cache_stats().unwrap().hits;
    assert!(hits >= 2, "cached again after reconnecting: {hits}");
    assert!(redis.command(&["FLUSHALL"]).contains("OK"));
    assert_eq!(read_when_back(&reader, room_id).await, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cache_stays_within_its_bound() {
    let bound = 8 * 1024;
    let store = RedisStore::new(RedisConfig {
        urls: vec![shared_redis().url()],
        prefix: unique_prefix(),
        room_cache_bytes: bound,
        ..RedisConfig::default()
    });
    let rooms: Vec<String> = (0..200).map(|n| format!("boun-ded0-{n:04}")).collect();
    let deadline = Instant::now() + Duration::from_secs(10);
    while store.ping().await.is_err() {
        assert!(Instant::now() < deadline, "store never connected");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for room_id in &rooms {
        store
            .create_room(&stored_room(room_id, false), u64::MAX)
            .await
            .unwrap();
    }
    for round in 0..2 {
        for room_id in &rooms {
            let found = store.get_room(&user(), &by_room_id(room_id)).await.unwrap();
            assert_eq!(found.unwrap().room_id.as_str(), room_id, "round {round}");
            let stats = store.room_cache_stats().unwrap();
            assert!(stats.bytes <= bound, "{stats:?}");
        }
    }
    let stats = store.room_cache_stats().unwrap();
    assert!(
        stats.entries > 0 && stats.entries < rooms.len(),
        "{stats:?}"
    );
    // The most recent rooms are still served from memory.
    let hits = stats.hits;
    store
        .get_room(&user(), &by_room_id(rooms.last().unwrap()))
        .await
        .unwrap();
    assert_eq!(store.room_cache_stats().unwrap().hits, hits + 1);
}

#[tokio::test]
async fn a_zero_bound_turns_the_cache_off() {
    let store = RedisStore::new(RedisConfig {
        urls: vec![shared_redis().url()],
        room_cache_bytes: 0,
        ..RedisConfig::default()
    });
    assert_eq!(store.room_cache_stats(), None);
}

/// The account's slot is resharded to another primary while two replicas
/// serve it, B with the room cached. Reads by roomId follow the slot
/// without an error, never serve the room as it was before a change made
/// after the move, and are cached again on the new primary; creates work.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resharded_slot_is_followed_and_never_read_stale() {
    let (cluster, mut a, mut b, room, slot, from) =
        two_replicas_on_a_new_cluster("reshard-0").await;
    b.get(&room.room_id).await;
    let hits = b.hits();
    b.get(&room.room_id).await;
    assert_eq!(b.hits(), hits + 1, "B had the room cached before the move");

    let to = (from + 1) % cluster.nodes.len();
    cluster.move_slot(slot, from, to);
    assert_eq!(cluster.keys_in_slot(from, slot), 0, "keys left behind");
    assert!(cluster.keys_in_slot(to, slot) > 0, "keys not moved");

    // B's entry was dropped when the keys left the old primary (an
    // invalidation); its first read is sent there, is MOVED, and follows.
    let read = b.get(&room.room_id).await;
    assert_fresh(&read, &room, "B, first read after the move", 0);
    for i in 0..20 {
        let written = a.set_status(&room.room_id, i % 2 == 0, false).await;
        let through_b = b.get(&room.room_id).await;
        assert_fresh(&through_b, &written, "B after the move", i);
        let through_a = a.get(&room.room_id).await;
        assert_fresh(&through_a, &written, "A after the move", i);
    }
    let hits = b.hits();
    b.get(&room.room_id).await;
    assert_eq!(b.hits(), hits + 1, "B caches again on the new primary");

    let created = b.create("reshard-1").await;
    let read = a.get(&created.room_id).await;
    assert_fresh(&read, &created, "A, a room made after the move", 0);
}

/// Reads while the account's slot is half moved (its keys already on the
/// new primary, reached by an ASK redirect) are answered, and fresh. What
/// B read then must not be served unless it was tracked where it was read:
/// once the move is complete and B routes to the new primary, a change
/// through A is seen by B's next read. And B caches again after the move.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_during_a_reshard_are_answered_and_never_stale() {
    let (cluster, mut a, mut b, room, slot, from) =
        two_replicas_on_a_new_cluster("midmove-0").await;
    let to = (from + 1) % cluster.nodes.len();

    cluster.begin_slot_move(slot, from, to);
    // The keys are on the new primary; the old one still owns the slot.
    let read = b.get(&room.room_id).await;
    assert_fresh(&read, &room, "B during the move", 0);
    let written = a.set_status(&room.room_id, true, false).await;
    let read = b.get(&room.room_id).await;
    assert_fresh(&read, &written, "B during the move, after a change", 1);

    cluster.finish_slot_move(slot, from, to);
    // B's next call for the slot is MOVED, and B learns the new owner
    // without touching the room's entry, if it has one.
    b.create("midmove-1").await;
    let written = a.set_status(&room.room_id, false, false).await;
    let read = b.get(&room.room_id).await;
    assert_fresh(&read, &written, "B after the move", 2);
    let hits = b.hits();
    b.get(&room.room_id).await;
    assert_eq!(b.hits(), hits + 1, "B caches again once the move is done");
}

/// A new 3-master cluster with two replicas on it, and a room made through
/// A; and the account's slot and the node that holds it.
async fn two_replicas_on_a_new_cluster(
    custom_room_id: &str,
) -> (RedisCluster, Replica, Replica, PbRoom, u16, usize) {
    let cluster = RedisCluster::start();
    let prefix = unique_prefix();
    let mut a = Replica::start(cluster.seed_urls(), true, &prefix).await;
    let b = Replica::start(cluster.seed_urls(), true, &prefix).await;
    let room = a.create(custom_room_id).await;
    let slot = cluster.slot_of_account(ACME_USER);
    let owner = (0..cluster.nodes.len())
        .find(|&node| cluster.keys_in_slot(node, slot) > 0)
        .expect("some node holds the account's keys");
    (cluster, a, b, room, slot, owner)
}
