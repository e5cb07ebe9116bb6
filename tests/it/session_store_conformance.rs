//! The session store conformance suite: every `SessionStore` implementation
//! must pass these cases, on the memory store, a single Redis and a Redis
//! Cluster. `session_conformance_suite!(backend, make_store)` instantiates
//! them for one backend; `make_store` returns a fresh, empty, ready store that
//! keeps both rooms and sessions.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use roomservice::domain::{EndReason, Room, RoomId, Session, SessionId, SessionRules, UserId};
use roomservice::store::{
    CreateOutcome, DueSession, MemoryStore, RoomKey, SaveOutcome, SaveSession, SessionFilter,
    SessionStatus, SessionStore, Store, Versioned,
};

macro_rules! session_conformance_suite {
    ($backend:ident, $make:path) => {
        mod $backend {
            session_conformance_suite!(@cases $make;
                a_new_session_is_stored_at_version_one,
                versions_guard_every_write,
                a_new_session_must_name_the_rooms_latest,
                concurrent_first_joins_start_one_session,
                concurrent_next_sessions_start_one_session,
                a_disabled_room_refuses_when_asked_and_writes_nothing,
                disabling_the_room_is_part_of_the_same_write,
                disabling_the_room_never_moves_updated_at_backwards,
                a_missing_or_foreign_room_is_refused,
                accounts_are_isolated,
                listing_is_newest_first_paged_and_filtered,
                an_ending_session_moves_between_listings,
                an_ongoing_session_is_indexed_at_its_due_time,
                an_earlier_due_lowers_the_entry,
                settling_removes_or_moves_the_entry,
                a_stale_settle_leaves_the_writers_entry,
                a_settle_racing_a_writer_keeps_the_writers_deadline,
                a_settle_racing_a_rewrite_of_the_same_time_is_refused,
                an_ended_session_leaves_the_index_once_settled,
                due_sessions_pages_across_accounts_in_due_order
            );
        }
    };
    (@cases $make:path; $($case:ident),*) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                $crate::session_store_conformance::$case($make().await).await
            }
        )*
    };
}

/// A store of both concepts; every implementation is one.
pub trait Stores: Store + SessionStore {}
impl<T: Store + SessionStore> Stores for T {}

type Shared = Arc<dyn Stores>;

async fn memory_store() -> Shared {
    Arc::new(MemoryStore::new())
}

async fn single_redis_store() -> Shared {
    let redis = crate::redis_harness::shared_redis();
    let prefix = crate::redis_harness::unique_prefix();
    Arc::new(crate::redis_harness::connected_store(vec![redis.url()], false, prefix).await)
}

async fn cluster_redis_store() -> Shared {
    let cluster = crate::redis_harness::shared_cluster();
    let prefix = crate::redis_harness::unique_prefix();
    Arc::new(crate::redis_harness::connected_store(cluster.seed_urls(), true, prefix).await)
}

session_conformance_suite!(memory, crate::session_store_conformance::memory_store);
session_conformance_suite!(
    single_redis,
    crate::session_store_conformance::single_redis_store
);
session_conformance_suite!(
    redis_cluster,
    crate::session_store_conformance::cluster_redis_store
);

// ---------------------------------------------------------------------------
// Helpers

/// Every case's clock starts here: fixed times, the stores never read a clock.
const T0: i64 = 1_700_000_000_000;
const LIFETIME_S: i64 = 600;
const GRACE_S: i64 = 60;

fn user(n: u8) -> UserId {
    UserId::parse(&format!("{n:024x}")).unwrap()
}

/// `T0 + ms`.
fn at(ms: i64) -> Timestamp {
    Timestamp::from_millisecond(T0 + ms).unwrap()
}

fn secs(s: i64) -> i64 {
    s * 1000
}

fn rules() -> SessionRules {
    SessionRules {
        lifetime: Duration::from_secs(LIFETIME_S as u64),
        lifetime_reason: EndReason::AutoClose,
        deactivates_room: false,
        empty_grace: Duration::from_secs(GRACE_S as u64),
    }
}

async fn new_room(store: &Shared, owner: &UserId, created_ms: i64) -> Room {
    let room = Room {
        room_id: RoomId::generate(),
        user_id: owner.clone(),
        custom_room_id: None,
        disabled: false,
        created_at: at(created_ms),
        updated_at: at(created_ms),
        settings: Default::default(),
    };
    match store.create_room(&room, u64::MAX).await.unwrap() {
        CreateOutcome::Created(stored) => stored,
        other => panic!("expected Created, got {other:?}"),
    }
}

async fn read_room(store: &Shared, room: &Room) -> Room {
    let key = RoomKey::parse(room.room_id.as_str()).unwrap();
    store
        .get_room(&room.user_id, &key)
        .await
        .unwrap()
        .expect("the room exists")
}

/// A session of `room` started at `T0 + start_ms` with alice present: due at
/// its hard deadline, `start + LIFETIME_S`.
fn started(room: &Room, start_ms: i64) -> Session {
    let mut session = Session::start(
        room.user_id.clone(),
        room.room_id.clone(),
        None,
        &rules(),
        at(start_ms),
    );
    assert!(session.join("alice", "Alice", at(start_ms)));
    session
}

/// A plain write: no room conditions, `now` after every time used here.
fn write<'a>(
    session: &'a Session,
    expected_version: Option<u64>,
    expected_latest: Option<&'a SessionId>,
) -> SaveSession<'a> {
    SaveSession {
        session,
        expected_version,
        expected_latest,
        require_room_enabled: false,
        disable_room: false,
        now: at(secs(10_000)),
        events: &[],
    }
}

async fn save(store: &Shared, save: SaveSession<'_>) -> SaveOutcome {
    store.save_session(save).await.unwrap()
}

/// Saves a session that must not exist yet and asserts it was stored.
async fn save_new(store: &Shared, session: &Session, latest: Option<&SessionId>) {
    assert_eq!(
        save(store, write(session, None, latest)).await,
        SaveOutcome::Saved { version: 1 },
        "new session {}",
        session.id
    );
}

async fn get(store: &Shared, session: &Session) -> Option<Versioned<Session>> {
    store
        .get_session(&session.user_id, &session.id)
        .await
        .unwrap()
}

async fn list(
    store: &Shared,
    owner: &UserId,
    room_id: Option<&RoomId>,
    status: Option<SessionStatus>,
    offset: usize,
    limit: usize,
) -> (Vec<Session>, usize) {
    let filter = SessionFilter {
        room_id: room_id.cloned(),
        status,
    };
    store
        .list_sessions(owner, &filter, offset, limit)
        .await
        .unwrap()
}

/// The deadline entries of `session` due at `now`.
async fn entries_of(store: &Shared, session: &Session, now: Timestamp) -> Vec<DueSession> {
    store
        .due_sessions(now, 10_000)
        .await
        .unwrap()
        .into_iter()
        .filter(|d| d.session_id == session.id && d.user_id == session.user_id)
        .collect()
}

/// The one deadline entry of `session` due at `now`.
async fn entry_of(store: &Shared, session: &Session, now: Timestamp) -> DueSession {
    let mut entries = entries_of(store, session, now).await;
    assert_eq!(
        entries.len(),
        1,
        "one deadline entry for {} at {now}: {entries:?}",
        session.id
    );
    entries.remove(0)
}

fn ids(sessions: &[Session]) -> Vec<SessionId> {
    sessions.iter().map(|s| s.id.clone()).collect()
}

// ---------------------------------------------------------------------------
// Writes and versions

pub async fn a_new_session_is_stored_at_version_one(store: Shared) {
    let owner = user(1);
    let room = new_room(&store, &owner, 0).await;
    let session = started(&room, secs(1));
    save_new(&store, &session, None).await;
    let stored = Versioned {
        value: session.clone(),
        version: 1,
    };
    assert_eq!(get(&store, &session).await, Some(stored.clone()));
    assert_eq!(
        store.latest_session(&owner, &room.room_id).await.unwrap(),
        Some(stored.clone())
    );
    // A second "new" write of the same session, whatever latest it names.
    let mut again = session.clone();
    again.join("bob", "Bob", at(secs(2)));
    for latest in [None, Some(&session.id)] {
        assert_eq!(
            save(&store, write(&again, None, latest)).await,
            SaveOutcome::Conflict,
            "a new session that exists, naming latest {latest:?}"
        );
    }
    assert_eq!(get(&store, &session).await, Some(stored), "unchanged");
}

pub async fn versions_guard_every_write(store: Shared) {
    let owner = user(2);
    let room = new_room(&store, &owner, 0).await;
    let session = started(&room, secs(1));
    save_new(&store, &session, None).await;

    let mut v2 = session.clone();
    assert!(v2.join("bob", "Bob", at(secs(5))));
    assert_eq!(
        save(&store, write(&v2, Some(1), None)).await,
        SaveOutcome::Saved { version: 2 }
    );
    let stored = Versioned {
        value: v2.clone(),
        version: 2,
    };
    assert_eq!(get(&store, &session).await, Some(stored.clone()));

    // A writer that read version 1 tries to end it: refused, nothing changes.
    let mut stale = session.clone();
    stale.close(at(secs(6)), EndReason::EndedByApi);
    for version in [1, 3, 99] {
        assert_eq!(
            save(&store, write(&stale, Some(version), None)).await,
            SaveOutcome::Conflict,
            "expected version {version}, stored 2"
        );
    }
    assert_eq!(get(&store, &session).await, Some(stored.clone()));
    assert_eq!(
        store.latest_session(&owner, &room.room_id).await.unwrap(),
        Some(stored)
    );
    let (ongoing, _) = list(&store, &owner, None, Some(SessionStatus::Ongoing), 0, 10).await;
    assert_eq!(ongoing, vec![v2.clone()], "still ongoing");
    let (ended, total) = list(&store, &owner, None, Some(SessionStatus::Ended), 0, 10).await;
    assert_eq!((ended, total), (vec![], 0));

    // An update of a session that was never stored.
    let ghost = started(&room, secs(7));
    assert_eq!(
        save(&store, write(&ghost, Some(1), Some(&session.id))).await,
        SaveOutcome::Conflict
    );
    assert_eq!(get(&store, &ghost).await, None);
    assert_eq!(list(&store, &owner, None, None, 0, 10).await.1, 1);

    // The writer that holds the current version wins.
    let mut v3 = v2.clone();
    v3.close(at(secs(8)), EndReason::EndedByApi);
    assert_eq!(
        save(&store, write(&v3, Some(2), None)).await,
        SaveOutcome::Saved { version: 3 }
    );
    assert_eq!(
        get(&store, &session).await,
        Some(Versioned {
            value: v3,
            version: 3
        })
    );
}

pub async fn a_new_session_must_name_the_rooms_latest(store: Shared) {
    let owner = user(3);
    let room = new_room(&store, &owner, 0).await;
    let mut first = started(&room, secs(1));
    save_new(&store, &first, None).await;
    first.close(at(secs(100)), EndReason::EndedByApi);
    assert_eq!(
        save(&store, write(&first, Some(1), None)).await,
        SaveOutcome::Saved { version: 2 }
    );

    let second = started(&room, secs(200));
    let unrelated = started(&room, secs(150));
    for latest in [None, Some(&unrelated.id), Some(&second.id)] {
        assert_eq!(
            save(&store, write(&second, None, latest)).await,
            SaveOutcome::Conflict,
            "the room's latest is {}, the writer named {latest:?}",
            first.id
        );
    }
    assert_eq!(get(&store, &second).await, None, "nothing written");
    save_new(&store, &second, Some(&first.id)).await;
    let latest = store.latest_session(&owner, &room.room_id).await.unwrap();
    assert_eq!(
        latest,
        Some(Versioned {
            value: second.clone(),
            version: 1
        })
    );
    // The first session is still there, as it was.
    assert_eq!(get(&store, &first).await.unwrap().value, first);
    // Another room of the account has no latest session.
    let other = new_room(&store, &owner, 1).await;
    assert_eq!(
        store.latest_session(&owner, &other.room_id).await.unwrap(),
        None
    );
}

/// Runs 20 concurrent "new session" writes for `room`, all naming `latest`;
/// returns the sessions that were saved.
async fn race_new_sessions(store: &Shared, room: &Room, latest: Option<SessionId>) -> Vec<Session> {
    let tasks: Vec<_> = (0..20)
        .map(|i| {
            let store = store.clone();
            let session = started(room, secs(1_000) + i);
            let latest = latest.clone();
            tokio::spawn(async move {
                let outcome = store
                    .save_session(write(&session, None, latest.as_ref()))
                    .await
                    .unwrap();
                (session, outcome)
            })
        })
        .collect();
    let mut saved = Vec::new();
    for task in tasks {
        match task.await.unwrap() {
            (session, SaveOutcome::Saved { version: 1 }) => saved.push(session),
            (_, SaveOutcome::Conflict) => {}
            (_, other) => panic!("expected Saved or Conflict, got {other:?}"),
        }
    }
    saved
}

pub async fn concurrent_first_joins_start_one_session(store: Shared) {
    let owner = user(4);
    let room = new_room(&store, &owner, 0).await;
    let saved = race_new_sessions(&store, &room, None).await;
    assert_eq!(saved.len(), 1, "one session per room: {:?}", ids(&saved));
    let latest = store.latest_session(&owner, &room.room_id).await.unwrap();
    assert_eq!(latest.map(|v| v.value), Some(saved[0].clone()));
    assert_eq!(
        list(&store, &owner, Some(&room.room_id), None, 0, 100).await,
        (saved.clone(), 1)
    );
    assert_eq!(list(&store, &owner, None, None, 0, 100).await.1, 1);
}

pub async fn concurrent_next_sessions_start_one_session(store: Shared) {
    let owner = user(5);
    let room = new_room(&store, &owner, 0).await;
    let mut first = started(&room, secs(1));
    save_new(&store, &first, None).await;
    first.close(at(secs(2)), EndReason::Empty);
    assert_eq!(
        save(&store, write(&first, Some(1), None)).await,
        SaveOutcome::Saved { version: 2 }
    );
    let saved = race_new_sessions(&store, &room, Some(first.id.clone())).await;
    assert_eq!(saved.len(), 1, "one next session: {:?}", ids(&saved));
    let latest = store.latest_session(&owner, &room.room_id).await.unwrap();
    assert_eq!(latest.map(|v| v.value), Some(saved[0].clone()));
    assert_eq!(
        list(&store, &owner, Some(&room.room_id), None, 0, 100)
            .await
            .1,
        2
    );
}

// ---------------------------------------------------------------------------
// The room's flag

pub async fn a_disabled_room_refuses_when_asked_and_writes_nothing(store: Shared) {
    let owner = user(6);
    let room = new_room(&store, &owner, 0).await;
    store
        .set_disabled(&owner, &room.room_id, true, at(secs(5)))
        .await
        .unwrap()
        .unwrap();
    let session = started(&room, secs(10));
    let refused = SaveSession {
        require_room_enabled: true,
        ..write(&session, None, None)
    };
    assert_eq!(save(&store, refused).await, SaveOutcome::RoomDisabled);
    assert_eq!(get(&store, &session).await, None);
    assert_eq!(
        store.latest_session(&owner, &room.room_id).await.unwrap(),
        None
    );
    assert_eq!(list(&store, &owner, None, None, 0, 10).await, (vec![], 0));
    assert_eq!(
        list(&store, &owner, Some(&room.room_id), None, 0, 10).await,
        (vec![], 0)
    );
    assert_eq!(
        list(&store, &owner, None, Some(SessionStatus::Ongoing), 0, 10).await,
        (vec![], 0)
    );

    // Not asked: the write goes through (e.g. closing a running session).
    save_new(&store, &session, None).await;
    let mut update = session.clone();
    update.join("bob", "Bob", at(secs(11)));
    let refused = SaveSession {
        require_room_enabled: true,
        ..write(&update, Some(1), None)
    };
    assert_eq!(save(&store, refused).await, SaveOutcome::RoomDisabled);
    assert_eq!(
        get(&store, &session).await,
        Some(Versioned {
            value: session.clone(),
            version: 1
        }),
        "an update refused writes nothing"
    );

    // Enabled again: the same write is accepted.
    store
        .set_disabled(&owner, &room.room_id, false, at(secs(12)))
        .await
        .unwrap()
        .unwrap();
    let accepted = SaveSession {
        require_room_enabled: true,
        ..write(&update, Some(1), None)
    };
    assert_eq!(
        save(&store, accepted).await,
        SaveOutcome::Saved { version: 2 }
    );
}

pub async fn disabling_the_room_is_part_of_the_same_write(store: Shared) {
    let owner = user(7);
    let room = new_room(&store, &owner, 0).await;
    let session = started(&room, secs(1));
    save_new(&store, &session, None).await;
    let mut ended = session.clone();
    ended.close(at(secs(100)), EndReason::AutoClose);

    // A write that conflicts disables nothing.
    let conflicting = SaveSession {
        disable_room: true,
        now: at(secs(100)),
        ..write(&ended, Some(7), None)
    };
    assert_eq!(save(&store, conflicting).await, SaveOutcome::Conflict);
    assert_eq!(read_room(&store, &room).await, room, "room untouched");

    let closing = SaveSession {
        disable_room: true,
        now: at(secs(100)),
        ..write(&ended, Some(1), None)
    };
    assert_eq!(
        save(&store, closing).await,
        SaveOutcome::Saved { version: 2 }
    );
    let after = read_room(&store, &room).await;
    assert!(after.disabled, "the room is disabled by the same write");
    assert_eq!(after.updated_at, at(secs(100)));
    assert_eq!(after.created_at, room.created_at);
    assert_eq!(get(&store, &session).await.unwrap().value, ended);
    let (listed, _) = store.list_rooms(&owner, 0, 10).await.unwrap();
    assert_eq!(listed, vec![after.clone()]);

    // A later write that disables again changes nothing more.
    let mut next = started(&room, secs(200));
    next.close(at(secs(300)), EndReason::AutoClose);
    let again = SaveSession {
        disable_room: true,
        now: at(secs(300)),
        ..write(&next, None, Some(&session.id))
    };
    assert_eq!(save(&store, again).await, SaveOutcome::Saved { version: 1 });
    assert_eq!(read_room(&store, &room).await, after, "updatedAt kept");

    // A write that does not disable leaves an enabled room enabled.
    let plain = new_room(&store, &owner, 1).await;
    let s = started(&plain, secs(1));
    save_new(&store, &s, None).await;
    assert_eq!(read_room(&store, &plain).await, plain);
}

pub async fn disabling_the_room_never_moves_updated_at_backwards(store: Shared) {
    let owner = user(8);
    let room = new_room(&store, &owner, 0).await;
    // Stamped at 500 s by a flip and back.
    store
        .set_disabled(&owner, &room.room_id, true, at(secs(500)))
        .await
        .unwrap();
    store
        .set_disabled(&owner, &room.room_id, false, at(secs(500)))
        .await
        .unwrap();
    let session = started(&room, secs(1));
    save_new(&store, &session, None).await;
    let mut ended = session.clone();
    ended.close(at(secs(100)), EndReason::AutoClose);
    // A replica whose clock is behind closes it.
    let closing = SaveSession {
        disable_room: true,
        now: at(secs(100)),
        ..write(&ended, Some(1), None)
    };
    assert_eq!(
        save(&store, closing).await,
        SaveOutcome::Saved { version: 2 }
    );
    let after = read_room(&store, &room).await;
    assert!(after.disabled);
    assert_eq!(after.updated_at, at(secs(500)), "never backwards");
}

// ---------------------------------------------------------------------------
// Accounts

pub async fn a_missing_or_foreign_room_is_refused(store: Shared) {
    let (owner, stranger) = (user(9), user(10));
    let room = new_room(&store, &owner, 0).await;
    // The stranger names the owner's room.
    let mut foreign = started(&room, secs(1));
    foreign.user_id = stranger.clone();
    assert_eq!(
        save(&store, write(&foreign, None, None)).await,
        SaveOutcome::RoomMissing
    );
    // A room nobody has.
    let mut nowhere = started(&room, secs(2));
    nowhere.room_id = RoomId::generate();
    assert_eq!(
        save(&store, write(&nowhere, None, None)).await,
        SaveOutcome::RoomMissing
    );
    for session in [&foreign, &nowhere] {
        assert_eq!(get(&store, session).await, None);
        assert_eq!(
            store
                .latest_session(&session.user_id, &session.room_id)
                .await
                .unwrap(),
            None
        );
    }
    for account in [&owner, &stranger] {
        assert_eq!(list(&store, account, None, None, 0, 10).await, (vec![], 0));
    }
    // The owner's room still starts its first session with no latest.
    let mine = started(&room, secs(3));
    save_new(&store, &mine, None).await;
}

pub async fn accounts_are_isolated(store: Shared) {
    let (acme, globex) = (user(11), user(12));
    let room = new_room(&store, &acme, 0).await;
    let session = started(&room, secs(1));
    save_new(&store, &session, None).await;

    assert_eq!(store.get_session(&globex, &session.id).await.unwrap(), None);
    assert_eq!(
        store.latest_session(&globex, &room.room_id).await.unwrap(),
        None
    );
    for status in [None, Some(SessionStatus::Ongoing)] {
        assert_eq!(
            list(&store, &globex, None, status, 0, 10).await,
            (vec![], 0)
        );
        assert_eq!(
            list(&store, &globex, Some(&room.room_id), status, 0, 10).await,
            (vec![], 0)
        );
    }
    // The other account's own session does not show up for the first.
    let theirs_room = new_room(&store, &globex, 0).await;
    let theirs = started(&theirs_room, secs(2));
    save_new(&store, &theirs, None).await;
    assert_eq!(
        list(&store, &acme, None, None, 0, 10).await,
        (vec![session.clone()], 1)
    );
    assert_eq!(
        list(&store, &globex, None, None, 0, 10).await,
        (vec![theirs.clone()], 1)
    );
    assert_eq!(store.get_session(&acme, &theirs.id).await.unwrap(), None);
}

// ---------------------------------------------------------------------------
// Listings

pub async fn listing_is_newest_first_paged_and_filtered(store: Shared) {
    let owner = user(13);
    let r1 = new_room(&store, &owner, 0).await;
    let r2 = new_room(&store, &owner, 1).await;
    // Five sessions, alternating rooms, 10 s apart; every one but the last
    // of each room ended before the next started.
    let mut all: Vec<Session> = Vec::new();
    let mut latest: [Option<Session>; 2] = [None, None];
    for i in 0..5 {
        let (slot, room) = if i % 2 == 0 { (0, &r1) } else { (1, &r2) };
        let session = started(room, secs(10 * i));
        if let Some(mut previous) = latest[slot].take() {
            previous.close(at(secs(10 * i) - 1), EndReason::Empty);
            assert_eq!(
                save(&store, write(&previous, Some(1), None)).await,
                SaveOutcome::Saved { version: 2 }
            );
            *all.iter_mut().find(|s| s.id == previous.id).unwrap() = previous.clone();
        }
        save_new(&store, &session, latest_id(&all, room).as_ref()).await;
        all.push(session.clone());
        latest[slot] = Some(session);
    }
    // Another account's sessions never show.
    let elsewhere = new_room(&store, &user(14), 0).await;
    save_new(&store, &started(&elsewhere, secs(1_000)), None).await;

    let newest_first: Vec<Session> = all.iter().rev().cloned().collect();
    let pick = |filter: &dyn Fn(&Session) -> bool| -> Vec<Session> {
        newest_first.iter().filter(|s| filter(s)).cloned().collect()
    };

    assert_eq!(
        list(&store, &owner, None, None, 0, 10).await,
        (newest_first.clone(), 5)
    );
    assert_eq!(
        list(&store, &owner, None, None, 0, 2).await,
        (newest_first[..2].to_vec(), 5)
    );
    assert_eq!(
        list(&store, &owner, None, None, 2, 2).await,
        (newest_first[2..4].to_vec(), 5)
    );
    assert_eq!(
        list(&store, &owner, None, None, 4, 2).await,
        (newest_first[4..].to_vec(), 5)
    );
    assert_eq!(list(&store, &owner, None, None, 5, 2).await, (vec![], 5));
    assert_eq!(list(&store, &owner, None, None, 0, 0).await, (vec![], 5));

    let in_r1 = pick(&|s| s.room_id == r1.room_id);
    assert_eq!(in_r1.len(), 3);
    assert_eq!(
        list(&store, &owner, Some(&r1.room_id), None, 0, 10).await,
        (in_r1.clone(), 3)
    );
    assert_eq!(
        list(&store, &owner, Some(&r1.room_id), None, 1, 1).await,
        (in_r1[1..2].to_vec(), 3)
    );

    let ongoing = pick(&|s| s.is_ongoing());
    let ended = pick(&|s| !s.is_ongoing());
    assert_eq!(ongoing.len(), 2);
    assert_eq!(ended.len(), 3);
    // Every one of these is long past its due time: listed as stored.
    assert_eq!(
        list(&store, &owner, None, Some(SessionStatus::Ongoing), 0, 10).await,
        (ongoing.clone(), 2)
    );
    assert_eq!(
        list(&store, &owner, None, Some(SessionStatus::Ended), 0, 10).await,
        (ended.clone(), 3)
    );
    assert_eq!(
        list(&store, &owner, None, Some(SessionStatus::Ended), 1, 1).await,
        (ended[1..2].to_vec(), 3)
    );

    let r1_ongoing = pick(&|s| s.room_id == r1.room_id && s.is_ongoing());
    let r1_ended = pick(&|s| s.room_id == r1.room_id && !s.is_ongoing());
    assert_eq!((r1_ongoing.len(), r1_ended.len()), (1, 2));
    assert_eq!(
        list(
            &store,
            &owner,
            Some(&r1.room_id),
            Some(SessionStatus::Ongoing),
            0,
            10
        )
        .await,
        (r1_ongoing, 1)
    );
    assert_eq!(
        list(
            &store,
            &owner,
            Some(&r1.room_id),
            Some(SessionStatus::Ended),
            0,
            10
        )
        .await,
        (r1_ended.clone(), 2)
    );
    assert_eq!(
        list(
            &store,
            &owner,
            Some(&r1.room_id),
            Some(SessionStatus::Ended),
            1,
            5
        )
        .await,
        (r1_ended[1..].to_vec(), 2)
    );
    // A room of the account with no sessions, and a room of nobody.
    let empty = new_room(&store, &owner, 2).await;
    assert_eq!(
        list(&store, &owner, Some(&empty.room_id), None, 0, 10).await,
        (vec![], 0)
    );
    assert_eq!(
        list(&store, &owner, Some(&RoomId::generate()), None, 0, 10).await,
        (vec![], 0)
    );
}

fn latest_id(all: &[Session], room: &Room) -> Option<SessionId> {
    all.iter()
        .filter(|s| s.room_id == room.room_id)
        .max_by_key(|s| s.start)
        .map(|s| s.id.clone())
}

pub async fn an_ending_session_moves_between_listings(store: Shared) {
    let owner = user(15);
    let room = new_room(&store, &owner, 0).await;
    let session = started(&room, secs(1));
    save_new(&store, &session, None).await;
    let rid = Some(&room.room_id);
    for room_id in [None, rid] {
        assert_eq!(
            list(&store, &owner, room_id, Some(SessionStatus::Ongoing), 0, 10).await,
            (vec![session.clone()], 1)
        );
        assert_eq!(
            list(&store, &owner, room_id, Some(SessionStatus::Ended), 0, 10).await,
            (vec![], 0)
        );
    }
    let mut ended = session.clone();
    ended.close(at(secs(50)), EndReason::EndedByApi);
    assert_eq!(
        save(&store, write(&ended, Some(1), None)).await,
        SaveOutcome::Saved { version: 2 }
    );
    for room_id in [None, rid] {
        assert_eq!(
            list(&store, &owner, room_id, Some(SessionStatus::Ongoing), 0, 10).await,
            (vec![], 0),
            "room filter {room_id:?}"
        );
        assert_eq!(
            list(&store, &owner, room_id, Some(SessionStatus::Ended), 0, 10).await,
            (vec![ended.clone()], 1),
            "room filter {room_id:?}"
        );
        assert_eq!(
            list(&store, &owner, room_id, None, 0, 10).await,
            (vec![ended.clone()], 1),
            "listed once"
        );
    }
}

// ---------------------------------------------------------------------------
// The deadline index

pub async fn an_ongoing_session_is_indexed_at_its_due_time(store: Shared) {
    let owner = user(16);
    let room = new_room(&store, &owner, 0).await;
    let session = started(&room, 0);
    let due = session.due().0;
    assert_eq!(due, at(secs(LIFETIME_S)));
    save_new(&store, &session, None).await;
    assert_eq!(
        entries_of(&store, &session, at(secs(LIFETIME_S) - 1)).await,
        vec![],
        "not due a millisecond early"
    );
    let entry = entry_of(&store, &session, due).await;
    assert!(entry.due <= due, "a lower bound: {entry:?}");
    assert_eq!(entry.user_id, owner);
    // Later reads still find it until it is settled.
    let later = entry_of(&store, &session, at(secs(100_000))).await;
    assert_eq!(later.due, entry.due);
}

pub async fn an_earlier_due_lowers_the_entry(store: Shared) {
    let owner = user(17);
    let room = new_room(&store, &owner, 0).await;
    let session = started(&room, 0);
    save_new(&store, &session, None).await;
    // The last participant leaves at 30 s: empty grace, due at 90 s.
    let mut empty = session.clone();
    assert!(empty.leave("alice", at(secs(30))));
    let due = empty.due();
    assert_eq!(due, (at(secs(30 + GRACE_S)), EndReason::Empty));
    assert_eq!(
        save(&store, write(&empty, Some(1), None)).await,
        SaveOutcome::Saved { version: 2 }
    );
    assert_eq!(
        entries_of(&store, &session, at(secs(30 + GRACE_S) - 1)).await,
        vec![]
    );
    let entry = entry_of(&store, &session, due.0).await;
    assert_eq!(entry.due, due.0, "moved to the earlier due time");
}

pub async fn settling_removes_or_moves_the_entry(store: Shared) {
    let owner = user(18);
    let room = new_room(&store, &owner, 0).await;
    let session = started(&room, 0);
    save_new(&store, &session, None).await;
    let due = at(secs(LIFETIME_S));
    let entry = entry_of(&store, &session, due).await;

    let later = at(secs(LIFETIME_S + 300));
    store.settle_due(&entry, Some(later)).await.unwrap();
    assert_eq!(
        entries_of(&store, &session, at(secs(LIFETIME_S + 300) - 1)).await,
        vec![],
        "moved"
    );
    let moved = entry_of(&store, &session, later).await;
    assert_eq!(moved.due, later);

    // Settling the old entry again: it changed, so nothing happens.
    store.settle_due(&entry, None).await.unwrap();
    assert_eq!(entry_of(&store, &session, later).await.due, later);

    store.settle_due(&moved, None).await.unwrap();
    assert_eq!(
        entries_of(&store, &session, at(secs(1_000_000))).await,
        vec![],
        "removed"
    );
    // Settling what is gone is harmless.
    store.settle_due(&moved, None).await.unwrap();
    store.settle_due(&moved, Some(later)).await.unwrap();
    assert_eq!(
        entries_of(&store, &session, at(secs(1_000_000))).await,
        vec![],
        "a removed entry is not brought back"
    );
}

pub async fn a_stale_settle_leaves_the_writers_entry(store: Shared) {
    for (n, next) in [(19, None), (20, Some(at(secs(10_000))))] {
        let owner = user(n);
        let room = new_room(&store, &owner, 0).await;
        let session = started(&room, 0);
        save_new(&store, &session, None).await;
        // The sweeper reads the entry at the hard deadline...
        let read = entry_of(&store, &session, at(secs(LIFETIME_S))).await;
        // ...then a writer lowers it: the last participant left at 30 s.
        let mut empty = session.clone();
        empty.leave("alice", at(secs(30)));
        assert_eq!(
            save(&store, write(&empty, Some(1), None)).await,
            SaveOutcome::Saved { version: 2 }
        );
        // The sweeper settles what it read.
        store.settle_due(&read, next).await.unwrap();
        let kept = entry_of(&store, &session, at(secs(30 + GRACE_S))).await;
        assert!(
            kept.due <= at(secs(30 + GRACE_S)),
            "settle {next:?} of a stale entry: {kept:?}"
        );
    }
}

/// A sweeper reads an entry and the session, a writer saves, then the
/// sweeper settles with the due time it read: the session must still be
/// found at the writer's due time (the index stays a lower bound).
pub async fn a_settle_racing_a_writer_keeps_the_writers_deadline(store: Shared) {
    let owner = user(21);
    let room = new_room(&store, &owner, 0).await;
    let session = started(&room, 0);
    save_new(&store, &session, None).await;
    // alice leaves at 10 s (due 70 s) and comes back at 20 s (due 600 s).
    let mut v2 = session.clone();
    v2.leave("alice", at(secs(10)));
    assert_eq!(
        save(&store, write(&v2, Some(1), None)).await,
        SaveOutcome::Saved { version: 2 }
    );
    let mut v3 = v2.clone();
    v3.join("alice", "Alice", at(secs(20)));
    assert_eq!(
        save(&store, write(&v3, Some(2), None)).await,
        SaveOutcome::Saved { version: 3 }
    );
    assert_eq!(v3.due().0, at(secs(LIFETIME_S)));

    // At 70 s a sweeper finds whatever entry is due (a store may keep the
    // lowered one) and reads the session: not due before 600 s.
    let read = entries_of(&store, &session, at(secs(10 + GRACE_S))).await;
    let seen = get(&store, &session).await.unwrap();
    assert_eq!(seen.version, 3);
    let next = seen.value.due().0;

    // Meanwhile alice leaves again at 71 s: due at 131 s.
    let mut v4 = v3.clone();
    v4.leave("alice", at(secs(71)));
    let writers_due = v4.due().0;
    assert_eq!(writers_due, at(secs(71 + GRACE_S)));
    assert_eq!(
        save(&store, write(&v4, Some(3), None)).await,
        SaveOutcome::Saved { version: 4 }
    );

    // The sweeper settles with what it read.
    for entry in &read {
        store.settle_due(entry, Some(next)).await.unwrap();
    }
    let found = entries_of(&store, &session, writers_due).await;
    assert_eq!(
        found.len(),
        1,
        "session due at {writers_due} is not in the index at that time (sweeper read {read:?})"
    );
    assert!(found[0].due <= writers_due, "{found:?}");
}

/// As above, but the writer's due time is exactly the entry the sweeper
/// read (here a replica whose clock is behind reports the leave): the entry
/// looks unchanged, yet a write happened and the settle must not apply.
pub async fn a_settle_racing_a_rewrite_of_the_same_time_is_refused(store: Shared) {
    let owner = user(23);
    let room = new_room(&store, &owner, 0).await;
    let session = started(&room, 0);
    save_new(&store, &session, None).await;
    let mut v2 = session.clone();
    v2.leave("alice", at(secs(30)));
    let empty_due = v2.due().0;
    assert_eq!(empty_due, at(secs(30 + GRACE_S)));
    assert_eq!(
        save(&store, write(&v2, Some(1), None)).await,
        SaveOutcome::Saved { version: 2 }
    );
    // The sweeper reads the entry at 90 s...
    let read = entry_of(&store, &session, empty_due).await;
    assert_eq!(read.due, empty_due);
    // ...alice is back (due 600 s), and the sweeper reads that session...
    let mut v3 = v2.clone();
    v3.join("alice", "Alice", at(secs(40)));
    assert_eq!(
        save(&store, write(&v3, Some(2), None)).await,
        SaveOutcome::Saved { version: 3 }
    );
    let seen = get(&store, &session).await.unwrap();
    assert_eq!(seen.version, 3);
    let next = seen.value.due().0;
    assert_eq!(next, at(secs(LIFETIME_S)));
    // ...then her leave is reported with the first leave's time again.
    let mut v4 = v3.clone();
    v4.leave("alice", at(secs(30)));
    assert_eq!(v4.due().0, empty_due);
    assert_eq!(
        save(&store, write(&v4, Some(3), None)).await,
        SaveOutcome::Saved { version: 4 }
    );
    store.settle_due(&read, Some(next)).await.unwrap();
    let found = entry_of(&store, &session, empty_due).await;
    assert!(found.due <= empty_due, "{found:?}");
    // Settling it away is refused the same way.
    store.settle_due(&read, None).await.unwrap();
    assert!(entry_of(&store, &session, empty_due).await.due <= empty_due);
}

pub async fn an_ended_session_leaves_the_index_once_settled(store: Shared) {
    let owner = user(22);
    let room = new_room(&store, &owner, 0).await;
    let session = started(&room, 0);
    save_new(&store, &session, None).await;
    let mut ended = session.clone();
    ended.close(at(secs(100)), EndReason::EndedByApi);
    assert_eq!(
        save(&store, write(&ended, Some(1), None)).await,
        SaveOutcome::Saved { version: 2 }
    );
    let far = at(secs(1_000_000));
    // A store may keep the entry until the sweeper looks; the sweeper finds
    // the session ended and settles the entry away.
    for entry in entries_of(&store, &session, far).await {
        let read = store
            .get_session(&entry.user_id, &entry.session_id)
            .await
            .unwrap()
            .expect("the entry names a stored session");
        assert!(!read.value.is_ongoing());
        store.settle_due(&entry, None).await.unwrap();
    }
    assert_eq!(entries_of(&store, &session, far).await, vec![]);
}

/// Entries come in batches of at most the limit, all of them due. Their
/// order is not promised: on Redis a batch starts at a random shard, so that
/// replicas sweeping at once mostly take different entries; every session
/// still closes at its own deadline, whichever batch it comes in.
pub async fn due_sessions_pages_across_accounts_in_due_order(store: Shared) {
    // 50 sessions in 10 accounts, one room each, due one second apart.
    let mut expected: Vec<(i64, UserId, SessionId)> = Vec::new();
    for a in 0..10u8 {
        let owner = user(100 + a);
        for s in 0..5i64 {
            let room = new_room(&store, &owner, 0).await;
            let i = i64::from(a) + 10 * s;
            let session = started(&room, secs(i));
            save_new(&store, &session, None).await;
            expected.push((
                session.due().0.as_millisecond(),
                owner.clone(),
                session.id.clone(),
            ));
        }
    }
    expected.sort();

    assert_eq!(
        store
            .due_sessions(at(secs(LIFETIME_S) - 1), 100)
            .await
            .unwrap(),
        vec![]
    );
    let half = store
        .due_sessions(at(secs(LIFETIME_S + 24) + 500), 100)
        .await
        .unwrap();
    assert_eq!(half.len(), 25, "only those due by then");
    let limited = store.due_sessions(at(secs(1_000_000)), 7).await.unwrap();
    assert_eq!(limited.len(), 7, "at most the limit");
    for entry in &limited {
        let wanted = (
            entry.due.as_millisecond(),
            entry.user_id.clone(),
            entry.session_id.clone(),
        );
        assert!(expected.contains(&wanted), "{wanted:?} is a real entry");
    }

    // A sweeper settling what it saw reads them all, each once.
    let mut seen: Vec<(i64, UserId, SessionId)> = Vec::new();
    for _ in 0..20 {
        let batch = store.due_sessions(at(secs(1_000_000)), 7).await.unwrap();
        if batch.is_empty() {
            break;
        }
        assert!(batch.len() <= 7);
        for entry in batch {
            store.settle_due(&entry, None).await.unwrap();
            seen.push((entry.due.as_millisecond(), entry.user_id, entry.session_id));
        }
    }
    seen.sort();
    assert_eq!(seen, expected);
    let accounts: HashSet<&UserId> = seen.iter().map(|e| &e.1).collect();
    assert_eq!(accounts.len(), 10);
}
