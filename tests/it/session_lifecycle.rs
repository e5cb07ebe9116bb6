//! The whole session lifecycle through the library API (`SessionService`,
//! `RoomService`), on every store: `lifecycle_suite!(backend, make)` runs
//! each case on the memory store, a single Redis and a Redis Cluster.
//!
//! A case gets a [`Backend`]: every [`Backend::replica`] is a new service
//! with its own store connection over the same data (same key prefix), the
//! way two server processes share one Redis. Time is a [`ManualClock`]
//! wherever waiting would be slow; only the autoClose case waits, for a
//! `durationSeconds` of 2, with the real clock and a sweeper ticking.

use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use roomservice::auth::{Caller, Verifier};
use roomservice::domain::{
    self, AutoCloseParams, CreateRoomParams, EndReason, Room, Session, TimeLog,
};
use roomservice::error::{ErrorCode, PublicError};
use roomservice::service::{
    Clock, Error, ManualClock, RoomService, SessionConfig, SessionListRequest, SessionPage,
    SessionService, SystemClock,
};
use roomservice::store::{EventStore, MemoryStore, SessionStore, Store, Versioned};
use serde_json::{Value, json};

use crate::harness::*;
use crate::redis_harness::*;

macro_rules! lifecycle_suite {
    ($backend:ident, $make:path) => {
        mod $backend {
            lifecycle_suite!(@cases $make;
                join_leave_rejoin_end_and_the_next_session,
                auto_close_ends_both_types_at_their_deadline,
                without_auto_close_a_session_ends_at_the_server_maximum,
                listing_by_status_reads_overdue_sessions_as_ended,
                an_empty_session_ends_after_the_grace,
                deactivating_the_room_ends_its_session_and_refuses_joins,
                allowed_participant_ids_are_enforced,
                participant_tokens_are_checked,
                leaves_are_idempotent,
                two_replicas_close_each_due_session_exactly_once,
                deadlines_passed_while_every_replica_was_down_close_at_the_deadline
            );
        }
    };
    (@cases $make:path; $($case:ident),*) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                $crate::session_lifecycle::$case($make().await).await
            }
        )*
    };
}

lifecycle_suite!(memory, crate::session_lifecycle::memory);
lifecycle_suite!(single_redis, crate::session_lifecycle::single_redis);
lifecycle_suite!(redis_cluster, crate::session_lifecycle::redis_cluster);

// ---------------------------------------------------------------------------
// Backends and replicas

/// Where a case's data lives.
#[derive(Clone)]
pub enum Backend {
    /// One store shared by every replica (there is no connection to open).
    Memory(Arc<MemoryStore>),
    /// Every replica opens its own connection, under the case's own prefix.
    Redis {
        urls: Vec<String>,
        cluster: bool,
        prefix: String,
    },
}

async fn memory() -> Backend {
    Backend::Memory(Arc::new(MemoryStore::new()))
}

async fn single_redis() -> Backend {
    Backend::Redis {
        urls: vec![shared_redis().url()],
        cluster: false,
        prefix: unique_prefix(),
    }
}

async fn redis_cluster() -> Backend {
    Backend::Redis {
        urls: shared_cluster().seed_urls(),
        cluster: true,
        prefix: unique_prefix(),
    }
}

/// One server's worth of services over its own store connection.
pub struct Replica {
    sessions: SessionService,
    rooms: RoomService,
    store: Arc<dyn SessionStore>,
}

impl Backend {
    async fn connect(&self) -> (Arc<dyn Store>, Arc<dyn SessionStore>, Arc<dyn EventStore>) {
        match self {
            Backend::Memory(store) => (store.clone(), store.clone(), store.clone()),
            Backend::Redis {
                urls,
                cluster,
                prefix,
            } => {
                let store = Arc::new(connected_store(urls.clone(), *cluster, prefix.clone()).await);
                (store.clone(), store.clone(), store)
            }
        }
    }

    async fn replica(&self, clock: Arc<dyn Clock>, config: SessionConfig) -> Replica {
        let (rooms, sessions, events) = self.connect().await;
        let service = SessionService::new(
            rooms.clone(),
            sessions.clone(),
            events,
            Arc::new(Verifier::new(keyring(), false)),
            clock,
            config,
        );
        Replica {
            rooms: RoomService::new(rooms).with_sessions(service.clone()),
            sessions: service,
            store: sessions,
        }
    }
}

/// Grace 60 s, maximum 480 min: the server's defaults.
fn default_config() -> SessionConfig {
    SessionConfig {
        max_session: Duration::from_secs(480 * 60),
        empty_grace: Duration::from_secs(60),
    }
}

/// A manual clock at the current millisecond (stores keep milliseconds).
fn manual_clock() -> Arc<ManualClock> {
    Arc::new(ManualClock::new(domain::now()))
}

// ---------------------------------------------------------------------------
// Callers and tokens

fn verify(token: &str) -> Arc<Caller> {
    Verifier::new(keyring(), false)
        .verify_management(Some(token))
        .expect("test token verifies")
}

/// The media plane: a token of the `service = true` key.
fn media() -> Arc<Caller> {
    verify(&sign(&sdk_claims(MEDIA_KEY), MEDIA_SECRET))
}

fn acme() -> Arc<Caller> {
    verify(&acme_token())
}

fn globex() -> Arc<Caller> {
    verify(&globex_token())
}

/// What a participant presents to the media server: `roles: ["rtc"]`,
/// `permissions: ["allow_join"]`, with `changes` applied (null removes).
fn participant_claims(api_key: &str, changes: Value) -> Value {
    let mut claims = sdk_claims(api_key);
    claims["roles"] = json!(["rtc"]);
    claims["permissions"] = json!(["allow_join"]);
    let object = claims.as_object_mut().unwrap();
    for (name, value) in changes.as_object().expect("changes are an object") {
        if value.is_null() {
            object.remove(name);
        } else {
            object.insert(name.clone(), value.clone());
        }
    }
    claims
}

fn acme_participant(changes: Value) -> String {
    sign(&participant_claims(ACME_KEY, changes), ACME_SECRET)
}

/// A participant token of the room's own account.
fn participant_token_for(room: &Room) -> String {
    if room.user_id.as_str() == ACME_USER {
        acme_participant(json!({}))
    } else {
        sign(&participant_claims(GLOBEX_KEY, json!({})), GLOBEX_SECRET)
    }
}

// ---------------------------------------------------------------------------
// Calls

/// A room of `caller`'s account; `auto_close` is (type, durationSeconds).
async fn create_room(
    replica: &Replica,
    caller: &Caller,
    custom_room_id: Option<&str>,
    auto_close: Option<(&str, i64)>,
    allowed: &[&str],
) -> Room {
    let params = CreateRoomParams {
        custom_room_id: custom_room_id.map(str::to_owned),
        auto_close_config: auto_close.map(|(kind, seconds)| AutoCloseParams {
            kind: Some(kind.to_owned()),
            duration: None,
            duration_seconds: Some(seconds),
        }),
        allowed_participant_ids: allowed.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    };
    replica
        .rooms
        .create_room(caller, params, None)
        .await
        .expect("create room")
        .room
}

async fn join_with(
    replica: &Replica,
    room_key: &str,
    participant_id: &str,
    token: &str,
) -> Result<Session, Error> {
    replica
        .sessions
        .participant_joined(&media(), room_key, participant_id, participant_id, token)
        .await
}

async fn join(replica: &Replica, room: &Room, participant_id: &str) -> Result<Session, Error> {
    join_with(
        replica,
        room.room_id.as_str(),
        participant_id,
        &participant_token_for(room),
    )
    .await
}

async fn leave(replica: &Replica, room: &Room, participant_id: &str) -> Result<Session, Error> {
    replica
        .sessions
        .participant_left(
            &media(),
            room.user_id.as_str(),
            room.room_id.as_str(),
            participant_id,
            "",
        )
        .await
}

/// The session as stored (not as read through the service).
async fn stored(replica: &Replica, session: &Session) -> Versioned<Session> {
    replica
        .store
        .get_session(&session.user_id, &session.id)
        .await
        .unwrap()
        .expect("session is stored")
}

async fn latest(replica: &Replica, room: &Room) -> Option<Session> {
    replica
        .store
        .latest_session(&room.user_id, &room.room_id)
        .await
        .unwrap()
        .map(|v| v.value)
}

async fn list(
    replica: &Replica,
    caller: &Caller,
    room: Option<&Room>,
    status: Option<&str>,
) -> SessionPage {
    replica
        .sessions
        .list_sessions(
            caller,
            SessionListRequest {
                room: room.map(|r| r.room_id.to_string()),
                status: status.map(str::to_owned),
                page: Some(1),
                per_page: Some(100),
            },
        )
        .await
        .expect("list sessions")
}

/// Sweeps with every replica in turn until nothing due is left in the
/// deadline index; returns how many sessions they closed.
async fn sweep_until_idle(replicas: &[&Replica]) -> usize {
    let mut closed = 0;
    for _ in 0..20 {
        let mut examined = 0;
        for replica in replicas {
            let report = replica.sessions.sweep().await.expect("sweep");
            closed += report.closed;
            examined += report.examined;
        }
        if examined == 0 {
            return closed;
        }
    }
    panic!("the deadline index still has due entries after 20 sweeps");
}

#[track_caller]
fn refused(result: Result<Session, Error>, code: ErrorCode, needle: &str) {
    let error = match result {
        Ok(session) => panic!("expected {code:?} ({needle}), got the session {session:?}"),
        Err(error) => error,
    };
    assert_eq!(error.code(), code, "{error}");
    assert!(
        error.public_message().contains(needle),
        "{:?} does not mention {needle:?}",
        error.public_message()
    );
}

fn after(t: Timestamp, by: Duration) -> Timestamp {
    Timestamp::from_millisecond(t.as_millisecond() + by.as_millis() as i64).unwrap()
}

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

fn mins(m: u64) -> Duration {
    Duration::from_secs(60 * m)
}

fn timelog(start: Timestamp, end: Option<Timestamp>) -> TimeLog {
    TimeLog { start, end }
}

fn timelogs(session: &Session, participant_id: &str) -> Vec<TimeLog> {
    session
        .participants
        .iter()
        .find(|p| p.participant_id == participant_id)
        .unwrap_or_else(|| panic!("{participant_id} is not in {session:?}"))
        .timelog
        .clone()
}

// ---------------------------------------------------------------------------
// Cases

/// Join starts a session, a repeated join changes nothing, leaves and rejoins
/// are timelogged, EndSession ends it, and a join afterwards starts a new one.
pub async fn join_leave_rejoin_end_and_the_next_session(backend: Backend) {
    let clock = manual_clock();
    let t0 = clock.now();
    let replica = backend.replica(clock.clone(), default_config()).await;
    let room = create_room(&replica, &acme(), Some("lifecycle-main"), None, &[]).await;
    assert!(
        latest(&replica, &room).await.is_none(),
        "a new room has no session"
    );

    let first = join(&replica, &room, "alice").await.unwrap();
    assert!(first.is_ongoing());
    assert_eq!(first.start, t0);
    assert_eq!(first.room_id, room.room_id);
    assert_eq!(first.custom_room_id, room.custom_room_id);
    assert_eq!(first.user_id.as_str(), ACME_USER);
    assert_eq!(first.hard_deadline, after(t0, mins(480)));
    assert_eq!(first.hard_reason, EndReason::MaxLength);
    assert_eq!(timelogs(&first, "alice"), vec![timelog(t0, None)]);
    let v1 = stored(&replica, &first).await;
    assert_eq!(v1.value, first, "what the join returned is what is stored");

    clock.advance(secs(1));
    let again = join(&replica, &room, "alice").await.unwrap();
    assert_eq!(again, first, "a repeated join changes nothing");
    assert_eq!(
        stored(&replica, &first).await,
        v1,
        "and writes nothing either"
    );

    clock.advance(secs(1));
    let with_bob = join(&replica, &room, "bob").await.unwrap();
    assert_eq!(
        with_bob.id, first.id,
        "a second participant joins the same session"
    );
    assert_eq!(
        timelogs(&with_bob, "bob"),
        vec![timelog(after(t0, secs(2)), None)]
    );

    clock.advance(secs(1));
    let left = leave(&replica, &room, "alice").await.unwrap();
    assert_eq!(
        timelogs(&left, "alice"),
        vec![timelog(t0, Some(after(t0, secs(3))))]
    );
    assert!(left.is_ongoing(), "bob is still there");

    clock.advance(secs(2));
    let back = join(&replica, &room, "alice").await.unwrap();
    assert_eq!(back.id, first.id, "a rejoin lands in the running session");
    assert_eq!(
        timelogs(&back, "alice"),
        vec![
            timelog(t0, Some(after(t0, secs(3)))),
            timelog(after(t0, secs(5)), None),
        ]
    );
    assert_eq!(back.participants.len(), 2);
    let read = replica
        .sessions
        .get_session(&acme(), first.id.as_str())
        .await
        .unwrap();
    assert_eq!(read, back);
    assert_eq!(stored(&replica, &first).await.value, back);

    clock.advance(secs(1));
    let t_end = after(t0, secs(6));
    let ended = replica
        .sessions
        .end_session(&acme(), "lifecycle-main", None)
        .await
        .unwrap();
    assert_eq!(ended.id, first.id);
    assert_eq!(ended.end, Some(t_end));
    assert_eq!(ended.end_reason, Some(EndReason::EndedByApi));
    assert_eq!(
        timelogs(&ended, "alice"),
        vec![
            timelog(t0, Some(after(t0, secs(3)))),
            timelog(after(t0, secs(5)), Some(t_end)),
        ],
        "closing closes the open timelogs"
    );
    assert_eq!(
        timelogs(&ended, "bob"),
        vec![timelog(after(t0, secs(2)), Some(t_end))]
    );
    let ended_version = stored(&replica, &first).await;
    assert_eq!(ended_version.value, ended);

    clock.advance(secs(1));
    let ended_again = replica
        .sessions
        .end_session(&acme(), room.room_id.as_str(), None)
        .await
        .unwrap();
    assert_eq!(
        ended_again, ended,
        "ending an ended session changes nothing"
    );
    let left_after_end = leave(&replica, &room, "bob").await.unwrap();
    assert_eq!(
        left_after_end, ended,
        "a leave after the end changes nothing"
    );
    assert_eq!(stored(&replica, &first).await, ended_version);

    let second = join(&replica, &room, "alice").await.unwrap();
    assert_ne!(
        second.id, first.id,
        "a join after the end starts a new session"
    );
    assert!(second.is_ongoing());
    assert_eq!(second.start, after(t0, secs(7)));
    assert_eq!(
        timelogs(&second, "alice"),
        vec![timelog(second.start, None)]
    );
    assert_eq!(second.participants.len(), 1);
    assert_eq!(
        stored(&replica, &first).await,
        ended_version,
        "the old session is kept as it ended"
    );

    let all = list(&replica, &acme(), Some(&room), None).await;
    let ids: Vec<_> = all.sessions.iter().map(|s| s.id.clone()).collect();
    assert_eq!(
        ids,
        vec![second.id.clone(), first.id.clone()],
        "newest first"
    );
    assert_eq!(all.total, 2);
    let ongoing = list(&replica, &acme(), Some(&room), Some("ongoing")).await;
    assert_eq!(ongoing.sessions, vec![second.clone()]);
    let ended_page = list(&replica, &acme(), Some(&room), Some("ended")).await;
    assert_eq!(ended_page.sessions, vec![ended]);
    // Another account sees none of it.
    assert_eq!(list(&replica, &globex(), None, None).await.total, 0);
    refused(
        replica
            .sessions
            .get_session(&globex(), first.id.as_str())
            .await,
        ErrorCode::NotFound,
        "not found",
    );
}

/// autoCloseConfig with durationSeconds 2 and the real clock: a ticking
/// sweeper stores each close within a second of the deadline, with `end`
/// exactly at start + 2 s; `session-end-and-deactivate` also disables the
/// room, so a new join is refused.
pub async fn auto_close_ends_both_types_at_their_deadline(backend: Backend) {
    let replica = backend
        .replica(Arc::new(SystemClock), default_config())
        .await;
    let ends = create_room(&replica, &acme(), None, Some(("session-ends", 2)), &[]).await;
    let deactivates = create_room(
        &replica,
        &acme(),
        None,
        Some(("session-end-and-deactivate", 2)),
        &[],
    )
    .await;
    let a = join(&replica, &ends, "alice").await.unwrap();
    let b = join(&replica, &deactivates, "alice").await.unwrap();
    for session in [&a, &b] {
        assert_eq!(session.hard_deadline, after(session.start, secs(2)));
        assert_eq!(session.hard_reason, EndReason::AutoClose);
    }
    assert!(b.deactivates_room && !a.deactivates_room);
    assert_eq!(
        sweep_until_idle(&[&replica]).await,
        0,
        "nothing is due before the deadline"
    );
    assert!(stored(&replica, &a).await.value.is_ongoing());

    // A sweeper ticking every 100 ms, as a server's does.
    let sweeper = replica.sessions.clone();
    let ticking = tokio::spawn(async move {
        let mut closed = 0;
        loop {
            closed += sweeper.sweep().await.expect("sweep").closed;
            if closed >= 2 {
                return closed;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    let mut seen: [Option<Timestamp>; 2] = [None, None];
    let give_up = after(b.hard_deadline.max(a.hard_deadline), secs(4));
    while seen.iter().any(Option::is_none) {
        assert!(
            domain::now() < give_up,
            "not closed 4 s after the deadline: {seen:?}"
        );
        for (i, session) in [&a, &b].into_iter().enumerate() {
            if seen[i].is_none() && !stored(&replica, session).await.value.is_ongoing() {
                seen[i] = Some(domain::now());
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let closed = tokio::time::timeout(secs(5), ticking)
        .await
        .expect("sweeper stops")
        .unwrap();
    assert_eq!(closed, 2, "the sweeper closed each session once");

    for (session, seen_at) in [(&a, seen[0].unwrap()), (&b, seen[1].unwrap())] {
        let closed = stored(&replica, session).await.value;
        let deadline = after(session.start, secs(2));
        assert_eq!(closed.end, Some(deadline), "end is start + durationSeconds");
        assert_eq!(closed.end_reason, Some(EndReason::AutoClose));
        assert_eq!(
            timelogs(&closed, "alice"),
            vec![timelog(session.start, Some(deadline))]
        );
        let late = seen_at.as_millisecond() - deadline.as_millisecond();
        assert!(
            (0..=1000).contains(&late),
            "stored as closed {late} ms after the deadline"
        );
        let read = replica
            .sessions
            .get_session(&acme(), session.id.as_str())
            .await
            .unwrap();
        assert_eq!(read, closed);
    }

    // session-ends: the room stays enabled and takes a new session.
    let room = replica
        .rooms
        .get_room(&acme(), ends.room_id.as_str())
        .await
        .unwrap();
    assert!(!room.disabled, "session-ends leaves the room enabled");
    let next = join(&replica, &ends, "bob").await.unwrap();
    assert_ne!(next.id, a.id);
    assert!(next.is_ongoing());

    // session-end-and-deactivate: the room is disabled, joins are refused.
    let room = replica
        .rooms
        .get_room(&acme(), deactivates.room_id.as_str())
        .await
        .unwrap();
    assert!(
        room.disabled,
        "session-end-and-deactivate disables the room"
    );
    refused(
        join(&replica, &deactivates, "bob").await,
        ErrorCode::FailedPrecondition,
        "disabled",
    );
    assert_eq!(
        latest(&replica, &deactivates).await.map(|s| s.id),
        Some(b.id.clone()),
        "no new session was started"
    );
}

/// Without autoCloseConfig the server maximum applies; a read past it says
/// ended before any sweep, and the sweep makes it durable. A join past the
/// deadline closes the old session at its deadline and starts the next.
pub async fn without_auto_close_a_session_ends_at_the_server_maximum(backend: Backend) {
    let clock = manual_clock();
    let t0 = clock.now();
    let replica = backend.replica(clock.clone(), default_config()).await;
    let room = create_room(&replica, &acme(), None, None, &[]).await;
    let other = create_room(&replica, &acme(), None, None, &[]).await;
    let session = join(&replica, &room, "alice").await.unwrap();
    let other_session = join(&replica, &other, "alice").await.unwrap();
    let deadline = after(t0, mins(480));
    assert_eq!(session.hard_deadline, deadline);

    clock.advance(mins(479));
    assert_eq!(sweep_until_idle(&[&replica]).await, 0);
    let read = replica
        .sessions
        .get_session(&acme(), session.id.as_str())
        .await
        .unwrap();
    assert!(read.is_ongoing(), "479 minutes in, still ongoing");

    clock.advance(mins(2));
    let read = replica
        .sessions
        .get_session(&acme(), session.id.as_str())
        .await
        .unwrap();
    assert_eq!(read.end, Some(deadline), "read as ended at the maximum");
    assert_eq!(read.end_reason, Some(EndReason::MaxLength));
    assert_eq!(timelogs(&read, "alice"), vec![timelog(t0, Some(deadline))]);
    let listed = list(&replica, &acme(), Some(&room), None).await;
    assert_eq!(listed.sessions, vec![read.clone()]);

    // A join in the other room before any sweep: the overdue session is
    // closed at its deadline, and the join starts the next one.
    let next = join(&replica, &other, "bob").await.unwrap();
    assert_ne!(next.id, other_session.id);
    assert_eq!(next.start, clock.now());
    let old = stored(&replica, &other_session).await.value;
    assert_eq!(old.end, Some(deadline));
    assert_eq!(old.end_reason, Some(EndReason::MaxLength));

    assert_eq!(
        sweep_until_idle(&[&replica]).await,
        1,
        "the sweep stores the one close nobody stored yet"
    );
    let durable = stored(&replica, &session).await.value;
    assert_eq!(durable, read, "stored as it was read");
    assert!(stored(&replica, &next).await.value.is_ongoing());
}

/// Listings filtered by status read a session past its deadline as ended,
/// like every other read, before the sweeper has stored the close.
pub async fn listing_by_status_reads_overdue_sessions_as_ended(backend: Backend) {
    let clock = manual_clock();
    let replica = backend.replica(clock.clone(), default_config()).await;
    let room = create_room(&replica, &acme(), None, Some(("session-ends", 60)), &[]).await;
    let session = join(&replica, &room, "alice").await.unwrap();
    clock.advance(secs(61));

    let all = list(&replica, &acme(), Some(&room), None).await;
    assert_eq!(all.sessions.len(), 1);
    assert_eq!(all.sessions[0].end, Some(after(session.start, secs(60))));

    let ended = list(&replica, &acme(), Some(&room), Some("ended")).await;
    let ongoing = list(&replica, &acme(), Some(&room), Some("ongoing")).await;
    let ended_all = list(&replica, &acme(), None, Some("ended")).await;
    let ongoing_all = list(&replica, &acme(), None, Some("ongoing")).await;
    assert_eq!(
        (
            ended.sessions.len(),
            ended.total,
            ongoing.sessions.len(),
            ongoing.total
        ),
        (1, 1, 0, 0),
        "status=ended / status=ongoing of the room, before the sweep"
    );
    assert_eq!(
        (
            ended_all.sessions.len(),
            ended_all.total,
            ongoing_all.sessions.len(),
            ongoing_all.total
        ),
        (1, 1, 0, 0),
        "status=ended / status=ongoing of the account, before the sweep"
    );
}

/// The last participant leaves: the session ends `empty_grace` later unless
/// someone comes back; someone still present keeps it going.
pub async fn an_empty_session_ends_after_the_grace(backend: Backend) {
    let clock = manual_clock();
    let t0 = clock.now();
    let at = |s: u64| after(t0, secs(s));
    let replica = backend.replica(clock.clone(), default_config()).await;
    let room = create_room(&replica, &acme(), None, None, &[]).await;
    let session = join(&replica, &room, "alice").await.unwrap();
    join(&replica, &room, "bob").await.unwrap();
    let still_going = |label: &'static str| {
        let replica = &replica;
        let id = session.id.clone();
        async move {
            assert_eq!(sweep_until_idle(&[replica]).await, 0, "{label}: swept");
            let read = replica
                .sessions
                .get_session(&acme(), id.as_str())
                .await
                .unwrap();
            assert!(read.is_ongoing(), "{label}: {read:?}");
            assert!(stored(replica, &read).await.value.is_ongoing(), "{label}");
        }
    };

    clock.advance(secs(5));
    leave(&replica, &room, "alice").await.unwrap();
    clock.advance(secs(61));
    still_going("bob is still present").await;

    // t0+66: the last participant leaves.
    leave(&replica, &room, "bob").await.unwrap();
    clock.advance(secs(59));
    still_going("59 s after the last leave").await;

    // t0+125: bob comes back within the grace...
    let back = join(&replica, &room, "bob").await.unwrap();
    assert_eq!(back.id, session.id, "the rejoin keeps the session");
    clock.advance(secs(2));
    still_going("past the first grace, someone came back").await;

    // ...and leaves again at t0+130.
    clock.advance(secs(3));
    leave(&replica, &room, "bob").await.unwrap();
    clock.advance(secs(59));
    still_going("59 s after the second leave").await;

    clock.advance(secs(2));
    let read = replica
        .sessions
        .get_session(&acme(), session.id.as_str())
        .await
        .unwrap();
    assert_eq!(read.end, Some(at(190)), "ended at the last leave + 60 s");
    assert_eq!(read.end_reason, Some(EndReason::Empty));
    assert_eq!(sweep_until_idle(&[&replica]).await, 1);
    let durable = stored(&replica, &session).await.value;
    assert_eq!(durable.end, Some(at(190)));
    assert_eq!(durable.end_reason, Some(EndReason::Empty));
    assert_eq!(timelogs(&durable, "alice"), vec![timelog(t0, Some(at(5)))]);
    assert_eq!(
        timelogs(&durable, "bob"),
        vec![timelog(t0, Some(at(66))), timelog(at(125), Some(at(130)))]
    );
}

/// DeactivateRoom and UpdateRoomStatus(disabled) end the running session
/// (RoomDeactivated) and later joins are refused; enabling again lets a new
/// session start.
pub async fn deactivating_the_room_ends_its_session_and_refuses_joins(backend: Backend) {
    let clock = manual_clock();
    let t0 = clock.now();
    let replica = backend.replica(clock.clone(), default_config()).await;
    let room = create_room(&replica, &acme(), None, None, &[]).await;
    let session = join(&replica, &room, "alice").await.unwrap();
    join(&replica, &room, "bob").await.unwrap();
    clock.advance(secs(2));
    leave(&replica, &room, "bob").await.unwrap();

    clock.advance(secs(3));
    let disabled = replica
        .rooms
        .deactivate_room(&acme(), room.room_id.as_str())
        .await
        .unwrap();
    assert!(disabled.disabled);
    let ended = stored(&replica, &session).await.value;
    assert_eq!(ended.end, Some(after(t0, secs(5))));
    assert_eq!(ended.end_reason, Some(EndReason::RoomDeactivated));
    assert_eq!(
        timelogs(&ended, "alice"),
        vec![timelog(t0, Some(after(t0, secs(5))))]
    );
    assert_eq!(
        timelogs(&ended, "bob"),
        vec![timelog(t0, Some(after(t0, secs(2))))]
    );
    refused(
        join(&replica, &room, "carol").await,
        ErrorCode::FailedPrecondition,
        "disabled",
    );
    refused(
        join(&replica, &room, "alice").await,
        ErrorCode::FailedPrecondition,
        "disabled",
    );
    assert_eq!(latest(&replica, &room).await, Some(ended.clone()));

    // UpdateRoomStatus, by customRoomId.
    let other = create_room(&replica, &acme(), Some("lifecycle-status"), None, &[]).await;
    let other_session = join(&replica, &other, "alice").await.unwrap();
    clock.advance(secs(1));
    replica
        .rooms
        .update_room_status(&acme(), "lifecycle-status", "disabled")
        .await
        .unwrap();
    let other_ended = stored(&replica, &other_session).await.value;
    assert_eq!(other_ended.end, Some(clock.now()));
    assert_eq!(other_ended.end_reason, Some(EndReason::RoomDeactivated));
    refused(
        join(&replica, &other, "alice").await,
        ErrorCode::FailedPrecondition,
        "disabled",
    );

    replica
        .rooms
        .update_room_status(&acme(), "lifecycle-status", "enabled")
        .await
        .unwrap();
    let next = join(&replica, &other, "alice").await.unwrap();
    assert_ne!(next.id, other_session.id, "enabled again: a new session");
    assert!(next.is_ongoing());
    assert_eq!(sweep_until_idle(&[&replica]).await, 0);
    assert_eq!(stored(&replica, &other_session).await.value, other_ended);
}

/// A participant outside a non-empty allowedParticipantIds is refused, and
/// starts no session.
pub async fn allowed_participant_ids_are_enforced(backend: Backend) {
    let replica = backend
        .replica(Arc::new(SystemClock), default_config())
        .await;
    let room = create_room(&replica, &acme(), None, None, &["alice", "bob"]).await;
    refused(
        join(&replica, &room, "mallory").await,
        ErrorCode::PermissionDenied,
        "allowedParticipantIds",
    );
    assert!(
        latest(&replica, &room).await.is_none(),
        "no session started"
    );
    let session = join(&replica, &room, "alice").await.unwrap();
    refused(
        join(&replica, &room, "mallory").await,
        ErrorCode::PermissionDenied,
        "allowedParticipantIds",
    );
    refused(
        join(&replica, &room, "Alice").await,
        ErrorCode::PermissionDenied,
        "allowedParticipantIds",
    );
    let with_bob = join(&replica, &room, "bob").await.unwrap();
    assert_eq!(with_bob.id, session.id);
    let ids: Vec<_> = stored(&replica, &session)
        .await
        .value
        .participants
        .iter()
        .map(|p| p.participant_id.clone())
        .collect();
    assert_eq!(ids, ["alice", "bob"]);

    // An empty list lets anyone in.
    let open = create_room(&replica, &acme(), None, None, &[]).await;
    join(&replica, &open, "mallory").await.unwrap();
}

/// Every way a participant token (or the caller) can be refused; none of
/// them starts a session. The accepted variants are checked too, so the
/// refusals are for the reason named.
pub async fn participant_tokens_are_checked(backend: Backend) {
    let replica = backend
        .replica(Arc::new(SystemClock), default_config())
        .await;
    let room = create_room(&replica, &acme(), Some("token-room"), None, &[]).await;
    let elsewhere = create_room(&replica, &acme(), None, None, &[]).await;
    let key = room.room_id.as_str();
    let try_join = |token: String, participant_id: &'static str| {
        let replica = &replica;
        async move { join_with(replica, key, participant_id, &token).await }
    };

    refused(
        try_join(acme_participant(json!({"roles": ["crawler"]})), "alice").await,
        ErrorCode::PermissionDenied,
        "rtc",
    );
    refused(
        try_join(
            acme_participant(json!({"permissions": ["allow_mod"]})),
            "alice",
        )
        .await,
        ErrorCode::PermissionDenied,
        "allow_join",
    );
    refused(
        try_join(
            acme_participant(json!({"roomId": elsewhere.room_id.as_str()})),
            "alice",
        )
        .await,
        ErrorCode::PermissionDenied,
        "another room",
    );
    refused(
        try_join(acme_participant(json!({"participantId": "bob"})), "alice").await,
        ErrorCode::PermissionDenied,
        "another participantId",
    );
    refused(
        try_join(
            sign(&participant_claims(GLOBEX_KEY, json!({})), GLOBEX_SECRET),
            "alice",
        )
        .await,
        ErrorCode::NotFound,
        "not found",
    );
    refused(
        try_join(
            sign(&participant_claims(ACME_KEY, json!({})), GLOBEX_SECRET),
            "alice",
        )
        .await,
        ErrorCode::PermissionDenied,
        "participant token refused",
    );
    refused(
        try_join(
            acme_participant(json!({"iat": now() - 7200, "exp": now() - 3600})),
            "alice",
        )
        .await,
        ErrorCode::PermissionDenied,
        "expired",
    );
    refused(
        try_join(String::new(), "alice").await,
        ErrorCode::InvalidArgument,
        "participantToken",
    );
    // The caller must be the media plane: an account's own token is not.
    refused(
        replica
            .sessions
            .participant_joined(&acme(), key, "alice", "", &acme_participant(json!({})))
            .await,
        ErrorCode::PermissionDenied,
        "service",
    );
    assert!(
        latest(&replica, &room).await.is_none(),
        "no refusal started a session"
    );

    // The accepted variants: scoped to this room (by any of its names), the
    // participant's own id, no roles claim, ask_join.
    for (changes, participant_id) in [
        (json!({"roomId": room.room_id.as_str()}), "p1"),
        (json!({"roomId": "token-room"}), "p2"),
        (json!({"roomId": room.id().as_str()}), "p3"),
        (json!({"participantId": "p4"}), "p4"),
        (json!({"roles": null}), "p5"),
        (json!({"permissions": ["ask_join"]}), "p6"),
    ] {
        let session = try_join(acme_participant(changes.clone()), participant_id)
            .await
            .unwrap_or_else(|e| panic!("{changes} refused: {e}"));
        assert!(
            session
                .participants
                .iter()
                .any(|p| p.participant_id == participant_id && p.is_present())
        );
    }

    // Leaves come from the media plane too.
    refused(
        replica
            .sessions
            .participant_left(&acme(), ACME_USER, key, "p1", "")
            .await,
        ErrorCode::PermissionDenied,
        "service",
    );
    assert!(
        stored(&replica, &latest(&replica, &room).await.unwrap())
            .await
            .value
            .participants
            .iter()
            .all(|p| p.is_present())
    );
}

/// A leave of someone absent, or a repeated leave, changes nothing.
pub async fn leaves_are_idempotent(backend: Backend) {
    let clock = manual_clock();
    let t0 = clock.now();
    let replica = backend.replica(clock.clone(), default_config()).await;
    let room = create_room(&replica, &acme(), None, None, &[]).await;
    refused(
        leave(&replica, &room, "alice").await,
        ErrorCode::NotFound,
        "session",
    );
    assert!(latest(&replica, &room).await.is_none());

    let session = join(&replica, &room, "alice").await.unwrap();
    let v1 = stored(&replica, &session).await;
    clock.advance(secs(1));
    let ghost = leave(&replica, &room, "ghost").await.unwrap();
    assert_eq!(
        ghost, session,
        "leaving without having joined changes nothing"
    );
    assert_eq!(stored(&replica, &session).await, v1, "nothing written");

    clock.advance(secs(1));
    let left = leave(&replica, &room, "alice").await.unwrap();
    assert_eq!(
        timelogs(&left, "alice"),
        vec![timelog(t0, Some(after(t0, secs(2))))]
    );
    let v2 = stored(&replica, &session).await;
    assert_eq!(v2.value, left);
    clock.advance(secs(1));
    assert_eq!(leave(&replica, &room, "alice").await.unwrap(), left);
    assert_eq!(leave(&replica, &room, "ghost").await.unwrap(), left);
    assert_eq!(
        stored(&replica, &session).await,
        v2,
        "repeats write nothing"
    );
    assert_eq!(
        left.empty_since,
        Some(after(t0, secs(2))),
        "the repeat did not move the grace"
    );

    // The leave names the room's account: another account's id finds nothing.
    refused(
        replica
            .sessions
            .participant_left(
                &media(),
                &globex().account.user_id.to_string(),
                room.room_id.as_str(),
                "alice",
                "",
            )
            .await,
        ErrorCode::NotFound,
        "not found",
    );
}

/// Two replicas over one store (two connections), 200 sessions in two
/// accounts falling due within one second: every sweep of both runs at once,
/// and each session is closed exactly once, at its deadline.
pub async fn two_replicas_close_each_due_session_exactly_once(backend: Backend) {
    const SESSIONS: usize = 200;
    let clock = manual_clock();
    let t0 = clock.now();
    let a = backend.replica(clock.clone(), default_config()).await;
    let b = backend.replica(clock.clone(), default_config()).await;

    let mut sessions = Vec::with_capacity(SESSIONS);
    for i in 0..SESSIONS {
        let (replica, caller) = match i % 2 {
            0 => (&a, acme()),
            _ => (&b, globex()),
        };
        let room = create_room(replica, &caller, None, Some(("session-ends", 1)), &[]).await;
        sessions.push(join(replica, &room, "alice").await.unwrap());
        // Starts spread over 800 ms: deadlines from t0+1 s to t0+1.796 s.
        clock.advance(Duration::from_millis(4));
    }
    assert_eq!(sweep_until_idle(&[&a, &b]).await, 0, "none due yet");

    clock.advance(secs(1));
    let due = after(t0, Duration::from_millis(1800));
    assert!(clock.now() >= due, "every deadline has passed");
    let mut closed = [0usize; 2];
    let mut rounds = 0;
    loop {
        rounds += 1;
        assert!(rounds <= 20, "the deadline index never emptied");
        // Two sweeps on each replica, released at once.
        let start = Arc::new(tokio::sync::Barrier::new(4));
        let sweeps: Vec<_> = [&a, &a, &b, &b]
            .iter()
            .map(|r| {
                let (service, start) = (r.sessions.clone(), start.clone());
                tokio::spawn(async move {
                    start.wait().await;
                    service.sweep().await.expect("sweep")
                })
            })
            .collect();
        let mut examined = 0;
        for (i, sweep) in sweeps.into_iter().enumerate() {
            let report = sweep.await.unwrap();
            closed[i / 2] += report.closed;
            examined += report.examined;
        }
        if examined == 0 {
            break;
        }
    }
    assert_eq!(
        closed[0] + closed[1],
        SESSIONS,
        "closes reported by replica a and b: {closed:?}"
    );

    // Counted from the store: every session ended once, at its deadline.
    for session in &sessions {
        let stored = stored(&a, session).await;
        let deadline = after(session.start, secs(1));
        assert_eq!(stored.value.end, Some(deadline), "{:?}", session.id);
        assert_eq!(stored.value.end_reason, Some(EndReason::AutoClose));
        assert_eq!(
            stored.version, 2,
            "one write to start, one to close: {:?}",
            session.id
        );
    }
    let mut ended_total = 0;
    for caller in [acme(), globex()] {
        let ended = list(&b, &caller, None, Some("ended")).await;
        let ongoing = list(&b, &caller, None, Some("ongoing")).await;
        assert_eq!(ongoing.total, 0);
        ended_total += ended.total;
    }
    assert_eq!(ended_total, SESSIONS, "ended sessions in the store");
}

/// Every replica is gone while deadlines pass; a fresh one, started later,
/// closes each overdue session at its own deadline, not at the time it sweeps.
pub async fn deadlines_passed_while_every_replica_was_down_close_at_the_deadline(backend: Backend) {
    let config = SessionConfig {
        max_session: mins(10),
        empty_grace: secs(60),
    };
    let clock = manual_clock();
    let t0 = clock.now();
    let (ends, deactivates, maximum, empty, sessions) = {
        let gone = backend.replica(clock.clone(), config).await;
        let ends = create_room(&gone, &acme(), None, Some(("session-ends", 60)), &[]).await;
        let deactivates = create_room(
            &gone,
            &acme(),
            None,
            Some(("session-end-and-deactivate", 90)),
            &[],
        )
        .await;
        let maximum = create_room(&gone, &acme(), None, None, &[]).await;
        let empty = create_room(&gone, &acme(), None, None, &[]).await;
        let later = create_room(&gone, &acme(), None, Some(("session-ends", 1800)), &[]).await;
        let mut sessions = Vec::new();
        for room in [&ends, &deactivates, &maximum, &empty, &later] {
            sessions.push(join(&gone, room, "alice").await.unwrap());
        }
        clock.advance(secs(1));
        leave(&gone, &empty, "alice").await.unwrap();
        // The replica, its services and its store connection go away here,
        // before anything fell due.
        (ends, deactivates, maximum, empty, sessions)
    };

    // Twenty minutes later, a new replica with a new connection.
    let restarted_clock = Arc::new(ManualClock::new(after(t0, mins(20))));
    let fresh = backend.replica(restarted_clock.clone(), config).await;
    assert_eq!(
        sweep_until_idle(&[&fresh]).await,
        4,
        "the four overdue sessions"
    );
    let expect = [
        (&ends, after(t0, secs(60)), EndReason::AutoClose),
        (&deactivates, after(t0, secs(90)), EndReason::AutoClose),
        (&maximum, after(t0, mins(10)), EndReason::MaxLength),
        (&empty, after(t0, secs(61)), EndReason::Empty),
    ];
    for (i, (room, end, reason)) in expect.into_iter().enumerate() {
        let closed = stored(&fresh, &sessions[i]).await.value;
        assert_eq!(
            (closed.end, closed.end_reason),
            (Some(end), Some(reason)),
            "room {}",
            room.room_id
        );
        assert_eq!(latest(&fresh, room).await.map(|s| s.id), Some(closed.id));
    }
    assert!(
        stored(&fresh, &sessions[4]).await.value.is_ongoing(),
        "the one due in 30 minutes still runs"
    );
    let room = fresh
        .rooms
        .get_room(&acme(), deactivates.room_id.as_str())
        .await
        .unwrap();
    assert!(room.disabled, "closed with its room disabled");
    refused(
        join(&fresh, &deactivates, "bob").await,
        ErrorCode::FailedPrecondition,
        "disabled",
    );
    assert!(
        !fresh
            .rooms
            .get_room(&acme(), ends.room_id.as_str())
            .await
            .unwrap()
            .disabled
    );
}

/// Redis Cluster only: the account's slot is resharded while its sessions
/// run, once whole and once left half-way (keys on the new primary, the old
/// one still owning the slot) as their deadlines pass. After the whole
/// move, joins and leaves work. Half-way, Redis refuses a command on several
/// keys of the slot unless all of them exist (TRYAGAIN): joins and sweeps
/// fail UNAVAILABLE then, to be retried, while reads and listings work.
/// Each session ends once, at its deadline.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_live_through_a_reshard_and_close_once_at_their_deadline() {
    const ROOMS: usize = 20;
    let cluster = RedisCluster::start();
    let backend = Backend::Redis {
        urls: cluster.seed_urls(),
        cluster: true,
        prefix: unique_prefix(),
    };
    let clock = manual_clock();
    let a = backend.replica(clock.clone(), default_config()).await;
    let b = backend.replica(clock.clone(), default_config()).await;
    let mut rooms = Vec::new();
    let mut sessions = Vec::new();
    for i in 0..ROOMS {
        let replica = if i % 2 == 0 { &a } else { &b };
        let room = create_room(replica, &acme(), None, Some(("session-ends", 60)), &[]).await;
        sessions.push(join(replica, &room, "alice").await.unwrap());
        rooms.push(room);
    }
    let slot = cluster.slot_of_account(ACME_USER);
    let first = (0..3)
        .find(|&node| cluster.keys_in_slot(node, slot) > 0)
        .expect("some node holds the account's keys");
    let second = (first + 1) % 3;
    let third = (first + 2) % 3;

    cluster.move_slot(slot, first, second);
    clock.advance(secs(10));
    for (i, room) in rooms.iter().enumerate() {
        let replica = if i % 2 == 0 { &b } else { &a };
        let session = join(replica, room, "bob").await.unwrap();
        assert_eq!(session.id, sessions[i].id, "the running session");
    }
    assert_eq!(sweep_until_idle(&[&a, &b]).await, 0, "none due yet");

    for room in &rooms {
        leave(&a, room, "bob").await.unwrap();
    }
    cluster.begin_slot_move(slot, second, third);
    clock.advance(secs(51));
    // Half-way, Redis refuses commands on several keys of the slot unless
    // all of them exist (TRYAGAIN): such calls fail UNAVAILABLE, to be
    // retried, and nothing else. Reads of one key are redirected.
    let mut closed_half_way = 0;
    for replica in [&a, &b] {
        match replica.sessions.sweep().await {
            Ok(report) => closed_half_way += report.closed,
            Err(error) => assert_unavailable(&error, "a sweep half-way"),
        }
    }
    if let Err(error) = join(&b, &rooms[0], "carol").await {
        assert_unavailable(&error, "a join half-way");
    }
    for session in &sessions {
        let read = a.sessions.get_session(&acme(), session.id.as_str()).await;
        let read = read.expect("a session read half-way");
        assert_eq!(read.end, Some(after(session.start, secs(60))), "as of now");
    }
    let page = list(&a, &acme(), None, None).await;
    assert_eq!(page.total, ROOMS, "a listing half-way");
    cluster.finish_slot_move(slot, second, third);

    let closed = closed_half_way + sweep_until_idle(&[&a, &b]).await;
    assert_eq!(closed, ROOMS, "each due session closed once");
    for session in &sessions {
        let stored = stored(&b, session).await;
        assert_eq!(stored.value.end, Some(after(session.start, secs(60))));
        assert_eq!(stored.value.end_reason, Some(EndReason::AutoClose));
        assert_eq!(stored.version, 4, "start, bob in, bob out, close");
    }
    let ended = list(&a, &acme(), None, Some("ended")).await;
    assert_eq!(ended.total, ROOMS);
}

#[track_caller]
fn assert_unavailable(error: &Error, what: &str) {
    assert_eq!(error.code(), ErrorCode::Unavailable, "{what}: {error:?}");
}
