//! The embedded store: rooms in process memory, lost on exit. The default when
//! no Redis URL is configured, so the service runs on a bare machine.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Mutex;

use async_trait::async_trait;
use jiff::Timestamp;

use super::memory_events::Events;
use super::{
    CreateOutcome, DeliveryHint, DeliveryRecord, DeliveryState, DeliveryUpdate, DueSession,
    EventStore, IdempotencyKey, RoomKey, SaveOutcome, SaveSession, SessionFilter, SessionStatus,
    SessionStore, Store, StoreError, Versioned,
};
use crate::domain::{
    CustomRoomId, Event, EventId, NewEvent, Room, RoomId, Session, SessionId, UserId,
};

#[derive(Default)]
pub struct MemoryStore {
    /// One lock for the whole store: operations are a few map lookups and
    /// never await while holding it.
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    accounts: HashMap<UserId, AccountRooms>,
    /// Every roomId ever stored: roomIds are unique across the deployment.
    taken_room_ids: HashSet<RoomId>,
    /// Sessions live under the same lock as rooms, so a session write and
    /// the room's disabled flag change in one step.
    sessions: HashMap<(UserId, SessionId), Versioned<Session>>,
    /// Listing indexes: (start ms, sessionId), read backwards for newest first.
    sessions_by_account: HashMap<UserId, BTreeSet<(i64, SessionId)>>,
    sessions_by_room: HashMap<(UserId, RoomId), BTreeSet<(i64, SessionId)>>,
    /// The deadline index: (due ms, account, session), and each entry's key
    /// by session with the stamp of the write that set it, so that a settle
    /// can tell a rewrite at the same time from no write at all.
    due: BTreeSet<(i64, UserId, SessionId)>,
    due_of: HashMap<(UserId, SessionId), (i64, u64)>,
    /// The last stamp given; never reused.
    due_stamp: u64,
    /// Event logs and webhook delivery state, under the same lock so that a
    /// session write and its events are one step.
    events: Events,
}

#[derive(Default)]
struct AccountRooms {
    rooms: HashMap<RoomId, Room>,
    by_custom_id: HashMap<CustomRoomId, RoomId>,
    /// The listing index: (created at in ms, roomId), read backwards for newest first.
    by_creation: BTreeSet<(i64, RoomId)>,
    /// Creates' idempotency keys: key hash → (the room, the request's
    /// fingerprint, until when the key counts). Expired ones are dropped
    /// at the account's next create.
    idempotency: HashMap<String, (RoomId, String, std::time::Instant)>,
    /// The same keys by expiry, so that dropping the expired ones costs
    /// only what expired, not a scan of every key the account holds. A
    /// key rewritten with a later expiry leaves a stale pair here, skipped
    /// when it comes up.
    idempotency_expiry: BTreeSet<(std::time::Instant, String)>,
}

impl AccountRooms {
    fn drop_expired_keys(&mut self, now: std::time::Instant) {
        while let Some((until, _)) = self.idempotency_expiry.first()
            && *until <= now
        {
            let Some((until, key_hash)) = self.idempotency_expiry.pop_first() else {
                break;
            };
            if self
                .idempotency
                .get(&key_hash)
                .is_some_and(|(_, _, current)| *current == until)
            {
                self.idempotency.remove(&key_hash);
            }
        }
    }
}

impl MemoryStore {
    pub fn new() -> MemoryStore {
        MemoryStore::default()
    }
}

#[async_trait]
impl Store for MemoryStore {
    async fn create_room_once(
        &self,
        room: &Room,
        max_rooms: u64,
        key: Option<&IdempotencyKey>,
    ) -> Result<CreateOutcome, StoreError> {
        let mut inner = self.inner.lock().expect("store lock poisoned");
        let Inner {
            accounts,
            taken_room_ids,
            ..
        } = &mut *inner;
        let account = accounts.entry(room.user_id.clone()).or_default();
        let now = std::time::Instant::now();
        account.drop_expired_keys(now);
        if let Some(key) = key
            && let Some((room_id, fingerprint, _)) = account.idempotency.get(&key.key_hash)
        {
            if *fingerprint != key.fingerprint {
                return Ok(CreateOutcome::KeyReused);
            }
            if let Some(earlier) = account.rooms.get(room_id) {
                return Ok(CreateOutcome::Replayed(earlier.clone()));
            }
        }
        let remember = |account: &mut AccountRooms, room_id: &RoomId| {
            if let Some(key) = key {
                let until = now + key.ttl;
                account.idempotency.insert(
                    key.key_hash.clone(),
                    (room_id.clone(), key.fingerprint.clone(), until),
                );
                account
                    .idempotency_expiry
                    .insert((until, key.key_hash.clone()));
            }
        };
        if let Some(existing) = room
            .custom_room_id
            .as_ref()
            .and_then(|custom| account.by_custom_id.get(custom))
            .cloned()
        {
            remember(account, &existing);
            return Ok(CreateOutcome::Existing(account.rooms[&existing].clone()));
        }
        // Checked under the same lock as the insert below, so concurrent
        // creates cannot overshoot.
        if account.rooms.len() as u64 >= max_rooms {
            return Ok(CreateOutcome::AccountFull);
        }
        if !taken_room_ids.insert(room.room_id.clone()) {
            return Ok(CreateOutcome::RoomIdTaken);
        }
        if let Some(custom) = &room.custom_room_id {
            account
                .by_custom_id
                .insert(custom.clone(), room.room_id.clone());
        }
        account
            .by_creation
            .insert((room.created_at.as_millisecond(), room.room_id.clone()));
        account.rooms.insert(room.room_id.clone(), room.clone());
        remember(account, &room.room_id);
        Ok(CreateOutcome::Created(room.clone()))
    }

    async fn get_room(&self, user_id: &UserId, key: &RoomKey) -> Result<Option<Room>, StoreError> {
        let inner = self.inner.lock().expect("store lock poisoned");
        let Some(account) = inner.accounts.get(user_id) else {
            return Ok(None);
        };
        if let Some(room_id) = &key.room_id
            && let Some(room) = account.rooms.get(room_id)
        {
            return Ok(Some(room.clone()));
        }
        if let Some(room_id) = key.document_id.as_ref().and_then(|d| d.room_id())
            && let Some(room) = account.rooms.get(&room_id)
            && key.matches_document(room)
        {
            return Ok(Some(room.clone()));
        }
        let by_custom = key
            .custom_room_id
            .as_ref()
            .and_then(|c| account.by_custom_id.get(c))
            .map(|room_id| account.rooms[room_id].clone());
        Ok(by_custom)
    }

    async fn list_rooms(
        &self,
        user_id: &UserId,
        offset: usize,
        limit: usize,
    ) -> Result<(Vec<Room>, usize), StoreError> {
        let inner = self.inner.lock().expect("store lock poisoned");
        let Some(account) = inner.accounts.get(user_id) else {
            return Ok((Vec::new(), 0));
        };
        let page = account
            .by_creation
            .iter()
            .rev()
            .skip(offset)
            .take(limit)
            .map(|(_, room_id)| account.rooms[room_id].clone())
            .collect();
        Ok((page, account.rooms.len()))
    }

    async fn set_disabled(
        &self,
        user_id: &UserId,
        room_id: &RoomId,
        disabled: bool,
        now: Timestamp,
    ) -> Result<Option<Room>, StoreError> {
        let mut inner = self.inner.lock().expect("store lock poisoned");
        let Some(room) = inner
            .accounts
            .get_mut(user_id)
            .and_then(|account| account.rooms.get_mut(room_id))
        else {
            return Ok(None);
        };
        if room.disabled != disabled {
            room.disabled = disabled;
            room.updated_at = room.updated_at.max(now);
        }
        Ok(Some(room.clone()))
    }

    async fn ping(&self) -> Result<(), StoreError> {
        Ok(())
    }
}

#[async_trait]
impl SessionStore for MemoryStore {
    async fn latest_session(
        &self,
        user_id: &UserId,
        room_id: &RoomId,
    ) -> Result<Option<Versioned<Session>>, StoreError> {
        let inner = self.inner.lock().expect("store lock poisoned");
        let latest = inner
            .sessions_by_room
            .get(&(user_id.clone(), room_id.clone()))
            .and_then(|set| set.iter().next_back())
            .and_then(|(_, id)| inner.sessions.get(&(user_id.clone(), id.clone())))
            .cloned();
        Ok(latest)
    }

    async fn get_session(
        &self,
        user_id: &UserId,
        session_id: &SessionId,
    ) -> Result<Option<Versioned<Session>>, StoreError> {
        let inner = self.inner.lock().expect("store lock poisoned");
        Ok(inner
            .sessions
            .get(&(user_id.clone(), session_id.clone()))
            .cloned())
    }

    async fn save_session(&self, save: SaveSession<'_>) -> Result<SaveOutcome, StoreError> {
        let session = save.session;
        let mut inner = self.inner.lock().expect("store lock poisoned");
        let inner = &mut *inner;
        let Some(room) = inner
            .accounts
            .get_mut(&session.user_id)
            .and_then(|account| account.rooms.get_mut(&session.room_id))
        else {
            return Ok(SaveOutcome::RoomMissing);
        };
        let key = (session.user_id.clone(), session.id.clone());
        let room_key = (session.user_id.clone(), session.room_id.clone());
        let current = inner.sessions.get(&key).map(|v| v.version);
        match (save.expected_version, current) {
            (None, None) => {
                let latest = inner
                    .sessions_by_room
                    .get(&room_key)
                    .and_then(|set| set.iter().next_back())
                    .map(|(_, id)| id);
                if latest != save.expected_latest {
                    return Ok(SaveOutcome::Conflict);
                }
            }
            (Some(expected), Some(current)) if expected == current => {}
            _ => return Ok(SaveOutcome::Conflict),
        }
        if save.require_room_enabled && room.disabled {
            return Ok(SaveOutcome::RoomDisabled);
        }
        if save.disable_room && !room.disabled {
            room.disabled = true;
            room.updated_at = room.updated_at.max(save.now);
        }
        let version = current.unwrap_or(0) + 1;
        let start = session.start.as_millisecond();
        inner
            .sessions_by_account
            .entry(session.user_id.clone())
            .or_default()
            .insert((start, session.id.clone()));
        inner
            .sessions_by_room
            .entry(room_key)
            .or_default()
            .insert((start, session.id.clone()));
        // Exact here, since it is written under the same lock.
        if let Some((old, _)) = inner.due_of.remove(&key) {
            inner
                .due
                .remove(&(old, session.user_id.clone(), session.id.clone()));
        }
        if session.is_ongoing() {
            let due = session.due().0.as_millisecond();
            inner
                .due
                .insert((due, session.user_id.clone(), session.id.clone()));
            inner.due_stamp += 1;
            inner.due_of.insert(key.clone(), (due, inner.due_stamp));
        }
        inner.sessions.insert(
            key,
            Versioned {
                value: session.clone(),
                version,
            },
        );
        for event in save.events {
            inner.events.append(&session.user_id, event);
        }
        Ok(SaveOutcome::Saved { version })
    }

    async fn list_sessions(
        &self,
        user_id: &UserId,
        filter: &SessionFilter,
        offset: usize,
        limit: usize,
    ) -> Result<(Vec<Session>, usize), StoreError> {
        let inner = self.inner.lock().expect("store lock poisoned");
        let empty = BTreeSet::new();
        let index = match &filter.room_id {
            Some(room_id) => inner
                .sessions_by_room
                .get(&(user_id.clone(), room_id.clone()))
                .unwrap_or(&empty),
            None => inner.sessions_by_account.get(user_id).unwrap_or(&empty),
        };
        let matching: Vec<&Session> = index
            .iter()
            .rev()
            .filter_map(|(_, id)| inner.sessions.get(&(user_id.clone(), id.clone())))
            .map(|v| &v.value)
            .filter(|s| match filter.status {
                None => true,
                Some(SessionStatus::Ongoing) => s.is_ongoing(),
                Some(SessionStatus::Ended) => !s.is_ongoing(),
            })
            .collect();
        let total = matching.len();
        let page = matching
            .into_iter()
            .skip(offset)
            .take(limit)
            .cloned()
            .collect();
        Ok((page, total))
    }

    async fn due_sessions(
        &self,
        now: Timestamp,
        limit: usize,
    ) -> Result<Vec<DueSession>, StoreError> {
        let inner = self.inner.lock().expect("store lock poisoned");
        let now = now.as_millisecond();
        Ok(inner
            .due
            .iter()
            .take_while(|(due, _, _)| *due <= now)
            .take(limit)
            .map(|(due, user_id, session_id)| {
                let key = (user_id.clone(), session_id.clone());
                let stamp = inner.due_of.get(&key).map_or(0, |(_, stamp)| *stamp);
                DueSession {
                    user_id: user_id.clone(),
                    session_id: session_id.clone(),
                    due: Timestamp::from_millisecond(*due).unwrap_or(Timestamp::MIN),
                    entry: format!("{due}/{stamp}"),
                }
            })
            .collect())
    }

    async fn settle_due(
        &self,
        due: &DueSession,
        next: Option<Timestamp>,
    ) -> Result<(), StoreError> {
        let mut inner = self.inner.lock().expect("store lock poisoned");
        let inner = &mut *inner;
        let read = due
            .entry
            .split_once('/')
            .and_then(|(at, stamp)| Some((at.parse::<i64>().ok()?, stamp.parse::<u64>().ok()?)));
        let key = (due.user_id.clone(), due.session_id.clone());
        // Changed since it was read: the writer's entry stands.
        if read.is_none() || inner.due_of.get(&key) != read.as_ref() {
            return Ok(());
        }
        let (at, stamp) = inner.due_of.remove(&key).expect("just compared");
        inner.due.remove(&(at, key.0.clone(), key.1.clone()));
        if let Some(next) = next {
            let next = next.as_millisecond();
            inner.due.insert((next, key.0.clone(), key.1.clone()));
            inner.due_of.insert(key, (next, stamp));
        }
        Ok(())
    }
}

#[async_trait]
impl EventStore for MemoryStore {
    async fn append_event(
        &self,
        user_id: &UserId,
        event: &NewEvent,
    ) -> Result<EventId, StoreError> {
        let mut inner = self.inner.lock().expect("store lock poisoned");
        Ok(inner.events.append(user_id, event))
    }

    async fn read_events(
        &self,
        user_id: &UserId,
        after: Option<EventId>,
        limit: usize,
    ) -> Result<Vec<Event>, StoreError> {
        let inner = self.inner.lock().expect("store lock poisoned");
        Ok(inner.events.read(user_id, after, limit))
    }

    async fn trimmed_before(&self, user_id: &UserId) -> Result<Option<EventId>, StoreError> {
        let inner = self.inner.lock().expect("store lock poisoned");
        Ok(inner.events.trimmed_before(user_id))
    }

    async fn newest_event_id(&self, user_id: &UserId) -> Result<Option<EventId>, StoreError> {
        let inner = self.inner.lock().expect("store lock poisoned");
        Ok(inner.events.newest(user_id))
    }

    async fn hint_delivery(&self, user_id: &UserId, due: Timestamp) -> Result<(), StoreError> {
        let mut inner = self.inner.lock().expect("store lock poisoned");
        inner.events.hint(user_id, due);
        Ok(())
    }

    async fn due_hints(
        &self,
        now: Timestamp,
        limit: usize,
    ) -> Result<Vec<DeliveryHint>, StoreError> {
        let inner = self.inner.lock().expect("store lock poisoned");
        Ok(inner.events.due_hints(now, limit))
    }

    async fn settle_hint(
        &self,
        hint: &DeliveryHint,
        next: Option<Timestamp>,
    ) -> Result<(), StoreError> {
        let mut inner = self.inner.lock().expect("store lock poisoned");
        inner.events.settle_hint(hint, next);
        Ok(())
    }

    async fn lease_deliveries(
        &self,
        user_id: &UserId,
        holder: &str,
        ttl: std::time::Duration,
    ) -> Result<bool, StoreError> {
        let mut inner = self.inner.lock().expect("store lock poisoned");
        Ok(inner.events.lease(user_id, holder, ttl))
    }

    async fn release_deliveries(&self, user_id: &UserId, holder: &str) -> Result<(), StoreError> {
        let mut inner = self.inner.lock().expect("store lock poisoned");
        inner.events.release(user_id, holder);
        Ok(())
    }

    async fn delivery_state(&self, user_id: &UserId) -> Result<DeliveryState, StoreError> {
        let inner = self.inner.lock().expect("store lock poisoned");
        Ok(inner.events.state(user_id))
    }

    async fn update_deliveries(
        &self,
        user_id: &UserId,
        holder: &str,
        update: &DeliveryUpdate,
    ) -> Result<bool, StoreError> {
        let mut inner = self.inner.lock().expect("store lock poisoned");
        Ok(inner.events.update(user_id, holder, update))
    }

    async fn recent_deliveries(
        &self,
        user_id: &UserId,
        limit: usize,
    ) -> Result<Vec<DeliveryRecord>, StoreError> {
        let inner = self.inner.lock().expect("store lock poisoned");
        Ok(inner.events.recent(user_id, limit))
    }

    async fn dead_letters(
        &self,
        user_id: &UserId,
        limit: usize,
    ) -> Result<Vec<DeliveryRecord>, StoreError> {
        let inner = self.inner.lock().expect("store lock poisoned");
        Ok(inner.events.dead(user_id, limit))
    }

    async fn take_dead_letter(
        &self,
        user_id: &UserId,
        event_id: &str,
    ) -> Result<Option<DeliveryRecord>, StoreError> {
        let mut inner = self.inner.lock().expect("store lock poisoned");
        Ok(inner.events.take_dead(user_id, event_id))
    }

    async fn signing_key(&self, candidate: &str) -> Result<String, StoreError> {
        let mut inner = self.inner.lock().expect("store lock poisoned");
        Ok(inner.events.signing_key(candidate))
    }
}
