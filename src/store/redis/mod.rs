//! Rooms in Redis, on one node or a Redis Cluster. The key layout, the room
//! hash's fields and the scripts are described in `docs/redis-schema.md`.
//!
//! Every operation is one round trip: a Lua script does the reads and writes
//! of one account atomically, on the slot that account's `{userId}` hash tag
//! picks. All requests share one multiplexed connection, cloned per call.
//! It speaks RESP3: GetRoom by roomId is served from an in-process cache that
//! Redis keeps true with invalidation pushes on it (see [`cache`]).
//!
//! A Redis that may evict keys is refused (see [`eviction`]) unless
//! [`RedisConfig::allow_evicting`] says otherwise.

mod cache;
mod codec;
mod events;
mod eviction;

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use jiff::Timestamp;
use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{
    MultipleNodeRoutingInfo, Route, RoutingInfo, SingleNodeRoutingInfo, Slot, SlotAddr,
};
use redis::{
    Cmd, ErrorKind, Pipeline, ProtocolVersion, RedisError, RedisFuture, RedisResult, Script,
    ScriptInvocation, ServerErrorKind, Value,
};
use tokio::task::AbortHandle;

pub use self::cache::{DEFAULT_ROOM_CACHE_BYTES, RoomCacheStats};
use self::cache::{PushHandler, RoomCache, Scope};
use self::codec::Keys;
use self::eviction::{EvictionGuard, NodePolicy};
use super::{
    CreateOutcome, DueSession, IdempotencyKey, RoomKey, SaveOutcome, SaveSession, SessionFilter,
    SessionStatus, SessionStore, Store, StoreError, Versioned,
};
use crate::domain::{Room, RoomId, Session, SessionId, UserId};

/// The longest a store call may take, including reconnects and cluster
/// redirects, so that a stopped or hung Redis fails a request within a second.
const OPERATION_TIMEOUT: Duration = Duration::from_millis(900);
/// Per TCP connect and per reply; below [`OPERATION_TIMEOUT`] so the client's
/// own error, which says more than ours, usually wins.
const CONNECT_TIMEOUT: Duration = Duration::from_millis(500);
const RESPONSE_TIMEOUT: Duration = Duration::from_millis(500);
/// Reconnect attempts after a connection is lost. Few and close together so a
/// restarted Redis is used again within about two seconds; once they are
/// spent, the next request starts another round.
const RECONNECT_RETRIES: usize = 3;
const RECONNECT_MIN_DELAY: Duration = Duration::from_millis(50);
const RECONNECT_MAX_DELAY: Duration = Duration::from_millis(400);
/// Backoff of the first connection, which happens in the background.
const FIRST_CONNECT_MIN_DELAY: Duration = Duration::from_millis(100);
const FIRST_CONNECT_MAX_DELAY: Duration = Duration::from_secs(5);
/// Bounds one first-connection attempt, should a node accept TCP and never answer.
const FIRST_CONNECT_ATTEMPT_TIMEOUT: Duration = Duration::from_secs(5);

/// Where the rooms live.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RedisConfig {
    /// One `redis://` or `rediss://` URL, or with `cluster` the seed nodes.
    pub urls: Vec<String>,
    /// Talk the Redis Cluster protocol and follow slot redirects.
    pub cluster: bool,
    /// Prepended to every key, so several deployments can share one Redis.
    pub prefix: String,
    /// Serve even when Redis may evict keys (`maxmemory-policy` other than
    /// `noeviction`). Dangerous: evicted rooms vanish and indexes break.
    pub allow_evicting: bool,
    /// Bound, in estimated bytes, of the in-process cache GetRoom by roomId
    /// is served from (see `cache.rs`); 0 turns the cache off.
    pub room_cache_bytes: usize,
}

impl RedisConfig {
    pub const DEFAULT_PREFIX: &'static str = "rs:";
}

impl Default for RedisConfig {
    fn default() -> RedisConfig {
        RedisConfig {
            urls: Vec::new(),
            cluster: false,
            prefix: RedisConfig::DEFAULT_PREFIX.to_owned(),
            allow_evicting: false,
            room_cache_bytes: DEFAULT_ROOM_CACHE_BYTES,
        }
    }
}

pub struct RedisStore {
    keys: Keys,
    scripts: Scripts,
    link: Arc<Link>,
    /// Refuses every call while Redis may evict rooms. Updated by the connect
    /// task before the connection is published, then by every ping.
    eviction: Arc<EvictionGuard>,
    /// Writes Redis refused with OOM (`maxmemory` reached under
    /// `noeviction`) since the store was made.
    oom_refusals: AtomicU64,
    /// The background task making the first connection; stopped when the
    /// store is dropped so a store that never connected leaves nothing behind.
    connect_task: AbortHandle,
    /// Rooms read by roomId, kept true by invalidation pushes; `None` when
    /// `room_cache_bytes` is 0. Shared with the connection's push handler.
    cache: Option<Arc<RoomCache>>,
}

/// The connection, once there is one. Shared by the store and its connect task.
struct Link {
    /// Set once by the connect task. Both connection kinds reconnect by
    /// themselves afterwards, so it is never replaced.
    connection: OnceLock<Connection>,
    /// Why the connect task has not succeeded yet, for the error callers see
    /// meanwhile. Only touched before `connection` is set.
    last_error: Mutex<String>,
}

/// The scripts, hashed once: calls send EVALSHA and load the script only when
/// a node answers NOSCRIPT.
struct Scripts {
    create: Script,
    get: Script,
    list: Script,
    set_disabled: Script,
    session_save: Script,
    session_latest: Script,
    session_list: Script,
    due_touch: Script,
    due_settle: Script,
    delivery_lease: Script,
    delivery_release: Script,
    delivery_update: Script,
    dead_take: Script,
    signing_key: Script,
}

impl RedisStore {
    /// Returns at once and connects in the background, retrying with
    /// exponential backoff; until then every call fails with
    /// [`StoreError::Unavailable`], so the server can start, and report
    /// NOT_SERVING, while Redis is down. Must be called within a Tokio runtime.
    pub fn new(config: RedisConfig) -> RedisStore {
        let link = Arc::new(Link {
            connection: OnceLock::new(),
            last_error: Mutex::new("first attempt in progress".to_owned()),
        });
        let keys = Keys::new(config.prefix.clone());
        let eviction = Arc::new(EvictionGuard::new(config.allow_evicting));
        let cache = (config.room_cache_bytes > 0)
            .then(|| Arc::new(RoomCache::new(config.room_cache_bytes)));
        let connect_task = tokio::spawn(connect(
            config,
            link.clone(),
            eviction.clone(),
            cache.clone(),
        ))
        .abort_handle();
        RedisStore {
            keys,
            scripts: Scripts {
                create: Script::new(include_str!("scripts/create.lua")),
                get: Script::new(include_str!("scripts/get.lua")),
                list: Script::new(include_str!("scripts/list.lua")),
                set_disabled: Script::new(include_str!("scripts/set_disabled.lua")),
                session_save: Script::new(include_str!("scripts/session_save.lua")),
                session_latest: Script::new(include_str!("scripts/session_latest.lua")),
                session_list: Script::new(include_str!("scripts/session_list.lua")),
                due_touch: Script::new(include_str!("scripts/due_touch.lua")),
                due_settle: Script::new(include_str!("scripts/due_settle.lua")),
                delivery_lease: Script::new(include_str!("scripts/delivery_lease.lua")),
                delivery_release: Script::new(include_str!("scripts/delivery_release.lua")),
                delivery_update: Script::new(include_str!("scripts/delivery_update.lua")),
                dead_take: Script::new(include_str!("scripts/dead_take.lua")),
                signing_key: Script::new(include_str!("scripts/signing_key.lua")),
            },
            link,
            eviction,
            oom_refusals: AtomicU64::new(0),
            connect_task,
            cache,
        }
    }

    /// The room cache's counters; `None` when the cache is off.
    pub fn room_cache_stats(&self) -> Option<RoomCacheStats> {
        self.cache.as_ref().map(|cache| cache.stats())
    }

    /// How many writes Redis has refused for want of memory (`OOM`: used
    /// memory at `maxmemory` under `noeviction`) since the store was made.
    /// Each such call failed with [`StoreError::Unavailable`], having written
    /// nothing.
    pub fn oom_refusals(&self) -> u64 {
        self.oom_refusals.load(Ordering::Relaxed)
    }

    /// The connection for a store call: none while not connected, or while
    /// Redis may evict rooms. Costs an atomic load, no round trip.
    fn connection(&self) -> Result<Connection, StoreError> {
        let connection = self.linked()?;
        self.eviction.check()?;
        Ok(connection)
    }

    /// The connection, whatever Redis's eviction policy: for the ping that
    /// reads it.
    fn linked(&self) -> Result<Connection, StoreError> {
        if let Some(connection) = self.link.connection.get() {
            return Ok(connection.clone());
        }
        let last_error = self
            .link
            .last_error
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        Err(StoreError::Unavailable(format!(
            "not connected to redis yet: {last_error}"
        )))
    }

    /// Lowers `session`'s deadline-index entry to `due` and stamps it
    /// (`due_touch.lua`), so that a sweeper that read it earlier can no
    /// longer settle it.
    async fn touch_due(&self, session: &Session, due: i64) -> Result<(), StoreError> {
        let shard = self.keys.due_shard_number(&session.id);
        self.touch_entry(
            (self.keys.due_shard(shard), self.keys.due_stamps(shard)),
            &codec::due_member(&session.user_id, &session.id),
            due,
        )
        .await
    }

    /// `due_touch.lua` on an entry of a sharded index (deadlines, hints).
    async fn touch_entry(
        &self,
        (index, stamps): (String, String),
        member: &str,
        at_ms: i64,
    ) -> Result<(), StoreError> {
        let mut invocation = self.scripts.due_touch.prepare_invoke();
        invocation.key(index).key(stamps).arg(member).arg(at_ms);
        self.invoke(&invocation).await?;
        Ok(())
    }

    /// `due_settle.lua` on an entry of a sharded index, as read (`entry`).
    async fn settle_entry(
        &self,
        (index, stamps): (String, String),
        member: &str,
        entry: &str,
        next: Option<Timestamp>,
    ) -> Result<(), StoreError> {
        let (score, stamp) = codec::split_due_entry(entry);
        let mut invocation = self.scripts.due_settle.prepare_invoke();
        invocation
            .key(index)
            .key(stamps)
            .arg(member)
            .arg(score)
            .arg(stamp)
            .arg(
                next.map(|t| t.as_millisecond().to_string())
                    .unwrap_or_default(),
            );
        self.invoke(&invocation).await?;
        Ok(())
    }

    /// `get.lua` for a cache miss, tracked: `CLIENT TRACKING ON OPTIN`,
    /// `CLIENT ID`, `CLIENT CACHING YES` and the EVALSHA in one pipeline, so
    /// the read is tracked on the very connection (Cluster: the node owning
    /// the slot of the room's key) that ran it, whether or not it was
    /// reconnected since. Returns that connection's client id and the
    /// script's reply. One round trip, or three the first time a node sees
    /// the script (NOSCRIPT, SCRIPT LOAD, again).
    ///
    /// `None` when the slot is being resharded: the read was redirected
    /// (`ASK`, `MOVED` or `TRYAGAIN` came back, the client library having
    /// followed what it could), so it cannot be known to be tracked on the
    /// connection whose client id came back. The caller reads untracked.
    async fn tracked_lookup(&self, lookup: &Lookup) -> Result<Option<(i64, Value)>, StoreError> {
        let room_key = &lookup.keys[0];
        let mut pipeline = redis::pipe();
        pipeline
            .cmd("CLIENT")
            .arg("TRACKING")
            .arg("ON")
            .arg("OPTIN")
            .cmd("CLIENT")
            .arg("ID")
            // Applies to the next command only, which must be the read.
            .cmd("CLIENT")
            .arg("CACHING")
            .arg("YES")
            .add_command(lookup.evalsha(&self.scripts.get));
        let mut connection = self.connection()?;
        let route = Route::with_key(room_key.as_bytes(), SlotAddr::Master);
        let mut loaded = false;
        loop {
            let sent = within_deadline(async {
                match send_pipeline(&mut connection, &pipeline, route).await {
                    Err(error) if is_redirect(error.kind()) => Ok(None),
                    sent => sent.map(Some),
                }
            })
            .await?;
            let Some(replies) = sent else {
                return Ok(None);
            };
            let [tracking, client_id, caching, reply] =
                <[Value; 4]>::try_from(replies).map_err(|r| {
                    StoreError::Corrupt(format!("tracked lookup: {} replies, not 4", r.len()))
                })?;
            let redirected = |reply: &&Value| match reply {
                Value::ServerError(error) => error
                    .kind()
                    .is_some_and(|kind| is_redirect(ErrorKind::Server(kind))),
                _ => false,
            };
            if [&tracking, &client_id, &caching, &reply]
                .iter()
                .any(redirected)
            {
                return Ok(None);
            }
            for setup in [tracking, caching] {
                server_error(setup)?;
            }
            let client_id = match server_error(client_id)? {
                Value::Int(id) => id,
                other => {
                    return Err(StoreError::Corrupt(format!("CLIENT ID answered {other:?}")));
                }
            };
            match reply {
                Value::ServerError(error)
                    if !loaded && error.kind() == Some(ServerErrorKind::NoScript) =>
                {
                    // Loaded on every primary (cluster) or the one node.
                    let invocation = lookup.invocation(&self.scripts.get);
                    within_deadline(invocation.load_async(&mut connection)).await?;
                    loaded = true;
                }
                reply => return Ok(Some((client_id, server_error(reply)?))),
            }
        }
    }

    /// `get.lua` as a plain script call: one round trip, and redirects are
    /// followed by the client library.
    async fn untracked_lookup(
        &self,
        user_id: &UserId,
        lookup: &Lookup,
    ) -> Result<Vec<Option<Room>>, StoreError> {
        let invocation = lookup.invocation(&self.scripts.get);
        codec::decode_lookup(user_id, self.invoke(&invocation).await?)
    }

    /// A barrier for the room cache on the connection that serves
    /// `room_key` (see `cache.rs`): returns that connection's client id once
    /// every invalidation Redis sent it before the barrier has been applied.
    async fn barrier(&self, cache: &RoomCache, room_key: &str) -> Result<i64, StoreError> {
        let mut connection = self.connection()?;
        let scope = match &connection {
            Connection::Node(_) => Scope::Node,
            Connection::Cluster(_) => Scope::Slot(Slot::for_key(room_key.as_bytes())),
        };
        cache
            .barrier(scope, OPERATION_TIMEOUT, |channel| async move {
                // Only the round's leader sends, so only it needs the route.
                let route = Route::with_key(room_key.as_bytes(), SlotAddr::Master);
                let mut pipeline = redis::pipe();
                pipeline
                    .cmd("CLIENT")
                    .arg("ID")
                    .cmd("UNSUBSCRIBE")
                    .arg(channel);
                let replies =
                    within_deadline(send_pipeline(&mut connection, &pipeline, route)).await?;
                match replies.as_slice() {
                    [Value::Int(client_id), Value::Push { .. }] => Ok(*client_id),
                    other => Err(StoreError::Unavailable(format!(
                        "redis cache barrier: unexpected replies {other:?}"
                    ))),
                }
            })
            .await
    }

    async fn invoke(&self, invocation: &ScriptInvocation<'_>) -> Result<Value, StoreError> {
        let mut connection = self.connection()?;
        let call = async {
            let reply = invocation.invoke_async(&mut connection).await;
            if let Err(error) = &reply
                && is_out_of_memory(error)
            {
                self.oom_refusals.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(%error, "redis refused a write: out of memory (maxmemory)");
            }
            reply
        };
        within_deadline(call).await
    }
}

#[async_trait]
impl SessionStore for RedisStore {
    async fn latest_session(
        &self,
        user_id: &UserId,
        room_id: &RoomId,
    ) -> Result<Option<Versioned<Session>>, StoreError> {
        let mut invocation = self.scripts.session_latest.prepare_invoke();
        invocation
            .key(self.keys.room_sessions(user_id, room_id))
            .arg(self.keys.account(user_id));
        let reply = self.invoke(&invocation).await?;
        codec::decode_session_entry(user_id, reply)
    }

    async fn get_session(
        &self,
        user_id: &UserId,
        session_id: &SessionId,
    ) -> Result<Option<Versioned<Session>>, StoreError> {
        let mut connection = self.connection()?;
        let mut command = redis::cmd("HMGET");
        command
            .arg(self.keys.session(user_id, session_id))
            .arg("j")
            .arg("v");
        let reply: Vec<Value> = within_deadline(command.query_async(&mut connection)).await?;
        let [json, version] = <[Value; 2]>::try_from(reply)
            .map_err(|_| StoreError::Corrupt("HMGET answered the wrong count".into()))?;
        if json == Value::Nil {
            return Ok(None);
        }
        codec::decode_session(user_id, session_id.as_str(), json, version).map(Some)
    }

    async fn save_session(&self, save: SaveSession<'_>) -> Result<SaveOutcome, StoreError> {
        let session = save.session;
        let user_id = &session.user_id;
        let due = session.due().0.as_millisecond();
        if session.is_ongoing() {
            // The deadline index is on another slot: lower its entry first
            // (LT never raises it), so that a crash after the save leaves an
            // entry that is early, never late.
            let mut connection = self.connection()?;
            let mut lower = redis::cmd("ZADD");
            lower
                .arg(self.keys.due_shard(self.keys.due_shard_number(&session.id)))
                .arg("LT")
                .arg(due)
                .arg(codec::due_member(user_id, &session.id));
            within_deadline(lower.query_async::<Value>(&mut connection)).await?;
        }
        let json = serde_json::to_string(session)
            .map_err(|e| StoreError::Corrupt(format!("cannot encode session: {e}")))?;
        let flag = |b: bool| if b { "1" } else { "0" };
        let mut invocation = self.scripts.session_save.prepare_invoke();
        invocation
            .key(self.keys.session(user_id, &session.id))
            .key(self.keys.room(user_id, &session.room_id))
            .key(self.keys.sessions(user_id, None))
            .key(self.keys.sessions(user_id, Some(SessionStatus::Ongoing)))
            .key(self.keys.sessions(user_id, Some(SessionStatus::Ended)))
            .key(self.keys.room_sessions(user_id, &session.room_id))
            .key(self.keys.live(user_id, &session.room_id))
            .key(self.keys.events(user_id))
            .arg(session.id.as_str())
            .arg(
                save.expected_version
                    .map(|v| v.to_string())
                    .unwrap_or_default(),
            )
            .arg(
                save.expected_latest
                    .map(|id| id.as_str())
                    .unwrap_or_default(),
            )
            .arg(json)
            .arg(session.start.as_millisecond())
            .arg(if session.is_ongoing() { "o" } else { "e" })
            .arg(due)
            .arg(flag(save.require_room_enabled))
            .arg(flag(save.disable_room))
            .arg(save.now.as_millisecond())
            .arg(save.events.len());
        for event in save.events {
            for value in codec::encode_event(event) {
                invocation.arg(value);
            }
        }
        let reply = self.invoke(&invocation).await?;
        let outcome = codec::decode_save(reply)?;
        if session.is_ongoing() && matches!(outcome, SaveOutcome::Saved { .. }) {
            // And again after, with a new stamp: a sweeper that read the
            // entry and the session before this save would otherwise settle
            // the entry with the old session's due time, later than this
            // one's (even when the lowering above changed nothing). The
            // stamp makes that settle a no-op, or this lowers what it raised.
            if let Err(error) = self.touch_due(session, due).await {
                // The session is saved; the entry was lowered before, which
                // is what a crash here would leave too.
                tracing::warn!(
                    %error,
                    session_id = %session.id,
                    "cannot re-stamp a deadline entry after saving"
                );
            }
        }
        Ok(outcome)
    }

    async fn list_sessions(
        &self,
        user_id: &UserId,
        filter: &SessionFilter,
        offset: usize,
        limit: usize,
    ) -> Result<(Vec<Session>, usize), StoreError> {
        let (key, status) = match (&filter.room_id, filter.status) {
            (Some(room_id), status) => (self.keys.room_sessions(user_id, room_id), status),
            (None, status) => (self.keys.sessions(user_id, status), None),
        };
        let status = match status {
            None => "",
            Some(SessionStatus::Ongoing) => "o",
            Some(SessionStatus::Ended) => "e",
        };
        let mut invocation = self.scripts.session_list.prepare_invoke();
        invocation
            .key(key)
            .arg(offset)
            .arg(limit.max(1))
            .arg(status)
            .arg(self.keys.account(user_id));
        let reply = self.invoke(&invocation).await?;
        let (sessions, total) = codec::decode_session_page(user_id, reply)?;
        let sessions = if limit == 0 { Vec::new() } else { sessions };
        Ok((sessions, total))
    }

    async fn due_sessions(
        &self,
        now: Timestamp,
        limit: usize,
    ) -> Result<Vec<DueSession>, StoreError> {
        let mut due = self
            .read_shards(
                codec::DUE_SHARDS,
                |shard| (self.keys.due_shard(shard), self.keys.due_stamps(shard)),
                now,
                limit,
                codec::decode_due,
            )
            .await?;
        due.sort_by_key(|d| d.due);
        Ok(due)
    }

    async fn settle_due(
        &self,
        due: &DueSession,
        next: Option<Timestamp>,
    ) -> Result<(), StoreError> {
        let shard = self.keys.due_shard_number(&due.session_id);
        self.settle_entry(
            (self.keys.due_shard(shard), self.keys.due_stamps(shard)),
            &codec::due_member(&due.user_id, &due.session_id),
            &due.entry,
            next,
        )
        .await
    }
}

impl Drop for RedisStore {
    fn drop(&mut self) {
        self.connect_task.abort();
    }
}

#[async_trait]
impl Store for RedisStore {
    async fn create_room_once(
        &self,
        room: &Room,
        max_rooms: u64,
        key: Option<&IdempotencyKey>,
    ) -> Result<CreateOutcome, StoreError> {
        let fields = codec::encode_room(room)?;
        let custom_room_id = room.custom_room_id.as_ref().map_or("", |c| c.as_str());
        let mut invocation = self.scripts.create.prepare_invoke();
        invocation
            .key(self.keys.room(&room.user_id, &room.room_id))
            .key(self.keys.custom_ids(&room.user_id))
            .key(self.keys.listing(&room.user_id))
            // Named even without a key: a script's keys are fixed in number.
            .key(
                self.keys
                    .idempotency(&room.user_id, key.map_or("none", |k| k.key_hash.as_str())),
            )
            .arg(room.room_id.as_str())
            .arg(custom_room_id)
            .arg(room.created_at.as_millisecond())
            .arg(max_rooms)
            .arg(key.map_or("", |k| k.fingerprint.as_str()))
            .arg(key.map_or(0, |k| k.ttl.as_millis().max(1) as u64));
        for (name, value) in &fields {
            invocation.arg(*name).arg(value);
        }
        let reply = self.invoke(&invocation).await?;
        codec::decode_create(room, reply)
    }

    async fn get_room(&self, user_id: &UserId, key: &RoomKey) -> Result<Option<Room>, StoreError> {
        let mut readings: Vec<(Reading, RoomId)> = Vec::new();
        if let Some(room_id) = &key.room_id {
            readings.push((Reading::Direct, room_id.clone()));
        }
        if let Some(room_id) = key.document_id.as_ref().and_then(|d| d.room_id()) {
            readings.push((Reading::Document, room_id));
        }
        if readings.is_empty() && key.custom_room_id.is_none() {
            return Ok(None);
        }
        // Only lookups by roomId are cached: the roomId reading comes first,
        // so a room it finds is the answer whatever the other readings hold.
        // A hit needs nothing but the barrier.
        if let (Some(cache), Some(room_id)) = (&self.cache, &key.room_id) {
            let room_key = self.keys.room(user_id, room_id);
            if cache.holds(&room_key) {
                let client_id = self.barrier(cache, &room_key).await?;
                if let Some(room) = cache.get(&room_key, client_id) {
                    return Ok(Some(room));
                }
            }
        }
        let lookup = Lookup {
            keys: readings
                .iter()
                .map(|(_, room_id)| self.keys.room(user_id, room_id))
                .chain([self.keys.custom_ids(user_id)])
                .collect(),
            args: readings
                .iter()
                .map(|(_, room_id)| room_id.as_str().to_owned())
                .chain([key
                    .custom_room_id
                    .as_ref()
                    .map_or(String::new(), |c| c.to_string())])
                .collect(),
        };

        let found = match (&self.cache, &key.room_id) {
            (Some(cache), Some(_)) => {
                // A miss (or an entry from a lost connection): read and fill.
                let room_key = &lookup.keys[0];
                let ticket = cache.begin_fill(room_key);
                let tracked = self.tracked_lookup(&lookup).await.and_then(|tracked| {
                    tracked
                        .map(|(client_id, reply)| {
                            Ok((client_id, codec::decode_lookup(user_id, reply)?))
                        })
                        .transpose()
                });
                match tracked {
                    Ok(Some((client_id, found))) => {
                        let direct = found.first().cloned().flatten();
                        cache.finish_fill(ticket, direct.map(|room| (room, client_id)));
                        found
                    }
                    // Resharding: read untracked, and cache nothing.
                    Ok(None) => {
                        cache.finish_fill(ticket, None);
                        self.untracked_lookup(user_id, &lookup).await?
                    }
                    Err(error) => {
                        cache.finish_fill(ticket, None);
                        return Err(error);
                    }
                }
            }
            _ => self.untracked_lookup(user_id, &lookup).await?,
        };

        let kinds: Vec<Reading> = readings
            .iter()
            .map(|(kind, _)| *kind)
            .chain([Reading::Custom])
            .collect();
        if found.len() != kinds.len() {
            return Err(StoreError::Corrupt(format!(
                "lookup returned {} readings, expected {}",
                found.len(),
                kinds.len()
            )));
        }
        let first_fit = kinds.into_iter().zip(found).find_map(|(kind, room)| {
            let room = room?;
            // A document id carries only the roomId's number and the creation
            // second; the second must agree or the id names no room.
            let fits = kind != Reading::Document || key.matches_document(&room);
            fits.then_some(room)
        });
        Ok(first_fit)
    }

    async fn list_rooms(
        &self,
        user_id: &UserId,
        offset: usize,
        limit: usize,
    ) -> Result<(Vec<Room>, usize), StoreError> {
        let (first, last) = rank_range(offset, limit);
        let mut invocation = self.scripts.list.prepare_invoke();
        invocation
            .key(self.keys.listing(user_id))
            .arg(first)
            .arg(last);
        let reply = self.invoke(&invocation).await?;
        codec::decode_page(user_id, reply)
    }

    async fn set_disabled(
        &self,
        user_id: &UserId,
        room_id: &RoomId,
        disabled: bool,
        now: Timestamp,
    ) -> Result<Option<Room>, StoreError> {
        let mut invocation = self.scripts.set_disabled.prepare_invoke();
        invocation
            .key(self.keys.room(user_id, room_id))
            .arg(if disabled { "1" } else { "0" })
            .arg(now.as_millisecond());
        let reply = self.invoke(&invocation).await?;
        codec::decode_optional_room(user_id, room_id, reply)
    }

    /// Whether Redis answers, and (on a cluster) is whole; and whether it may
    /// evict rooms, which also decides whether the other calls are refused.
    async fn ping(&self) -> Result<(), StoreError> {
        let connection = self.linked()?;
        let policies = match &connection {
            // An answer to INFO is as good a sign of life as one to PING.
            Connection::Node(_) => read_policies(&connection).await?,
            Connection::Cluster(cluster) => {
                let (_, policies) =
                    tokio::try_join!(check_cluster(cluster.clone()), read_policies(&connection))?;
                policies
            }
        };
        self.eviction.observe(&policies)
    }
}

impl RedisStore {
    /// Up to `limit` due entries of a sharded index (the deadline index,
    /// the delivery hints), decoded. One read per shard: each shard is on
    /// its own slot, hence possibly its own primary; sixteen small reads,
    /// and one more for the stamps of a shard with entries due. Shards are
    /// read from a random one on, and reading stops once `limit` entries are
    /// in hand: replicas looking at once then mostly work on different
    /// shards instead of racing for the same entries. No order is promised.
    async fn read_shards<T>(
        &self,
        shards: usize,
        keys: impl Fn(usize) -> (String, String),
        now: Timestamp,
        limit: usize,
        decode: impl Fn(&str, &str, &str) -> Result<T, StoreError>,
    ) -> Result<Vec<T>, StoreError> {
        let mut connection = self.connection()?;
        let now = now.as_millisecond();
        let mut due = Vec::new();
        let first: usize = rand::random_range(0..shards);
        for shard in (0..shards).map(|i| (first + i) % shards) {
            if due.len() >= limit {
                break;
            }
            let (index, stamps) = keys(shard);
            let entries =
                read_due_entries(&mut connection, index, stamps, now, limit - due.len()).await?;
            for (member, score, stamp) in entries {
                due.push(decode(&member, &score, &stamp)?);
            }
        }
        Ok(due)
    }
}

/// Up to `limit` entries of one shard of a stamped index (the deadline
/// index, the hint index) due at `now`: `(member, score, stamp)`, the score as
/// Redis formats it and the stamp `""` when there is none, as the settle
/// scripts compare them. Score and stamp are read apart: a writer in between
/// makes a pair that is either current or one that no longer settles, both
/// safe.
async fn read_due_entries(
    connection: &mut Connection,
    shard: String,
    stamps: String,
    now: i64,
    limit: usize,
) -> Result<Vec<(String, String, String)>, StoreError> {
    let mut command = redis::cmd("ZRANGEBYSCORE");
    command
        .arg(shard)
        .arg("-inf")
        .arg(now)
        .arg("WITHSCORES")
        .arg("LIMIT")
        .arg(0)
        .arg(limit);
    let entries: Vec<(String, String)> = within_deadline(command.query_async(connection)).await?;
    if entries.is_empty() {
        return Ok(Vec::new());
    }
    let mut read = redis::cmd("HMGET");
    read.arg(stamps);
    for (member, _) in &entries {
        read.arg(member);
    }
    let read: Vec<Option<String>> = within_deadline(read.query_async(connection)).await?;
    if read.len() != entries.len() {
        return Err(StoreError::Corrupt("HMGET answered the wrong count".into()));
    }
    Ok(entries
        .into_iter()
        .zip(read)
        .map(|((member, score), stamp)| (member, score, stamp.unwrap_or_default()))
        .collect())
}

/// `maxmemory_policy` of the node, or of every cluster primary, from
/// `INFO memory`.
async fn read_policies(connection: &Connection) -> Result<Vec<NodePolicy>, StoreError> {
    let mut info = redis::cmd("INFO");
    info.arg("memory");
    match connection.clone() {
        Connection::Node(mut node) => {
            let text: String = within_deadline(info.query_async(&mut node)).await?;
            Ok(vec![NodePolicy {
                node: None,
                policy: eviction::parse_policy(&text),
            }])
        }
        Connection::Cluster(mut cluster) => {
            let replies = within_deadline(cluster.route_command(info, every_primary())).await?;
            eviction::cluster_policies(replies)
        }
    }
}

/// Any reachable node answers PING, even while the slots of a dead primary
/// cannot be served. Ask every primary instead whether the cluster is whole.
async fn check_cluster(mut cluster: ClusterConnection) -> Result<(), StoreError> {
    let mut info = redis::cmd("CLUSTER");
    info.arg("INFO");
    let replies = within_deadline(cluster.route_command(info, every_primary())).await?;
    check_cluster_health(replies)
}

fn every_primary() -> RoutingInfo {
    RoutingInfo::MultiNode((MultipleNodeRoutingInfo::AllMasters, None))
}

/// Reads the `CLUSTER INFO` answers of every primary: all must answer, and
/// all must say `cluster_state:ok`.
fn check_cluster_health(replies: Value) -> Result<(), StoreError> {
    let Value::Map(replies) = replies else {
        return Err(StoreError::Unavailable(
            "redis cluster: unexpected CLUSTER INFO reply".into(),
        ));
    };
    if replies.is_empty() {
        return Err(StoreError::Unavailable(
            "redis cluster: no primary known".into(),
        ));
    }
    for (node, reply) in replies {
        let node: String = redis::from_redis_value(node).unwrap_or_else(|_| "a node".into());
        if let Value::ServerError(error) = &reply {
            return Err(StoreError::Unavailable(format!(
                "redis cluster node {node}: {error:?}"
            )));
        }
        let info: String = redis::from_redis_value(reply).map_err(|_| {
            StoreError::Unavailable(format!(
                "redis cluster node {node}: unreadable CLUSTER INFO"
            ))
        })?;
        if !info.lines().any(|line| line.trim() == "cluster_state:ok") {
            return Err(StoreError::Unavailable(format!(
                "redis cluster node {node} reports the cluster is not ok"
            )));
        }
    }
    Ok(())
}

/// How a [`RoomKey`] reading was derived, which decides whether a hit counts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Reading {
    /// The string is a roomId.
    Direct,
    /// The string is a document id carrying a roomId.
    Document,
    /// The string is a customRoomId.
    Custom,
}

/// The inclusive ZREVRANGE ranks of a page. Redis reads a negative rank from
/// the end, so an empty page must not become `0 -1`.
fn rank_range(offset: usize, limit: usize) -> (i64, i64) {
    if limit == 0 {
        return (1, 0);
    }
    let first = i64::try_from(offset).unwrap_or(i64::MAX);
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    (first, first.saturating_add(limit - 1))
}

/// The keys and arguments of a `get.lua` call, to send as EVALSHA inside a
/// pipeline or as a plain script invocation.
struct Lookup {
    keys: Vec<String>,
    args: Vec<String>,
}

impl Lookup {
    fn invocation<'a>(&self, script: &'a Script) -> ScriptInvocation<'a> {
        let mut invocation = script.prepare_invoke();
        for key in &self.keys {
            invocation.key(key);
        }
        for arg in &self.args {
            invocation.arg(arg);
        }
        invocation
    }

    fn evalsha(&self, script: &Script) -> Cmd {
        let mut command = redis::cmd("EVALSHA");
        command
            .arg(script.get_hash())
            .arg(self.keys.len())
            .arg(&self.keys)
            .arg(&self.args);
        command
    }
}

/// Sends a pipeline whose commands must all run on one connection: on a
/// cluster, the master of `route`'s slot. (redis-rs would route a pipeline by
/// its first keyed command anyway; the barrier has none, so say it.)
async fn send_pipeline(
    connection: &mut Connection,
    pipeline: &Pipeline,
    route: Route,
) -> RedisResult<Vec<Value>> {
    match connection {
        Connection::Node(node) => node.req_packed_commands(pipeline, 0, pipeline.len()).await,
        Connection::Cluster(cluster) => {
            cluster
                .route_pipeline(
                    pipeline.clone(),
                    0,
                    pipeline.len(),
                    SingleNodeRoutingInfo::SpecificNode(route),
                )
                .await
        }
    }
}

/// Whether Redis sent the command elsewhere: the slot is being resharded.
fn is_redirect(kind: ErrorKind) -> bool {
    use ServerErrorKind::{Ask, Moved, TryAgain};
    matches!(kind, ErrorKind::Server(Moved | Ask | TryAgain))
}

/// A pipeline reply, or the error it carries.
fn server_error(value: Value) -> Result<Value, StoreError> {
    match value {
        Value::ServerError(error) => Err(classify(RedisError::from(error))),
        value => Ok(value),
    }
}

async fn within_deadline<T>(work: impl Future<Output = RedisResult<T>>) -> Result<T, StoreError> {
    match tokio::time::timeout(OPERATION_TIMEOUT, work).await {
        Ok(result) => result.map_err(classify),
        Err(_) => Err(StoreError::Unavailable(format!(
            "redis did not answer in time ({} ms)",
            OPERATION_TIMEOUT.as_millis()
        ))),
    }
}

/// Whether Redis refused a write because used memory is at `maxmemory` and
/// the policy (`noeviction`) forbids making room. Redis 7 keeps the `OOM`
/// code when the refused write is a script's `redis.call`; older versions
/// wrap it in a script error, whose text still says so.
fn is_out_of_memory(error: &RedisError) -> bool {
    error.code() == Some("OOM")
        || error
            .to_string()
            .contains("command not allowed when used memory > 'maxmemory'")
}

/// Errors that say Redis cannot serve right now, and a retry may succeed,
/// become `Unavailable`; the rest (script errors, wrong types) mean the data or
/// this code is wrong, and become `Corrupt`.
fn classify(error: RedisError) -> StoreError {
    let transient = error.is_io_error()
        || error.is_timeout()
        || error.is_connection_dropped()
        || error.is_connection_refusal()
        || error.is_cluster_error()
        || matches!(
            error.kind(),
            ErrorKind::ClusterConnectionNotFound
                | ErrorKind::InvalidClientConfig
                | ErrorKind::AuthenticationFailed
                | ErrorKind::Server(
                    ServerErrorKind::BusyLoading
                        | ServerErrorKind::MasterDown
                        | ServerErrorKind::ReadOnly
                        | ServerErrorKind::TryAgain
                        | ServerErrorKind::ClusterDown
                        | ServerErrorKind::Moved
                        | ServerErrorKind::Ask
                )
        )
        // A long-running script elsewhere, or maxmemory: nothing was written.
        || matches!(error.code(), Some("BUSY"))
        || is_out_of_memory(&error)
        // While a slot migrates, a script that builds a sibling key's name
        // (see docs/redis-schema.md) can find that key already moved. The
        // script stopped before writing; retrying after the migration works.
        || error.to_string().contains("non local key");
    if transient {
        StoreError::Unavailable(format!("redis: {error}"))
    } else {
        StoreError::Corrupt(format!("redis: {error}"))
    }
}

/// Makes the first connection, retrying until it succeeds or the store is
/// dropped. The eviction policy is read before the connection is published,
/// so no call can run against a Redis that may evict rooms.
async fn connect(
    config: RedisConfig,
    link: Arc<Link>,
    eviction: Arc<EvictionGuard>,
    cache: Option<Arc<RoomCache>>,
) {
    let nodes: Vec<String> = config.urls.iter().map(|url| redacted(url)).collect();
    let mut delay = FIRST_CONNECT_MIN_DELAY;
    let mut attempt: u32 = 1;
    loop {
        let result =
            match tokio::time::timeout(FIRST_CONNECT_ATTEMPT_TIMEOUT, open(&config, cache.clone()))
                .await
            {
                Ok(result) => result.map_err(|e| e.to_string()),
                Err(_) => Err(format!(
                    "no answer within {} s",
                    FIRST_CONNECT_ATTEMPT_TIMEOUT.as_secs()
                )),
            };
        let result = match result {
            Ok(connection) => match read_policies(&connection).await {
                // A policy that may evict is not a failure to connect: the
                // guard refuses calls (and says why) until it changes.
                Ok(policies) => {
                    let _ = eviction.observe(&policies);
                    Ok(connection)
                }
                Err(error) => Err(format!("reading maxmemory-policy: {error}")),
            },
            Err(error) => Err(error),
        };
        match result {
            Ok(connection) => {
                // Only this task sets it, once. Set before logging, so that
                // whoever reads "connected" in the log finds the store usable.
                let _ = link.connection.set(connection);
                tracing::info!(
                    ?nodes,
                    cluster = config.cluster,
                    attempt,
                    "connected to redis"
                );
                return;
            }
            Err(error) => {
                tracing::warn!(
                    ?nodes,
                    cluster = config.cluster,
                    attempt,
                    retry_in_ms = delay.as_millis() as u64,
                    %error,
                    "cannot connect to redis"
                );
                *link
                    .last_error
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner) = error;
            }
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(FIRST_CONNECT_MAX_DELAY);
        attempt = attempt.saturating_add(1);
    }
}

/// Opens the store's connection: RESP3, so that the room cache's
/// invalidations arrive as push messages on it, handed to `cache`.
async fn open(config: &RedisConfig, cache: Option<Arc<RoomCache>>) -> RedisResult<Connection> {
    if config.cluster {
        let mut builder = ClusterClient::builder(config.urls.iter().map(String::as_str))
            .use_protocol(ProtocolVersion::RESP3);
        if let Some(cache) = cache {
            builder = builder.push_sender(PushHandler(cache));
        }
        let client = builder
            .connection_timeout(CONNECT_TIMEOUT)
            .response_timeout(RESPONSE_TIMEOUT)
            // Room for a redirect or a retry, still inside OPERATION_TIMEOUT.
            .overall_response_timeout(Some(OPERATION_TIMEOUT - Duration::from_millis(100)))
            .retries(RECONNECT_RETRIES as u32)
            .min_retry_wait(RECONNECT_MIN_DELAY.as_millis() as u64)
            .max_retry_wait(RECONNECT_MAX_DELAY.as_millis() as u64)
            .build()?;
        return Ok(Connection::Cluster(client.get_async_connection().await?));
    }
    let [url] = config.urls.as_slice() else {
        return Err(RedisError::from((
            ErrorKind::InvalidClientConfig,
            "a single redis node takes exactly one url",
            format!("got {}", config.urls.len()),
        )));
    };
    let info = redis::IntoConnectionInfo::into_connection_info(url.as_str())?;
    let settings = info
        .redis_settings()
        .clone()
        .set_protocol(ProtocolVersion::RESP3);
    let client = redis::Client::open(info.set_redis_settings(settings))?;
    let mut manager_config = ConnectionManagerConfig::new();
    if let Some(cache) = cache {
        manager_config = manager_config.set_push_sender(PushHandler(cache));
    }
    let manager_config = manager_config
        .set_connection_timeout(Some(CONNECT_TIMEOUT))
        .set_response_timeout(Some(RESPONSE_TIMEOUT))
        .set_number_of_retries(RECONNECT_RETRIES)
        .set_min_delay(RECONNECT_MIN_DELAY)
        .set_max_delay(RECONNECT_MAX_DELAY);
    let manager = ConnectionManager::new_with_config(client, manager_config).await?;
    Ok(Connection::Node(manager))
}

/// A URL fit for logs and messages: its password replaced by `***`.
pub fn redacted(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut parsed) if parsed.password().is_some() => {
            let _ = parsed.set_password(Some("***"));
            parsed.to_string()
        }
        Ok(_) => url.to_owned(),
        Err(_) => "<unparseable url>".to_owned(),
    }
}

/// One node or a cluster, behind the connection interface scripts run on.
/// Both kinds multiplex and reconnect internally; clones share the socket(s).
#[derive(Clone)]
enum Connection {
    Node(ConnectionManager),
    Cluster(ClusterConnection),
}

impl ConnectionLike for Connection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Connection::Node(c) => c.req_packed_command(cmd),
            Connection::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Connection::Node(c) => c.req_packed_commands(pipeline, offset, count),
            Connection::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Connection::Node(c) => c.get_db(),
            Connection::Cluster(c) => c.get_db(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_map_to_reverse_ranks() {
        assert_eq!(rank_range(0, 10), (0, 9));
        assert_eq!(rank_range(20, 1), (20, 20));
        assert_eq!(rank_range(0, 0), (1, 0));
        assert_eq!(rank_range(5, 0), (1, 0));
        assert_eq!(rank_range(usize::MAX, usize::MAX), (i64::MAX, i64::MAX));
        assert_eq!(rank_range(3, usize::MAX), (3, i64::MAX));
    }

    #[test]
    fn passwords_stay_out_of_logs() {
        assert_eq!(
            redacted("redis://user:secret@cache:6379/0"),
            "redis://user:***@cache:6379/0"
        );
        assert_eq!(redacted("redis://cache:6379"), "redis://cache:6379");
        assert_eq!(redacted("not a url"), "<unparseable url>");
    }

    #[tokio::test]
    async fn calls_fail_fast_until_connected() {
        let store = RedisStore::new(RedisConfig {
            urls: vec!["redis://127.0.0.1:1".to_owned()],
            ..RedisConfig::default()
        });
        let started = std::time::Instant::now();
        let error = store.ping().await.unwrap_err();
        assert!(started.elapsed() < Duration::from_millis(100));
        assert!(
            matches!(&error, StoreError::Unavailable(m) if m.starts_with("not connected to redis yet")),
            "{error:?}"
        );
    }
}
