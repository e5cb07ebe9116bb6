//! Store metrics: [`Metered`] wraps any store and counts and times each
//! operation by name (`roomservice_store_operations_total`,
//! `roomservice_store_operation_duration_seconds`). One wrapper at the
//! composition root covers every backend and every caller (calls, the
//! sweeper, the delivery worker, the health probe) and adds no storage
//! command of its own.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use jiff::Timestamp;

use super::{
    CreateOutcome, DeliveryHint, DeliveryRecord, DeliveryState, DeliveryUpdate, DueSession,
    EventStore, IdempotencyKey, RoomKey, SaveOutcome, SaveSession, SessionFilter, SessionStore,
    Store, StoreError, Versioned,
};
use crate::domain::{Event, EventId, NewEvent, Room, RoomId, Session, SessionId, UserId};
use crate::telemetry::metrics;

/// A store whose operations are measured; `S` is the shared store handle
/// (`Arc<dyn Store>`, `Arc<dyn SessionStore>`, `Arc<dyn EventStore>`).
pub struct Metered<S>(S);

impl<S> Metered<S> {
    pub fn new(inner: S) -> Metered<S> {
        Metered(inner)
    }
}

/// Runs one operation and records its name, result and latency. Failures are
/// logged at debug only: a call that fails logs the error itself (within the
/// call's span, with its request id), and the background loops log once per
/// outage rather than once per attempt.
async fn measure<T>(
    operation: &'static str,
    work: impl Future<Output = Result<T, StoreError>>,
) -> Result<T, StoreError> {
    let started = Instant::now();
    let result = work.await;
    let elapsed: Duration = started.elapsed();
    let outcome = match &result {
        Ok(_) => "ok",
        Err(StoreError::Unavailable(_)) => "unavailable",
        Err(StoreError::Corrupt(_)) => "corrupt",
    };
    metrics::store_operation(operation, outcome, elapsed);
    if let Err(error) = &result {
        tracing::debug!(operation, %error, "store operation failed");
    }
    result
}

#[async_trait]
impl Store for Metered<Arc<dyn Store>> {
    async fn create_room_once(
        &self,
        room: &Room,
        max_rooms: u64,
        key: Option<&IdempotencyKey>,
    ) -> Result<CreateOutcome, StoreError> {
        measure("create_room", self.0.create_room_once(room, max_rooms, key)).await
    }

    async fn get_room(&self, user_id: &UserId, key: &RoomKey) -> Result<Option<Room>, StoreError> {
        measure("get_room", self.0.get_room(user_id, key)).await
    }

    async fn list_rooms(
        &self,
        user_id: &UserId,
        offset: usize,
        limit: usize,
    ) -> Result<(Vec<Room>, usize), StoreError> {
        measure("list_rooms", self.0.list_rooms(user_id, offset, limit)).await
    }

    async fn set_disabled(
        &self,
        user_id: &UserId,
        room_id: &RoomId,
        disabled: bool,
        now: Timestamp,
    ) -> Result<Option<Room>, StoreError> {
        measure(
            "set_disabled",
            self.0.set_disabled(user_id, room_id, disabled, now),
        )
        .await
    }

    async fn ping(&self) -> Result<(), StoreError> {
        measure("ping", self.0.ping()).await
    }
}

#[async_trait]
impl SessionStore for Metered<Arc<dyn SessionStore>> {
    async fn latest_session(
        &self,
        user_id: &UserId,
        room_id: &RoomId,
    ) -> Result<Option<Versioned<Session>>, StoreError> {
        measure("latest_session", self.0.latest_session(user_id, room_id)).await
    }

    async fn get_session(
        &self,
        user_id: &UserId,
        session_id: &SessionId,
    ) -> Result<Option<Versioned<Session>>, StoreError> {
        measure("get_session", self.0.get_session(user_id, session_id)).await
    }

    async fn save_session(&self, save: SaveSession<'_>) -> Result<SaveOutcome, StoreError> {
        measure("save_session", self.0.save_session(save)).await
    }

    async fn list_sessions(
        &self,
        user_id: &UserId,
        filter: &SessionFilter,
        offset: usize,
        limit: usize,
    ) -> Result<(Vec<Session>, usize), StoreError> {
        measure(
            "list_sessions",
            self.0.list_sessions(user_id, filter, offset, limit),
        )
        .await
    }

    async fn due_sessions(
        &self,
        now: Timestamp,
        limit: usize,
    ) -> Result<Vec<DueSession>, StoreError> {
        measure("due_sessions", self.0.due_sessions(now, limit)).await
    }

    async fn settle_due(
        &self,
        due: &DueSession,
        next: Option<Timestamp>,
    ) -> Result<(), StoreError> {
        measure("settle_due", self.0.settle_due(due, next)).await
    }
}

#[async_trait]
impl EventStore for Metered<Arc<dyn EventStore>> {
    async fn append_event(
        &self,
        user_id: &UserId,
        event: &NewEvent,
    ) -> Result<EventId, StoreError> {
        measure("append_event", self.0.append_event(user_id, event)).await
    }

    async fn read_events(
        &self,
        user_id: &UserId,
        after: Option<EventId>,
        limit: usize,
    ) -> Result<Vec<Event>, StoreError> {
        measure("read_events", self.0.read_events(user_id, after, limit)).await
    }

    async fn trimmed_before(&self, user_id: &UserId) -> Result<Option<EventId>, StoreError> {
        measure("trimmed_before", self.0.trimmed_before(user_id)).await
    }

    async fn newest_event_id(&self, user_id: &UserId) -> Result<Option<EventId>, StoreError> {
        measure("newest_event_id", self.0.newest_event_id(user_id)).await
    }

    async fn hint_delivery(&self, user_id: &UserId, due: Timestamp) -> Result<(), StoreError> {
        measure("hint_delivery", self.0.hint_delivery(user_id, due)).await
    }

    async fn due_hints(
        &self,
        now: Timestamp,
        limit: usize,
    ) -> Result<Vec<DeliveryHint>, StoreError> {
        measure("due_hints", self.0.due_hints(now, limit)).await
    }

    async fn settle_hint(
        &self,
        hint: &DeliveryHint,
        next: Option<Timestamp>,
    ) -> Result<(), StoreError> {
        measure("settle_hint", self.0.settle_hint(hint, next)).await
    }

    async fn lease_deliveries(
        &self,
        user_id: &UserId,
        holder: &str,
        ttl: Duration,
    ) -> Result<bool, StoreError> {
        measure(
            "lease_deliveries",
            self.0.lease_deliveries(user_id, holder, ttl),
        )
        .await
    }

    async fn release_deliveries(&self, user_id: &UserId, holder: &str) -> Result<(), StoreError> {
        measure(
            "release_deliveries",
            self.0.release_deliveries(user_id, holder),
        )
        .await
    }

    async fn delivery_state(&self, user_id: &UserId) -> Result<DeliveryState, StoreError> {
        measure("delivery_state", self.0.delivery_state(user_id)).await
    }

    async fn update_deliveries(
        &self,
        user_id: &UserId,
        holder: &str,
        update: &DeliveryUpdate,
    ) -> Result<bool, StoreError> {
        measure(
            "update_deliveries",
            self.0.update_deliveries(user_id, holder, update),
        )
        .await
    }

    async fn recent_deliveries(
        &self,
        user_id: &UserId,
        limit: usize,
    ) -> Result<Vec<DeliveryRecord>, StoreError> {
        measure(
            "recent_deliveries",
            self.0.recent_deliveries(user_id, limit),
        )
        .await
    }

    async fn dead_letters(
        &self,
        user_id: &UserId,
        limit: usize,
    ) -> Result<Vec<DeliveryRecord>, StoreError> {
        measure("dead_letters", self.0.dead_letters(user_id, limit)).await
    }

    async fn take_dead_letter(
        &self,
        user_id: &UserId,
        event_id: &str,
    ) -> Result<Option<DeliveryRecord>, StoreError> {
        measure(
            "take_dead_letter",
            self.0.take_dead_letter(user_id, event_id),
        )
        .await
    }

    async fn signing_key(&self, candidate: &str) -> Result<String, StoreError> {
        measure("signing_key", self.0.signing_key(candidate)).await
    }
}
