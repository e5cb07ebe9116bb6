//! Storage behind one async trait per concept, rooms ([`Store`]) and
//! sessions ([`SessionStore`]), so the service logic runs the same on the
//! embedded in-memory store and on Redis. Every implementation must pass the
//! conformance suite in `tests/it/store_conformance.rs`.

mod events;
mod memory;
mod memory_events;
mod metered;
pub mod redis;
mod sessions;

pub use events::{
    DEAD_LETTERS, DeliveryHint, DeliveryRecord, DeliveryState, DeliveryUpdate, EventStore,
    RECENT_DELIVERIES, RoomDeliveries, StoredEvent,
};
pub use memory::MemoryStore;
pub use metered::Metered;
pub use redis::{RedisConfig, RedisStore};
pub use sessions::{
    DueSession, SaveOutcome, SaveSession, SessionFilter, SessionStatus, SessionStore, Versioned,
};

use async_trait::async_trait;
use jiff::Timestamp;

use crate::domain::{CustomRoomId, DocumentId, Room, RoomId, UserId};
use crate::error::{ErrorCode, PublicError, generic_message};

/// A storage failure. The text is the internal cause (node addresses, the
/// client library's words): it goes to the log, never to the caller, who sees
/// [`PublicError::public_message`].
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The backing store cannot be reached or did not answer in time. Callers
    /// may retry. Nothing was half-written, but a write whose answer was lost
    /// may have been applied in full.
    #[error("storage unavailable: {0}")]
    Unavailable(String),
    /// The store answered with something this version cannot read.
    #[error("storage returned unreadable data: {0}")]
    Corrupt(String),
}

impl PublicError for StoreError {
    fn code(&self) -> ErrorCode {
        match self {
            StoreError::Unavailable(_) => ErrorCode::Unavailable,
            StoreError::Corrupt(_) => ErrorCode::Internal,
        }
    }

    fn public_message(&self) -> String {
        generic_message(self.code()).to_owned()
    }
}

/// What [`Store::create_room`] did.
#[derive(Clone, Debug, PartialEq)]
pub enum CreateOutcome {
    /// The room was stored as given.
    Created(Room),
    /// The account already has a room with this customRoomId; nothing was
    /// written and this is that room.
    Existing(Room),
    /// The roomId is already taken; nothing was written. The caller picks a
    /// new roomId and tries again.
    RoomIdTaken,
    /// The account already holds `max_rooms` rooms (or more, should the
    /// limit have been lowered); nothing was written.
    AccountFull,
    /// The idempotency key was used before, with the same request, for this
    /// room; nothing was written.
    Replayed(Room),
    /// The idempotency key was used before for a different request; nothing
    /// was written.
    KeyReused,
}

/// A create's idempotency key: a repeat with the same key (by the same
/// account, within `ttl`) returns the room the first one made.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IdempotencyKey {
    /// The client's key, hashed: stored keys have a fixed size whatever the
    /// client sent.
    pub key_hash: String,
    /// A digest of the request's parameters, so that a key reused for a
    /// different request is told apart.
    pub fingerprint: String,
    pub ttl: std::time::Duration,
}

/// How a caller named a room. A string may have several readings (a
/// customRoomId can look like a roomId), so a lookup tries them in order:
/// roomId, then document id, then customRoomId.
#[derive(Clone, Debug, PartialEq)]
pub struct RoomKey {
    pub room_id: Option<RoomId>,
    pub document_id: Option<DocumentId>,
    pub custom_room_id: Option<CustomRoomId>,
}

impl RoomKey {
    /// Every reading of `raw`; `None` when it can name no room at all.
    pub fn parse(raw: &str) -> Option<RoomKey> {
        let key = RoomKey {
            room_id: RoomId::parse(raw),
            document_id: DocumentId::parse(raw),
            custom_room_id: CustomRoomId::parse(raw).ok(),
        };
        let names_something =
            key.room_id.is_some() || key.document_id.is_some() || key.custom_room_id.is_some();
        names_something.then_some(key)
    }

    /// The roomIds this key could mean directly, in lookup order.
    pub fn direct_room_ids(&self) -> Vec<RoomId> {
        let mut ids: Vec<RoomId> = self.room_id.iter().cloned().collect();
        if let Some(from_document) = self.document_id.as_ref().and_then(DocumentId::room_id) {
            ids.push(from_document);
        }
        ids
    }

    /// Whether `room` is the room this key names by its direct readings.
    pub fn matches_document(&self, room: &Room) -> bool {
        self.document_id.as_ref() == Some(&room.id())
    }
}

/// Rooms, partitioned by account: no method can reach another account's rooms.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Stores `room` unless its account already has a room with the same
    /// customRoomId (→ `Existing`, even when the account is full), already
    /// holds `max_rooms` rooms (→ `AccountFull`), or the roomId is taken.
    /// Atomic: concurrent calls with one customRoomId, from any number of
    /// processes, store exactly one room, and concurrent calls for one account
    /// never store more than `max_rooms`. The room and its index entries are
    /// written together or not at all. `u64::MAX` means no limit.
    async fn create_room(&self, room: &Room, max_rooms: u64) -> Result<CreateOutcome, StoreError> {
        self.create_room_once(room, max_rooms, None).await
    }

    /// [`Store::create_room`] with an idempotency key, checked and recorded
    /// in the same atomic step as the create: a key seen before with the
    /// same fingerprint answers `Replayed` with its room, with another
    /// fingerprint `KeyReused`; otherwise the key is recorded (for `ttl`)
    /// with the room created or, for a known customRoomId, the existing one.
    async fn create_room_once(
        &self,
        room: &Room,
        max_rooms: u64,
        key: Option<&IdempotencyKey>,
    ) -> Result<CreateOutcome, StoreError>;

    /// The account's room named by `key`, trying roomId, then document id,
    /// then customRoomId.
    async fn get_room(&self, user_id: &UserId, key: &RoomKey) -> Result<Option<Room>, StoreError>;

    /// One page of the account's rooms, newest first, and the account's total.
    async fn list_rooms(
        &self,
        user_id: &UserId,
        offset: usize,
        limit: usize,
    ) -> Result<(Vec<Room>, usize), StoreError>;

    /// Sets the `disabled` flag of the account's room `room_id`, atomically.
    /// `updated_at` moves to `now` only when the flag changes (and never
    /// backwards, should another replica's clock be ahead). Returns the room
    /// as stored afterwards, or `None` when the account has no such room.
    async fn set_disabled(
        &self,
        user_id: &UserId,
        room_id: &RoomId,
        disabled: bool,
        now: Timestamp,
    ) -> Result<Option<Room>, StoreError>;

    /// Succeeds when the store can serve requests; used by health checks,
    /// every 500 ms while the server runs. A store that must re-check its
    /// backend's configuration (Redis: `maxmemory-policy`) does it here.
    async fn ping(&self) -> Result<(), StoreError>;
}
