//! The event store conformance suite: every `EventStore` implementation must
//! pass these cases, on the memory store, a single Redis and a Redis Cluster.
//! `event_conformance_suite!(backend, make)` instantiates them for one
//! backend; `make` returns a [`Backend`], whose every [`Backend::store`] is a
//! store over the case's own data (on Redis a new connection under the
//! case's own prefix, the way another replica sees the same Redis).

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use roomservice::domain::{
    EndReason, Event, EventId, NewEvent, Room, RoomId, Session, SessionRules, UserId,
};
use roomservice::store::{
    CreateOutcome, DEAD_LETTERS, DeliveryHint, DeliveryRecord, DeliveryState, DeliveryUpdate,
    EventStore, MemoryStore, RECENT_DELIVERIES, RoomDeliveries, SaveOutcome, SaveSession,
    SessionStore, Store, StoredEvent,
};
use serde_json::{Value, json};

macro_rules! event_conformance_suite {
    ($backend:ident, $make:path) => {
        mod $backend {
            event_conformance_suite!(@cases $make;
                appended_events_read_back_in_order,
                after_is_exclusive_and_limit_caps_the_page,
                a_saved_session_appends_its_events_in_the_same_step,
                a_refused_save_appends_nothing,
                the_lease_is_exclusive_until_released,
                the_lease_expires,
                updates_without_the_lease_write_nothing,
                assigned_only_moves_forward,
                room_queues_are_set_and_removed,
                records_and_dead_letters_are_newest_first_and_capped,
                taking_a_dead_letter_removes_exactly_one,
                trimming_drops_older_events_and_reports_it,
                the_newest_event_id_is_where_the_log_ends,
                hints_only_move_earlier,
                due_hints_are_those_due_at_now,
                settling_removes_or_moves_a_hint,
                a_settle_after_a_newer_hint_is_refused,
                the_first_signing_key_wins_across_stores,
                accounts_are_isolated
            );
        }
    };
    (@cases $make:path; $($case:ident),*) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                $crate::event_store_conformance::$case($make().await).await
            }
        )*
    };
}

event_conformance_suite!(memory, crate::event_store_conformance::memory);
event_conformance_suite!(single_redis, crate::event_store_conformance::single_redis);
event_conformance_suite!(redis_cluster, crate::event_store_conformance::redis_cluster);

// ---------------------------------------------------------------------------
// Backends

/// A store of every concept; each implementation is one.
pub trait Stores: Store + SessionStore + EventStore {}
impl<T: Store + SessionStore + EventStore> Stores for T {}

type Shared = Arc<dyn Stores>;

/// Where a case's data lives.
#[derive(Clone)]
pub enum Backend {
    /// One store, which every [`Backend::store`] returns.
    Memory(Arc<MemoryStore>),
    /// Every [`Backend::store`] opens its own connection, under the case's
    /// own prefix.
    Redis {
        urls: Vec<String>,
        cluster: bool,
        prefix: String,
    },
}

impl Backend {
    async fn store(&self) -> Shared {
        match self {
            Backend::Memory(store) => store.clone(),
            Backend::Redis {
                urls,
                cluster,
                prefix,
            } => Arc::new(
                crate::redis_harness::connected_store(urls.clone(), *cluster, prefix.clone()).await,
            ),
        }
    }
}

async fn memory() -> Backend {
    Backend::Memory(Arc::new(MemoryStore::new()))
}

async fn single_redis() -> Backend {
    Backend::Redis {
        urls: vec![crate::redis_harness::shared_redis().url()],
        cluster: false,
        prefix: crate::redis_harness::unique_prefix(),
    }
}

async fn redis_cluster() -> Backend {
    Backend::Redis {
        urls: crate::redis_harness::shared_cluster().seed_urls(),
        cluster: true,
        prefix: crate::redis_harness::unique_prefix(),
    }
}

// ---------------------------------------------------------------------------
// Helpers

/// Fixed times: the stores read no clock for anything these cases compare
/// (event ids follow the store's clock, and only their order is checked).
const T0: i64 = 1_700_000_000_000;

/// Long enough never to run out during a case.
const LONG: Duration = Duration::from_secs(60);

fn user(n: u8) -> UserId {
    UserId::parse(&format!("{n:024x}")).unwrap()
}

/// `T0 + ms`.
fn at(ms: i64) -> Timestamp {
    Timestamp::from_millisecond(T0 + ms).unwrap()
}

fn id(millis: u64, seq: u64) -> EventId {
    EventId { millis, seq }
}

/// Event number `n` of `room`: data with nesting, unicode and numbers, and
/// every third one a replay.
fn event(room: &RoomId, n: i64) -> NewEvent {
    let data = json!({
        "sessionId": format!("s{n}"),
        "participantName": "Zoë \u{1F3A5} \"quoted\"",
        "n": n,
        "ratio": 0.5,
        "nested": {"list": [1, "two", null, true]},
    });
    let Value::Object(data) = data else {
        unreachable!()
    };
    NewEvent {
        room_id: room.clone(),
        kind: if n % 2 == 0 {
            "hls-started".to_owned()
        } else {
            "recording-stopped".to_owned()
        },
        data,
        at: at(n),
        replay_of: (n % 3 == 2).then(|| id(1_600_000_000_000 + n as u64, 7)),
    }
}

async fn append(store: &Shared, owner: &UserId, room: &RoomId, count: i64) -> Vec<EventId> {
    let mut ids = Vec::new();
    for n in 0..count {
        ids.push(store.append_event(owner, &event(room, n)).await.unwrap());
    }
    ids
}

async fn read_ids(store: &Shared, owner: &UserId, after: Option<EventId>) -> Vec<EventId> {
    store
        .read_events(owner, after, usize::MAX)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.id)
        .collect()
}

fn record(event_id: &str, attempt: u32) -> DeliveryRecord {
    DeliveryRecord {
        event_id: event_id.to_owned(),
        webhook_id: format!("evt_x_{event_id}"),
        room_id: "abcd-efgh-ijkl".to_owned(),
        webhook_type: "session-started".to_owned(),
        end_point: "https://hooks.example.com/in?a=1&b=\"2\"".to_owned(),
        outcome: "retrying".to_owned(),
        status: Some(503),
        error: "HTTP 503 from the receiver".to_owned(),
        attempt,
        at_ms: T0 + i64::from(attempt),
        event: None,
    }
}

/// A dead letter, carrying its event.
fn dead(event_id: &str, attempt: u32) -> DeliveryRecord {
    DeliveryRecord {
        outcome: "dead".to_owned(),
        status: None,
        event: Some(StoredEvent {
            id: event_id.to_owned(),
            room_id: "abcd-efgh-ijkl".to_owned(),
            kind: "session-started".to_owned(),
            data: r#"{"sessionId":"s1","meetingId":"abcd-efgh-ijkl"}"#.to_owned(),
            at_ms: T0,
            replay_of: None,
        }),
        ..record(event_id, attempt)
    }
}

fn queue(ids: &[EventId], attempts: u32) -> RoomDeliveries {
    RoomDeliveries {
        queue: ids.to_vec(),
        attempts,
        first_attempt_ms: if attempts > 0 { T0 } else { 0 },
        next_attempt_ms: if attempts > 0 { T0 + 5_000 } else { 0 },
    }
}

async fn lease(store: &Shared, owner: &UserId, holder: &str) {
    assert!(
        store.lease_deliveries(owner, holder, LONG).await.unwrap(),
        "{holder} takes the lease of {owner}"
    );
}

async fn update(store: &Shared, owner: &UserId, holder: &str, update: DeliveryUpdate) {
    assert!(
        store
            .update_deliveries(owner, holder, &update)
            .await
            .unwrap(),
        "{holder} holds the lease of {owner}: the update applies"
    );
}

async fn state(store: &Shared, owner: &UserId) -> DeliveryState {
    store.delivery_state(owner).await.unwrap()
}

/// The hints due at `now`, all of them.
async fn hints(store: &Shared, now: Timestamp) -> Vec<DeliveryHint> {
    store.due_hints(now, 10_000).await.unwrap()
}

/// The one hint of `owner` due at `now`, if any.
async fn hint_of(store: &Shared, owner: &UserId, now: Timestamp) -> Option<DeliveryHint> {
    let mut mine: Vec<_> = hints(store, now)
        .await
        .into_iter()
        .filter(|h| h.user_id == *owner)
        .collect();
    assert!(mine.len() <= 1, "one hint per account: {mine:?}");
    mine.pop()
}

async fn new_room(store: &Shared, owner: &UserId) -> Room {
    let room = Room {
        room_id: RoomId::generate(),
        user_id: owner.clone(),
        custom_room_id: None,
        disabled: false,
        created_at: at(0),
        updated_at: at(0),
        settings: Default::default(),
    };
    match store.create_room(&room, u64::MAX).await.unwrap() {
        CreateOutcome::Created(stored) => stored,
        other => panic!("expected Created, got {other:?}"),
    }
}

fn started(room: &Room, start_ms: i64) -> Session {
    let rules = SessionRules {
        lifetime: Duration::from_secs(600),
        lifetime_reason: EndReason::AutoClose,
        deactivates_room: false,
        empty_grace: Duration::from_secs(60),
    };
    let mut session = Session::start(
        room.user_id.clone(),
        room.room_id.clone(),
        None,
        &rules,
        at(start_ms),
    );
    assert!(session.join("alice", "Alice", at(start_ms)));
    session
}

fn write<'a>(
    session: &'a Session,
    expected_version: Option<u64>,
    events: &'a [NewEvent],
) -> SaveSession<'a> {
    SaveSession {
        session,
        expected_version,
        expected_latest: None,
        require_room_enabled: false,
        disable_room: false,
        now: at(100_000),
        events,
    }
}

// ---------------------------------------------------------------------------
// The log

pub async fn appended_events_read_back_in_order(backend: Backend) {
    let store = backend.store().await;
    let owner = user(1);
    let room = RoomId::generate();
    let ids = append(&store, &owner, &room, 6).await;
    assert!(
        ids.windows(2).all(|w| w[0] < w[1]),
        "ids grow strictly: {ids:?}"
    );
    let expected: Vec<Event> = ids
        .iter()
        .zip(0..)
        .map(|(id, n)| Event::stored(*id, event(&room, n)))
        .collect();
    assert_eq!(
        store.read_events(&owner, None, 100).await.unwrap(),
        expected
    );
    // Another connection reads the same log.
    let other = backend.store().await;
    assert_eq!(
        other.read_events(&owner, None, 100).await.unwrap(),
        expected
    );
    // Appends keep going after what is there, also from another connection.
    let more = other.append_event(&owner, &event(&room, 9)).await.unwrap();
    assert!(more > ids[5]);
    assert_eq!(
        store.read_events(&owner, Some(ids[5]), 100).await.unwrap(),
        vec![Event::stored(more, event(&room, 9))]
    );
    assert_eq!(store.trimmed_before(&owner).await.unwrap(), None);
}

pub async fn after_is_exclusive_and_limit_caps_the_page(backend: Backend) {
    let store = backend.store().await;
    let owner = user(2);
    let room = RoomId::generate();
    let ids = append(&store, &owner, &room, 5).await;

    assert_eq!(read_ids(&store, &owner, None).await, ids);
    assert_eq!(read_ids(&store, &owner, Some(ids[1])).await, ids[2..]);
    assert_eq!(read_ids(&store, &owner, Some(ids[4])).await, vec![]);
    // An id before the log, and one after it.
    assert_eq!(read_ids(&store, &owner, Some(id(0, 0))).await, ids);
    let future = id(ids[4].millis + 1, 0);
    assert_eq!(read_ids(&store, &owner, Some(future)).await, vec![]);
    // An id between two entries, and the largest sequence of a millisecond.
    let before_third = id(ids[2].millis, ids[2].seq.saturating_sub(1));
    if before_third > ids[1] && before_third < ids[2] {
        assert_eq!(read_ids(&store, &owner, Some(before_third)).await, ids[2..]);
    }
    let end_of_ms = id(ids[2].millis, u64::MAX);
    let later: Vec<EventId> = ids.iter().copied().filter(|i| *i > end_of_ms).collect();
    assert_eq!(read_ids(&store, &owner, Some(end_of_ms)).await, later);

    let page = |after, limit| {
        let store = store.clone();
        let owner = owner.clone();
        async move {
            store
                .read_events(&owner, after, limit)
                .await
                .unwrap()
                .into_iter()
                .map(|e| e.id)
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(page(None, 2).await, ids[..2]);
    assert_eq!(page(Some(ids[0]), 2).await, ids[1..3]);
    assert_eq!(page(Some(ids[2]), 10).await, ids[3..]);
    assert_eq!(page(None, 1).await, ids[..1]);
    assert_eq!(page(None, 0).await, vec![]);
    assert_eq!(page(Some(ids[0]), 0).await, vec![]);
}

pub async fn a_saved_session_appends_its_events_in_the_same_step(backend: Backend) {
    let store = backend.store().await;
    let owner = user(3);
    let room = new_room(&store, &owner).await;
    let first = store
        .append_event(&owner, &event(&room.room_id, 0))
        .await
        .unwrap();

    let session = started(&room, 1_000);
    let events = [event(&room.room_id, 1), event(&room.room_id, 2)];
    assert_eq!(
        store
            .save_session(write(&session, None, &events))
            .await
            .unwrap(),
        SaveOutcome::Saved { version: 1 }
    );
    let log = store.read_events(&owner, Some(first), 100).await.unwrap();
    assert_eq!(log.len(), 2, "both events, after the earlier one: {log:?}");
    assert!(log[0].id > first && log[0].id < log[1].id);
    for (stored, new) in log.iter().zip(&events) {
        assert_eq!(*stored, Event::stored(stored.id, new.clone()));
    }

    // A save with no events appends nothing.
    let mut closed = session.clone();
    closed.close(at(2_000), EndReason::EndedByApi);
    assert_eq!(
        store
            .save_session(write(&closed, Some(1), &[]))
            .await
            .unwrap(),
        SaveOutcome::Saved { version: 2 }
    );
    assert_eq!(read_ids(&store, &owner, Some(log[1].id)).await, vec![]);

    // The next change's events follow.
    let next = started(&room, 3_000);
    let events = [event(&room.room_id, 3)];
    let save = SaveSession {
        expected_latest: Some(&session.id),
        ..write(&next, None, &events)
    };
    assert_eq!(
        store.save_session(save).await.unwrap(),
        SaveOutcome::Saved { version: 1 }
    );
    let tail = store
        .read_events(&owner, Some(log[1].id), 100)
        .await
        .unwrap();
    assert_eq!(tail.len(), 1);
    assert_eq!(tail[0], Event::stored(tail[0].id, events[0].clone()));
}

pub async fn a_refused_save_appends_nothing(backend: Backend) {
    let store = backend.store().await;
    let owner = user(4);
    let room = new_room(&store, &owner).await;
    let session = started(&room, 1_000);
    let events = [event(&room.room_id, 1)];
    assert_eq!(
        store
            .save_session(write(&session, None, &events))
            .await
            .unwrap(),
        SaveOutcome::Saved { version: 1 }
    );
    let before = read_ids(&store, &owner, None).await;
    assert_eq!(before.len(), 1);

    let refused = [event(&room.room_id, 7), event(&room.room_id, 8)];
    // A stale version, and a "new" session that exists: Conflict.
    let mut changed = session.clone();
    changed.join("bob", "Bob", at(1_500));
    for expected in [Some(7), None] {
        assert_eq!(
            store
                .save_session(write(&changed, expected, &refused))
                .await
                .unwrap(),
            SaveOutcome::Conflict
        );
    }
    // A room of another account, or none: RoomMissing.
    let elsewhere = new_room(&store, &user(5)).await;
    let mut foreign = started(&elsewhere, 1_000);
    foreign.user_id = owner.clone();
    assert_eq!(
        store
            .save_session(write(&foreign, None, &refused))
            .await
            .unwrap(),
        SaveOutcome::RoomMissing
    );
    // A disabled room, for a writer that asked it to be enabled.
    let disabled = new_room(&store, &owner).await;
    store
        .set_disabled(&owner, &disabled.room_id, true, at(10))
        .await
        .unwrap();
    let join = started(&disabled, 1_000);
    let save = SaveSession {
        require_room_enabled: true,
        ..write(&join, None, &refused)
    };
    assert_eq!(
        store.save_session(save).await.unwrap(),
        SaveOutcome::RoomDisabled
    );

    assert_eq!(
        read_ids(&store, &owner, None).await,
        before,
        "nothing appended"
    );
    assert_eq!(read_ids(&store, &user(5), None).await, vec![]);
}

// ---------------------------------------------------------------------------
// The lease

pub async fn the_lease_is_exclusive_until_released(backend: Backend) {
    let a = backend.store().await;
    let b = backend.store().await;
    let owner = user(6);
    assert!(a.lease_deliveries(&owner, "a", LONG).await.unwrap());
    assert!(!b.lease_deliveries(&owner, "b", LONG).await.unwrap());
    // The holder renews.
    assert!(a.lease_deliveries(&owner, "a", LONG).await.unwrap());
    assert!(!b.lease_deliveries(&owner, "b", LONG).await.unwrap());
    // Only the holder releases.
    b.release_deliveries(&owner, "b").await.unwrap();
    assert!(!b.lease_deliveries(&owner, "b", LONG).await.unwrap());
    a.release_deliveries(&owner, "a").await.unwrap();
    assert!(b.lease_deliveries(&owner, "b", LONG).await.unwrap());
    assert!(!a.lease_deliveries(&owner, "a", LONG).await.unwrap());
    // A release by a former holder leaves the new one's lease.
    a.release_deliveries(&owner, "a").await.unwrap();
    assert!(!a.lease_deliveries(&owner, "a", LONG).await.unwrap());
    // Another account's lease is another lease.
    assert!(a.lease_deliveries(&user(7), "a", LONG).await.unwrap());

    // Concurrent takers: exactly one wins.
    let contested = user(8);
    let tasks: Vec<_> = (0..10)
        .map(|i| {
            let store = if i % 2 == 0 { a.clone() } else { b.clone() };
            let contested = contested.clone();
            tokio::spawn(async move {
                store
                    .lease_deliveries(&contested, &format!("h{i}"), LONG)
                    .await
                    .unwrap()
            })
        })
        .collect();
    let mut won = 0;
    for task in tasks {
        won += usize::from(task.await.unwrap());
    }
    assert_eq!(won, 1, "one of ten concurrent takers holds the lease");
}

pub async fn the_lease_expires(backend: Backend) {
    let store = backend.store().await;
    let owner = user(9);
    let short = Duration::from_millis(300);
    assert!(store.lease_deliveries(&owner, "a", short).await.unwrap());
    assert!(!store.lease_deliveries(&owner, "b", LONG).await.unwrap());
    tokio::time::sleep(short + Duration::from_millis(300)).await;
    // Expired: the old holder's updates are refused, another holder takes it.
    let refused = DeliveryUpdate {
        assigned: Some(id(1, 0)),
        ..DeliveryUpdate::default()
    };
    assert!(
        !store
            .update_deliveries(&owner, "a", &refused)
            .await
            .unwrap()
    );
    assert!(store.lease_deliveries(&owner, "b", LONG).await.unwrap());
    assert!(!store.lease_deliveries(&owner, "a", short).await.unwrap());
    assert_eq!(state(&store, &owner).await, DeliveryState::default());
}

// ---------------------------------------------------------------------------
// Delivery state

/// An update that touches everything.
fn everything(ids: &[EventId], room: &RoomId) -> DeliveryUpdate {
    DeliveryUpdate {
        assigned: Some(ids[2]),
        rooms: vec![(room.clone(), Some(queue(&ids[1..3], 1)))],
        records: vec![record(&ids[1].to_string(), 1)],
        dead: vec![dead(&ids[0].to_string(), 5)],
        trim_before: Some(ids[1]),
    }
}

pub async fn updates_without_the_lease_write_nothing(backend: Backend) {
    let store = backend.store().await;
    let owner = user(10);
    let room = RoomId::generate();
    let ids = append(&store, &owner, &room, 4).await;
    let change = everything(&ids, &room);

    let unchanged = || async {
        assert_eq!(state(&store, &owner).await, DeliveryState::default());
        assert_eq!(store.recent_deliveries(&owner, 10).await.unwrap(), vec![]);
        assert_eq!(store.dead_letters(&owner, 10).await.unwrap(), vec![]);
        assert_eq!(read_ids(&store, &owner, None).await, ids);
        assert_eq!(store.trimmed_before(&owner).await.unwrap(), None);
    };

    // Nobody holds the lease.
    assert!(!store.update_deliveries(&owner, "a", &change).await.unwrap());
    unchanged().await;
    // Someone else does.
    lease(&store, &owner, "b").await;
    assert!(!store.update_deliveries(&owner, "a", &change).await.unwrap());
    unchanged().await;
    // The lease of another account is no lease here.
    lease(&store, &user(11), "a").await;
    assert!(!store.update_deliveries(&owner, "a", &change).await.unwrap());
    unchanged().await;
    // Released: gone for its former holder too.
    store.release_deliveries(&owner, "b").await.unwrap();
    assert!(!store.update_deliveries(&owner, "b", &change).await.unwrap());
    unchanged().await;

    // The holder's update applies, in full.
    lease(&store, &owner, "a").await;
    update(&store, &owner, "a", change.clone()).await;
    assert_eq!(
        state(&store, &owner).await,
        DeliveryState {
            assigned: Some(ids[2]),
            rooms: vec![(room.clone(), queue(&ids[1..3], 1))],
        }
    );
    assert_eq!(
        store.recent_deliveries(&owner, 10).await.unwrap(),
        change.records
    );
    assert_eq!(store.dead_letters(&owner, 10).await.unwrap(), change.dead);
    assert_eq!(read_ids(&store, &owner, None).await, ids[1..]);
    assert_eq!(store.trimmed_before(&owner).await.unwrap(), Some(ids[1]));
}

pub async fn assigned_only_moves_forward(backend: Backend) {
    let store = backend.store().await;
    let owner = user(12);
    lease(&store, &owner, "w").await;
    assert_eq!(state(&store, &owner).await.assigned, None);
    // Compared as numbers: 10-0 is after 9-5, and 9-10 after 9-9.
    for (write, expected) in [
        (id(9, 5), id(9, 5)),
        (id(9, 4), id(9, 5)),
        (id(10, 0), id(10, 0)),
        (id(9, 99), id(10, 0)),
        (id(10, 0), id(10, 0)),
        (id(10, 9), id(10, 9)),
        (id(10, 10), id(10, 10)),
        (id(10, 9), id(10, 10)),
        (id(T0 as u64, 0), id(T0 as u64, 0)),
        (id(T0 as u64 - 1, 1_000_000), id(T0 as u64, 0)),
    ] {
        let change = DeliveryUpdate {
            assigned: Some(write),
            ..DeliveryUpdate::default()
        };
        update(&store, &owner, "w", change).await;
        assert_eq!(
            state(&store, &owner).await.assigned,
            Some(expected),
            "after writing {write:?}"
        );
    }
    // An update that names no assigned id leaves it.
    update(&store, &owner, "w", DeliveryUpdate::default()).await;
    assert_eq!(state(&store, &owner).await.assigned, Some(id(T0 as u64, 0)));
}

pub async fn room_queues_are_set_and_removed(backend: Backend) {
    let store = backend.store().await;
    let owner = user(13);
    let ids = append(&store, &owner, &RoomId::generate(), 4).await;
    let mut rooms: Vec<RoomId> = (0..3).map(|_| RoomId::generate()).collect();
    rooms.sort();
    lease(&store, &owner, "w").await;

    update(
        &store,
        &owner,
        "w",
        DeliveryUpdate {
            rooms: vec![
                (rooms[2].clone(), Some(queue(&ids[..1], 0))),
                (rooms[0].clone(), Some(queue(&ids[1..], 3))),
                (rooms[1].clone(), Some(queue(&ids[2..3], 0))),
            ],
            ..DeliveryUpdate::default()
        },
    )
    .await;
    assert_eq!(
        state(&store, &owner).await,
        DeliveryState {
            assigned: None,
            rooms: vec![
                (rooms[0].clone(), queue(&ids[1..], 3)),
                (rooms[1].clone(), queue(&ids[2..3], 0)),
                (rooms[2].clone(), queue(&ids[..1], 0)),
            ],
        },
        "in roomId order"
    );

    // One replaced, one removed, one left alone; removing a room that has no
    // queue is no error.
    update(
        &store,
        &owner,
        "w",
        DeliveryUpdate {
            rooms: vec![
                (rooms[0].clone(), Some(queue(&ids[2..], 0))),
                (rooms[1].clone(), None),
                (RoomId::generate(), None),
            ],
            ..DeliveryUpdate::default()
        },
    )
    .await;
    assert_eq!(
        state(&store, &owner).await.rooms,
        vec![
            (rooms[0].clone(), queue(&ids[2..], 0)),
            (rooms[2].clone(), queue(&ids[..1], 0)),
        ]
    );
    // Written and removed in one update: the last word counts.
    update(
        &store,
        &owner,
        "w",
        DeliveryUpdate {
            rooms: vec![
                (rooms[1].clone(), Some(queue(&ids[..2], 1))),
                (rooms[2].clone(), None),
                (rooms[1].clone(), None),
            ],
            ..DeliveryUpdate::default()
        },
    )
    .await;
    assert_eq!(
        state(&store, &owner).await.rooms,
        vec![(rooms[0].clone(), queue(&ids[2..], 0))]
    );
}

pub async fn records_and_dead_letters_are_newest_first_and_capped(backend: Backend) {
    let store = backend.store().await;
    let owner = user(14);
    lease(&store, &owner, "w").await;
    assert_eq!(store.recent_deliveries(&owner, 10).await.unwrap(), vec![]);
    assert_eq!(store.dead_letters(&owner, 10).await.unwrap(), vec![]);

    // In one update, the later in the list is the newer.
    update(
        &store,
        &owner,
        "w",
        DeliveryUpdate {
            records: vec![record("1-0", 1), record("1-0", 2), record("2-0", 1)],
            dead: vec![dead("1-0", 5), dead("3-0", 5)],
            ..DeliveryUpdate::default()
        },
    )
    .await;
    update(
        &store,
        &owner,
        "w",
        DeliveryUpdate {
            records: vec![record("4-0", 1)],
            dead: vec![dead("5-0", 5)],
            ..DeliveryUpdate::default()
        },
    )
    .await;
    assert_eq!(
        store.recent_deliveries(&owner, 10).await.unwrap(),
        vec![
            record("4-0", 1),
            record("2-0", 1),
            record("1-0", 2),
            record("1-0", 1)
        ]
    );
    assert_eq!(
        store.recent_deliveries(&owner, 2).await.unwrap(),
        vec![record("4-0", 1), record("2-0", 1)]
    );
    assert_eq!(store.recent_deliveries(&owner, 0).await.unwrap(), vec![]);
    assert_eq!(
        store.dead_letters(&owner, usize::MAX).await.unwrap(),
        vec![dead("5-0", 5), dead("3-0", 5), dead("1-0", 5)]
    );
    assert_eq!(
        store.dead_letters(&owner, 1).await.unwrap(),
        vec![dead("5-0", 5)]
    );
    assert_eq!(store.dead_letters(&owner, 0).await.unwrap(), vec![]);

    // Past the caps, the oldest go.
    let many = |cap: usize, make: fn(&str, u32) -> DeliveryRecord| {
        (0..cap + 5)
            .map(|i| make(&format!("{}-0", 100 + i), 1))
            .collect::<Vec<_>>()
    };
    let records = many(RECENT_DELIVERIES, record);
    let dead_letters = many(DEAD_LETTERS, dead);
    update(
        &store,
        &owner,
        "w",
        DeliveryUpdate {
            records: records.clone(),
            dead: dead_letters.clone(),
            ..DeliveryUpdate::default()
        },
    )
    .await;
    let recent = store.recent_deliveries(&owner, usize::MAX).await.unwrap();
    assert_eq!(recent.len(), RECENT_DELIVERIES);
    assert_eq!(recent[0], records[records.len() - 1]);
    assert_eq!(recent[RECENT_DELIVERIES - 1], records[5]);
    let kept = store.dead_letters(&owner, usize::MAX).await.unwrap();
    assert_eq!(kept.len(), DEAD_LETTERS);
    assert_eq!(kept[0], dead_letters[dead_letters.len() - 1]);
    assert_eq!(kept[DEAD_LETTERS - 1], dead_letters[5]);
}

pub async fn taking_a_dead_letter_removes_exactly_one(backend: Backend) {
    let store = backend.store().await;
    let owner = user(15);
    lease(&store, &owner, "w").await;
    // Two dead letters of one event (two webhooks, or a replay that died).
    let older = dead("7-1", 5);
    let newer = DeliveryRecord {
        webhook_id: "another".to_owned(),
        ..dead("7-1", 6)
    };
    update(
        &store,
        &owner,
        "w",
        DeliveryUpdate {
            dead: vec![dead("7-0", 5), older.clone(), dead("8-0", 5), newer.clone()],
            ..DeliveryUpdate::default()
        },
    )
    .await;

    assert_eq!(
        store.take_dead_letter(&owner, "7-1").await.unwrap(),
        Some(newer),
        "the newest of the event's dead letters"
    );
    assert_eq!(
        store.dead_letters(&owner, 10).await.unwrap(),
        vec![dead("8-0", 5), older.clone(), dead("7-0", 5)]
    );
    assert_eq!(
        store.take_dead_letter(&owner, "7-1").await.unwrap(),
        Some(older)
    );
    assert_eq!(store.take_dead_letter(&owner, "7-1").await.unwrap(), None);
    // A prefix of an id, an unknown id, another account: nothing.
    assert_eq!(store.take_dead_letter(&owner, "7").await.unwrap(), None);
    assert_eq!(store.take_dead_letter(&owner, "9-0").await.unwrap(), None);
    assert_eq!(
        store.take_dead_letter(&user(16), "8-0").await.unwrap(),
        None
    );
    assert_eq!(
        store.dead_letters(&owner, 10).await.unwrap(),
        vec![dead("8-0", 5), dead("7-0", 5)]
    );
    // Two identical dead letters: one taken, one left.
    update(
        &store,
        &owner,
        "w",
        DeliveryUpdate {
            dead: vec![dead("6-0", 5), dead("6-0", 5)],
            ..DeliveryUpdate::default()
        },
    )
    .await;
    assert_eq!(
        store.take_dead_letter(&owner, "6-0").await.unwrap(),
        Some(dead("6-0", 5))
    );
    assert_eq!(
        store.dead_letters(&owner, 10).await.unwrap(),
        vec![dead("6-0", 5), dead("8-0", 5), dead("7-0", 5)]
    );
    assert_eq!(
        store.take_dead_letter(&owner, "6-0").await.unwrap(),
        Some(dead("6-0", 5))
    );
    // Taking needs no lease: a replay is the caller's, not the worker's.
    store.release_deliveries(&owner, "w").await.unwrap();
    assert_eq!(
        store.take_dead_letter(&owner, "7-0").await.unwrap(),
        Some(dead("7-0", 5))
    );
    assert_eq!(
        store.dead_letters(&owner, 10).await.unwrap(),
        vec![dead("8-0", 5)]
    );
}

/// What watchers poll: the id of the newest event kept, seen alike through
/// every connection; none for an empty (or wholly trimmed) log.
pub async fn the_newest_event_id_is_where_the_log_ends(backend: Backend) {
    let store = backend.store().await;
    let other = backend.store().await;
    let owner = user(21);
    let room = RoomId::generate();
    assert_eq!(store.newest_event_id(&owner).await.unwrap(), None);
    let ids = append(&store, &owner, &room, 3).await;
    assert_eq!(store.newest_event_id(&owner).await.unwrap(), Some(ids[2]));
    let more = other.append_event(&owner, &event(&room, 7)).await.unwrap();
    assert_eq!(store.newest_event_id(&owner).await.unwrap(), Some(more));
    assert_eq!(other.newest_event_id(&owner).await.unwrap(), Some(more));
    assert_eq!(store.newest_event_id(&user(22)).await.unwrap(), None);

    lease(&store, &owner, "w").await;
    let past = id(more.millis, more.seq + 1);
    update(
        &store,
        &owner,
        "w",
        DeliveryUpdate {
            trim_before: Some(past),
            ..DeliveryUpdate::default()
        },
    )
    .await;
    assert_eq!(store.newest_event_id(&owner).await.unwrap(), None);
}

pub async fn trimming_drops_older_events_and_reports_it(backend: Backend) {
    let store = backend.store().await;
    let owner = user(17);
    let room = RoomId::generate();
    let ids = append(&store, &owner, &room, 6).await;
    lease(&store, &owner, "w").await;
    let trim = |before: EventId| DeliveryUpdate {
        trim_before: Some(before),
        ..DeliveryUpdate::default()
    };

    update(&store, &owner, "w", trim(ids[2])).await;
    assert_eq!(read_ids(&store, &owner, None).await, ids[2..]);
    assert_eq!(store.trimmed_before(&owner).await.unwrap(), Some(ids[2]));
    // A reader behind the trim gets what is left.
    assert_eq!(read_ids(&store, &owner, Some(ids[0])).await, ids[2..]);
    let first = store.read_events(&owner, None, 1).await.unwrap();
    assert_eq!(first[0], Event::stored(ids[2], event(&room, 2)));

    // An earlier trim changes nothing, not even the report.
    update(&store, &owner, "w", trim(ids[1])).await;
    assert_eq!(read_ids(&store, &owner, None).await, ids[2..]);
    assert_eq!(store.trimmed_before(&owner).await.unwrap(), Some(ids[2]));

    // Between two entries: everything before it goes.
    let between = ids[3].next();
    update(&store, &owner, "w", trim(between)).await;
    let left: Vec<EventId> = ids.iter().copied().filter(|i| *i >= between).collect();
    assert_eq!(read_ids(&store, &owner, None).await, left);
    assert_eq!(store.trimmed_before(&owner).await.unwrap(), Some(between));

    // Past the end: the log is empty, and appends go on after it.
    let past = id(ids[5].millis, ids[5].seq + 1);
    update(&store, &owner, "w", trim(past)).await;
    assert_eq!(read_ids(&store, &owner, None).await, vec![]);
    assert_eq!(store.trimmed_before(&owner).await.unwrap(), Some(past));
    let next = store.append_event(&owner, &event(&room, 9)).await.unwrap();
    assert!(next > ids[5]);
    assert_eq!(read_ids(&store, &owner, None).await, vec![next]);
    assert_eq!(read_ids(&store, &owner, Some(ids[1])).await, vec![next]);

    // Compared as numbers, like every id.
    let other = user(18);
    lease(&store, &other, "w").await;
    update(&store, &other, "w", trim(id(10, 0))).await;
    update(&store, &other, "w", trim(id(9, 5))).await;
    assert_eq!(store.trimmed_before(&other).await.unwrap(), Some(id(10, 0)));
}

// ---------------------------------------------------------------------------
// The hint index

pub async fn hints_only_move_earlier(backend: Backend) {
    let store = backend.store().await;
    let owner = user(19);
    assert_eq!(hint_of(&store, &owner, at(1_000_000)).await, None);

    store.hint_delivery(&owner, at(100)).await.unwrap();
    assert_eq!(
        hint_of(&store, &owner, at(1_000)).await.map(|h| h.due),
        Some(at(100))
    );
    // A later hint leaves the earlier time.
    store.hint_delivery(&owner, at(500)).await.unwrap();
    assert_eq!(
        hint_of(&store, &owner, at(1_000)).await.map(|h| h.due),
        Some(at(100))
    );
    assert_eq!(hint_of(&store, &owner, at(99)).await, None);
    // An earlier one lowers it.
    store.hint_delivery(&owner, at(40)).await.unwrap();
    assert_eq!(
        hint_of(&store, &owner, at(40)).await.map(|h| h.due),
        Some(at(40))
    );
}

pub async fn due_hints_are_those_due_at_now(backend: Backend) {
    let store = backend.store().await;
    let accounts: Vec<UserId> = (20..40).map(user).collect();
    for (n, owner) in accounts.iter().enumerate() {
        store.hint_delivery(owner, at(10 * n as i64)).await.unwrap();
    }
    // At and before `now`, not after.
    for now in [0, 5, 10, 95, 190, 10_000] {
        let due = hints(&store, at(now)).await;
        let expected: HashSet<UserId> = accounts
            .iter()
            .enumerate()
            .filter(|(n, _)| 10 * *n as i64 <= now)
            .map(|(_, owner)| owner.clone())
            .collect();
        let got: HashSet<UserId> = due.iter().map(|h| h.user_id.clone()).collect();
        assert_eq!(got.len(), due.len(), "one hint per account at {now}");
        assert_eq!(got, expected, "hints due at T0+{now}");
        for hint in &due {
            let n = accounts.iter().position(|a| *a == hint.user_id).unwrap();
            assert_eq!(hint.due, at(10 * n as i64));
        }
    }
    assert_eq!(hints(&store, at(-1)).await, vec![]);
    // `limit` caps the answer; pages of due hints are due ones.
    for limit in [0, 1, 3, 7] {
        let due = store.due_hints(at(95), limit).await.unwrap();
        assert_eq!(due.len(), limit.min(10), "limit {limit}");
        assert!(due.iter().all(|h| h.due <= at(95)));
    }
    // Another connection sees the same index.
    let other = backend.store().await;
    assert_eq!(hints(&other, at(10_000)).await.len(), accounts.len());
}

pub async fn settling_removes_or_moves_a_hint(backend: Backend) {
    let store = backend.store().await;
    let owner = user(40);
    store.hint_delivery(&owner, at(100)).await.unwrap();

    // Moved later (the worker found a backoff until then).
    let read = hint_of(&store, &owner, at(100)).await.unwrap();
    store.settle_hint(&read, Some(at(5_000))).await.unwrap();
    assert_eq!(hint_of(&store, &owner, at(4_999)).await, None);
    let moved = hint_of(&store, &owner, at(5_000)).await.unwrap();
    assert_eq!(moved.due, at(5_000));

    // Settling the entry as it was read before the move: refused.
    store.settle_hint(&read, None).await.unwrap();
    assert!(hint_of(&store, &owner, at(5_000)).await.is_some());

    // Removed.
    store.settle_hint(&moved, None).await.unwrap();
    assert_eq!(hint_of(&store, &owner, at(1_000_000)).await, None);
    // Settling a hint that is gone adds nothing back.
    store.settle_hint(&moved, Some(at(10))).await.unwrap();
    assert_eq!(hint_of(&store, &owner, at(1_000_000)).await, None);

    // A new hint after the removal is a new entry, which the old reads
    // cannot settle.
    store.hint_delivery(&owner, at(5_000)).await.unwrap();
    store.settle_hint(&moved, None).await.unwrap();
    assert_eq!(
        hint_of(&store, &owner, at(5_000)).await.map(|h| h.due),
        Some(at(5_000))
    );
}

pub async fn a_settle_after_a_newer_hint_is_refused(backend: Backend) {
    let store = backend.store().await;
    let writer = backend.store().await;
    let owner = user(41);
    store.hint_delivery(&owner, at(100)).await.unwrap();
    let read = hint_of(&store, &owner, at(100)).await.unwrap();

    // A writer hints again at a later time (so the time stays 100): the
    // worker that read the entry before may have missed its events.
    writer.hint_delivery(&owner, at(200)).await.unwrap();
    store.settle_hint(&read, None).await.unwrap();
    store.settle_hint(&read, Some(at(9_000))).await.unwrap();
    assert_eq!(
        hint_of(&store, &owner, at(100)).await.map(|h| h.due),
        Some(at(100)),
        "the writer's hint stands, at its time"
    );

    // The same with the same time.
    let read = hint_of(&store, &owner, at(100)).await.unwrap();
    writer.hint_delivery(&owner, at(100)).await.unwrap();
    store.settle_hint(&read, None).await.unwrap();
    assert!(hint_of(&store, &owner, at(100)).await.is_some());

    // And one that lowered it.
    let read = hint_of(&store, &owner, at(100)).await.unwrap();
    writer.hint_delivery(&owner, at(50)).await.unwrap();
    store.settle_hint(&read, Some(at(9_000))).await.unwrap();
    assert_eq!(
        hint_of(&store, &owner, at(100)).await.map(|h| h.due),
        Some(at(50))
    );

    // Read afresh, it settles.
    let read = hint_of(&store, &owner, at(100)).await.unwrap();
    store.settle_hint(&read, None).await.unwrap();
    assert_eq!(hint_of(&store, &owner, at(1_000_000)).await, None);
}

// ---------------------------------------------------------------------------
// The signing key

pub async fn the_first_signing_key_wins_across_stores(backend: Backend) {
    let a = backend.store().await;
    let b = backend.store().await;
    let pem =
        |n: usize| format!("-----BEGIN PRIVATE KEY-----\nkey{n}\n-----END PRIVATE KEY-----\n");
    let tasks: Vec<_> = (0..8)
        .map(|n| {
            let store = if n % 2 == 0 { a.clone() } else { b.clone() };
            let candidate = pem(n);
            tokio::spawn(async move { store.signing_key(&candidate).await.unwrap() })
        })
        .collect();
    let mut answers = HashSet::new();
    for task in tasks {
        answers.insert(task.await.unwrap());
    }
    assert_eq!(
        answers.len(),
        1,
        "every replica got the same key: {answers:?}"
    );
    let stored = answers.into_iter().next().unwrap();
    assert!((0..8).any(|n| pem(n) == stored), "one of the candidates");
    assert_eq!(a.signing_key(&pem(99)).await.unwrap(), stored);
    assert_eq!(b.signing_key(&pem(100)).await.unwrap(), stored);
}

// ---------------------------------------------------------------------------
// Accounts

pub async fn accounts_are_isolated(backend: Backend) {
    let store = backend.store().await;
    let (one, two) = (user(42), user(43));
    let room = RoomId::generate();
    let ids = append(&store, &one, &room, 3).await;
    lease(&store, &one, "w").await;
    update(&store, &one, "w", everything(&ids, &room)).await;

    assert_eq!(read_ids(&store, &two, None).await, vec![]);
    assert_eq!(store.trimmed_before(&two).await.unwrap(), None);
    assert_eq!(state(&store, &two).await, DeliveryState::default());
    assert_eq!(store.recent_deliveries(&two, 10).await.unwrap(), vec![]);
    assert_eq!(store.dead_letters(&two, 10).await.unwrap(), vec![]);
    assert_eq!(
        store
            .take_dead_letter(&two, &ids[0].to_string())
            .await
            .unwrap(),
        None
    );
    // The second account's lease is free, and its updates touch only it.
    lease(&store, &two, "v").await;
    let theirs = append(&store, &two, &room, 2).await;
    update(
        &store,
        &two,
        "v",
        DeliveryUpdate {
            assigned: Some(theirs[1]),
            trim_before: Some(theirs[1]),
            ..DeliveryUpdate::default()
        },
    )
    .await;
    assert_eq!(read_ids(&store, &one, None).await, ids[1..]);
    assert_eq!(state(&store, &one).await.assigned, Some(ids[2]));
    assert_eq!(store.dead_letters(&one, 10).await.unwrap().len(), 1);
    assert_eq!(read_ids(&store, &two, None).await, theirs[1..]);
}
