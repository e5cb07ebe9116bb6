//! The stored form of rooms: key names, the room hash's fields, and the
//! decoding of script replies. docs/redis-schema.md describes the same layout;
//! change both together.
//!
//! Everything read back from Redis is treated as untrusted: a malformed reply
//! becomes [`StoreError::Corrupt`], never a panic.

use jiff::Timestamp;
use redis::Value;

use crate::domain::{
    CustomRoomId, Event, EventId, NewEvent, Room, RoomId, RoomSettings, Session, SessionId, UserId,
};
use crate::store::{
    CreateOutcome, DeliveryHint, DeliveryRecord, DeliveryState, DueSession, RoomDeliveries,
    SaveOutcome, SessionStatus, StoreError, Versioned,
};

/// Created-at, unix ms. Always present.
const CREATED_AT: &str = "t";
/// Updated-at, unix ms; absent while it equals created-at.
const UPDATED_AT: &str = "u";
/// The customRoomId; absent when the room has none.
const CUSTOM_ROOM_ID: &str = "c";
/// `"1"` when the room is disabled; absent otherwise.
const DISABLED: &str = "d";
/// [`RoomSettings`] as JSON; absent when every setting is unset.
const SETTINGS: &str = "s";

/// How many sorted sets the deadline index is spread over.
pub(super) const DUE_SHARDS: usize = 16;

/// How many sorted sets the hint index is spread over.
pub(super) const HINT_SHARDS: usize = DUE_SHARDS;

/// A shard of an index spread over `shards` sorted sets.
fn shard_of(name: &str, shards: usize) -> usize {
    let sum = name.bytes().fold(0usize, |acc, b| {
        acc.wrapping_mul(31).wrapping_add(usize::from(b))
    });
    sum % shards
}

/// The deadline index member of a session: `<userId>/<sessionId>`.
pub(super) fn due_member(user_id: &UserId, session_id: &SessionId) -> String {
    format!("{user_id}/{session_id}")
}

/// A deadline index member, its score and its stamp, as `ZRANGEBYSCORE ...
/// WITHSCORES` and `HMGET` of the shard's stamps give them (no stamp: "").
/// The entry keeps the score and the stamp as read, for `due_settle.lua` to
/// compare ([`split_due_entry`]).
pub(super) fn decode_due(member: &str, score: &str, stamp: &str) -> Result<DueSession, StoreError> {
    let (user, session) = member
        .split_once('/')
        .ok_or_else(|| corrupt(format!("deadline entry {member:?} has no '/'")))?;
    let user_id =
        UserId::parse(user).map_err(|e| corrupt(format!("deadline entry {member:?}: {e}")))?;
    let session_id = SessionId::parse(session)
        .ok_or_else(|| corrupt(format!("deadline entry {member:?}: bad sessionId")))?;
    let due = score_time(score).map_err(|e| corrupt(format!("deadline entry {member:?}: {e}")))?;
    Ok(DueSession {
        user_id,
        session_id,
        due,
        entry: format!("{score}/{stamp}"),
    })
}

/// A hint index member (the userId), its score and its stamp, read as
/// [`decode_due`] reads a deadline entry; the entry is `<score>/<stamp>`.
pub(super) fn decode_hint(
    member: &str,
    score: &str,
    stamp: &str,
) -> Result<DeliveryHint, StoreError> {
    let user_id =
        UserId::parse(member).map_err(|e| corrupt(format!("hint entry {member:?}: {e}")))?;
    let due = score_time(score).map_err(|e| corrupt(format!("hint entry {member:?}: {e}")))?;
    Ok(DeliveryHint {
        user_id,
        due,
        entry: format!("{score}/{stamp}"),
    })
}

/// An index score (unix ms, as Redis formats it) as a time.
fn score_time(score: &str) -> Result<Timestamp, String> {
    let ms: f64 = score.parse().map_err(|_| format!("score {score:?}"))?;
    Timestamp::from_millisecond(ms as i64).map_err(|e| e.to_string())
}

/// The score and the stamp a [`decode_due`] or [`decode_hint`] entry was
/// read with.
pub(super) fn split_due_entry(entry: &str) -> (&str, &str) {
    entry.split_once('/').unwrap_or((entry, ""))
}

/// `{sessionId, json, version}` of the session scripts, or nil.
pub(super) fn decode_session_entry(
    user_id: &UserId,
    reply: Value,
) -> Result<Option<Versioned<Session>>, StoreError> {
    if reply == Value::Nil {
        return Ok(None);
    }
    let [id, json, version] = <[Value; 3]>::try_from(array(reply, "session entry")?)
        .map_err(|items| corrupt(format!("session entry has {} items, not 3", items.len())))?;
    let id = text(id, "sessionId")?;
    decode_session(user_id, &id, json, version).map(Some)
}

/// A session hash's `j` and `v` fields.
pub(super) fn decode_session(
    user_id: &UserId,
    id: &str,
    json: Value,
    version: Value,
) -> Result<Versioned<Session>, StoreError> {
    if json == Value::Nil {
        return Err(corrupt(format!(
            "session {id} is indexed but its hash is missing"
        )));
    }
    let json = text(json, "session json")?;
    let value: Session =
        serde_json::from_str(&json).map_err(|e| corrupt(format!("session {id}: {e}")))?;
    if value.user_id != *user_id || value.id.as_str() != id {
        return Err(corrupt(format!(
            "session {id} is stored under another name"
        )));
    }
    let version = text(version, "session version")?
        .parse()
        .map_err(|_| corrupt(format!("session {id}: version is not a number")))?;
    Ok(Versioned { value, version })
}

/// The reply of `session_save.lua`.
pub(super) fn decode_save(reply: Value) -> Result<SaveOutcome, StoreError> {
    let mut items = array(reply, "save reply")?.into_iter();
    let tag = items
        .next()
        .ok_or_else(|| corrupt("empty save reply"))
        .and_then(|v| text(v, "save reply tag"))?;
    match tag.as_str() {
        "saved" => match items.next() {
            Some(Value::Int(v)) if v > 0 => Ok(SaveOutcome::Saved { version: v as u64 }),
            other => Err(corrupt(format!("save reply version {other:?}"))),
        },
        "conflict" => Ok(SaveOutcome::Conflict),
        "room-disabled" => Ok(SaveOutcome::RoomDisabled),
        "room-missing" => Ok(SaveOutcome::RoomMissing),
        other => Err(corrupt(format!("unknown save reply {other:?}"))),
    }
}

/// The reply of `session_list.lua`.
pub(super) fn decode_session_page(
    user_id: &UserId,
    reply: Value,
) -> Result<(Vec<Session>, usize), StoreError> {
    let [total, page] = <[Value; 2]>::try_from(array(reply, "session list reply")?)
        .map_err(|items| corrupt(format!("session list has {} items, not 2", items.len())))?;
    let total = match total {
        Value::Int(n) => usize::try_from(n).map_err(|_| corrupt(format!("session count {n}")))?,
        other => {
            return Err(corrupt(format!(
                "session count is not an integer: {other:?}"
            )));
        }
    };
    let sessions = array(page, "session page")?
        .into_iter()
        .map(|entry| {
            decode_session_entry(user_id, entry)?
                .map(|v| v.value)
                .ok_or_else(|| corrupt("empty session entry"))
        })
        .collect::<Result<_, _>>()?;
    Ok((sessions, total))
}

/// The fields of an event-log entry, in the order [`encode_event`] gives
/// their values: roomId, kind (`webhookType`), the data object as JSON, the
/// event's time in unix ms, and the replayed event's id (left out of the
/// entry when the event is no replay).
pub(super) const EVENT_FIELDS: [&str; 5] = ["r", "k", "d", "t", "p"];

/// The delivery hash's fields: the last assigned event id, the id before
/// which the log may have been trimmed, and per room `r:<roomId>` its queue
/// as JSON ([`RoomDeliveries`]).
pub(super) const ASSIGNED: &str = "a";
pub(super) const TRIMMED_BEFORE: &str = "t";
pub(super) const ROOM_QUEUE: &str = "r:";

/// The values of an event's [`EVENT_FIELDS`]; the last is `""` for an event
/// that replays none.
pub(super) fn encode_event(event: &NewEvent) -> [String; 5] {
    [
        event.room_id.to_string(),
        event.kind.clone(),
        serde_json::Value::Object(event.data.clone()).to_string(),
        event.at.as_millisecond().to_string(),
        event.replay_of.map(|id| id.to_string()).unwrap_or_default(),
    ]
}

/// The reply of `XRANGE`: `{{id, {field, value, ...}}, ...}`.
pub(super) fn decode_events(reply: Value) -> Result<Vec<Event>, StoreError> {
    array(reply, "XRANGE reply")?
        .into_iter()
        .map(|entry| {
            let [id, fields] = <[Value; 2]>::try_from(array(entry, "log entry")?)
                .map_err(|items| corrupt(format!("log entry has {} items, not 2", items.len())))?;
            let id = text(id, "log entry id")?;
            decode_event(&id, pairs(fields, "log entry fields")?)
        })
        .collect()
}

fn decode_event(id: &str, fields: Vec<(String, String)>) -> Result<Event, StoreError> {
    let event_id =
        EventId::parse(id).ok_or_else(|| corrupt(format!("log entry id {id:?} is malformed")))?;
    let [room, kind, data, at, replay] = EVENT_FIELDS;
    let field = |name: &str| {
        fields
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, value)| value.as_str())
    };
    let bad = |name: &str, why: String| corrupt(format!("event {id} field {name:?}: {why}"));
    let required = |name: &str| field(name).ok_or_else(|| bad(name, "missing".to_owned()));
    let room_id = required(room).and_then(|raw| {
        RoomId::parse(raw).ok_or_else(|| bad(room, format!("{raw:?} is not a roomId")))
    })?;
    let data = serde_json::from_str(required(data)?).map_err(|e| bad(data, e.to_string()))?;
    let at = timestamp(required(at)?).map_err(|e| bad(at, e))?;
    let replay_of = match field(replay) {
        None | Some("") => None,
        Some(raw) => {
            Some(EventId::parse(raw).ok_or_else(|| bad(replay, format!("{raw:?} is not an id")))?)
        }
    };
    Ok(Event {
        id: event_id,
        room_id,
        kind: required(kind)?.to_owned(),
        data,
        at,
        replay_of,
    })
}

/// An event id as stored (the reply of `XADD`, a hash field).
pub(super) fn decode_event_id(raw: &str, what: &str) -> Result<EventId, StoreError> {
    EventId::parse(raw).ok_or_else(|| corrupt(format!("{what} {raw:?} is not an event id")))
}

/// The delivery hash, as `HGETALL` gives it.
pub(super) fn decode_delivery_state(reply: Value) -> Result<DeliveryState, StoreError> {
    let mut state = DeliveryState::default();
    for (name, value) in pairs(reply, "delivery hash")? {
        if name == ASSIGNED {
            state.assigned = Some(decode_event_id(&value, "assigned")?);
        } else if let Some(room) = name.strip_prefix(ROOM_QUEUE) {
            let room_id = RoomId::parse(room)
                .ok_or_else(|| corrupt(format!("delivery queue of {room:?}: not a roomId")))?;
            let queue: RoomDeliveries = serde_json::from_str(&value)
                .map_err(|e| corrupt(format!("delivery queue of {room_id}: {e}")))?;
            state.rooms.push((room_id, queue));
        }
        // TRIMMED_BEFORE, and what a newer version may add.
    }
    // The memory store's order.
    state.rooms.sort_by(|(a, _), (b, _)| a.cmp(b));
    Ok(state)
}

pub(super) fn encode_record(record: &DeliveryRecord) -> Result<String, StoreError> {
    serde_json::to_string(record)
        .map_err(|e| StoreError::Corrupt(format!("cannot encode a delivery record: {e}")))
}

pub(super) fn encode_queue(queue: &RoomDeliveries) -> Result<String, StoreError> {
    serde_json::to_string(queue)
        .map_err(|e| StoreError::Corrupt(format!("cannot encode a delivery queue: {e}")))
}

pub(super) fn decode_record(json: &str) -> Result<DeliveryRecord, StoreError> {
    serde_json::from_str(json).map_err(|e| corrupt(format!("delivery record: {e}")))
}

/// Field/value pairs: a flat array (RESP2) or a map (RESP3).
fn pairs(value: Value, what: &str) -> Result<Vec<(String, String)>, StoreError> {
    let flat = match value {
        Value::Map(entries) => entries.into_iter().flat_map(|(k, v)| [k, v]).collect(),
        other => array(other, what)?,
    };
    if flat.len() % 2 != 0 {
        return Err(corrupt(format!("{what}: an odd field list")));
    }
    let mut texts = flat.into_iter().map(|v| text(v, what));
    let mut out = Vec::new();
    while let (Some(name), Some(value)) = (texts.next(), texts.next()) {
        out.push((name?, value?));
    }
    Ok(out)
}

/// Key names. Every key of one account carries `{userId}` as its Redis Cluster
/// hash tag, so one script may touch all of them without CROSSSLOT errors.
#[derive(Clone, Debug)]
pub(super) struct Keys {
    prefix: String,
}

impl Keys {
    pub(super) fn new(prefix: String) -> Keys {
        Keys { prefix }
    }

    /// `P{U}:room:<roomId>`, the room hash. The scripts rebuild this name from
    /// the other two keys, so the three formats must stay in step.
    pub(super) fn room(&self, user_id: &UserId, room_id: &RoomId) -> String {
        self.account_key(user_id, &["room:", room_id.as_str()])
    }

    /// `P{U}:cid`, customRoomId → roomId.
    pub(super) fn custom_ids(&self, user_id: &UserId) -> String {
        self.account_key(user_id, &["cid"])
    }

    /// `P{U}:`, the start of every key of the account, for scripts that
    /// build sibling keys.
    pub(super) fn account(&self, user_id: &UserId) -> String {
        self.account_key(user_id, &[])
    }

    /// `P{U}:` followed by `parts`. Built by hand rather than with `format!`:
    /// every GetRoom and CreateRoom names two to four of these, and the
    /// formatting machinery cost several times the copying.
    fn account_key(&self, user_id: &UserId, parts: &[&str]) -> String {
        let user_id = user_id.as_str();
        let len =
            self.prefix.len() + user_id.len() + 3 + parts.iter().map(|p| p.len()).sum::<usize>();
        let mut key = String::with_capacity(len);
        key.push_str(&self.prefix);
        key.push('{');
        key.push_str(user_id);
        key.push_str("}:");
        for part in parts {
            key.push_str(part);
        }
        key
    }

    /// `P{U}:session:<sessionId>`, a session hash (`j` JSON, `v` version,
    /// `st` state).
    pub(super) fn session(&self, user_id: &UserId, session_id: &SessionId) -> String {
        format!("{}session:{session_id}", self.account(user_id))
    }

    /// `P{U}:sessions`, `P{U}:sessions:ongoing`, `P{U}:sessions:ended`:
    /// sessionIds scored by start ms.
    pub(super) fn sessions(&self, user_id: &UserId, status: Option<SessionStatus>) -> String {
        let suffix = match status {
            None => "",
            Some(SessionStatus::Ongoing) => ":ongoing",
            Some(SessionStatus::Ended) => ":ended",
        };
        format!("{}sessions{suffix}", self.account(user_id))
    }

    /// `P{U}:rsessions:<roomId>`, the room's sessionIds scored by start ms.
    pub(super) fn room_sessions(&self, user_id: &UserId, room_id: &RoomId) -> String {
        format!("{}rsessions:{room_id}", self.account(user_id))
    }

    /// `P{U}:live:<roomId>`, the running session's id, expiring at its due time.
    pub(super) fn live(&self, user_id: &UserId, room_id: &RoomId) -> String {
        format!("{}live:{room_id}", self.account(user_id))
    }

    /// `P{sweep-N}:due`, one of [`DUE_SHARDS`] deadline-index shards; a
    /// session's shard follows from its id, and each shard's hash tag puts it
    /// on its own slot, spread over the cluster's primaries.
    pub(super) fn due_shard(&self, shard: usize) -> String {
        format!("{}{{sweep-{shard}}}:due", self.prefix)
    }

    /// `P{sweep-N}:due:w`, the stamps of shard N's entries (member → stamp,
    /// and `#` the shard's counter), on the shard's slot.
    pub(super) fn due_stamps(&self, shard: usize) -> String {
        format!("{}:w", self.due_shard(shard))
    }

    pub(super) fn due_shard_number(&self, session_id: &SessionId) -> usize {
        shard_of(session_id.as_str(), DUE_SHARDS)
    }

    /// `P{U}:events`, the account's event log: a stream with `*` ids
    /// (`<ms>-<seq>`), entries as [`encode_event`] lays them out.
    pub(super) fn events(&self, user_id: &UserId) -> String {
        format!("{}events", self.account(user_id))
    }

    /// `P{U}:deliveries`, the delivery state: a hash with [`ASSIGNED`],
    /// [`TRIMMED_BEFORE`] and one [`ROOM_QUEUE`]`<roomId>` field per room with
    /// deliveries waiting.
    pub(super) fn deliveries(&self, user_id: &UserId) -> String {
        format!("{}deliveries", self.account(user_id))
    }

    /// `P{U}:dlease`, the delivery lease: the holder's name, expiring.
    pub(super) fn delivery_lease(&self, user_id: &UserId) -> String {
        format!("{}dlease", self.account(user_id))
    }

    /// `P{U}:dlog`, recent delivery attempts, newest first (JSON records).
    pub(super) fn delivery_log(&self, user_id: &UserId) -> String {
        format!("{}dlog", self.account(user_id))
    }

    /// `P{U}:dead`, dead letters, newest first (JSON records).
    pub(super) fn dead_letters(&self, user_id: &UserId) -> String {
        format!("{}dead", self.account(user_id))
    }

    /// `P{deliver-N}:hints`, one of [`HINT_SHARDS`] shards of the hint index:
    /// userIds scored by the ms at which to look at the account. Like the
    /// deadline index, each shard is on a slot of its own.
    pub(super) fn hint_shard(&self, shard: usize) -> String {
        format!("{}{{deliver-{shard}}}:hints", self.prefix)
    }

    /// `P{deliver-N}:hints:w`, the stamps of shard N's entries (userId →
    /// stamp, and `#` the shard's counter).
    pub(super) fn hint_stamps(&self, shard: usize) -> String {
        format!("{}:w", self.hint_shard(shard))
    }

    pub(super) fn hint_shard_number(&self, user_id: &UserId) -> usize {
        shard_of(user_id.as_str(), HINT_SHARDS)
    }

    /// `Pwebhook:signing-key`, the PEM every replica signs webhooks with. In
    /// no account: whichever slot its name hashes to.
    pub(super) fn signing_key(&self) -> String {
        format!("{}webhook:signing-key", self.prefix)
    }

    /// `P{U}:rooms`, roomIds scored by created-at ms.
    pub(super) fn listing(&self, user_id: &UserId) -> String {
        self.account_key(user_id, &["rooms"])
    }

    /// `P{U}:idem:<key hash>`, a create's idempotency key: `<roomId>
    /// <fingerprint>`, expiring after its TTL.
    pub(super) fn idempotency(&self, user_id: &UserId, key_hash: &str) -> String {
        self.account_key(user_id, &["idem:", key_hash])
    }
}

/// The room hash's field/value pairs. Fields holding their default are left
/// out to keep a default room's hash small.
pub(super) fn encode_room(room: &Room) -> Result<Vec<(&'static str, String)>, StoreError> {
    let created_ms = room.created_at.as_millisecond();
    let updated_ms = room.updated_at.as_millisecond();
    let mut fields = vec![(CREATED_AT, created_ms.to_string())];
    if updated_ms != created_ms {
        fields.push((UPDATED_AT, updated_ms.to_string()));
    }
    if let Some(custom) = &room.custom_room_id {
        fields.push((CUSTOM_ROOM_ID, custom.to_string()));
    }
    if room.disabled {
        fields.push((DISABLED, "1".to_owned()));
    }
    if !room.settings.is_empty() {
        let json = serde_json::to_string(&*room.settings)
            .map_err(|e| StoreError::Corrupt(format!("cannot encode room settings: {e}")))?;
        fields.push((SETTINGS, json));
    }
    Ok(fields)
}

/// The reply of `create.lua`.
pub(super) fn decode_create(room: &Room, reply: Value) -> Result<CreateOutcome, StoreError> {
    let mut items = array(reply, "create reply")?.into_iter();
    let tag = items
        .next()
        .ok_or_else(|| corrupt("empty create reply"))
        .and_then(|v| text(v, "create reply tag"))?;
    match tag.as_str() {
        "created" => Ok(CreateOutcome::Created(room.clone())),
        "taken" => Ok(CreateOutcome::RoomIdTaken),
        "full" => Ok(CreateOutcome::AccountFull),
        "reused" => Ok(CreateOutcome::KeyReused),
        "existing" | "replayed" => {
            let (room_id, fields) = match (items.next(), items.next()) {
                (Some(room_id), Some(fields)) => (room_id, fields),
                _ => return Err(corrupt("create reply lacks the earlier room")),
            };
            let earlier = decode_room(&room.user_id, room_id, fields)?;
            Ok(if tag == "existing" {
                CreateOutcome::Existing(earlier)
            } else {
                CreateOutcome::Replayed(earlier)
            })
        }
        other => Err(corrupt(format!("unknown create reply {other:?}"))),
    }
}

/// The reply of `get.lua`: one entry per reading, in lookup order.
pub(super) fn decode_lookup(
    user_id: &UserId,
    reply: Value,
) -> Result<Vec<Option<Room>>, StoreError> {
    array(reply, "lookup reply")?
        .into_iter()
        .map(|entry| match entry {
            Value::Nil => Ok(None),
            entry => decode_entry(user_id, entry).map(Some),
        })
        .collect()
}

/// A reply that is a room's hash fields, or nil when there is no such room
/// (`set_disabled.lua`).
pub(super) fn decode_optional_room(
    user_id: &UserId,
    room_id: &RoomId,
    reply: Value,
) -> Result<Option<Room>, StoreError> {
    match reply {
        Value::Nil => Ok(None),
        fields => decode_room(
            user_id,
            Value::BulkString(room_id.as_str().as_bytes().to_vec()),
            fields,
        )
        .map(Some),
    }
}

/// The reply of `list.lua`: the page and the account's total.
pub(super) fn decode_page(
    user_id: &UserId,
    reply: Value,
) -> Result<(Vec<Room>, usize), StoreError> {
    let [total, page] = <[Value; 2]>::try_from(array(reply, "list reply")?)
        .map_err(|items| corrupt(format!("list reply has {} items, not 2", items.len())))?;
    let total = match total {
        Value::Int(n) => usize::try_from(n).map_err(|_| corrupt(format!("room count {n}")))?,
        other => return Err(corrupt(format!("room count is not an integer: {other:?}"))),
    };
    let rooms = array(page, "list page")?
        .into_iter()
        .map(|entry| decode_entry(user_id, entry))
        .collect::<Result<_, _>>()?;
    Ok((rooms, total))
}

/// `{roomId, {field, value, ...}}`.
fn decode_entry(user_id: &UserId, entry: Value) -> Result<Room, StoreError> {
    let [room_id, fields] = <[Value; 2]>::try_from(array(entry, "room entry")?)
        .map_err(|items| corrupt(format!("room entry has {} items, not 2", items.len())))?;
    decode_room(user_id, room_id, fields)
}

fn decode_room(user_id: &UserId, room_id: Value, fields: Value) -> Result<Room, StoreError> {
    let room_id = text(room_id, "roomId")?;
    let room_id = RoomId::parse(&room_id)
        .ok_or_else(|| corrupt(format!("stored roomId {room_id:?} is malformed")))?;
    let fields = array(fields, "room hash")?
        .into_iter()
        .map(|v| text(v, "room hash field"))
        .collect::<Result<Vec<_>, _>>()?;
    if fields.is_empty() {
        return Err(corrupt(format!(
            "room {room_id} is indexed but its hash is missing"
        )));
    }
    if fields.len() % 2 != 0 {
        return Err(corrupt(format!(
            "room {room_id} hash has an odd field list"
        )));
    }

    let mut created_at = None;
    let mut updated_at = None;
    let mut custom_room_id = None;
    let mut disabled = false;
    let mut settings = RoomSettings::default();
    for pair in fields.chunks_exact(2) {
        let (name, value) = (pair[0].as_str(), pair[1].as_str());
        let bad = |why: String| corrupt(format!("room {room_id} field {name:?}: {why}"));
        match name {
            CREATED_AT => created_at = Some(timestamp(value).map_err(bad)?),
            UPDATED_AT => updated_at = Some(timestamp(value).map_err(bad)?),
            CUSTOM_ROOM_ID => {
                let custom = CustomRoomId::parse(value).map_err(|e| bad(e.to_owned()))?;
                custom_room_id = Some(custom);
            }
            DISABLED if value == "1" => disabled = true,
            DISABLED => return Err(bad("expected \"1\"".to_owned())),
            SETTINGS => settings = serde_json::from_str(value).map_err(|e| bad(e.to_string()))?,
            // A newer version may add fields; what this version knows still reads.
            _ => {}
        }
    }
    let created_at =
        created_at.ok_or_else(|| corrupt(format!("room {room_id} has no created-at field")))?;
    Ok(Room {
        room_id,
        user_id: user_id.clone(),
        custom_room_id,
        disabled,
        created_at,
        updated_at: updated_at.unwrap_or(created_at),
        settings: std::sync::Arc::new(settings),
    })
}

fn timestamp(ms: &str) -> Result<Timestamp, String> {
    let ms: i64 = ms
        .parse()
        .map_err(|_| format!("{ms:?} is not unix milliseconds"))?;
    Timestamp::from_millisecond(ms).map_err(|e| e.to_string())
}

fn array(value: Value, what: &str) -> Result<Vec<Value>, StoreError> {
    match value {
        Value::Array(items) => Ok(items),
        other => Err(corrupt(format!("{what} is not an array: {other:?}"))),
    }
}

fn text(value: Value, what: &str) -> Result<String, StoreError> {
    match value {
        Value::BulkString(bytes) => {
            String::from_utf8(bytes).map_err(|_| corrupt(format!("{what} is not utf-8")))
        }
        Value::SimpleString(s) => Ok(s),
        other => Err(corrupt(format!("{what} is not a string: {other:?}"))),
    }
}

fn corrupt(message: impl Into<String>) -> StoreError {
    StoreError::Corrupt(message.into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::GeoFence;
    use std::sync::Arc;

    fn user() -> UserId {
        UserId::parse("65f0a1b2c3d4e5f6a7b8c9d0").unwrap()
    }

    fn room() -> Room {
        let at = Timestamp::from_millisecond(1_648_183_751_024).unwrap();
        Room {
            room_id: RoomId::parse("jvsg-8rjn-j304").unwrap(),
            user_id: user(),
            custom_room_id: None,
            disabled: false,
            created_at: at,
            updated_at: at,
            settings: Default::default(),
        }
    }

    fn bulk(s: &str) -> Value {
        Value::BulkString(s.as_bytes().to_vec())
    }

    /// What HGETALL of the encoded room returns, wrapped as a script entry.
    fn stored(room: &Room) -> Value {
        let fields = encode_room(room)
            .unwrap()
            .into_iter()
            .flat_map(|(name, value)| [bulk(name), bulk(&value)])
            .collect();
        Value::Array(vec![bulk(room.room_id.as_str()), Value::Array(fields)])
    }

    #[test]
    fn keys_share_the_account_hash_tag() {
        let keys = Keys::new("rs:".to_owned());
        let room = room();
        assert_eq!(
            keys.room(&user(), &room.room_id),
            "rs:{65f0a1b2c3d4e5f6a7b8c9d0}:room:jvsg-8rjn-j304"
        );
        assert_eq!(
            keys.custom_ids(&user()),
            "rs:{65f0a1b2c3d4e5f6a7b8c9d0}:cid"
        );
        assert_eq!(keys.listing(&user()), "rs:{65f0a1b2c3d4e5f6a7b8c9d0}:rooms");
        assert_eq!(
            keys.idempotency(&user(), "ab12"),
            "rs:{65f0a1b2c3d4e5f6a7b8c9d0}:idem:ab12"
        );
        assert_eq!(keys.account(&user()), "rs:{65f0a1b2c3d4e5f6a7b8c9d0}:");
        for (key, suffix) in [
            (keys.events(&user()), "events"),
            (keys.deliveries(&user()), "deliveries"),
            (keys.delivery_lease(&user()), "dlease"),
            (keys.delivery_log(&user()), "dlog"),
            (keys.dead_letters(&user()), "dead"),
        ] {
            assert_eq!(key, format!("rs:{{65f0a1b2c3d4e5f6a7b8c9d0}}:{suffix}"));
        }
    }

    #[test]
    fn hint_shards_have_slots_of_their_own() {
        let keys = Keys::new("rs:".to_owned());
        assert_eq!(keys.hint_shard(3), "rs:{deliver-3}:hints");
        assert_eq!(keys.hint_stamps(3), "rs:{deliver-3}:hints:w");
        assert!(keys.hint_shard_number(&user()) < HINT_SHARDS);
        let shards: std::collections::HashSet<usize> = (0..64u8)
            .map(|n| keys.hint_shard_number(&UserId::parse(&format!("{n:024x}")).unwrap()))
            .collect();
        assert!(
            shards.len() > HINT_SHARDS / 2,
            "accounts spread: {shards:?}"
        );
        assert_eq!(keys.signing_key(), "rs:webhook:signing-key");
    }

    /// An `XRANGE` reply of one entry.
    fn log_entry(id: &str, fields: &[(&str, &str)]) -> Value {
        let fields = fields
            .iter()
            .flat_map(|(name, value)| [bulk(name), bulk(value)])
            .collect();
        Value::Array(vec![Value::Array(vec![bulk(id), Value::Array(fields)])])
    }

    #[test]
    fn events_round_trip_through_their_fields() {
        let mut data = serde_json::Map::new();
        data.insert("sessionId".into(), "s1".into());
        data.insert("nested".into(), serde_json::json!({"a": [1, null]}));
        let mut event = NewEvent {
            room_id: room().room_id,
            kind: "session-started".into(),
            data,
            at: Timestamp::from_millisecond(1_700_000_000_123).unwrap(),
            replay_of: None,
        };
        for replay_of in [None, EventId::parse("1699999999999-3")] {
            event.replay_of = replay_of;
            let values = encode_event(&event);
            let mut fields: Vec<(&str, &str)> = EVENT_FIELDS
                .iter()
                .copied()
                .zip(values.iter().map(String::as_str))
                .collect();
            if replay_of.is_none() {
                fields.pop();
            }
            let decoded = decode_events(log_entry("1700000000200-1", &fields)).unwrap();
            let id = EventId::parse("1700000000200-1").unwrap();
            assert_eq!(decoded, vec![Event::stored(id, event.clone())]);
        }
    }

    #[test]
    fn unreadable_events_are_corrupt() {
        let good = [
            ("r", "jvsg-8rjn-j304"),
            ("k", "hls-started"),
            ("d", "{}"),
            ("t", "1700000000000"),
        ];
        assert!(decode_events(log_entry("1-0", &good)).is_ok());
        let mut cases = vec![log_entry("nope", &good), Value::Int(3)];
        for (i, bad) in [
            ("r", "not a room"),
            ("d", "[1]"),
            ("d", "{"),
            ("t", "soon"),
            ("p", "x-1"),
        ] {
            let mut fields: Vec<_> = good.iter().copied().filter(|(n, _)| *n != i).collect();
            fields.push((i, bad));
            cases.push(log_entry("1-0", &fields));
        }
        for missing in ["r", "k", "d", "t"] {
            let fields: Vec<_> = good
                .iter()
                .copied()
                .filter(|(n, _)| *n != missing)
                .collect();
            cases.push(log_entry("1-0", &fields));
        }
        for case in cases {
            assert!(
                matches!(decode_events(case.clone()), Err(StoreError::Corrupt(_))),
                "{case:?}"
            );
        }
    }

    #[test]
    fn delivery_hash_reads_back() {
        let queue = RoomDeliveries {
            queue: vec![EventId::parse("5-0").unwrap()],
            attempts: 2,
            first_attempt_ms: 10,
            next_attempt_ms: 20,
        };
        let json = encode_queue(&queue).unwrap();
        let hash = Value::Array(vec![
            bulk("t"),
            bulk("3-0"),
            bulk("r:zzzz-zzzz-zzzz"),
            bulk(&json),
            bulk("a"),
            bulk("4-1"),
            bulk("r:jvsg-8rjn-j304"),
            bulk(&json),
            bulk("later"),
            bulk("ignored"),
        ]);
        let state = decode_delivery_state(hash).unwrap();
        assert_eq!(state.assigned, EventId::parse("4-1"));
        let rooms: Vec<&str> = state.rooms.iter().map(|(r, _)| r.as_str()).collect();
        assert_eq!(rooms, ["jvsg-8rjn-j304", "zzzz-zzzz-zzzz"]);
        assert!(state.rooms.iter().all(|(_, q)| *q == queue));
        assert_eq!(
            decode_delivery_state(Value::Array(vec![])).unwrap(),
            DeliveryState::default()
        );
        for bad in [
            vec![bulk("a"), bulk("x")],
            vec![bulk("r:jvsg-8rjn-j304"), bulk("{")],
            vec![bulk("r:bad"), bulk(&json)],
            vec![bulk("a")],
        ] {
            assert!(decode_delivery_state(Value::Array(bad)).is_err());
        }
    }

    #[test]
    fn hint_entries_keep_score_and_stamp() {
        let hint = decode_hint("65f0a1b2c3d4e5f6a7b8c9d0", "1700000000000", "7").unwrap();
        assert_eq!(hint.user_id, user());
        assert_eq!(hint.due.as_millisecond(), 1_700_000_000_000);
        assert_eq!(split_due_entry(&hint.entry), ("1700000000000", "7"));
        assert!(decode_hint("nobody", "1", "1").is_err());
        assert!(decode_hint("65f0a1b2c3d4e5f6a7b8c9d0", "soon", "1").is_err());
    }

    #[test]
    fn a_default_room_stores_only_its_creation_time() {
        assert_eq!(
            encode_room(&room()).unwrap(),
            [(CREATED_AT, "1648183751024".to_owned())]
        );
    }

    #[test]
    fn every_field_round_trips() {
        let mut full = room();
        full.custom_room_id = Some(CustomRoomId::parse("final-testing").unwrap());
        full.disabled = true;
        full.updated_at = Timestamp::from_millisecond(1_700_000_000_001).unwrap();
        Arc::make_mut(&mut full.settings).geo_fence = Some(GeoFence::Eu001);
        Arc::make_mut(&mut full.settings).allowed_participant_ids = vec!["alice".into()];
        for room in [room(), full] {
            let decoded = decode_entry(&user(), stored(&room)).unwrap();
            assert_eq!(decoded, room);
        }
    }

    #[test]
    fn unknown_fields_are_ignored() {
        let entry = Value::Array(vec![
            bulk("jvsg-8rjn-j304"),
            Value::Array(vec![
                bulk("t"),
                bulk("1648183751024"),
                bulk("zz"),
                bulk("?"),
            ]),
        ]);
        assert_eq!(decode_entry(&user(), entry).unwrap(), room());
    }

    #[test]
    fn malformed_data_is_corrupt_not_a_panic() {
        let cases = [
            Value::Nil,
            Value::Array(vec![]),
            Value::Array(vec![bulk("jvsg-8rjn-j304"), Value::Array(vec![])]),
            Value::Array(vec![
                bulk("not-a-room-id"),
                Value::Array(vec![bulk("t"), bulk("1")]),
            ]),
            Value::Array(vec![bulk("jvsg-8rjn-j304"), Value::Array(vec![bulk("t")])]),
            Value::Array(vec![
                bulk("jvsg-8rjn-j304"),
                Value::Array(vec![bulk("t"), bulk("x")]),
            ]),
            Value::Array(vec![
                bulk("jvsg-8rjn-j304"),
                Value::Array(vec![bulk("t"), bulk(&i64::MAX.to_string())]),
            ]),
            Value::Array(vec![
                bulk("jvsg-8rjn-j304"),
                Value::Array(vec![bulk("u"), bulk("1")]),
            ]),
            Value::Array(vec![
                bulk("jvsg-8rjn-j304"),
                Value::Array(vec![bulk("t"), bulk("1"), bulk("s"), bulk("{")]),
            ]),
            Value::Array(vec![
                bulk("jvsg-8rjn-j304"),
                Value::Array(vec![bulk("t"), bulk("1"), bulk("c"), bulk("no spaces")]),
            ]),
            Value::Array(vec![
                bulk("jvsg-8rjn-j304"),
                Value::Array(vec![bulk("t"), Value::BulkString(vec![0xff])]),
            ]),
        ];
        for entry in cases {
            let result = decode_entry(&user(), entry.clone());
            assert!(
                matches!(result, Err(StoreError::Corrupt(_))),
                "{entry:?} gave {result:?}"
            );
        }
    }

    #[test]
    fn create_replies() {
        let room = room();
        let created = decode_create(&room, Value::Array(vec![bulk("created")])).unwrap();
        assert_eq!(created, CreateOutcome::Created(room.clone()));
        let taken = decode_create(&room, Value::Array(vec![bulk("taken")])).unwrap();
        assert_eq!(taken, CreateOutcome::RoomIdTaken);
        let full = decode_create(&room, Value::Array(vec![bulk("full")])).unwrap();
        assert_eq!(full, CreateOutcome::AccountFull);
        let Value::Array(entry) = stored(&room) else {
            unreachable!()
        };
        let mut reply = vec![bulk("existing")];
        reply.extend(entry);
        let existing = decode_create(&room, Value::Array(reply)).unwrap();
        assert_eq!(existing, CreateOutcome::Existing(room.clone()));
        for bad in [
            Value::Array(vec![]),
            Value::Array(vec![bulk("existing")]),
            Value::Array(vec![bulk("what")]),
            Value::Int(1),
        ] {
            assert!(matches!(
                decode_create(&room, bad),
                Err(StoreError::Corrupt(_))
            ));
        }
    }

    #[test]
    fn list_replies() {
        let room = room();
        let reply = Value::Array(vec![Value::Int(7), Value::Array(vec![stored(&room)])]);
        assert_eq!(decode_page(&user(), reply).unwrap(), (vec![room], 7));
        let negative = Value::Array(vec![Value::Int(-1), Value::Array(vec![])]);
        assert!(decode_page(&user(), negative).is_err());
    }

    #[test]
    fn lookup_replies_keep_reading_order() {
        let room = room();
        let reply = Value::Array(vec![Value::Nil, stored(&room), Value::Nil]);
        assert_eq!(
            decode_lookup(&user(), reply).unwrap(),
            [None, Some(room), None]
        );
    }
}
