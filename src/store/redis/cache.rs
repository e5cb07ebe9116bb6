//! GetRoom by roomId served from process memory, never stale: a bounded
//! cache of room hashes kept true by Redis server-assisted client-side
//! caching (RESP3 `CLIENT TRACKING ... OPTIN`).
//!
//! How it stays true, in four rules (docs/redis-schema.md says the same):
//!
//! 1. **A fill is tracked on the connection that read it.** A miss sends
//!    `CLIENT TRACKING ON OPTIN`, `CLIENT ID`, `CLIENT CACHING YES` and the
//!    `get.lua` EVALSHA as one pipeline (one round trip, contiguous on one
//!    connection), so Redis promises an `invalidate` push for the room's hash
//!    on that connection once anyone changes it. The entry remembers the
//!    connection's client id.
//! 2. **A fill never resurrects stale data.** Before the read is sent, the key
//!    gets a `Pending` entry; an invalidation or flush removes it, and the
//!    reply is stored only if that same `Pending` entry is still there.
//! 3. **A hit waits for a barrier.** Redis writes the invalidation into
//!    replica B's socket before it answers replica A's write, but B may not
//!    have read it yet when its next GetRoom arrives. So a hit is served only
//!    after a *barrier* sent after the call arrived: `CLIENT ID` and
//!    `UNSUBSCRIBE <marker>` on the connection (Cluster: the master of the
//!    key's slot). The marker's reply is itself a push, relayed to us in the
//!    same queue as invalidations and behind every one Redis sent earlier, so
//!    once we see it every earlier invalidation has been applied. (A plain
//!    PING is not enough with redis-rs: `ConnectionManager` and
//!    `ClusterConnection` relay pushes through a task of their own, and a
//!    PING's reply can reach its caller before an earlier push was relayed.)
//!    The barrier's client id must equal the entry's, or the entry was
//!    tracked on a connection that is gone. Barriers are coalesced per
//!    connection scope: callers arriving while one is in flight wait for the
//!    next, and one serves them all.
//! 4. **A lost connection forgets everything.** A `Disconnection` push, an
//!    `invalidate` with no keys (FLUSHALL, FLUSHDB), and a barrier that fails
//!    all empty the cache.
//!
//! The cache is bounded by an estimate of its bytes; the least recently used
//! entries go first.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use redis::aio::{AsyncPushSender, SendError};
use redis::cluster_routing::Slot;
use redis::{PushInfo, PushKind, Value};
use tokio::sync::{oneshot, watch};

use crate::domain::Room;
use crate::store::StoreError;

/// The default bound of `--room-cache-bytes`.
pub const DEFAULT_ROOM_CACHE_BYTES: usize = 64 * 1024 * 1024;

/// What one entry costs beyond its key and the room's own heap data: the
/// map slot, the LRU index node and the entry itself, rounded up.
const ENTRY_OVERHEAD: usize = 192;

/// The start of every barrier marker's channel name; the rest is its number.
/// Only this process's connection ever sees it: UNSUBSCRIBE from a channel
/// one is not subscribed to changes nothing on the server.
const MARKER_CHANNEL: &str = "roomservice:cache-barrier:";

/// Which connection a barrier must travel on: the one node, or the master of
/// a cluster slot (a Cluster has one connection per node; per slot is finer
/// than needed, and always right).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(super) enum Scope {
    Node,
    Slot(Slot),
}

/// Counters for tests and operators.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RoomCacheStats {
    /// GetRoom calls by roomId answered from memory.
    pub hits: u64,
    /// GetRoom calls by roomId that went to Redis.
    pub misses: u64,
    /// Times the whole cache was emptied (lost connection, FLUSHALL, failed
    /// barrier).
    pub flushes: u64,
    /// Entries held now (rooms and reads in flight).
    pub entries: usize,
    /// Estimated bytes held now; never above `max_bytes`.
    pub bytes: usize,
    pub max_bytes: usize,
}

pub(super) struct RoomCache {
    max_bytes: usize,
    entries: Mutex<Entries>,
    barriers: Barriers,
    hits: AtomicU64,
    misses: AtomicU64,
    flushes: AtomicU64,
}

/// The entries and their LRU order, under one lock.
#[derive(Default)]
struct Entries {
    /// Room hash key (as Redis names it in invalidations) → entry.
    map: HashMap<String, Entry>,
    /// Last use → key, oldest first. Every entry has exactly one tick here.
    lru: BTreeMap<u64, String>,
    /// Source of ticks and of fill tickets; only grows.
    clock: u64,
    bytes: usize,
}

struct Entry {
    /// Its key in [`Entries::lru`]; for a `Pending` entry also its ticket.
    tick: u64,
    bytes: usize,
    state: State,
}

enum State {
    /// A read is in flight; its reply may be stored only while this stays.
    Pending,
    /// The room as read on the connection whose `CLIENT ID` is `client_id`.
    Ready { room: Box<Room>, client_id: i64 },
}

/// A miss's claim on a key: the reply is stored only if nothing removed the
/// `Pending` entry it made meanwhile.
pub(super) struct Ticket {
    key: String,
    tick: u64,
}

impl RoomCache {
    pub(super) fn new(max_bytes: usize) -> RoomCache {
        RoomCache {
            max_bytes,
            entries: Mutex::new(Entries::default()),
            barriers: Barriers::default(),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
            flushes: AtomicU64::new(0),
        }
    }

    pub(super) fn stats(&self) -> RoomCacheStats {
        let entries = self.lock();
        RoomCacheStats {
            hits: self.hits.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
            flushes: self.flushes.load(Ordering::Relaxed),
            entries: entries.map.len(),
            bytes: entries.bytes,
            max_bytes: self.max_bytes,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Entries> {
        // Every critical section leaves the entries consistent before it can
        // panic (it cannot: no outside data is unwrapped under the lock).
        self.entries.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Whether `key` has a room worth a barrier. Cheap, no round trip.
    pub(super) fn holds(&self, key: &str) -> bool {
        matches!(
            self.lock().map.get(key),
            Some(Entry {
                state: State::Ready { .. },
                ..
            })
        )
    }

    /// The room under `key`, if it was read on the connection a barrier just
    /// crossed (`client_id`). An entry from another connection is dropped:
    /// its tracking died with that connection.
    pub(super) fn get(&self, key: &str, client_id: i64) -> Option<Room> {
        let mut entries = self.lock();
        let found = match entries.map.get(key) {
            Some(Entry {
                state: State::Ready { room, client_id: c },
                ..
            }) => (*c == client_id).then(|| Room::clone(room)),
            _ => return None,
        };
        match found {
            Some(room) => {
                entries.touch(key);
                self.hits.fetch_add(1, Ordering::Relaxed);
                crate::telemetry::metrics::room_cache_lookup(true);
                Some(room)
            }
            None => {
                entries.remove(key);
                None
            }
        }
    }

    /// Marks `key` as being read. Call before sending the read.
    pub(super) fn begin_fill(&self, key: &str) -> Ticket {
        self.misses.fetch_add(1, Ordering::Relaxed);
        crate::telemetry::metrics::room_cache_lookup(false);
        let mut entries = self.lock();
        entries.remove(key);
        let tick = entries.next_tick();
        let bytes = entry_bytes(key, None);
        entries.insert(key.to_owned(), tick, bytes, State::Pending);
        entries.evict_to(self.max_bytes);
        Ticket {
            key: key.to_owned(),
            tick,
        }
    }

    /// Stores what a read found, unless the key was invalidated (or the cache
    /// flushed) since [`RoomCache::begin_fill`]. `None` (no such room, or
    /// the read failed) only withdraws the claim: absent rooms are not cached.
    pub(super) fn finish_fill(&self, ticket: Ticket, found: Option<(Room, i64)>) {
        let mut entries = self.lock();
        let still_ours = matches!(
            entries.map.get(&ticket.key),
            Some(Entry { tick, state: State::Pending, .. }) if *tick == ticket.tick
        );
        if !still_ours {
            return;
        }
        entries.remove(&ticket.key);
        let Some((room, client_id)) = found else {
            return;
        };
        let bytes = entry_bytes(&ticket.key, Some(&room));
        if bytes > self.max_bytes {
            return;
        }
        let tick = entries.next_tick();
        let room = Box::new(room);
        entries.insert(ticket.key, tick, bytes, State::Ready { room, client_id });
        entries.evict_to(self.max_bytes);
    }

    /// Drops these keys' entries, ready or pending.
    fn invalidate(&self, keys: &[Value]) {
        let mut entries = self.lock();
        for key in keys {
            if let Value::BulkString(bytes) = key
                && let Ok(key) = std::str::from_utf8(bytes)
            {
                entries.remove(key);
            }
        }
    }

    /// Forgets everything, pending reads included.
    pub(super) fn flush(&self) {
        let mut entries = self.lock();
        entries.map.clear();
        entries.lru.clear();
        entries.bytes = 0;
        self.flushes.fetch_add(1, Ordering::Relaxed);
    }

    /// Applies one push message. Called by the connection's push relay, in
    /// the order Redis sent the pushes, and never blocks for long.
    fn apply(&self, push: PushInfo) {
        match push.kind {
            PushKind::Invalidate => match push.data.first() {
                Some(Value::Array(keys)) => self.invalidate(keys),
                // Nil: FLUSHALL/FLUSHDB. Anything else: unknown, so be safe.
                _ => self.flush(),
            },
            // The connection is gone, and its tracking with it; a new one
            // may have missed invalidations meanwhile.
            PushKind::Disconnection => self.flush(),
            PushKind::Unsubscribe => {
                if let Some(marker) = push.data.first().and_then(marker_number) {
                    self.barriers.marker_seen(marker);
                }
            }
            _ => {}
        }
    }

    /// Waits for a barrier on `scope` sent after this call began, and returns
    /// the client id of the connection it crossed. `send(channel)` sends
    /// `CLIENT ID` + `UNSUBSCRIBE channel` on that connection and returns the
    /// client id; it runs only if this caller leads the round. The whole wait
    /// is bounded by `within`.
    pub(super) async fn barrier<F, Fut>(
        &self,
        scope: Scope,
        within: Duration,
        send: F,
    ) -> Result<i64, StoreError>
    where
        F: FnOnce(String) -> Fut,
        Fut: Future<Output = Result<i64, StoreError>>,
    {
        let result =
            match tokio::time::timeout(within, self.barriers.cross(scope, within, send)).await {
                Ok(result) => result,
                Err(_) => Err(StoreError::Unavailable(format!(
                    "redis cache barrier did not complete in time ({} ms)",
                    within.as_millis()
                ))),
            };
        if result.is_err() {
            // The connection may be broken, and invalidations lost with it.
            self.flush();
        }
        result
    }
}

impl Entries {
    fn next_tick(&mut self) -> u64 {
        self.clock += 1;
        self.clock
    }

    fn insert(&mut self, key: String, tick: u64, bytes: usize, state: State) {
        self.lru.insert(tick, key.clone());
        self.bytes += bytes;
        self.map.insert(key, Entry { tick, bytes, state });
    }

    fn remove(&mut self, key: &str) {
        if let Some(entry) = self.map.remove(key) {
            self.lru.remove(&entry.tick);
            self.bytes -= entry.bytes;
        }
    }

    /// Moves a ready entry to the young end of the LRU order.
    fn touch(&mut self, key: &str) {
        let tick = self.next_tick();
        if let Some(entry) = self.map.get_mut(key)
            && let Some(name) = self.lru.remove(&entry.tick)
        {
            // The key moves with its own String: a hit allocates nothing.
            entry.tick = tick;
            self.lru.insert(tick, name);
        }
    }

    /// Drops the least recently used entries until the estimate fits. A
    /// pending entry dropped here only means its read is not stored.
    fn evict_to(&mut self, max_bytes: usize) {
        while self.bytes > max_bytes {
            let Some((_, key)) = self.lru.pop_first() else {
                break;
            };
            if let Some(entry) = self.map.remove(&key) {
                self.bytes -= entry.bytes;
            }
        }
    }
}

/// An estimate of what an entry keeps alive: the key twice (map and LRU
/// index), the room's strings and settings, and fixed overhead.
fn entry_bytes(key: &str, room: Option<&Room>) -> usize {
    let room_bytes = room.map_or(0, |room| {
        std::mem::size_of::<Room>()
            + room.room_id.as_str().len()
            + room.user_id.as_str().len()
            + room.custom_room_id.as_ref().map_or(0, |c| c.as_str().len())
            + serde_json::to_string(&*room.settings).map_or(0, |json| json.len())
    });
    ENTRY_OVERHEAD + 2 * key.len() + room_bytes
}

fn marker_number(channel: &Value) -> Option<u64> {
    let Value::BulkString(bytes) = channel else {
        return None;
    };
    std::str::from_utf8(bytes)
        .ok()?
        .strip_prefix(MARKER_CHANNEL)?
        .parse()
        .ok()
}

/// The push sender given to the connection: applies each push to the cache
/// as it is relayed, so that nothing sits in a queue between the relay and
/// the cache.
pub(super) struct PushHandler(pub(super) Arc<RoomCache>);

impl AsyncPushSender for PushHandler {
    fn send(&self, info: PushInfo) -> Result<(), SendError> {
        self.0.apply(info);
        Ok(())
    }
}

/// Coalesced barriers, one round in flight per scope at a time.
#[derive(Default)]
struct Barriers {
    scopes: Mutex<HashMap<Scope, Arc<ScopeBarrier>>>,
    /// Markers sent and not yet seen in the push stream → their waiter.
    markers: Mutex<HashMap<u64, oneshot::Sender<()>>>,
    next_marker: AtomicU64,
}

struct ScopeBarrier {
    round: Mutex<Rounds>,
    /// Bumped whenever a round ends (or its leader gives up), to wake waiters.
    ended: watch::Sender<u64>,
}

#[derive(Default)]
struct Rounds {
    /// Rounds started so far; round `started` is the newest.
    started: u64,
    /// Whether round `started` is in flight.
    sending: bool,
    /// The newest finished round and its result (a client id or why not).
    done: u64,
    result: Option<Result<i64, String>>,
}

impl Barriers {
    fn scope(&self, scope: Scope) -> Arc<ScopeBarrier> {
        let mut scopes = self.scopes.lock().unwrap_or_else(PoisonError::into_inner);
        scopes
            .entry(scope)
            .or_insert_with(|| {
                Arc::new(ScopeBarrier {
                    round: Mutex::new(Rounds::default()),
                    ended: watch::channel(0).0,
                })
            })
            .clone()
    }

    fn marker_seen(&self, marker: u64) {
        let waiter = self
            .markers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&marker);
        if let Some(waiter) = waiter {
            let _ = waiter.send(());
        }
    }

    async fn cross<F, Fut>(
        &self,
        scope: Scope,
        within: Duration,
        send: F,
    ) -> Result<i64, StoreError>
    where
        F: FnOnce(String) -> Fut,
        Fut: Future<Output = Result<i64, StoreError>>,
    {
        let barrier = self.scope(scope);
        // Any round started after now serves this call; round `target` is the
        // first such round.
        let target = {
            let rounds = barrier.lock();
            rounds.started + 1
        };
        let mut send = Some(send);
        loop {
            let mut ended = barrier.ended.subscribe();
            let lead = {
                let mut rounds = barrier.lock();
                if rounds.done >= target {
                    return match &rounds.result {
                        Some(Ok(client_id)) => Ok(*client_id),
                        Some(Err(why)) => Err(StoreError::Unavailable(why.clone())),
                        None => Err(StoreError::Unavailable("no barrier result".into())),
                    };
                }
                if rounds.sending {
                    None
                } else {
                    rounds.started += 1;
                    rounds.sending = true;
                    Some(rounds.started)
                }
            };
            let Some(round) = lead else {
                // Someone else's round is in flight: wait for it to end.
                let _ = ended.changed().await;
                continue;
            };
            // This call leads round `round` (>= target): send it.
            let Some(send) = send.take() else {
                return Err(StoreError::Unavailable("barrier led twice".into()));
            };
            let mut guard = LeadGuard {
                barrier: &barrier,
                round,
                result: None,
            };
            let result = self.send_marker(within, send).await;
            guard.result = Some(result.as_ref().map(|id| *id).map_err(|e| e.to_string()));
            drop(guard);
            return result;
        }
    }

    async fn send_marker<F, Fut>(&self, within: Duration, send: F) -> Result<i64, StoreError>
    where
        F: FnOnce(String) -> Fut,
        Fut: Future<Output = Result<i64, StoreError>>,
    {
        let marker = self.next_marker.fetch_add(1, Ordering::Relaxed);
        let (seen, relayed) = oneshot::channel();
        self.markers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(marker, seen);
        let _entry = MarkerEntry {
            markers: &self.markers,
            marker,
        };
        let client_id = send(format!("{MARKER_CHANNEL}{marker}")).await?;
        // The reply is in; the marker's push may still be in the relay,
        // behind invalidations sent before it.
        match tokio::time::timeout(within, relayed).await {
            Ok(Ok(())) => Ok(client_id),
            _ => Err(StoreError::Unavailable(
                "redis cache barrier: the marker was not relayed".into(),
            )),
        }
    }
}

/// Removes a marker's waiter however its barrier ends, a cancelled call
/// included: a marker that was never sent, or whose push was lost with its
/// connection, would otherwise stay in the map for the process's life.
struct MarkerEntry<'a> {
    markers: &'a Mutex<HashMap<u64, oneshot::Sender<()>>>,
    marker: u64,
}

impl Drop for MarkerEntry<'_> {
    fn drop(&mut self) {
        self.markers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&self.marker);
    }
}

impl ScopeBarrier {
    fn lock(&self) -> std::sync::MutexGuard<'_, Rounds> {
        self.round.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Ends a led round, also when the leading call is dropped midway (its
/// client went away): then no result is recorded, and a waiter leads a new
/// round instead.
struct LeadGuard<'a> {
    barrier: &'a ScopeBarrier,
    round: u64,
    result: Option<Result<i64, String>>,
}

impl Drop for LeadGuard<'_> {
    fn drop(&mut self) {
        {
            let mut rounds = self.barrier.lock();
            rounds.sending = false;
            if let Some(result) = self.result.take() {
                rounds.done = self.round;
                rounds.result = Some(result);
            }
        }
        self.barrier.ended.send_modify(|n| *n += 1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{RoomId, UserId};

    fn room(n: u32) -> Room {
        let at = jiff::Timestamp::from_millisecond(1_700_000_000_000).unwrap();
        Room {
            room_id: RoomId::parse(&format!("aaaa-aaaa-{n:04}")).unwrap(),
            user_id: UserId::parse("65f0a1b2c3d4e5f6a7b8c9d0").unwrap(),
            custom_room_id: None,
            disabled: false,
            created_at: at,
            updated_at: at,
            settings: Default::default(),
        }
    }

    fn invalidate(keys: &[&str]) -> PushInfo {
        PushInfo {
            kind: PushKind::Invalidate,
            data: vec![Value::Array(
                keys.iter()
                    .map(|k| Value::BulkString(k.as_bytes().to_vec()))
                    .collect(),
            )],
        }
    }

    #[test]
    fn a_fill_invalidated_in_flight_is_not_stored() {
        let cache = RoomCache::new(1 << 20);
        let ticket = cache.begin_fill("k");
        cache.apply(invalidate(&["k"]));
        cache.finish_fill(ticket, Some((room(1), 7)));
        assert!(!cache.holds("k"));

        let ticket = cache.begin_fill("k");
        cache.apply(invalidate(&["other"]));
        cache.finish_fill(ticket, Some((room(1), 7)));
        assert_eq!(cache.get("k", 7), Some(room(1)));
        assert_eq!(cache.get("k", 8), None, "another connection's entry");
        assert!(!cache.holds("k"));
    }

    #[test]
    fn a_newer_fill_wins_over_an_older_one() {
        let cache = RoomCache::new(1 << 20);
        let first = cache.begin_fill("k");
        let second = cache.begin_fill("k");
        cache.finish_fill(first, Some((room(1), 1)));
        assert!(!cache.holds("k"));
        cache.finish_fill(second, Some((room(2), 1)));
        assert_eq!(cache.get("k", 1), Some(room(2)));
    }

    #[test]
    fn flushes_and_disconnections_forget_everything() {
        let cache = RoomCache::new(1 << 20);
        for push in [
            PushInfo {
                kind: PushKind::Invalidate,
                data: vec![Value::Nil],
            },
            PushInfo {
                kind: PushKind::Disconnection,
                data: vec![],
            },
        ] {
            let ticket = cache.begin_fill("a");
            cache.finish_fill(ticket, Some((room(1), 1)));
            let pending = cache.begin_fill("b");
            cache.apply(push);
            cache.finish_fill(pending, Some((room(2), 1)));
            assert_eq!(cache.stats().entries, 0);
            assert_eq!(cache.stats().bytes, 0);
        }
    }

    #[test]
    fn a_default_room_is_estimated_at_about_600_bytes() {
        let key = "rs:{65f0a1b2c3d4e5f6a7b8c9d0}:room:aaaa-aaaa-0000";
        let bytes = entry_bytes(key, Some(&room(0)));
        assert!((400..=800).contains(&bytes), "{bytes}");
    }

    #[test]
    fn the_bound_holds_and_old_entries_go_first() {
        let one = entry_bytes("key-0000", Some(&room(0)));
        let cache = RoomCache::new(one * 10);
        for n in 0..100 {
            let key = format!("key-{n:04}");
            let ticket = cache.begin_fill(&key);
            cache.finish_fill(ticket, Some((room(n), 1)));
            if n == 50 {
                // Keep an old entry young.
                assert!(cache.get("key-0045", 1).is_some());
            }
            let stats = cache.stats();
            assert!(stats.bytes <= stats.max_bytes, "{stats:?}");
        }
        assert!(cache.holds("key-0099"));
        assert!(!cache.holds("key-0000"));
        assert!(cache.stats().entries <= 10);
    }

    #[tokio::test]
    async fn one_round_serves_every_waiter() {
        let cache = Arc::new(RoomCache::new(1 << 20));
        let sent = Arc::new(AtomicU64::new(0));
        let mut calls = Vec::new();
        for _ in 0..20 {
            let cache = cache.clone();
            let sent = sent.clone();
            calls.push(tokio::spawn(async move {
                let relay = cache.clone();
                cache
                    .barrier(Scope::Node, Duration::from_secs(5), |channel| async move {
                        sent.fetch_add(1, Ordering::Relaxed);
                        tokio::time::sleep(Duration::from_millis(20)).await;
                        relay.apply(PushInfo {
                            kind: PushKind::Unsubscribe,
                            data: vec![Value::BulkString(channel.into_bytes()), Value::Int(0)],
                        });
                        Ok(42)
                    })
                    .await
            }));
        }
        for call in calls {
            assert_eq!(call.await.unwrap().unwrap(), 42);
        }
        let rounds = sent.load(Ordering::Relaxed);
        assert!((1..=3).contains(&rounds), "{rounds} rounds for 20 callers");
    }

    /// Calls end early (their client goes away, their deadline passes)
    /// while they lead a barrier round: neither a marker never sent nor one
    /// sent and never relayed may stay behind.
    #[tokio::test]
    async fn cancelled_barriers_leave_no_marker_behind() {
        let cache = RoomCache::new(1 << 20);
        for sent in [false, true] {
            let call = cache.barrier(Scope::Node, Duration::from_secs(60), |_| async move {
                if !sent {
                    std::future::pending::<()>().await;
                }
                Ok(1)
            });
            let cancelled = tokio::time::timeout(Duration::from_millis(20), call).await;
            assert!(cancelled.is_err(), "the barrier ended by itself");
            let left = cache
                .barriers
                .markers
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .len();
            assert_eq!(left, 0, "markers left behind (sent: {sent})");
        }
        // The cancelled leader's round is over: the next call leads its own.
        let relay = &cache;
        let result = cache
            .barrier(Scope::Node, Duration::from_secs(5), |channel| async move {
                relay.apply(PushInfo {
                    kind: PushKind::Unsubscribe,
                    data: vec![Value::BulkString(channel.into_bytes()), Value::Int(0)],
                });
                Ok(7)
            })
            .await;
        assert_eq!(result.unwrap(), 7);
    }

    #[tokio::test]
    async fn an_unrelayed_marker_fails_the_barrier_and_flushes() {
        let cache = RoomCache::new(1 << 20);
        let ticket = cache.begin_fill("a");
        cache.finish_fill(ticket, Some((room(1), 1)));
        let result = cache
            .barrier(Scope::Node, Duration::from_millis(50), |_| async { Ok(1) })
            .await;
        assert!(result.is_err());
        assert!(!cache.holds("a"));
    }
}
