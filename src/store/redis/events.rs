//! Events and webhook delivery state in Redis. The keys are in
//! `docs/redis-schema.md` ("Events and deliveries"):
//!
//! - the account's log is a stream in the account's slot (`P{U}:events`),
//!   appended by `XADD` or, for a session change, by `session_save.lua` in
//!   the same script as the session;
//! - the delivery state (`P{U}:deliveries`, `P{U}:dlog`, `P{U}:dead`) is
//!   written only by `delivery_update.lua`, which first checks the lease
//!   (`P{U}:dlease`), all in the account's slot;
//! - the hint index spans accounts: 16 sorted sets on slots of their own
//!   (`P{deliver-N}:hints`), kept with the deadline index's stamped protocol
//!   and scripts (`due_touch.lua`, `due_settle.lua`).

use std::time::Duration;

use async_trait::async_trait;
use jiff::Timestamp;
use redis::Value;

use super::{RedisStore, codec, within_deadline};
use crate::domain::{Event, EventId, NewEvent, UserId};
use crate::store::{
    DEAD_LETTERS, DeliveryHint, DeliveryRecord, DeliveryState, DeliveryUpdate, EventStore,
    RECENT_DELIVERIES, StoreError,
};

/// A count for `XRANGE ... COUNT` or an `LRANGE` stop, which Redis reads as
/// a signed 64-bit number.
fn redis_count(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

impl RedisStore {
    /// `LRANGE key 0 limit-1` of a list of JSON records.
    async fn read_records(
        &self,
        key: String,
        limit: usize,
    ) -> Result<Vec<DeliveryRecord>, StoreError> {
        if limit == 0 {
            // `LRANGE key 0 -1` would be the whole list.
            return Ok(Vec::new());
        }
        let mut connection = self.connection()?;
        let mut command = redis::cmd("LRANGE");
        command.arg(key).arg(0).arg(redis_count(limit) - 1);
        let raw: Vec<String> = within_deadline(command.query_async(&mut connection)).await?;
        raw.iter().map(|json| codec::decode_record(json)).collect()
    }
}

#[async_trait]
impl EventStore for RedisStore {
    async fn append_event(
        &self,
        user_id: &UserId,
        event: &NewEvent,
    ) -> Result<EventId, StoreError> {
        let mut connection = self.connection()?;
        let mut command = redis::cmd("XADD");
        command.arg(self.keys.events(user_id)).arg("*");
        // The last field, the replayed event, only when there is one.
        let fields = codec::EVENT_FIELDS.len() - usize::from(event.replay_of.is_none());
        for (name, value) in codec::EVENT_FIELDS
            .iter()
            .zip(codec::encode_event(event))
            .take(fields)
        {
            command.arg(*name).arg(value);
        }
        let id: String = within_deadline(command.query_async(&mut connection)).await?;
        codec::decode_event_id(&id, "XADD reply")
    }

    async fn read_events(
        &self,
        user_id: &UserId,
        after: Option<EventId>,
        limit: usize,
    ) -> Result<Vec<Event>, StoreError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let mut connection = self.connection()?;
        let start = match after {
            // Exclusive (Redis 6.2 and later).
            Some(after) => format!("({after}"),
            None => "-".to_owned(),
        };
        let mut command = redis::cmd("XRANGE");
        command
            .arg(self.keys.events(user_id))
            .arg(start)
            .arg("+")
            .arg("COUNT")
            .arg(redis_count(limit));
        let reply: Value = within_deadline(command.query_async(&mut connection)).await?;
        codec::decode_events(reply)
    }

    async fn newest_event_id(&self, user_id: &UserId) -> Result<Option<EventId>, StoreError> {
        let mut connection = self.connection()?;
        let mut command = redis::cmd("XREVRANGE");
        command
            .arg(self.keys.events(user_id))
            .arg("+")
            .arg("-")
            .arg("COUNT")
            .arg(1);
        let reply: Value = within_deadline(command.query_async(&mut connection)).await?;
        Ok(codec::decode_events(reply)?.first().map(|event| event.id))
    }

    async fn trimmed_before(&self, user_id: &UserId) -> Result<Option<EventId>, StoreError> {
        let mut connection = self.connection()?;
        let mut command = redis::cmd("HGET");
        command
            .arg(self.keys.deliveries(user_id))
            .arg(codec::TRIMMED_BEFORE);
        let raw: Option<String> = within_deadline(command.query_async(&mut connection)).await?;
        raw.map(|raw| codec::decode_event_id(&raw, "trimmed-before"))
            .transpose()
    }

    async fn hint_delivery(&self, user_id: &UserId, due: Timestamp) -> Result<(), StoreError> {
        let shard = self.keys.hint_shard_number(user_id);
        self.touch_entry(
            (self.keys.hint_shard(shard), self.keys.hint_stamps(shard)),
            user_id.as_str(),
            due.as_millisecond(),
        )
        .await
    }

    async fn due_hints(
        &self,
        now: Timestamp,
        limit: usize,
    ) -> Result<Vec<DeliveryHint>, StoreError> {
        let mut hints = self
            .read_shards(
                codec::HINT_SHARDS,
                |shard| (self.keys.hint_shard(shard), self.keys.hint_stamps(shard)),
                now,
                limit,
                codec::decode_hint,
            )
            .await?;
        hints.sort_by_key(|hint| hint.due);
        Ok(hints)
    }

    async fn settle_hint(
        &self,
        hint: &DeliveryHint,
        next: Option<Timestamp>,
    ) -> Result<(), StoreError> {
        let shard = self.keys.hint_shard_number(&hint.user_id);
        self.settle_entry(
            (self.keys.hint_shard(shard), self.keys.hint_stamps(shard)),
            hint.user_id.as_str(),
            &hint.entry,
            next,
        )
        .await
    }

    async fn lease_deliveries(
        &self,
        user_id: &UserId,
        holder: &str,
        ttl: Duration,
    ) -> Result<bool, StoreError> {
        // PX takes whole milliseconds, at least one.
        let ttl_ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1);
        let mut invocation = self.scripts.delivery_lease.prepare_invoke();
        invocation
            .key(self.keys.delivery_lease(user_id))
            .arg(holder)
            .arg(ttl_ms.min(i64::MAX as u64));
        decode_flag(self.invoke(&invocation).await?, "lease reply")
    }

    async fn release_deliveries(&self, user_id: &UserId, holder: &str) -> Result<(), StoreError> {
        let mut invocation = self.scripts.delivery_release.prepare_invoke();
        invocation
            .key(self.keys.delivery_lease(user_id))
            .arg(holder);
        self.invoke(&invocation).await?;
        Ok(())
    }

    async fn delivery_state(&self, user_id: &UserId) -> Result<DeliveryState, StoreError> {
        let mut connection = self.connection()?;
        let mut command = redis::cmd("HGETALL");
        command.arg(self.keys.deliveries(user_id));
        let reply: Value = within_deadline(command.query_async(&mut connection)).await?;
        codec::decode_delivery_state(reply)
    }

    async fn update_deliveries(
        &self,
        user_id: &UserId,
        holder: &str,
        update: &DeliveryUpdate,
    ) -> Result<bool, StoreError> {
        let id = |id: Option<EventId>| id.map(|id| id.to_string()).unwrap_or_default();
        let mut invocation = self.scripts.delivery_update.prepare_invoke();
        invocation
            .key(self.keys.delivery_lease(user_id))
            .key(self.keys.deliveries(user_id))
            .key(self.keys.delivery_log(user_id))
            .key(self.keys.dead_letters(user_id))
            .key(self.keys.events(user_id))
            .arg(holder)
            .arg(id(update.assigned))
            .arg(id(update.trim_before))
            .arg(RECENT_DELIVERIES)
            .arg(DEAD_LETTERS)
            .arg(update.rooms.len());
        for (room_id, queue) in &update.rooms {
            let queue = match queue {
                Some(queue) => codec::encode_queue(queue)?,
                None => String::new(),
            };
            invocation.arg(room_id.as_str()).arg(queue);
        }
        for records in [&update.records, &update.dead] {
            invocation.arg(records.len());
            for record in records {
                invocation.arg(codec::encode_record(record)?);
            }
        }
        decode_flag(self.invoke(&invocation).await?, "delivery update reply")
    }

    async fn recent_deliveries(
        &self,
        user_id: &UserId,
        limit: usize,
    ) -> Result<Vec<DeliveryRecord>, StoreError> {
        self.read_records(self.keys.delivery_log(user_id), limit)
            .await
    }

    async fn dead_letters(
        &self,
        user_id: &UserId,
        limit: usize,
    ) -> Result<Vec<DeliveryRecord>, StoreError> {
        self.read_records(self.keys.dead_letters(user_id), limit)
            .await
    }

    async fn take_dead_letter(
        &self,
        user_id: &UserId,
        event_id: &str,
    ) -> Result<Option<DeliveryRecord>, StoreError> {
        let mut invocation = self.scripts.dead_take.prepare_invoke();
        invocation
            .key(self.keys.dead_letters(user_id))
            .arg(event_id);
        match self.invoke(&invocation).await? {
            Value::Nil => Ok(None),
            reply => {
                let json: String = redis::from_redis_value(reply).map_err(|e| {
                    StoreError::Corrupt(format!("dead letter reply is not text: {e}"))
                })?;
                codec::decode_record(&json).map(Some)
            }
        }
    }

    async fn signing_key(&self, candidate: &str) -> Result<String, StoreError> {
        let mut invocation = self.scripts.signing_key.prepare_invoke();
        invocation.key(self.keys.signing_key()).arg(candidate);
        let reply = self.invoke(&invocation).await?;
        redis::from_redis_value(reply)
            .map_err(|e| StoreError::Corrupt(format!("signing key is not text: {e}")))
    }
}

/// A script's 1 or 0.
fn decode_flag(reply: Value, what: &str) -> Result<bool, StoreError> {
    match reply {
        Value::Int(1) => Ok(true),
        Value::Int(0) => Ok(false),
        other => Err(StoreError::Corrupt(format!("{what}: {other:?}"))),
    }
}
