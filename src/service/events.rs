//! The rules of room events: who may publish which, how an account watches
//! its log, and what it may see and replay of its webhook deliveries. The
//! deliveries themselves are made by [`super::DeliveryWorker`].

use std::sync::Arc;

use serde_json::{Map, Value};
use tokio::sync::{OnceCell, mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;

use super::rooms::{caller_room, find_room};
use super::watchers::{Watchers, wait_for_more};
use super::{Clock, Error};
use crate::auth::Caller;
use crate::domain::{
    self, Event, EventId, FieldViolation, LIFECYCLE_EVENTS, NewEvent, Room, UserId, is_known_event,
    subscribed,
};
use crate::store::{DeliveryRecord, EventStore, Store};
use crate::webhook::SigningKey;

/// The largest `data` object a media service may publish, as JSON.
pub const MAX_EVENT_DATA_BYTES: usize = 16 * 1024;
/// The most filter patterns a watcher may give.
const MAX_WATCH_TYPES: usize = 32;
/// How many events a watch reads at once.
const WATCH_BATCH: usize = 500;

#[derive(Clone)]
pub struct EventService {
    rooms: Arc<dyn Store>,
    events: Arc<dyn EventStore>,
    clock: Arc<dyn Clock>,
    keys: WebhookKeys,
    /// Becomes true when the server starts to stop: watches end then, so
    /// that graceful shutdown does not wait for streams that never end.
    stopping: watch::Receiver<bool>,
    watchers: Arc<Watchers>,
}

/// The webhook signing key: the operator's (`--webhook-signing-key`), or one
/// made once and kept in the store, so that every replica signs with the
/// same key. Loaded on first use, so a server starts while its store is
/// still unreachable.
#[derive(Clone)]
pub struct WebhookKeys {
    cell: Arc<OnceCell<Arc<SigningKey>>>,
    events: Arc<dyn EventStore>,
}

impl WebhookKeys {
    pub fn configured(key: Arc<SigningKey>, events: Arc<dyn EventStore>) -> WebhookKeys {
        WebhookKeys {
            cell: Arc::new(OnceCell::new_with(Some(key))),
            events,
        }
    }

    pub fn shared(events: Arc<dyn EventStore>) -> WebhookKeys {
        WebhookKeys {
            cell: Arc::new(OnceCell::new()),
            events,
        }
    }

    pub async fn get(&self) -> Result<Arc<SigningKey>, Error> {
        self.cell
            .get_or_try_init(|| async {
                // Making an RSA key takes a while: not on the runtime's threads.
                let candidate = tokio::task::spawn_blocking(SigningKey::generate)
                    .await
                    .map_err(|e| corrupt(format!("key generation stopped: {e}")))?
                    .map_err(|e| corrupt(format!("cannot make a signing key: {e}")))?;
                let stored = self.events.signing_key(&candidate.to_pkcs8_pem()).await?;
                let key = SigningKey::from_pem(&stored)
                    .map_err(|e| corrupt(format!("the stored webhook signing key: {e}")))?;
                Ok(Arc::new(key))
            })
            .await
            .cloned()
    }
}

/// Completes when `stopping` changes; never, if nobody can change it.
async fn stop_signal(stopping: &mut watch::Receiver<bool>) {
    if stopping.changed().await.is_err() {
        std::future::pending::<()>().await;
    }
}

fn corrupt(why: String) -> Error {
    Error::Store(crate::store::StoreError::Corrupt(why))
}

/// What a watcher asked for, before validation.
#[derive(Clone, Debug, Default)]
pub struct WatchRequest {
    pub room: Option<String>,
    pub types: Vec<String>,
    pub after: Option<String>,
}

impl EventService {
    pub fn new(
        rooms: Arc<dyn Store>,
        events: Arc<dyn EventStore>,
        clock: Arc<dyn Clock>,
        keys: WebhookKeys,
    ) -> EventService {
        EventService {
            rooms,
            events,
            clock,
            keys,
            stopping: watch::channel(false).1,
            watchers: Arc::new(Watchers::new(Self::DEFAULT_MAX_WATCHERS_PER_ACCOUNT)),
        }
    }

    /// The default `--max-watchers-per-account`.
    pub const DEFAULT_MAX_WATCHERS_PER_ACCOUNT: usize = 256;

    /// Watch streams one account may have open on this server at once;
    /// more are RESOURCE_EXHAUSTED.
    pub fn with_max_watchers_per_account(mut self, max: usize) -> EventService {
        self.watchers = Arc::new(Watchers::new(max));
        self
    }

    /// Watches end (UNAVAILABLE, resume elsewhere) once `stopping` is true.
    pub fn with_shutdown(mut self, stopping: watch::Receiver<bool>) -> EventService {
        self.stopping = stopping;
        self
    }

    /// The webhook signing key's public half (SPKI PEM).
    pub async fn public_key_pem(&self) -> Result<String, Error> {
        Ok(self.keys.get().await?.public_key_pem())
    }

    /// A media service publishes a room's event. The room is looked up in
    /// `raw_user_id`'s account when given (a media plane serves many
    /// accounts, as ParticipantLeft does), else in the caller's.
    pub async fn publish(
        &self,
        caller: &Caller,
        raw_user_id: Option<&str>,
        room_key: &str,
        kind: &str,
        data: Map<String, Value>,
    ) -> Result<Event, Error> {
        caller.require_service()?;
        let mut violations = Vec::new();
        let user_id = match raw_user_id.filter(|raw| !raw.is_empty()) {
            None => Some(caller.account.user_id.clone()),
            Some(raw) => match UserId::parse(raw) {
                Ok(id) => Some(id),
                Err(rule) => {
                    violations.push(FieldViolation::new("userId", rule));
                    None
                }
            },
        };
        if LIFECYCLE_EVENTS.contains(&kind) {
            violations.push(FieldViolation::new(
                "webhookType",
                format!("{kind} is made by the service from the session lifecycle, not published"),
            ));
        } else if !is_known_event(kind) {
            violations.push(FieldViolation::new(
                "webhookType",
                format!(
                    "must be a recording-*, livestream-*, hls-* or transcription-completed event name, got {}",
                    domain::excerpt(kind)
                ),
            ));
        }
        let size = Value::Object(data.clone()).to_string().len();
        if size > MAX_EVENT_DATA_BYTES {
            violations.push(FieldViolation::new(
                "data",
                format!("must be at most {MAX_EVENT_DATA_BYTES} bytes as JSON, got {size}"),
            ));
        }
        if room_key.is_empty() {
            violations.push(FieldViolation::new(
                "roomId",
                "is required: a roomId or customRoomId",
            ));
        }
        let Some(user_id) = user_id.filter(|_| violations.is_empty()) else {
            return Err(Error::InvalidArgument(violations));
        };
        let room = self.room_in(&user_id, room_key).await?;
        let mut data = data;
        data.entry("meetingId")
            .or_insert_with(|| Value::String(room.room_id.to_string()));
        let event = NewEvent {
            room_id: room.room_id.clone(),
            kind: kind.to_owned(),
            data,
            at: self.clock.now(),
            replay_of: None,
        };
        // Hint first: see `store::events` on why.
        self.events.hint_delivery(&user_id, event.at).await?;
        let id = self.events.append_event(&user_id, &event).await?;
        tracing::info!(event_id = %id, room_id = %room.room_id, kind, "event published");
        Ok(Event::stored(id, event))
    }

    /// The caller's events as they happen; see `WatchEvents` in the proto.
    /// Validation and the room lookup happen before the stream is returned,
    /// so a bad request fails the call rather than its first message.
    pub async fn watch(
        &self,
        caller: &Caller,
        request: WatchRequest,
    ) -> Result<ReceiverStream<Result<Event, Error>>, Error> {
        let mut violations = Vec::new();
        if request.types.len() > MAX_WATCH_TYPES {
            violations.push(FieldViolation::new(
                "webhookTypes",
                format!("at most {MAX_WATCH_TYPES} patterns"),
            ));
        }
        for (i, pattern) in request.types.iter().enumerate() {
            let valid = pattern == "*"
                || is_known_event(pattern)
                || pattern
                    .strip_suffix("-*")
                    .is_some_and(|prefix| !prefix.is_empty() && !prefix.contains('*'));
            if !valid {
                violations.push(FieldViolation::new(
                    format!("webhookTypes[{i}]"),
                    format!(
                        "must be an event name, * or prefix-*, got {}",
                        domain::excerpt(pattern)
                    ),
                ));
            }
        }
        let after = match request.after.as_deref().filter(|raw| !raw.is_empty()) {
            None => None,
            Some(raw) => match EventId::parse(raw) {
                Some(id) => Some(id),
                None => {
                    violations.push(FieldViolation::new(
                        "afterEventId",
                        format!(
                            "must be an event id like 1700000000000-0, got {}",
                            domain::excerpt(raw)
                        ),
                    ));
                    None
                }
            },
        };
        if !violations.is_empty() {
            return Err(Error::InvalidArgument(violations));
        }
        let user_id = caller.account.user_id.clone();
        let room = match (
            request.room.as_deref().filter(|r| !r.is_empty()),
            &caller.room_scope,
        ) {
            (Some(key), _) => Some(self.room(caller, key).await?),
            // A token scoped to one room watches that room only.
            (None, Some(scope)) => Some(self.room(caller, &scope.clone()).await?),
            (None, None) => None,
        };
        let start = match after {
            Some(after) => {
                if let Some(trimmed) = self.events.trimmed_before(&user_id).await?
                    && after < trimmed
                {
                    return Err(Error::EventNotRetained {
                        id: after.to_string(),
                    });
                }
                after
            }
            // "From now on", by the store's ids, which follow the clock.
            None => {
                let now = u64::try_from(self.clock.now().as_millisecond()).unwrap_or(0);
                EventId {
                    millis: now.saturating_sub(1),
                    seq: u64::MAX,
                }
            }
        };
        // Counted from here until the stream's task ends, which it does as
        // soon as its watcher goes away.
        let slot = self.watchers.enter(&user_id, &self.events)?;
        let mut log_end = slot.log_end();
        let events = self.events.clone();
        let room_id = room.map(|r| r.room_id);
        let types = request.types;
        // A task per watcher reads the log and feeds the stream; it ends when
        // the watcher goes away (the receiver is dropped).
        let (tx, rx) = mpsc::channel(64);
        let mut stopping = self.stopping.clone();
        tokio::spawn(async move {
            let _slot = slot;
            let mut cursor = start;
            loop {
                let batch = match events
                    .read_events(&user_id, Some(cursor), WATCH_BATCH)
                    .await
                {
                    Ok(batch) => batch,
                    Err(error) => {
                        let _ = tx.send(Err(Error::Store(error))).await;
                        return;
                    }
                };
                let full = batch.len() == WATCH_BATCH;
                for event in batch {
                    cursor = event.id;
                    let wanted = room_id.as_ref().is_none_or(|r| *r == event.room_id)
                        && (types.is_empty() || subscribed(&types, &event.kind));
                    if wanted && tx.send(Ok(event)).await.is_err() {
                        return;
                    }
                }
                // Events after the cursor that were trimmed before this
                // watcher read them are gone: say so rather than skip them.
                // (Checked after the read: anything trimmed later is caught
                // by the next round's check.)
                match events.trimmed_before(&user_id).await {
                    Ok(Some(trimmed)) if trimmed > cursor.next() => {
                        let _ = tx
                            .send(Err(Error::EventNotRetained {
                                id: cursor.to_string(),
                            }))
                            .await;
                        return;
                    }
                    Ok(_) => {}
                    Err(error) => {
                        let _ = tx.send(Err(Error::Store(error))).await;
                        return;
                    }
                }
                if tx.is_closed() {
                    return;
                }
                if *stopping.borrow() {
                    let _ = tx.send(Err(Error::ShuttingDown)).await;
                    return;
                }
                if !full {
                    // Until the log has something past the cursor, as the
                    // account's shared poll sees it (or, while that poll
                    // fails, one poll interval), or the watcher goes away.
                    tokio::select! {
                        _ = wait_for_more(&mut log_end, cursor) => {}
                        _ = tx.closed() => return,
                        _ = stop_signal(&mut stopping) => {}
                    }
                }
            }
        });
        Ok(ReceiverStream::new(rx))
    }

    /// The caller's most recent delivery attempts, newest first.
    pub async fn deliveries(
        &self,
        caller: &Caller,
        limit: Option<i64>,
        dead_only: bool,
    ) -> Result<Vec<DeliveryRecord>, Error> {
        let limit = match limit {
            None => 100,
            Some(n @ 1..=1000) => n as usize,
            Some(other) => {
                return Err(Error::invalid(
                    "limit",
                    format!("must be 1 to 1000, got {other}"),
                ));
            }
        };
        let user_id = &caller.account.user_id;
        let mut records = if dead_only {
            self.events.dead_letters(user_id, limit).await?
        } else {
            self.events.recent_deliveries(user_id, limit).await?
        };
        if let Some(scope) = &caller.room_scope {
            let room = self.room(caller, &scope.clone()).await?;
            let room_id = room.room_id.to_string();
            records.retain(|r| r.room_id == room_id);
        }
        for record in &mut records {
            // The event body is kept for replays, not shown.
            record.event = None;
        }
        Ok(records)
    }

    /// Sends a dead letter again, as a new event carrying the old one's
    /// webhook-id, after the room's pending events.
    pub async fn replay(&self, caller: &Caller, raw_event_id: &str) -> Result<Event, Error> {
        if EventId::parse(raw_event_id).is_none() {
            return Err(Error::invalid(
                "eventId",
                format!(
                    "must be an event id like 1700000000000-0, got {}",
                    domain::excerpt(raw_event_id)
                ),
            ));
        }
        let user_id = &caller.account.user_id;
        let not_found =
            || Error::not_found(format!("dead letter {}", domain::excerpt(raw_event_id)));
        if caller.room_scope.is_some() {
            // A room-scoped token may replay its room's letters only: look
            // before taking (an unscoped caller needs no second read).
            let peek = self
                .events
                .dead_letters(user_id, crate::store::DEAD_LETTERS)
                .await?
                .into_iter()
                .find(|r| r.event_id == raw_event_id)
                .ok_or_else(not_found)?;
            self.room(caller, &peek.room_id).await?;
        }
        let record = self
            .events
            .take_dead_letter(user_id, raw_event_id)
            .await?
            .ok_or_else(not_found)?;
        let Some(stored) = record.event else {
            return Err(Error::not_found(format!(
                "the event of dead letter {}",
                domain::excerpt(raw_event_id)
            )));
        };
        let corrupt = |what: &str| {
            Error::Store(crate::store::StoreError::Corrupt(format!(
                "dead letter {raw_event_id}: {what}"
            )))
        };
        let data = match serde_json::from_str::<Value>(&stored.data) {
            Ok(Value::Object(map)) => map,
            _ => return Err(corrupt("data is not a JSON object")),
        };
        let room_id = domain::RoomId::parse(&stored.room_id).ok_or_else(|| corrupt("roomId"))?;
        let original = EventId::parse(&stored.id).ok_or_else(|| corrupt("event id"))?;
        let event = NewEvent {
            room_id,
            kind: stored.kind,
            data,
            at: self.clock.now(),
            replay_of: Some(
                stored
                    .replay_of
                    .as_deref()
                    .and_then(EventId::parse)
                    .unwrap_or(original),
            ),
        };
        self.events.hint_delivery(user_id, event.at).await?;
        let id = self.events.append_event(user_id, &event).await?;
        tracing::info!(event_id = %id, replay_of = raw_event_id, "dead letter replayed");
        Ok(Event::stored(id, event))
    }

    /// The caller's room, within its token's scope.
    async fn room(&self, caller: &Caller, raw_key: &str) -> Result<Room, Error> {
        caller_room(self.rooms.as_ref(), caller, raw_key).await
    }

    async fn room_in(&self, user_id: &UserId, raw_key: &str) -> Result<Room, Error> {
        find_room(self.rooms.as_ref(), user_id, raw_key).await
    }
}
