//! Webhook delivery: every replica runs one [`DeliveryWorker`]; together they
//! deliver each event at least once, in order per room, whichever replicas
//! are alive.
//!
//! How work is shared: an account with events to look at has a hint (see
//! `store::events`); a worker that finds a due hint takes the account's
//! delivery lease and runs an *account task* for it. The task assigns new
//! events of the account's log to the queues of the rooms whose webhook
//! subscribes to them, and runs one *room task* per room with a ready queue
//! head, so a slow receiver holds up its own room only. Results come back to
//! the account task, which alone writes the account's delivery state, each
//! write fenced by the lease: a worker that lost its lease (paused, cut off)
//! writes nothing, and the replica that took over starts from what was
//! stored. So a delivery is repeated only when a receiver failed, timed out,
//! or a replica died between sending and recording; receivers drop repeats
//! by `webhook-id`.
//!
//! When an account has nothing ready, its task stores the next time to look
//! (a retry's backoff, or when old events fall out of retention) as the
//! hint, gives up the lease and ends. A restart of every replica therefore
//! loses nothing: the queues, attempts and hints are all in the store.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use jiff::Timestamp;
use tokio::sync::{Semaphore, mpsc};
use tokio::task::JoinSet;

use crate::domain::{Event, EventId, RoomId, UserId, Webhook, subscribed};
use crate::store::{
    DeliveryHint, DeliveryRecord, DeliveryUpdate, EventStore, RoomDeliveries, RoomKey, Store,
    StoreError, StoredEvent,
};
use crate::telemetry::metrics;
use crate::webhook::{Attempt, Outgoing, Sender, SigningKey};

use super::{Clock, WebhookKeys};

/// How a worker retries and how long events are kept.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DeliveryConfig {
    /// A failing event is retried for this long after its first attempt,
    /// then dead-lettered.
    pub retry_for: Duration,
    /// The first retry's wait; each further one doubles it, up to
    /// `backoff_max`, and each is jittered by ±50%.
    pub backoff_base: Duration,
    pub backoff_max: Duration,
    /// Delivered events stay in the log this long (for WatchEvents).
    pub retention: Duration,
    /// How often the worker looks for due hints.
    pub poll: Duration,
    /// How long an account's lease lasts without renewal.
    pub lease: Duration,
}

impl Default for DeliveryConfig {
    fn default() -> DeliveryConfig {
        DeliveryConfig {
            retry_for: Duration::from_secs(24 * 3600),
            backoff_base: Duration::from_secs(1),
            backoff_max: Duration::from_secs(3600),
            retention: Duration::from_secs(24 * 3600),
            poll: Duration::from_millis(250),
            lease: Duration::from_secs(30),
        }
    }
}

/// How many accounts one worker serves at once.
const MAX_ACCOUNTS: usize = 256;
/// How many hints one look takes.
const HINT_BATCH: usize = 256;
/// How many new events an account task assigns per read.
const ASSIGN_BATCH: usize = 500;
/// An idle account's hint is kept this long before it is removed: a writer
/// sets its hint just before it writes its events, so a hint removed at the
/// first idle look could miss an event landing right after.
const IDLE_RECHECK: Duration = Duration::from_secs(30);

#[derive(Clone)]
pub struct DeliveryWorker {
    inner: Arc<Inner>,
}

struct Inner {
    rooms: Arc<dyn Store>,
    events: Arc<dyn EventStore>,
    sender: Sender,
    keys: WebhookKeys,
    clock: Arc<dyn Clock>,
    config: DeliveryConfig,
    /// This worker's lease name: unique per process.
    holder: String,
    /// Accounts with a task running here.
    active: Mutex<HashSet<UserId>>,
    /// Idle hints this worker moved to a later time, by account: seeing one
    /// unchanged at that time means no writer hinted since.
    idle: Mutex<HashMap<UserId, Timestamp>>,
    slots: Arc<Semaphore>,
}

impl DeliveryWorker {
    pub fn new(
        rooms: Arc<dyn Store>,
        events: Arc<dyn EventStore>,
        sender: Sender,
        keys: WebhookKeys,
        clock: Arc<dyn Clock>,
        config: DeliveryConfig,
    ) -> DeliveryWorker {
        let holder = format!("worker-{:016x}", rand::random::<u64>());
        DeliveryWorker {
            inner: Arc::new(Inner {
                rooms,
                events,
                sender,
                keys,
                clock,
                config,
                holder,
                active: Mutex::new(HashSet::new()),
                idle: Mutex::new(HashMap::new()),
                slots: Arc::new(Semaphore::new(MAX_ACCOUNTS)),
            }),
        }
    }

    /// Looks for due hints every `poll` until the task is aborted.
    pub async fn run(self) {
        let mut failing = false;
        loop {
            match self.look_once().await {
                Ok(()) => {
                    if failing {
                        tracing::info!("webhook delivery: storage reachable again");
                    }
                    failing = false;
                }
                Err(error) => {
                    if !failing {
                        tracing::warn!(%error, "webhook delivery: cannot read due accounts; retrying");
                    }
                    failing = true;
                }
            }
            tokio::time::sleep(self.inner.config.poll).await;
        }
    }

    /// Starts an account task for each due hint not already being served.
    pub async fn look_once(&self) -> Result<(), StoreError> {
        let now = self.inner.clock.now();
        for hint in self.inner.events.due_hints(now, HINT_BATCH).await? {
            {
                let mut active = self.inner.active.lock().expect("lock poisoned");
                if !active.insert(hint.user_id.clone()) {
                    continue;
                }
            }
            let Ok(slot) = self.inner.slots.clone().try_acquire_owned() else {
                self.inner
                    .active
                    .lock()
                    .expect("lock poisoned")
                    .remove(&hint.user_id);
                break;
            };
            let inner = self.inner.clone();
            tokio::spawn(async move {
                let user_id = hint.user_id.clone();
                if let Err(error) = AccountTask::run(&inner, hint).await {
                    tracing::warn!(%error, user_id = %user_id, "webhook delivery: account task stopped; another look will resume it");
                }
                inner.active.lock().expect("lock poisoned").remove(&user_id);
                drop(slot);
            });
        }
        Ok(())
    }
}

/// What a room task reports.
struct Outcome {
    room_id: RoomId,
    event: Event,
    end_point: String,
    attempt: Attempt,
}

/// One account's deliveries while this worker holds its lease.
struct AccountTask<'a> {
    inner: &'a Arc<Inner>,
    key: Arc<SigningKey>,
    user_id: UserId,
    /// Each room's webhook, read once per task (rooms' webhooks never change).
    webhooks: HashMap<RoomId, Option<Webhook>>,
    queues: HashMap<RoomId, RoomDeliveries>,
    assigned: Option<EventId>,
    /// Queued events this task has read already (by `assign`), so that an
    /// attempt does not read its event from the log again. Emptied as queue
    /// heads are removed; a later task reads what it lacks.
    known: HashMap<EventId, Event>,
    /// Whether the log held nothing at the last trim.
    log_empty: bool,
}

impl<'a> AccountTask<'a> {
    async fn run(inner: &'a Arc<Inner>, hint: DeliveryHint) -> Result<(), StoreError> {
        let user_id = hint.user_id.clone();
        let key = match inner.keys.get().await {
            Ok(key) => key,
            Err(crate::service::Error::Store(error)) => return Err(error),
            Err(other) => return Err(StoreError::Corrupt(other.to_string())),
        };
        let lease = inner.config.lease;
        if !inner
            .events
            .lease_deliveries(&user_id, &inner.holder, lease)
            .await?
        {
            // Another replica serves it; its task settles the hint.
            return Ok(());
        }
        let state = inner.events.delivery_state(&user_id).await?;
        let mut task = AccountTask {
            inner,
            key,
            user_id: user_id.clone(),
            webhooks: HashMap::new(),
            queues: state.rooms.into_iter().collect(),
            assigned: state.assigned,
            known: HashMap::new(),
            log_empty: false,
        };
        let result = task.serve().await;
        let next = match &result {
            Ok(next) => *next,
            // Look again soon; the state stored so far stands.
            Err(_) => Some(inner.clock.now() + inner.config.poll),
        };
        let next = match next {
            Some(next) => Some(next),
            None => task.idle_next(&hint),
        };
        inner.events.settle_hint(&hint, next).await?;
        inner
            .events
            .release_deliveries(&user_id, &inner.holder)
            .await?;
        result.map(|_| ())
    }

    /// Delivers until nothing is ready. Returns when to look next (`None`:
    /// nothing is waiting but retention).
    async fn serve(&mut self) -> Result<Option<Timestamp>, StoreError> {
        let (tx, mut rx) = mpsc::channel::<Outcome>(64);
        let mut running: HashSet<RoomId> = HashSet::new();
        let mut tasks = JoinSet::new();
        let mut renewed = tokio::time::Instant::now();
        loop {
            if renewed.elapsed() > self.inner.config.lease / 3 {
                if !self
                    .inner
                    .events
                    .lease_deliveries(&self.user_id, &self.inner.holder, self.inner.config.lease)
                    .await?
                {
                    return Err(StoreError::Unavailable("delivery lease lost".into()));
                }
                renewed = tokio::time::Instant::now();
            }
            let more = self.assign().await?;
            let now = self.inner.clock.now();
            let ready: Vec<RoomId> = self
                .queues
                .iter()
                .filter(|(room, q)| {
                    !running.contains(*room)
                        && !q.queue.is_empty()
                        && q.next_attempt_ms <= now.as_millisecond()
                })
                .map(|(room, _)| room.clone())
                .collect();
            for room_id in ready {
                let head = self.queues[&room_id].queue[0];
                match self.head_event(head).await? {
                    Some((event, webhook)) => {
                        running.insert(room_id.clone());
                        let attempt_number = self.queues[&room_id].attempts + 1;
                        tasks.spawn(deliver(
                            self.inner.clone(),
                            self.key.clone(),
                            self.user_id.clone(),
                            room_id,
                            event,
                            webhook.end_point,
                            attempt_number,
                            tx.clone(),
                        ));
                    }
                    None => {
                        // Trimmed or unreadable: nothing to send.
                        self.drop_head(&room_id, head).await?;
                    }
                }
            }
            if running.is_empty() && !more {
                let next = self
                    .queues
                    .values()
                    .filter(|q| !q.queue.is_empty())
                    .map(|q| q.next_attempt_ms)
                    .min()
                    .and_then(|ms| Timestamp::from_millisecond(ms).ok());
                self.trim().await?;
                return Ok(next);
            }
            tokio::select! {
                Some(outcome) = rx.recv() => {
                    running.remove(&outcome.room_id);
                    self.record(outcome).await?;
                }
                _ = tokio::time::sleep(self.inner.config.poll) => {}
            }
            while tasks.try_join_next().is_some() {}
        }
    }

    /// Assigns events logged since the last assignment to the queues of
    /// the rooms that subscribe to them. Returns whether more may be waiting.
    async fn assign(&mut self) -> Result<bool, StoreError> {
        let events = self
            .inner
            .events
            .read_events(&self.user_id, self.assigned, ASSIGN_BATCH)
            .await?;
        let Some(last) = events.last().map(|e| e.id) else {
            return Ok(false);
        };
        let more = events.len() == ASSIGN_BATCH;
        let mut changed: HashSet<RoomId> = HashSet::new();
        for event in &events {
            let Some(webhook) = self.webhook(&event.room_id).await? else {
                continue;
            };
            if !subscribed(&webhook.events, &event.kind) {
                continue;
            }
            self.queues
                .entry(event.room_id.clone())
                .or_default()
                .queue
                .push(event.id);
            changed.insert(event.room_id.clone());
            self.known.insert(event.id, event.clone());
        }
        let update = DeliveryUpdate {
            assigned: Some(last),
            rooms: changed
                .into_iter()
                .map(|room| {
                    let queue = self.queues.get(&room).cloned();
                    (room, queue)
                })
                .collect(),
            ..DeliveryUpdate::default()
        };
        self.write(&update).await?;
        self.assigned = Some(last);
        Ok(more)
    }

    async fn webhook(&mut self, room_id: &RoomId) -> Result<Option<Webhook>, StoreError> {
        if let Some(known) = self.webhooks.get(room_id) {
            return Ok(known.clone());
        }
        let key = RoomKey {
            room_id: Some(room_id.clone()),
            document_id: None,
            custom_room_id: None,
        };
        let webhook = self
            .inner
            .rooms
            .get_room(&self.user_id, &key)
            .await?
            .and_then(|room| room.settings.webhook.clone());
        self.webhooks.insert(room_id.clone(), webhook.clone());
        Ok(webhook)
    }

    /// The event at a queue's head and the room's webhook, if both exist.
    async fn head_event(&mut self, id: EventId) -> Result<Option<(Event, Webhook)>, StoreError> {
        if let Some(event) = self.known.get(&id).cloned() {
            return Ok(self.webhook(&event.room_id).await?.map(|w| (event, w)));
        }
        let before = match id.seq.checked_sub(1) {
            Some(seq) => EventId { seq, ..id },
            None => EventId {
                millis: id.millis.saturating_sub(1),
                seq: u64::MAX,
            },
        };
        let found = self
            .inner
            .events
            .read_events(&self.user_id, Some(before), 1)
            .await?
            .into_iter()
            .next()
            .filter(|event| event.id == id);
        let Some(event) = found else {
            return Ok(None);
        };
        Ok(self.webhook(&event.room_id).await?.map(|w| (event, w)))
    }

    async fn drop_head(&mut self, room_id: &RoomId, head: EventId) -> Result<(), StoreError> {
        tracing::warn!(user_id = %self.user_id, room_id = %room_id, event_id = %head, "webhook delivery: queued event is no longer in the log; skipped");
        let queue = self.pop(room_id);
        self.write(&DeliveryUpdate {
            rooms: vec![(room_id.clone(), queue)],
            ..DeliveryUpdate::default()
        })
        .await
    }

    /// Removes a room's queue head and resets its attempts.
    fn pop(&mut self, room_id: &RoomId) -> Option<RoomDeliveries> {
        let queue = self.queues.get_mut(room_id)?;
        if !queue.queue.is_empty() {
            let head = queue.queue.remove(0);
            self.known.remove(&head);
        }
        queue.attempts = 0;
        queue.first_attempt_ms = 0;
        queue.next_attempt_ms = 0;
        if queue.queue.is_empty() {
            self.queues.remove(room_id);
            return None;
        }
        Some(queue.clone())
    }

    /// Stores what an attempt did.
    async fn record(&mut self, outcome: Outcome) -> Result<(), StoreError> {
        let now = self.inner.clock.now();
        let now_ms = now.as_millisecond();
        let config = self.inner.config;
        let Some(queue) = self.queues.get_mut(&outcome.room_id) else {
            return Ok(());
        };
        let attempt_number = queue.attempts + 1;
        let first = if queue.first_attempt_ms == 0 {
            now_ms
        } else {
            queue.first_attempt_ms
        };
        let mut record = DeliveryRecord {
            event_id: outcome.event.id.to_string(),
            webhook_id: outcome.event.webhook_id(&self.user_id),
            room_id: outcome.room_id.to_string(),
            webhook_type: outcome.event.kind.clone(),
            end_point: outcome.end_point.clone(),
            outcome: String::new(),
            status: None,
            error: String::new(),
            attempt: attempt_number,
            at_ms: now_ms,
            event: None,
        };
        let mut update = DeliveryUpdate::default();
        let give_up_after = first + config.retry_for.as_millis() as i64;
        match outcome.attempt {
            Attempt::Delivered { status } => {
                record.outcome = "delivered".into();
                record.status = Some(status);
                let queue = self.pop(&outcome.room_id);
                update.rooms.push((outcome.room_id.clone(), queue));
            }
            Attempt::Retry { status, reason } if now_ms < give_up_after => {
                record.outcome = "retrying".into();
                record.status = status;
                record.error = reason;
                let wait = backoff(&config, attempt_number);
                queue.attempts = attempt_number;
                queue.first_attempt_ms = first;
                queue.next_attempt_ms = now_ms + wait.as_millis() as i64;
                update
                    .rooms
                    .push((outcome.room_id.clone(), Some(queue.clone())));
            }
            Attempt::Retry { status, reason } => {
                record.outcome = "dead".into();
                record.status = status;
                record.error = format!(
                    "{reason}; gave up after {} of retries",
                    humanize(config.retry_for)
                );
                let queue = self.pop(&outcome.room_id);
                update.rooms.push((outcome.room_id.clone(), queue));
            }
            Attempt::Failed { status, reason } => {
                record.outcome = "dead".into();
                record.status = status;
                record.error = reason;
                let queue = self.pop(&outcome.room_id);
                update.rooms.push((outcome.room_id.clone(), queue));
            }
        }
        match record.outcome.as_str() {
            "dead" => {
                metrics::webhook_delivery("dead");
                tracing::warn!(user_id = %self.user_id, room_id = %record.room_id, event_id = %record.event_id, end_point = %record.end_point, error = %record.error, "webhook dead-lettered")
            }
            "retrying" => {
                metrics::webhook_delivery("retrying");
                tracing::info!(user_id = %self.user_id, room_id = %record.room_id, event_id = %record.event_id, error = %record.error, attempt = record.attempt, "webhook delivery failed; will retry")
            }
            _ => {
                metrics::webhook_delivery("delivered");
                tracing::debug!(user_id = %self.user_id, event_id = %record.event_id, "webhook delivered")
            }
        }
        if record.outcome == "dead" {
            let mut dead = record.clone();
            dead.event = Some(StoredEvent::from_event(&outcome.event));
            update.dead.push(dead);
        }
        update.records.push(record);
        self.write(&update).await
    }

    /// Drops log entries that are past retention and delivered (or never to
    /// be delivered), never one a queue still needs.
    async fn trim(&mut self) -> Result<(), StoreError> {
        let Some(assigned) = self.assigned else {
            self.log_empty = true;
            return Ok(());
        };
        let cutoff_ms = self.inner.clock.now().as_millisecond()
            - self.inner.config.retention.as_millis() as i64;
        let cutoff_ms = u64::try_from(cutoff_ms).unwrap_or(0);
        let mut before = EventId {
            millis: cutoff_ms,
            seq: 0,
        }
        .min(assigned.next());
        if let Some(oldest_queued) = self.queues.values().filter_map(|q| q.queue.first()).min() {
            before = before.min(*oldest_queued);
        }
        let oldest = self
            .inner
            .events
            .read_events(&self.user_id, None, 1)
            .await?;
        self.log_empty = oldest.is_empty();
        if oldest.first().is_none_or(|e| e.id >= before) {
            return Ok(());
        }
        self.write(&DeliveryUpdate {
            trim_before: Some(before),
            ..DeliveryUpdate::default()
        })
        .await?;
        let left = self
            .inner
            .events
            .read_events(&self.user_id, None, 1)
            .await?;
        self.log_empty = left.is_empty();
        Ok(())
    }

    /// When an account with nothing waiting should be looked at again:
    /// `IDLE_RECHECK` after the first idle look, then (if the hint was left
    /// as this worker set it, so no writer hinted since) when its oldest
    /// event falls out of retention, or never.
    fn idle_next(&self, hint: &DeliveryHint) -> Option<Timestamp> {
        let now = self.inner.clock.now();
        let mut idle = self.inner.idle.lock().expect("lock poisoned");
        let confirmed = idle
            .remove(&self.user_id)
            .is_some_and(|set| set == hint.due);
        if !confirmed {
            let recheck = now + IDLE_RECHECK;
            idle.insert(self.user_id.clone(), recheck);
            return Some(recheck);
        }
        // Whatever the log still holds is younger than retention (the task
        // just trimmed): look again when it is not.
        if !self.log_empty {
            let retention = jiff::SignedDuration::try_from(self.inner.config.retention).ok()?;
            return now.checked_add(retention).ok();
        }
        None
    }

    async fn write(&self, update: &DeliveryUpdate) -> Result<(), StoreError> {
        if self
            .inner
            .events
            .update_deliveries(&self.user_id, &self.inner.holder, update)
            .await?
        {
            Ok(())
        } else {
            Err(StoreError::Unavailable("delivery lease lost".into()))
        }
    }
}

/// One attempt at one event, reported back to the account task.
#[allow(clippy::too_many_arguments)]
async fn deliver(
    inner: Arc<Inner>,
    key: Arc<SigningKey>,
    user_id: UserId,
    room_id: RoomId,
    event: Event,
    end_point: String,
    attempt_number: u32,
    results: mpsc::Sender<Outcome>,
) {
    let body = event.webhook_body();
    let webhook_id = event.webhook_id(&user_id);
    let timestamp = inner.clock.now().as_second();
    let attempt = match key.sign(&body) {
        Ok(signature) => {
            inner
                .sender
                .send(&Outgoing {
                    endpoint: &end_point,
                    body: &body,
                    signature: &signature,
                    webhook_id: &webhook_id,
                    timestamp,
                })
                .await
        }
        // Ours, not the receiver's: keep the event and try again.
        Err(error) => Attempt::Retry {
            status: None,
            reason: format!("cannot sign the body: {error}"),
        },
    };
    tracing::debug!(%user_id, %room_id, event_id = %event.id, attempt_number, "webhook attempt made");
    let _ = results
        .send(Outcome {
            room_id,
            event,
            end_point,
            attempt,
        })
        .await;
}

/// The wait before retry `attempt` (1 = after the first failure).
fn backoff(config: &DeliveryConfig, attempt: u32) -> Duration {
    let doubled = config
        .backoff_base
        .saturating_mul(1u32 << attempt.saturating_sub(1).min(20));
    let capped = doubled.min(config.backoff_max);
    capped.mul_f64(rand::random_range(0.5..1.5))
}

fn humanize(d: Duration) -> String {
    let secs = d.as_secs();
    if secs >= 3600 && secs.is_multiple_of(3600) {
        format!("{} h", secs / 3600)
    } else if secs >= 60 && secs.is_multiple_of(60) {
        format!("{} min", secs / 60)
    } else {
        format!("{:.1} s", d.as_secs_f64())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_within_jitter_and_caps() {
        let config = DeliveryConfig {
            backoff_base: Duration::from_secs(1),
            backoff_max: Duration::from_secs(60),
            ..DeliveryConfig::default()
        };
        for attempt in 1..=12u32 {
            let nominal = Duration::from_secs(1u64 << (attempt - 1)).min(Duration::from_secs(60));
            let wait = backoff(&config, attempt);
            assert!(
                wait >= nominal.mul_f64(0.5) && wait <= nominal.mul_f64(1.5),
                "{attempt}: {wait:?}"
            );
        }
        assert!(backoff(&config, u32::MAX) <= Duration::from_secs(90));
    }
}
