//! Storage of room events and of their webhook deliveries.
//!
//! Each account has one ordered event log (on Redis a stream in the
//! account's slot). Session changes append their events in the same atomic
//! step as the change ([`super::SaveSession::events`]), so neither exists
//! without the other. The log feeds two readers: `WatchEvents` reads it
//! directly, and the delivery worker copies the ids of events that a room's
//! webhook subscribes to into that room's delivery queue, then works through
//! each queue in order.
//!
//! Delivery state is changed only by the replica that holds the account's
//! delivery lease, and every such write names the lease (a fencing check):
//! a replica that lost its lease (paused, partitioned) cannot overwrite the
//! work of the one that took over.
//!
//! Accounts with work waiting are found through a hint index that spans
//! accounts (on Redis: sorted sets on slots of their own). It cannot be
//! written in the same step as the event, so a writer sets the hint before
//! its write, and the worker clears a hint only once the account's log has
//! nothing unassigned and its last event is old enough that no write that
//! set a hint can still be landing.

use std::time::Duration;

use async_trait::async_trait;
use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use super::StoreError;
use crate::domain::{Event, EventId, NewEvent, RoomId, UserId};

/// One room's webhook deliveries still to make, oldest first.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct RoomDeliveries {
    /// Event ids, in log order.
    #[serde(rename = "q")]
    pub queue: Vec<EventId>,
    /// Failed attempts at the head of the queue.
    #[serde(rename = "a", default)]
    pub attempts: u32,
    /// The head's first attempt, in milliseconds (0: not tried yet).
    #[serde(rename = "f", default)]
    pub first_attempt_ms: i64,
    /// Not before this (milliseconds): the head's backoff.
    #[serde(rename = "n", default)]
    pub next_attempt_ms: i64,
}

/// The account's delivery state as the lease holder reads it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct DeliveryState {
    /// Every event up to this one has been assigned to a queue (or skipped:
    /// no subscription). `None`: nothing assigned yet.
    pub assigned: Option<EventId>,
    /// Rooms with deliveries waiting.
    pub rooms: Vec<(RoomId, RoomDeliveries)>,
}

/// A change to the delivery state, written atomically if the lease holds.
#[derive(Clone, Debug, Default)]
pub struct DeliveryUpdate {
    pub assigned: Option<EventId>,
    /// `None` removes the room's queue (it is empty).
    pub rooms: Vec<(RoomId, Option<RoomDeliveries>)>,
    /// Appended to the account's recent deliveries (capped).
    pub records: Vec<DeliveryRecord>,
    /// Added to the account's dead letters (capped).
    pub dead: Vec<DeliveryRecord>,
    /// Drop log entries older than this, which must be assigned already.
    pub trim_before: Option<EventId>,
}

/// What happened to one attempt, for the deliveries listing and dead letters.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeliveryRecord {
    pub event_id: String,
    pub webhook_id: String,
    pub room_id: String,
    pub webhook_type: String,
    pub end_point: String,
    /// `delivered`, `retrying` or `dead`.
    pub outcome: String,
    /// The receiver's HTTP status, if it answered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    /// Why it failed, for operators.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub error: String,
    pub attempt: u32,
    /// Milliseconds since the epoch.
    pub at_ms: i64,
    /// Dead letters only: the event itself, so a replay does not depend on
    /// the log's retention.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event: Option<StoredEvent>,
}

/// An event in a portable form (dead letters keep one).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredEvent {
    pub id: String,
    pub room_id: String,
    pub kind: String,
    /// The data object, as JSON text.
    pub data: String,
    pub at_ms: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replay_of: Option<String>,
}

/// An entry of the hint index: an account that may have deliveries to make.
#[derive(Clone, Debug, PartialEq)]
pub struct DeliveryHint {
    pub user_id: UserId,
    /// When the account should be looked at.
    pub due: Timestamp,
    /// The entry as read, so that settling it can tell whether it changed.
    pub entry: String,
}

/// Events and their deliveries, partitioned by account.
#[async_trait]
pub trait EventStore: Send + Sync + 'static {
    /// Appends one event (PublishRoomEvent, replays) to the account's log.
    async fn append_event(&self, user_id: &UserId, event: &NewEvent)
    -> Result<EventId, StoreError>;

    /// Up to `limit` events after `after` (all when `None`), oldest first.
    /// `Err(StoreError)` only for storage failures; an `after` older than the
    /// retained log is reported by [`EventStore::trimmed_before`].
    async fn read_events(
        &self,
        user_id: &UserId,
        after: Option<EventId>,
        limit: usize,
    ) -> Result<Vec<Event>, StoreError>;

    /// Events before this id may have been dropped from the log.
    async fn trimmed_before(&self, user_id: &UserId) -> Result<Option<EventId>, StoreError>;

    /// The id of the newest event in the account's log, if it has any. One
    /// cheap command: a server's watchers of an account poll this together,
    /// and only read the log when it is past where they are.
    async fn newest_event_id(&self, user_id: &UserId) -> Result<Option<EventId>, StoreError>;

    /// Marks the account as having deliveries to look at, no later than
    /// `due` (an earlier mark stays). Call before writing events.
    async fn hint_delivery(&self, user_id: &UserId, due: Timestamp) -> Result<(), StoreError>;

    /// Up to `limit` hints due at `now`, across accounts.
    async fn due_hints(
        &self,
        now: Timestamp,
        limit: usize,
    ) -> Result<Vec<DeliveryHint>, StoreError>;

    /// After the worker looked at `hint`: remove it (`next` = None) or move
    /// it to `next`, but only if it is still as read (a writer that hinted
    /// meanwhile wins).
    async fn settle_hint(
        &self,
        hint: &DeliveryHint,
        next: Option<Timestamp>,
    ) -> Result<(), StoreError>;

    /// Takes or renews the account's delivery lease for `holder`; false
    /// when another holder has it.
    async fn lease_deliveries(
        &self,
        user_id: &UserId,
        holder: &str,
        ttl: Duration,
    ) -> Result<bool, StoreError>;

    /// Gives the lease up, if `holder` has it.
    async fn release_deliveries(&self, user_id: &UserId, holder: &str) -> Result<(), StoreError>;

    async fn delivery_state(&self, user_id: &UserId) -> Result<DeliveryState, StoreError>;

    /// Applies `update` atomically if `holder` still holds the lease;
    /// false (nothing written) if not.
    async fn update_deliveries(
        &self,
        user_id: &UserId,
        holder: &str,
        update: &DeliveryUpdate,
    ) -> Result<bool, StoreError>;

    /// The account's most recent delivery attempts, newest first.
    async fn recent_deliveries(
        &self,
        user_id: &UserId,
        limit: usize,
    ) -> Result<Vec<DeliveryRecord>, StoreError>;

    /// The account's dead letters, newest first.
    async fn dead_letters(
        &self,
        user_id: &UserId,
        limit: usize,
    ) -> Result<Vec<DeliveryRecord>, StoreError>;

    /// Removes and returns the dead letter of `event_id`, for a replay.
    async fn take_dead_letter(
        &self,
        user_id: &UserId,
        event_id: &str,
    ) -> Result<Option<DeliveryRecord>, StoreError>;

    /// The PEM of the webhook signing key all replicas share: `candidate` is
    /// stored if none is, and the stored one is returned.
    async fn signing_key(&self, candidate: &str) -> Result<String, StoreError>;
}

/// How many recent deliveries and dead letters an account keeps.
pub const RECENT_DELIVERIES: usize = 1000;
pub const DEAD_LETTERS: usize = 1000;

impl StoredEvent {
    pub fn from_event(event: &Event) -> StoredEvent {
        StoredEvent {
            id: event.id.to_string(),
            room_id: event.room_id.to_string(),
            kind: event.kind.clone(),
            data: serde_json::Value::Object(event.data.clone()).to_string(),
            at_ms: event.at.as_millisecond(),
            replay_of: event.replay_of.map(|id| id.to_string()),
        }
    }
}
