//! The store conformance suite: every `Store` implementation must pass these
//! cases. `conformance_suite!(backend, make_store)` instantiates them for one
//! backend; `make_store` returns a fresh, empty, ready store.

use std::collections::HashSet;
use std::sync::Arc;

use jiff::Timestamp;
use roomservice::domain::{
    AutoCloseConfig, AutoCloseType, CustomRoomId, DocumentId, GeoFence, Room, RoomId, RoomSettings,
    UserId, Webhook,
};
use roomservice::store::{CreateOutcome, IdempotencyKey, MemoryStore, RoomKey, Store};

macro_rules! conformance_suite {
    ($backend:ident, $make:path) => {
        mod $backend {
            conformance_suite!(@cases $make;
                create_and_get_by_every_key,
                same_custom_room_id_returns_the_existing_room,
                taken_room_id_writes_nothing,
                accounts_are_isolated,
                concurrent_creates_store_one_room,
                listing_is_newest_first_and_paged,
                settings_and_flags_round_trip,
                readings_are_tried_in_order,
                forged_document_id_is_not_found,
                set_disabled_flips_the_flag_and_stamps_the_change,
                set_disabled_is_idempotent,
                set_disabled_never_moves_updated_at_backwards,
                set_disabled_of_a_missing_or_foreign_room_writes_nothing,
                concurrent_status_changes_leave_a_consistent_room,
                full_account_refuses_new_rooms_and_writes_nothing,
                full_account_still_returns_an_existing_custom_room_id,
                concurrent_creates_never_exceed_the_limit,
                an_idempotency_key_returns_the_first_room,
                an_idempotency_key_reused_for_another_request_writes_nothing,
                an_idempotency_key_expires,
                concurrent_creates_with_one_key_store_one_room
            );
        }
    };
    (@cases $make:path; $($case:ident),*) => {
        $(
            #[tokio::test]
            async fn $case() {
                $crate::store_conformance::$case($make().await).await
            }
        )*
    };
}

async fn memory_store() -> Arc<dyn Store> {
    Arc::new(MemoryStore::new())
}

conformance_suite!(memory, crate::store_conformance::memory_store);

fn user(n: u8) -> UserId {
    UserId::parse(&format!("{n:024x}")).unwrap()
}

fn at_ms(ms: i64) -> Timestamp {
    Timestamp::from_millisecond(ms).unwrap()
}

fn room(user_id: &UserId, custom: Option<&str>, created_ms: i64) -> Room {
    Room {
        room_id: RoomId::generate(),
        user_id: user_id.clone(),
        custom_room_id: custom.map(|c| CustomRoomId::parse(c).unwrap()),
        disabled: false,
        created_at: at_ms(created_ms),
        updated_at: at_ms(created_ms),
        settings: Default::default(),
    }
}

fn key(raw: &str) -> RoomKey {
    RoomKey::parse(raw).unwrap()
}

/// No limit on the account's rooms.
const UNLIMITED: u64 = u64::MAX;

async fn created(store: &Arc<dyn Store>, room: &Room) -> Room {
    match store.create_room(room, UNLIMITED).await.unwrap() {
        CreateOutcome::Created(stored) => stored,
        other => panic!("expected Created, got {other:?}"),
    }
}

pub async fn create_and_get_by_every_key(store: Arc<dyn Store>) {
    let owner = user(1);
    let room = created(&store, &room(&owner, Some("standup"), 1_700_000_000_123)).await;
    for raw in [room.room_id.as_str(), "standup", room.id().as_str()] {
        let found = store.get_room(&owner, &key(raw)).await.unwrap();
        assert_eq!(found.as_ref(), Some(&room), "get by {raw}");
    }
    assert_eq!(store.get_room(&owner, &key("other")).await.unwrap(), None);
}

pub async fn same_custom_room_id_returns_the_existing_room(store: Arc<dyn Store>) {
    let owner = user(1);
    let first = created(&store, &room(&owner, Some("weekly"), 1_700_000_000_000)).await;
    let mut second = room(&owner, Some("weekly"), 1_700_000_005_000);
    std::sync::Arc::make_mut(&mut second.settings).geo_fence = Some(GeoFence::Us001);
    assert_eq!(
        store.create_room(&second, UNLIMITED).await.unwrap(),
        CreateOutcome::Existing(first.clone())
    );
    assert_eq!(
        store
            .get_room(&owner, &key(second.room_id.as_str()))
            .await
            .unwrap(),
        None
    );
    let (page, total) = store.list_rooms(&owner, 0, 10).await.unwrap();
    assert_eq!((page, total), (vec![first], 1));
}

pub async fn taken_room_id_writes_nothing(store: Arc<dyn Store>) {
    let owner = user(1);
    let first = created(&store, &room(&owner, None, 1_700_000_000_000)).await;
    let mut clash = room(&owner, Some("clash"), 1_700_000_001_000);
    clash.room_id = first.room_id.clone();
    assert_eq!(
        store.create_room(&clash, UNLIMITED).await.unwrap(),
        CreateOutcome::RoomIdTaken
    );
    assert_eq!(
        store.get_room(&owner, &key("clash")).await.unwrap(),
        None,
        "no half-written index"
    );
    assert_eq!(
        store
            .get_room(&owner, &key(first.room_id.as_str()))
            .await
            .unwrap(),
        Some(first)
    );
    assert_eq!(store.list_rooms(&owner, 0, 10).await.unwrap().1, 1);
}

pub async fn accounts_are_isolated(store: Arc<dyn Store>) {
    let (acme, globex) = (user(1), user(2));
    let room = created(&store, &room(&acme, Some("lobby"), 1_700_000_000_000)).await;
    for raw in [room.room_id.as_str(), "lobby", room.id().as_str()] {
        assert_eq!(
            store.get_room(&globex, &key(raw)).await.unwrap(),
            None,
            "{raw}"
        );
    }
    assert_eq!(store.list_rooms(&globex, 0, 10).await.unwrap(), (vec![], 0));
    let theirs = created(&store, &room_for(&globex, "lobby")).await;
    assert_ne!(theirs.room_id, room.room_id);
    assert_eq!(
        store.get_room(&acme, &key("lobby")).await.unwrap(),
        Some(room)
    );
}

fn room_for(user_id: &UserId, custom: &str) -> Room {
    room(user_id, Some(custom), 1_700_000_000_500)
}

pub async fn concurrent_creates_store_one_room(store: Arc<dyn Store>) {
    let owner = user(3);
    let tasks: Vec<_> = (0..50)
        .map(|_| {
            let store = store.clone();
            let candidate = room_for(&owner, "rush");
            tokio::spawn(async move { store.create_room(&candidate, UNLIMITED).await.unwrap() })
        })
        .collect();
    let mut created_count = 0;
    let mut room_ids = HashSet::new();
    for task in tasks {
        match task.await.unwrap() {
            CreateOutcome::Created(room) => {
                created_count += 1;
                room_ids.insert(room.room_id);
            }
            CreateOutcome::Existing(room) => {
                room_ids.insert(room.room_id);
            }
            CreateOutcome::RoomIdTaken => panic!("random roomIds collided"),
            CreateOutcome::AccountFull => panic!("no limit, yet the account is full"),
            other => panic!("no idempotency key, yet {other:?}"),
        }
    }
    assert_eq!(created_count, 1);
    assert_eq!(room_ids.len(), 1);
    assert_eq!(store.list_rooms(&owner, 0, 100).await.unwrap().1, 1);
}

pub async fn listing_is_newest_first_and_paged(store: Arc<dyn Store>) {
    let owner = user(4);
    let mut rooms = Vec::new();
    for i in 0..25 {
        rooms.push(created(&store, &room(&owner, None, 1_700_000_000_000 + i * 1000)).await);
    }
    // Another account's rooms never show up in the listing.
    created(&store, &room(&user(5), None, 1_800_000_000_000)).await;
    rooms.reverse();
    let (first, total) = store.list_rooms(&owner, 0, 10).await.unwrap();
    assert_eq!(total, 25);
    assert_eq!(first, rooms[..10]);
    let (last, _) = store.list_rooms(&owner, 20, 10).await.unwrap();
    assert_eq!(last, rooms[20..]);
    let (past_end, total) = store.list_rooms(&owner, 30, 10).await.unwrap();
    assert_eq!((past_end.len(), total), (0, 25));
    assert_eq!(
        store.list_rooms(&user(6), 0, 10).await.unwrap(),
        (vec![], 0)
    );
}

pub async fn settings_and_flags_round_trip(store: Arc<dyn Store>) {
    let owner = user(7);
    let mut full = room(&owner, Some("everything"), 1_700_000_000_007);
    full.disabled = true;
    full.updated_at = at_ms(1_700_000_100_999);
    full.settings = std::sync::Arc::new(RoomSettings {
        geo_fence: Some(GeoFence::In003),
        webhook: Some(Webhook {
            end_point: "https://hooks.example.com/x?y=1".into(),
            events: vec!["*".into(), "hls-*".into()],
        }),
        auto_close_config: Some(AutoCloseConfig {
            kind: AutoCloseType::SessionEndAndDeactivate,
            duration_minutes: Some(43_200),
            duration_seconds: None,
        }),
        auto_start_config: Some(
            serde_json::from_str(r#"{"a":[1,2.5,"ü",null],"b":{"c":true}}"#).unwrap(),
        ),
        multi_composition: Some(serde_json::from_str(r#"{"layout":"grid"}"#).unwrap()),
        allowed_participant_ids: vec!["alice".into(), "bob with spaces".into()],
    });
    created(&store, &full).await;
    let found = store
        .get_room(&owner, &key("everything"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(found, full);
    assert_eq!(
        found.created_at.as_millisecond() % 1000,
        7,
        "milliseconds are kept"
    );
}

pub async fn readings_are_tried_in_order(store: Arc<dyn Store>) {
    let owner = user(8);
    let target = created(&store, &room(&owner, None, 1_700_000_000_000)).await;
    // A customRoomId that looks like another room's roomId: the roomId reading wins.
    let lookalike = created(
        &store,
        &room(&owner, Some(target.room_id.as_str()), 1_700_000_001_000),
    )
    .await;
    assert_eq!(
        store
            .get_room(&owner, &key(target.room_id.as_str()))
            .await
            .unwrap(),
        Some(target)
    );
    // A customRoomId shaped like a document id that names no room is found as a customRoomId.
    let hexish = "0123456789abcdef01234567";
    let hex_named = created(&store, &room(&owner, Some(hexish), 1_700_000_002_000)).await;
    assert_eq!(
        store.get_room(&owner, &key(hexish)).await.unwrap(),
        Some(hex_named)
    );
    assert_ne!(lookalike.room_id.as_str(), hexish);
}

pub async fn forged_document_id_is_not_found(store: Arc<dyn Store>) {
    let owner = user(9);
    let room = created(&store, &room(&owner, None, 1_700_000_000_000)).await;
    let real = room.id();
    let forged = DocumentId::parse(&format!("00000001{}", &real.as_str()[8..])).unwrap();
    assert_eq!(forged.room_id(), Some(room.room_id.clone()));
    assert_eq!(
        store.get_room(&owner, &key(forged.as_str())).await.unwrap(),
        None
    );
}

pub async fn full_account_refuses_new_rooms_and_writes_nothing(store: Arc<dyn Store>) {
    let owner = user(30);
    let mut kept = Vec::new();
    for i in 0..3 {
        let candidate = room(&owner, Some(&format!("kept-{i}")), 1_700_000_000_000 + i);
        match store.create_room(&candidate, 3).await.unwrap() {
            CreateOutcome::Created(room) => kept.push(room),
            other => panic!("room {i} of 3: expected Created, got {other:?}"),
        }
    }
    let refused = room(&owner, Some("one-too-many"), 1_700_000_001_000);
    assert_eq!(
        store.create_room(&refused, 3).await.unwrap(),
        CreateOutcome::AccountFull
    );
    // A lower limit than the account already exceeds refuses too.
    let below = room(&owner, None, 1_700_000_001_001);
    assert_eq!(
        store.create_room(&below, 1).await.unwrap(),
        CreateOutcome::AccountFull
    );
    for raw in [
        "one-too-many",
        refused.room_id.as_str(),
        below.room_id.as_str(),
    ] {
        assert_eq!(
            store.get_room(&owner, &key(raw)).await.unwrap(),
            None,
            "nothing written for {raw}"
        );
    }
    let (listed, total) = store.list_rooms(&owner, 0, 10).await.unwrap();
    assert_eq!(total, 3);
    kept.reverse();
    assert_eq!(listed, kept, "the rooms already there are untouched");
    // The limit is per account: another account is unaffected.
    let theirs = room(&user(31), Some("one-too-many"), 1_700_000_002_000);
    assert!(matches!(
        store.create_room(&theirs, 3).await.unwrap(),
        CreateOutcome::Created(_)
    ));
    // A higher limit lets the account grow again.
    assert!(matches!(
        store.create_room(&refused, 4).await.unwrap(),
        CreateOutcome::Created(_)
    ));
}

pub async fn full_account_still_returns_an_existing_custom_room_id(store: Arc<dyn Store>) {
    let owner = user(32);
    let first = match store
        .create_room(&room(&owner, Some("only"), 1_700_000_000_000), 1)
        .await
        .unwrap()
    {
        CreateOutcome::Created(room) => room,
        other => panic!("expected Created, got {other:?}"),
    };
    // The account is full, yet a repeat of its customRoomId adds nothing and
    // gets the room.
    let repeat = room(&owner, Some("only"), 1_700_000_005_000);
    assert_eq!(
        store.create_room(&repeat, 1).await.unwrap(),
        CreateOutcome::Existing(first.clone())
    );
    // Even a limit the account is already past.
    assert_eq!(
        store.create_room(&repeat, 0).await.unwrap(),
        CreateOutcome::Existing(first.clone())
    );
    assert_eq!(
        store
            .create_room(&room(&owner, Some("another"), 1_700_000_006_000), 1)
            .await
            .unwrap(),
        CreateOutcome::AccountFull
    );
    assert_eq!(
        store.list_rooms(&owner, 0, 10).await.unwrap(),
        (vec![first], 1)
    );
}

pub async fn concurrent_creates_never_exceed_the_limit(store: Arc<dyn Store>) {
    const LIMIT: u64 = 5;
    let owner = user(33);
    let tasks: Vec<_> = (0..40)
        .map(|i| {
            let store = store.clone();
            // Half with a customRoomId of their own, half without.
            let custom = (i % 2 == 0).then(|| format!("racer-{i}"));
            let candidate = room(&owner, custom.as_deref(), 1_700_000_000_000 + i);
            tokio::spawn(async move { store.create_room(&candidate, LIMIT).await.unwrap() })
        })
        .collect();
    let mut created_ids = HashSet::new();
    let mut refused = 0;
    for task in tasks {
        match task.await.unwrap() {
            CreateOutcome::Created(room) => {
                created_ids.insert(room.room_id);
            }
            CreateOutcome::AccountFull => refused += 1,
            other => panic!("expected Created or AccountFull, got {other:?}"),
        }
    }
    assert_eq!(created_ids.len() as u64, LIMIT);
    assert_eq!(refused, 40 - LIMIT);
    let (listed, total) = store.list_rooms(&owner, 0, 100).await.unwrap();
    assert_eq!(total as u64, LIMIT);
    let listed: HashSet<RoomId> = listed.into_iter().map(|r| r.room_id).collect();
    assert_eq!(listed, created_ids);
}

async fn single_redis_store() -> Arc<dyn Store> {
    let redis = crate::redis_harness::shared_redis();
    let prefix = crate::redis_harness::unique_prefix();
    Arc::new(crate::redis_harness::connected_store(vec![redis.url()], false, prefix).await)
}

async fn cluster_redis_store() -> Arc<dyn Store> {
    let cluster = crate::redis_harness::shared_cluster();
    let prefix = crate::redis_harness::unique_prefix();
    Arc::new(crate::redis_harness::connected_store(cluster.seed_urls(), true, prefix).await)
}

pub async fn set_disabled_flips_the_flag_and_stamps_the_change(store: Arc<dyn Store>) {
    let owner = user(20);
    let room = created(&store, &room(&owner, Some("flip"), 1_700_000_000_000)).await;
    let later = at_ms(1_700_000_005_000);
    let disabled = store
        .set_disabled(&owner, &room.room_id, true, later)
        .await
        .unwrap()
        .expect("the room exists");
    assert!(disabled.disabled);
    assert_eq!(disabled.updated_at, later);
    assert_eq!(disabled.created_at, room.created_at);
    assert_eq!(disabled.custom_room_id, room.custom_room_id);
    // Every reading sees the change at once.
    for raw in [room.room_id.as_str(), "flip", room.id().as_str()] {
        let read = store.get_room(&owner, &key(raw)).await.unwrap().unwrap();
        assert_eq!(read, disabled, "read by {raw}");
    }
    let (listed, _) = store.list_rooms(&owner, 0, 10).await.unwrap();
    assert_eq!(listed, vec![disabled.clone()]);

    let even_later = at_ms(1_700_000_009_000);
    let enabled = store
        .set_disabled(&owner, &room.room_id, false, even_later)
        .await
        .unwrap()
        .unwrap();
    assert!(!enabled.disabled);
    assert_eq!(enabled.updated_at, even_later);
    assert_eq!(
        store.get_room(&owner, &key("flip")).await.unwrap().unwrap(),
        enabled
    );
}

pub async fn set_disabled_is_idempotent(store: Arc<dyn Store>) {
    let owner = user(21);
    let room = created(&store, &room(&owner, None, 1_700_000_000_000)).await;
    // Enabling an enabled room changes nothing, updatedAt included.
    let same = store
        .set_disabled(&owner, &room.room_id, false, at_ms(1_700_000_001_000))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(same, room);
    let first = store
        .set_disabled(&owner, &room.room_id, true, at_ms(1_700_000_002_000))
        .await
        .unwrap()
        .unwrap();
    let again = store
        .set_disabled(&owner, &room.room_id, true, at_ms(1_700_000_003_000))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(again, first, "a second disable changes nothing");
    assert_eq!(again.updated_at, at_ms(1_700_000_002_000));
}

pub async fn set_disabled_never_moves_updated_at_backwards(store: Arc<dyn Store>) {
    let owner = user(22);
    let room = created(&store, &room(&owner, None, 1_700_000_000_000)).await;
    store
        .set_disabled(&owner, &room.room_id, true, at_ms(1_700_000_050_000))
        .await
        .unwrap();
    // Another replica whose clock is behind re-enables it.
    let enabled = store
        .set_disabled(&owner, &room.room_id, false, at_ms(1_700_000_010_000))
        .await
        .unwrap()
        .unwrap();
    assert!(!enabled.disabled);
    assert_eq!(enabled.updated_at, at_ms(1_700_000_050_000));
    // And one behind the creation time.
    let disabled = store
        .set_disabled(&owner, &room.room_id, true, at_ms(1_600_000_000_000))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(disabled.updated_at, at_ms(1_700_000_050_000));
}

pub async fn set_disabled_of_a_missing_or_foreign_room_writes_nothing(store: Arc<dyn Store>) {
    let owner = user(23);
    let stranger = user(24);
    let room = created(&store, &room(&owner, Some("mine"), 1_700_000_000_000)).await;
    let result = store
        .set_disabled(&stranger, &room.room_id, true, at_ms(1_700_000_001_000))
        .await
        .unwrap();
    assert_eq!(result, None, "another account's room is not there");
    assert_eq!(
        store.get_room(&owner, &key("mine")).await.unwrap().unwrap(),
        room,
        "and it is unchanged"
    );
    assert!(
        store
            .get_room(&stranger, &key(room.room_id.as_str()))
            .await
            .unwrap()
            .is_none(),
        "no room was made for the stranger"
    );
    let missing = RoomId::generate();
    assert_eq!(
        store
            .set_disabled(&owner, &missing, true, at_ms(1_700_000_001_000))
            .await
            .unwrap(),
        None
    );
    assert!(
        store
            .get_room(&owner, &key(missing.as_str()))
            .await
            .unwrap()
            .is_none(),
        "a status change never creates a room"
    );
    assert_eq!(store.list_rooms(&owner, 0, 10).await.unwrap().1, 1);
}

pub async fn concurrent_status_changes_leave_a_consistent_room(store: Arc<dyn Store>) {
    let owner = user(25);
    let room = created(&store, &room(&owner, Some("busy"), 1_700_000_000_000)).await;
    let changes = (0..40).map(|i| {
        let store = store.clone();
        let owner = owner.clone();
        let room_id = room.room_id.clone();
        async move {
            store
                .set_disabled(&owner, &room_id, i % 2 == 0, at_ms(1_700_000_001_000 + i))
                .await
                .unwrap()
                .unwrap()
        }
    });
    let answers = futures::future::join_all(changes).await;
    for answer in &answers {
        assert_eq!(answer.room_id, room.room_id);
        assert_eq!(answer.custom_room_id, room.custom_room_id);
        assert_eq!(answer.created_at, room.created_at);
    }
    let last = store.get_room(&owner, &key("busy")).await.unwrap().unwrap();
    assert!(
        answers.contains(&last),
        "the stored room is one of the answers"
    );
    assert_eq!(store.list_rooms(&owner, 0, 10).await.unwrap().1, 1);
}

conformance_suite!(single_redis, crate::store_conformance::single_redis_store);
conformance_suite!(redis_cluster, crate::store_conformance::cluster_redis_store);

fn idempotency(key: &str, fingerprint: &str) -> IdempotencyKey {
    IdempotencyKey {
        key_hash: key.to_owned(),
        fingerprint: fingerprint.to_owned(),
        ttl: std::time::Duration::from_secs(60),
    }
}

/// A create retried with its key (a new roomId drawn, as the service does)
/// gets the first room and stores nothing more, in the same account only.
pub async fn an_idempotency_key_returns_the_first_room(store: Arc<dyn Store>) {
    let owner = user(40);
    let key = idempotency("k1", "f1");
    let first = match store
        .create_room_once(
            &room(&owner, None, 1_700_000_000_000),
            UNLIMITED,
            Some(&key),
        )
        .await
        .unwrap()
    {
        CreateOutcome::Created(room) => room,
        other => panic!("expected Created, got {other:?}"),
    };
    let retry = room(&owner, None, 1_700_000_000_100);
    match store
        .create_room_once(&retry, UNLIMITED, Some(&key))
        .await
        .unwrap()
    {
        CreateOutcome::Replayed(room) => assert_eq!(room, first),
        other => panic!("expected Replayed, got {other:?}"),
    }
    assert_eq!(store.list_rooms(&owner, 0, 10).await.unwrap().1, 1);
    assert!(
        store
            .get_room(&owner, &key_of(&retry))
            .await
            .unwrap()
            .is_none(),
        "the retry's roomId was not stored"
    );
    // Another account's key of the same name is its own.
    let other = user(41);
    assert!(matches!(
        store
            .create_room_once(
                &room(&other, None, 1_700_000_000_200),
                UNLIMITED,
                Some(&key)
            )
            .await
            .unwrap(),
        CreateOutcome::Created(_)
    ));
    // A customRoomId create with a key records the room it answers with.
    let named = idempotency("k2", "f2");
    let custom = created(&store, &room(&owner, Some("named"), 1_700_000_000_300)).await;
    match store
        .create_room_once(
            &room(&owner, Some("named"), 1_700_000_000_400),
            UNLIMITED,
            Some(&named),
        )
        .await
        .unwrap()
    {
        CreateOutcome::Existing(room) => assert_eq!(room, custom),
        other => panic!("expected Existing, got {other:?}"),
    }
    match store
        .create_room_once(
            &room(&owner, Some("named"), 1_700_000_000_500),
            UNLIMITED,
            Some(&named),
        )
        .await
        .unwrap()
    {
        CreateOutcome::Replayed(room) => assert_eq!(room, custom),
        other => panic!("expected Replayed, got {other:?}"),
    }
}

fn key_of(room: &Room) -> RoomKey {
    key(room.room_id.as_str())
}

pub async fn an_idempotency_key_reused_for_another_request_writes_nothing(store: Arc<dyn Store>) {
    let owner = user(42);
    store
        .create_room_once(
            &room(&owner, None, 1_700_000_000_000),
            UNLIMITED,
            Some(&idempotency("k", "f1")),
        )
        .await
        .unwrap();
    let other = room(&owner, Some("different"), 1_700_000_000_100);
    assert_eq!(
        store
            .create_room_once(&other, UNLIMITED, Some(&idempotency("k", "f2")))
            .await
            .unwrap(),
        CreateOutcome::KeyReused
    );
    assert_eq!(store.list_rooms(&owner, 0, 10).await.unwrap().1, 1);
    assert!(
        store
            .get_room(&owner, &key("different"))
            .await
            .unwrap()
            .is_none()
    );
}

pub async fn an_idempotency_key_expires(store: Arc<dyn Store>) {
    let owner = user(43);
    let short = IdempotencyKey {
        ttl: std::time::Duration::from_millis(200),
        ..idempotency("k", "f")
    };
    store
        .create_room_once(
            &room(&owner, None, 1_700_000_000_000),
            UNLIMITED,
            Some(&short),
        )
        .await
        .unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(400)).await;
    assert!(matches!(
        store
            .create_room_once(
                &room(&owner, None, 1_700_000_000_100),
                UNLIMITED,
                Some(&short)
            )
            .await
            .unwrap(),
        CreateOutcome::Created(_)
    ));
    assert_eq!(store.list_rooms(&owner, 0, 10).await.unwrap().1, 2);
}

pub async fn concurrent_creates_with_one_key_store_one_room(store: Arc<dyn Store>) {
    let owner = user(44);
    let tasks: Vec<_> = (0..30)
        .map(|i| {
            let store = store.clone();
            let candidate = room(&owner, None, 1_700_000_000_000 + i);
            tokio::spawn(async move {
                store
                    .create_room_once(&candidate, UNLIMITED, Some(&idempotency("burst", "f")))
                    .await
                    .unwrap()
            })
        })
        .collect();
    let mut room_ids = HashSet::new();
    for task in tasks {
        match task.await.unwrap() {
            CreateOutcome::Created(room) | CreateOutcome::Replayed(room) => {
                room_ids.insert(room.room_id);
            }
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(room_ids.len(), 1);
    assert_eq!(store.list_rooms(&owner, 0, 10).await.unwrap().1, 1);
}
