//! A room reply encoded straight from the room's JSON settings, and a
//! create request whose settings are read straight into JSON.
//!
//! The generated `pb::Room` holds `autoStartConfig` and `multiComposition` as
//! `google.protobuf.Struct`: building those maps of boxed values from the
//! stored JSON, then measuring and encoding them, was about a tenth of the
//! server's CPU per GetRoom (docs/performance.md). [`RoomReply`] encodes the
//! same message: the generated code encodes every other field, and the two
//! Struct fields are written here from the JSON, with no intermediate value.
//! A test decodes the result as `pb::Room` and compares it with the generic
//! conversion.
//!
//! [`CreateRoomInput`] is the other direction: decoding a CreateRoom request's
//! settings as `prost_types::Struct` and then converting them to JSON was
//! ~7 % of the server's CPU per create. Its Struct fields are read into
//! `serde_json` values as they are decoded, through prost's own field
//! decoders (so wire types, UTF-8 and the recursion limit are checked as
//! before), and with prost's merge rules for repeated fields, map entries
//! and oneofs. A property test compares it with the generic decoding on
//! arbitrary bytes.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError, Weak};

use bytes::{Buf, BufMut, Bytes};
use prost::DecodeError;
use prost::encoding::{DecodeContext, WireType, encode_key, encode_varint, encoded_len_varint};
use serde_json::{Map, Value};

use super::{convert, pb};
use crate::domain::{CreateRoomParams, PublicUrl, Room, RoomSettings};

/// `rooms.v1.Room` as a reply.
#[derive(Debug, Default)]
pub struct RoomReply {
    /// Every field but the two Struct ones, which are left unset here.
    head: pb::Room,
    /// Fields 12 (`autoStartConfig`) and 13 (`multiComposition`) are the
    /// room's own, shared rather than copied.
    settings: Arc<RoomSettings>,
    /// Fields 12 and 13, encoded once (both `encoded_len` and `encode_raw`
    /// need them).
    tail: Bytes,
}

const AUTO_START_CONFIG: u32 = 12;
const MULTI_COMPOSITION: u32 = 13;

impl RoomReply {
    pub fn new(room: Room, base: &PublicUrl) -> RoomReply {
        RoomReply {
            head: convert::room_head(&room, base),
            tail: encode_tail(&room.settings),
            settings: room.settings,
        }
    }

    /// The same, with the settings' encoding taken from (or left in)
    /// `tails`: for rooms read again and again.
    pub fn with_tails(room: Room, base: &PublicUrl, tails: &SettingsTails) -> RoomReply {
        RoomReply {
            head: convert::room_head(&room, base),
            tail: tails.get(&room.settings),
            settings: room.settings,
        }
    }

    /// The same message as the generated type, for the calls that return it.
    pub fn into_room(self) -> pb::Room {
        let settings = Arc::unwrap_or_clone(self.settings);
        pb::Room {
            auto_start_config: settings.auto_start_config.map(convert::json_to_struct),
            multi_composition: settings.multi_composition.map(convert::json_to_struct),
            ..self.head
        }
    }
}

/// Fields 12 and 13 of a room reply.
fn encode_tail(settings: &RoomSettings) -> Bytes {
    // Protobuf readers accept fields in any order: these two come after the
    // generated part's field 14.
    Bytes::from(encode_struct_fields([
        (AUTO_START_CONFIG, &settings.auto_start_config),
        (MULTI_COMPOSITION, &settings.multi_composition),
    ]))
}

/// The Struct fields that are set, as `(tag, value)`, encoded in this order.
fn encode_struct_fields(fields: [(u32, &Option<Map<String, Value>>); 2]) -> Vec<u8> {
    let mut out = Vec::new();
    for (tag, map) in fields {
        if let Some(map) = map {
            encode_struct_field(tag, map, &mut out);
        }
    }
    out
}

/// The encoded settings (fields 12 and 13) of the rooms being read.
///
/// A room's settings never change after creation, and a read served from
/// the room cache (or the memory store) hands out the same
/// `Arc<RoomSettings>` each time: encoding them on every GetRoom was 7.5 %
/// of its instructions with 300 B of settings (docs/performance.md). Entries
/// are found by the settings' address and hold a `Weak` to them: while the
/// `Weak` lives, that memory cannot be reused by other settings, so an entry
/// whose address matches a live `Arc` is that `Arc`'s. (`Arc::make_mut` on
/// settings with weak references moves them, so even a mutation would
/// miss.) Entries of settings no longer alive are dropped when the total
/// passes its bound.
#[derive(Default)]
pub struct SettingsTails {
    entries: Mutex<Tails>,
}

#[derive(Default)]
struct Tails {
    by_address: HashMap<usize, (Weak<RoomSettings>, Bytes)>,
    bytes: usize,
}

/// Bound on the encodings kept, in bytes: 4 MiB holds ~7,000 rooms of 300 B
/// of settings.
const TAILS_MAX_BYTES: usize = 4 << 20;
/// What one entry costs beyond its encoding: the map slot, the `Weak`'s hold
/// on the settings' allocation.
const TAIL_OVERHEAD: usize = 256;

impl SettingsTails {
    pub fn get(&self, settings: &Arc<RoomSettings>) -> Bytes {
        let address = Arc::as_ptr(settings) as usize;
        let mut tails = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        // No further check is needed: see above.
        if let Some((_, tail)) = tails.by_address.get(&address) {
            return tail.clone();
        }
        let tail = encode_tail(settings);
        let cost = tail.len() + TAIL_OVERHEAD;
        if tails.bytes + cost > TAILS_MAX_BYTES {
            tails
                .by_address
                .retain(|_, (weak, _)| weak.strong_count() > 0);
            tails.bytes = tails
                .by_address
                .values()
                .map(|(_, tail)| tail.len() + TAIL_OVERHEAD)
                .sum();
            if tails.bytes + cost > TAILS_MAX_BYTES {
                tails.by_address.clear();
                tails.bytes = 0;
            }
        }
        let old = tails
            .by_address
            .insert(address, (Arc::downgrade(settings), tail.clone()));
        tails.bytes += cost;
        if let Some((_, old)) = old {
            tails.bytes -= old.len() + TAIL_OVERHEAD;
        }
        tail
    }
}

impl prost::Message for RoomReply {
    fn encode_raw(&self, buf: &mut impl BufMut) {
        self.head.encode_raw(buf);
        buf.put_slice(&self.tail);
    }

    /// The server only encodes replies; decoding is here for completeness
    /// (and the tests), through the generated types.
    fn merge_field(
        &mut self,
        tag: u32,
        wire_type: WireType,
        buf: &mut impl Buf,
        ctx: DecodeContext,
    ) -> Result<(), DecodeError> {
        let settings = Arc::make_mut(&mut self.settings);
        let slot = match tag {
            AUTO_START_CONFIG => &mut settings.auto_start_config,
            MULTI_COMPOSITION => &mut settings.multi_composition,
            _ => return self.head.merge_field(tag, wire_type, buf, ctx),
        };
        let mut decoded = prost_types::Struct::default();
        prost::encoding::message::merge(wire_type, &mut decoded, buf, ctx)?;
        // A message field seen twice is merged, as protobuf says.
        slot.get_or_insert_with(Map::new)
            .extend(convert::struct_to_json(decoded));
        self.tail = encode_tail(&self.settings);
        Ok(())
    }

    fn encoded_len(&self) -> usize {
        self.head.encoded_len() + self.tail.len()
    }

    fn clear(&mut self) {
        *self = RoomReply::default();
    }
}

// google.protobuf.Struct    { map<string, Value> fields = 1; }
// map entry                 { string key = 1; Value value = 2; }
// google.protobuf.Value     { oneof kind { NullValue null_value = 1; double number_value = 2;
//                             string string_value = 3; bool bool_value = 4;
//                             Struct struct_value = 5; ListValue list_value = 6; } }
// google.protobuf.ListValue { repeated Value values = 1; }
//
// Every nested message is preceded by its length, so the encoder works in
// two passes: the first measures the body of every Struct, map entry, Value
// and ListValue once (in the order the second pass writes them), the second
// writes. Each length is computed once, however deep the JSON.

/// The size of a length-delimited field holding `len` bytes.
fn field_len(tag: u32, len: usize) -> usize {
    prost::encoding::key_len(tag) + encoded_len_varint(len as u64) + len
}

fn encode_header(tag: u32, len: usize, buf: &mut impl BufMut) {
    encode_key(tag, WireType::LengthDelimited, buf);
    encode_varint(len as u64, buf);
}

fn encode_struct_field(tag: u32, map: &Map<String, Value>, buf: &mut Vec<u8>) {
    let mut sizes = Vec::new();
    let len = measure_struct(map, &mut sizes);
    buf.reserve(field_len(tag, len));
    encode_header(tag, len, buf);
    let mut next = 0;
    write_struct(map, &sizes, &mut next, buf);
}

/// Pass one: a Struct's body length. Every message below it (the Struct,
/// each map entry, each Value, each ListValue) gets a slot in `sizes` for its
/// body length, in the order pass two writes them.
fn measure_struct(map: &Map<String, Value>, sizes: &mut Vec<usize>) -> usize {
    let slot = sizes.len();
    sizes.push(0);
    let mut len = 0;
    for (key, value) in map {
        let entry_slot = sizes.len();
        sizes.push(0);
        // Like prost, an empty key (the default) is left out.
        let key_len = if key.is_empty() {
            0
        } else {
            field_len(1, key.len())
        };
        let entry = key_len + field_len(2, measure_value(value, sizes));
        sizes[entry_slot] = entry;
        len += field_len(1, entry);
    }
    sizes[slot] = len;
    len
}

fn measure_value(value: &Value, sizes: &mut Vec<usize>) -> usize {
    let slot = sizes.len();
    sizes.push(0);
    let len = match value {
        Value::Null | Value::Bool(_) => 2,
        Value::Number(_) => 9,
        Value::String(s) => field_len(3, s.len()),
        Value::Object(map) => field_len(5, measure_struct(map, sizes)),
        Value::Array(items) => {
            let list_slot = sizes.len();
            sizes.push(0);
            let list = items
                .iter()
                .map(|item| field_len(1, measure_value(item, sizes)))
                .sum();
            sizes[list_slot] = list;
            field_len(6, list)
        }
    };
    sizes[slot] = len;
    len
}

/// The next slot's length: pass two reads the slots in pass one's order.
fn take(sizes: &[usize], next: &mut usize) -> usize {
    let len = sizes[*next];
    *next += 1;
    len
}

/// Pass two: a Struct's body (its header is the caller's).
fn write_struct(map: &Map<String, Value>, sizes: &[usize], next: &mut usize, buf: &mut Vec<u8>) {
    take(sizes, next);
    for (key, value) in map {
        encode_header(1, take(sizes, next), buf);
        if !key.is_empty() {
            prost::encoding::string::encode(1, key, buf);
        }
        write_value(2, value, sizes, next, buf);
    }
}

/// A Value as field `tag`, numbers as doubles (as the generic conversion
/// does).
fn write_value(tag: u32, value: &Value, sizes: &[usize], next: &mut usize, buf: &mut Vec<u8>) {
    encode_header(tag, take(sizes, next), buf);
    match value {
        Value::Null => prost::encoding::int32::encode(1, &0, buf),
        Value::Number(n) => {
            prost::encoding::double::encode(2, &n.as_f64().unwrap_or_default(), buf)
        }
        Value::String(s) => prost::encoding::string::encode(3, s, buf),
        Value::Bool(b) => prost::encoding::bool::encode(4, b, buf),
        Value::Object(map) => {
            encode_header(5, sizes[*next], buf);
            write_struct(map, sizes, next, buf);
        }
        Value::Array(items) => {
            encode_header(6, take(sizes, next), buf);
            for item in items {
                write_value(1, item, sizes, next, buf);
            }
        }
    }
}

/// `rooms.v1.CreateRoomRequest` as received.
#[derive(Debug, Default)]
pub struct CreateRoomInput {
    /// Every field but the two Struct ones, which are left unset here.
    head: pb::CreateRoomRequest,
    /// Field 6.
    auto_start_config: Option<Map<String, Value>>,
    /// Field 7.
    multi_composition: Option<Map<String, Value>>,
}

const REQUEST_AUTO_START_CONFIG: u32 = 6;
const REQUEST_MULTI_COMPOSITION: u32 = 7;

impl CreateRoomInput {
    /// The request from the generated type, for the calls that have one.
    pub fn from_request(mut request: pb::CreateRoomRequest) -> CreateRoomInput {
        CreateRoomInput {
            auto_start_config: request
                .auto_start_config
                .take()
                .map(convert::struct_to_json),
            multi_composition: request
                .multi_composition
                .take()
                .map(convert::struct_to_json),
            head: request,
        }
    }

    /// What [`convert::create_params`] makes of the same request.
    pub fn into_params(self) -> CreateRoomParams {
        CreateRoomParams {
            auto_start_config: self.auto_start_config,
            multi_composition: self.multi_composition,
            ..convert::create_params(self.head)
        }
    }

    /// Fields 6 and 7, encoded.
    fn tail(&self) -> Vec<u8> {
        encode_struct_fields([
            (REQUEST_AUTO_START_CONFIG, &self.auto_start_config),
            (REQUEST_MULTI_COMPOSITION, &self.multi_composition),
        ])
    }
}

/// The server only decodes requests; encoding is here for completeness (and
/// the tests).
impl prost::Message for CreateRoomInput {
    fn encode_raw(&self, buf: &mut impl BufMut) {
        self.head.encode_raw(buf);
        buf.put_slice(&self.tail());
    }

    fn merge_field(
        &mut self,
        tag: u32,
        wire_type: WireType,
        buf: &mut impl Buf,
        ctx: DecodeContext,
    ) -> Result<(), DecodeError> {
        let slot = match tag {
            REQUEST_AUTO_START_CONFIG => &mut self.auto_start_config,
            REQUEST_MULTI_COMPOSITION => &mut self.multi_composition,
            _ => return self.head.merge_field(tag, wire_type, buf, ctx),
        };
        // A message field seen twice is merged, as protobuf says.
        let map = slot.get_or_insert_with(Map::new);
        match split_delimited(wire_type, buf) {
            Some(mut field) => {
                prost::encoding::message::merge(wire_type, &mut StructIn(map), &mut field, ctx)
            }
            None => prost::encoding::message::merge(wire_type, &mut StructIn(map), buf, ctx),
        }
    }

    fn encoded_len(&self) -> usize {
        self.head.encoded_len() + self.tail().len()
    }

    fn clear(&mut self) {
        *self = CreateRoomInput::default();
    }
}

/// A length-delimited field (its length prefix included) split off `buf` as
/// one `Bytes`, when the prefix is readable in `buf`'s first chunk and the
/// field lies within `buf`; `None` otherwise, and `buf` is untouched.
///
/// tonic hands a request over in a buffer each read of which goes through
/// `BytesMut::advance` and a length check: the settings are a few hundred
/// varints and strings, and from a plain `Bytes` (for tonic's buffer the
/// split copies nothing) a whole CreateRoom with 300 B of settings takes
/// ~8 % fewer instructions (docs/performance.md). Whatever is not
/// taken here is decoded from `buf` itself, where it fails as before.
fn split_delimited(wire_type: WireType, buf: &mut impl Buf) -> Option<Bytes> {
    if wire_type != WireType::LengthDelimited {
        return None;
    }
    let chunk = buf.chunk();
    let mut rest = chunk;
    let len = prost::encoding::decode_varint(&mut rest).ok()?;
    let total = (chunk.len() - rest.len()).checked_add(usize::try_from(len).ok()?)?;
    (total <= buf.remaining()).then(|| buf.copy_to_bytes(total))
}

// The decoding side of `google.protobuf.Struct`. Each message is a small
// `prost::Message` so that prost's `message::merge` reads it: that is where
// wire types are checked and the recursion limit is kept. Their encoding
// (never used by the server) goes through the generic types.

/// A Struct's body, merged into a JSON object.
#[derive(Debug)]
struct StructIn<'a>(&'a mut Map<String, Value>);

/// One `fields` map entry.
#[derive(Debug, Default)]
struct EntryIn {
    key: String,
    value: ValueIn,
}

/// A ListValue's body, appended to a JSON array.
#[derive(Debug)]
struct ListIn<'a>(&'a mut Vec<Value>);

/// A Value while it is read: its `kind` oneof, `None` until a field sets it.
#[derive(Debug, Default)]
struct ValueIn(Option<KindIn>);

#[derive(Debug)]
enum KindIn {
    Null,
    Number(f64),
    String(String),
    Bool(bool),
    Struct(Map<String, Value>),
    List(Vec<Value>),
}

impl ValueIn {
    /// The JSON value, as `convert::struct_to_json` makes it.
    fn into_json(self) -> Value {
        match self.0 {
            None | Some(KindIn::Null) => Value::Null,
            Some(KindIn::Number(n)) => convert::number_to_json(n),
            Some(KindIn::String(s)) => Value::String(s),
            Some(KindIn::Bool(b)) => Value::Bool(b),
            Some(KindIn::Struct(map)) => Value::Object(map),
            Some(KindIn::List(items)) => Value::Array(items),
        }
    }

    fn to_generic(&self) -> prost_types::Value {
        let json = match &self.0 {
            None => return prost_types::Value { kind: None },
            Some(KindIn::Null) => Value::Null,
            Some(KindIn::Number(n)) => {
                return prost_types::Value {
                    kind: Some(prost_types::value::Kind::NumberValue(*n)),
                };
            }
            Some(KindIn::String(s)) => Value::String(s.clone()),
            Some(KindIn::Bool(b)) => Value::Bool(*b),
            Some(KindIn::Struct(map)) => Value::Object(map.clone()),
            Some(KindIn::List(items)) => Value::Array(items.clone()),
        };
        convert::json_to_value(json)
    }
}

impl prost::Message for StructIn<'_> {
    fn encode_raw(&self, buf: &mut impl BufMut) {
        convert::json_to_struct(self.0.clone()).encode_raw(buf);
    }

    fn merge_field(
        &mut self,
        tag: u32,
        wire_type: WireType,
        buf: &mut impl Buf,
        ctx: DecodeContext,
    ) -> Result<(), DecodeError> {
        if tag != 1 {
            return prost::encoding::skip_field(wire_type, tag, buf, ctx);
        }
        // As prost's map decoding does: the entry's wire type is not
        // checked, a fresh entry is read, and a repeated key replaces.
        let mut entry = EntryIn::default();
        prost::encoding::message::merge(WireType::LengthDelimited, &mut entry, buf, ctx)?;
        self.0.insert(entry.key, entry.value.into_json());
        Ok(())
    }

    fn encoded_len(&self) -> usize {
        convert::json_to_struct(self.0.clone()).encoded_len()
    }

    fn clear(&mut self) {
        self.0.clear();
    }
}

impl prost::Message for EntryIn {
    fn encode_raw(&self, buf: &mut impl BufMut) {
        prost::encoding::string::encode(1, &self.key, buf);
        prost::encoding::message::encode(2, &self.value.to_generic(), buf);
    }

    fn merge_field(
        &mut self,
        tag: u32,
        wire_type: WireType,
        buf: &mut impl Buf,
        ctx: DecodeContext,
    ) -> Result<(), DecodeError> {
        match tag {
            1 => prost::encoding::string::merge(wire_type, &mut self.key, buf, ctx),
            2 => prost::encoding::message::merge(wire_type, &mut self.value, buf, ctx),
            _ => prost::encoding::skip_field(wire_type, tag, buf, ctx),
        }
    }

    fn encoded_len(&self) -> usize {
        prost::encoding::string::encoded_len(1, &self.key)
            + prost::encoding::message::encoded_len(2, &self.value.to_generic())
    }

    fn clear(&mut self) {
        *self = EntryIn::default();
    }
}

impl ListIn<'_> {
    fn to_generic(&self) -> prost_types::ListValue {
        prost_types::ListValue {
            values: self.0.iter().cloned().map(convert::json_to_value).collect(),
        }
    }
}

impl prost::Message for ListIn<'_> {
    fn encode_raw(&self, buf: &mut impl BufMut) {
        self.to_generic().encode_raw(buf);
    }

    fn merge_field(
        &mut self,
        tag: u32,
        wire_type: WireType,
        buf: &mut impl Buf,
        ctx: DecodeContext,
    ) -> Result<(), DecodeError> {
        if tag != 1 {
            return prost::encoding::skip_field(wire_type, tag, buf, ctx);
        }
        // As prost's repeated message fields: each occurrence is a new item.
        let mut item = ValueIn::default();
        prost::encoding::message::merge(wire_type, &mut item, buf, ctx)?;
        self.0.push(item.into_json());
        Ok(())
    }

    fn encoded_len(&self) -> usize {
        self.to_generic().encoded_len()
    }

    fn clear(&mut self) {
        self.0.clear();
    }
}

impl prost::Message for ValueIn {
    fn encode_raw(&self, buf: &mut impl BufMut) {
        self.to_generic().encode_raw(buf);
    }

    /// prost's rules for a oneof: a scalar replaces whatever was set; a
    /// message merges into the same variant, or replaces another one.
    fn merge_field(
        &mut self,
        tag: u32,
        wire_type: WireType,
        buf: &mut impl Buf,
        ctx: DecodeContext,
    ) -> Result<(), DecodeError> {
        use prost::encoding::{bool, double, int32, message, string};
        match tag {
            1 => {
                let mut null = 0;
                int32::merge(wire_type, &mut null, buf, ctx)?;
                self.0 = Some(KindIn::Null);
            }
            2 => {
                let mut n = 0.0;
                double::merge(wire_type, &mut n, buf, ctx)?;
                self.0 = Some(KindIn::Number(n));
            }
            3 => {
                let mut s = String::new();
                string::merge(wire_type, &mut s, buf, ctx)?;
                self.0 = Some(KindIn::String(s));
            }
            4 => {
                let mut b = false;
                bool::merge(wire_type, &mut b, buf, ctx)?;
                self.0 = Some(KindIn::Bool(b));
            }
            5 => {
                if !matches!(self.0, Some(KindIn::Struct(_))) {
                    let mut map = Map::new();
                    message::merge(wire_type, &mut StructIn(&mut map), buf, ctx)?;
                    self.0 = Some(KindIn::Struct(map));
                } else if let Some(KindIn::Struct(map)) = &mut self.0 {
                    message::merge(wire_type, &mut StructIn(map), buf, ctx)?;
                }
            }
            6 => {
                if !matches!(self.0, Some(KindIn::List(_))) {
                    let mut items = Vec::new();
                    message::merge(wire_type, &mut ListIn(&mut items), buf, ctx)?;
                    self.0 = Some(KindIn::List(items));
                } else if let Some(KindIn::List(items)) = &mut self.0 {
                    message::merge(wire_type, &mut ListIn(items), buf, ctx)?;
                }
            }
            _ => prost::encoding::skip_field(wire_type, tag, buf, ctx)?,
        }
        Ok(())
    }

    fn encoded_len(&self) -> usize {
        self.to_generic().encoded_len()
    }

    fn clear(&mut self) {
        self.0 = None;
    }
}

#[cfg(test)]
mod tests {
    use prost::Message;
    use serde_json::json;

    use super::*;
    use crate::domain::{CustomRoomId, RoomId, RoomSettings, UserId};

    fn room(settings: RoomSettings) -> Room {
        let at = jiff::Timestamp::from_second(1_700_000_000).unwrap();
        Room {
            room_id: RoomId::parse("abcd-efgh-ijkl").unwrap(),
            user_id: UserId::derive_from_api_key("acme"),
            custom_room_id: Some(CustomRoomId::parse("standup").unwrap()),
            disabled: true,
            created_at: at,
            updated_at: at,
            settings: Arc::new(settings),
        }
    }

    fn object(value: Value) -> Map<String, Value> {
        match value {
            Value::Object(map) => map,
            _ => unreachable!("a JSON object"),
        }
    }

    /// Decoded as the generated type, the reply is exactly what the generic
    /// conversion makes.
    fn assert_same_as_generic(room: Room) {
        let base = PublicUrl::parse("https://rooms.example.com").unwrap();
        let expected = convert::room(&room, &base);
        let reply = RoomReply::new(room, &base);
        let bytes = reply.encode_to_vec();
        assert_eq!(bytes.len(), reply.encoded_len());
        assert_eq!(pb::Room::decode(bytes.as_slice()).unwrap(), expected);
        let decoded = RoomReply::decode(bytes.as_slice()).unwrap();
        assert_eq!(decoded.encode_to_vec().len(), bytes.len());
        assert_eq!(reply.into_room(), expected);
        assert_eq!(decoded.into_room(), expected);
    }

    #[test]
    fn settings_encode_as_the_generated_struct_does() {
        let deep = json!({
            "": "empty key",
            "n": 1, "neg": -3, "f": 1.5, "big": 1e300, "u": u64::MAX,
            "s": "x", "unicode": "é😀", "b": true, "z": null,
            "l": [1, "a", null, false, [], {}, [[{"k": [2]}]]],
            "o": {"deep": [{"k": -3, "long": "y".repeat(300)}]},
            "empty": {}
        });
        assert_same_as_generic(room(RoomSettings {
            auto_start_config: Some(object(deep.clone())),
            multi_composition: Some(object(json!({"layout": {"type": "GRID"}}))),
            allowed_participant_ids: vec!["p1".into(), "p2".into()],
            ..RoomSettings::default()
        }));
        assert_same_as_generic(room(RoomSettings {
            multi_composition: Some(object(deep)),
            ..RoomSettings::default()
        }));
        assert_same_as_generic(room(RoomSettings {
            auto_start_config: Some(Map::new()),
            ..RoomSettings::default()
        }));
        assert_same_as_generic(room(RoomSettings::default()));
    }

    #[test]
    fn remembered_settings_encode_as_fresh_ones() {
        let base = PublicUrl::parse("https://rooms.example.com").unwrap();
        let tails = SettingsTails::default();
        let held = room(RoomSettings {
            auto_start_config: Some(object(json!({"held": true}))),
            ..RoomSettings::default()
        });
        for i in 0..1_000 {
            // New settings each time, freed before the next: whatever
            // address they get, the reply is theirs.
            let fresh = room(RoomSettings {
                auto_start_config: Some(object(json!({"n": i, "pad": "x".repeat(i % 7)}))),
                ..RoomSettings::default()
            });
            let expected = RoomReply::new(fresh.clone(), &base).encode_to_vec();
            let reply = RoomReply::with_tails(fresh, &base, &tails);
            assert_eq!(reply.encode_to_vec(), expected, "round {i}");
            // The same settings again: the same answer, from the table.
            let again = RoomReply::with_tails(held.clone(), &base, &tails);
            assert_eq!(
                again.encode_to_vec(),
                RoomReply::new(held.clone(), &base).encode_to_vec()
            );
        }
    }

    #[test]
    fn remembered_settings_are_bounded() {
        let tails = SettingsTails::default();
        // All alive at once, far past the bound.
        let all: Vec<Arc<RoomSettings>> = (0..20_000)
            .map(|i| {
                Arc::new(RoomSettings {
                    auto_start_config: Some(object(json!({"n": i, "pad": "y".repeat(300)}))),
                    ..RoomSettings::default()
                })
            })
            .collect();
        for settings in &all {
            assert_eq!(tails.get(settings), encode_tail(settings));
            let held = tails.entries.lock().unwrap().bytes;
            assert!(held <= TAILS_MAX_BYTES, "{held} bytes held");
        }
    }

    // CreateRoomInput against the generated decoding.

    use proptest::prelude::*;
    use prost::encoding::{encode_key as key, encode_varint as varint};

    /// A length-delimited field.
    fn delimited(tag: u32, body: &[u8], out: &mut Vec<u8>) {
        key(tag, WireType::LengthDelimited, out);
        varint(body.len() as u64, out);
        out.extend_from_slice(body);
    }

    /// Raw protobuf for a Value body: one or two `kind` fields (a second one
    /// exercises the oneof rules), sometimes an unknown field, nested
    /// Structs and lists down to `depth`.
    fn value_body(depth: u32) -> BoxedStrategy<Vec<u8>> {
        let scalar = prop_oneof![
            any::<i32>().prop_map(|n| {
                let mut out = Vec::new();
                key(1, WireType::Varint, &mut out);
                varint(n as u64, &mut out);
                out
            }),
            any::<f64>().prop_map(|n| {
                let mut out = Vec::new();
                prost::encoding::double::encode(2, &n, &mut out);
                out
            }),
            "[a-z😀]{0,4}".prop_map(|s| {
                let mut out = Vec::new();
                prost::encoding::string::encode(3, &s, &mut out);
                out
            }),
            any::<bool>().prop_map(|b| {
                let mut out = Vec::new();
                prost::encoding::bool::encode(4, &b, &mut out);
                out
            }),
            // An unknown field, skipped by both.
            Just(vec![0x48, 0x07]),
        ];
        let kind = if depth == 0 {
            scalar.boxed()
        } else {
            prop_oneof![
                3 => scalar,
                1 => struct_body(depth - 1).prop_map(|body| {
                    let mut out = Vec::new();
                    delimited(5, &body, &mut out);
                    out
                }),
                1 => prop::collection::vec(value_body(depth - 1), 0..3).prop_map(|items| {
                    let mut list = Vec::new();
                    for item in items {
                        delimited(1, &item, &mut list);
                    }
                    let mut out = Vec::new();
                    delimited(6, &list, &mut out);
                    out
                }),
            ]
            .boxed()
        };
        prop::collection::vec(kind, 0..3)
            .prop_map(|fields| fields.concat())
            .boxed()
    }

    /// Raw protobuf for a Struct body: entries with few distinct keys (so
    /// that keys repeat), sometimes without a key, sometimes with the value
    /// twice.
    fn struct_body(depth: u32) -> BoxedStrategy<Vec<u8>> {
        let entry = (
            prop::option::of("[ab]{0,1}"),
            prop::collection::vec(value_body(depth), 0..3),
        )
            .prop_map(|(name, values)| {
                let mut entry = Vec::new();
                if let Some(name) = name {
                    prost::encoding::string::encode(1, &name, &mut entry);
                }
                for value in values {
                    delimited(2, &value, &mut entry);
                }
                let mut out = Vec::new();
                delimited(1, &entry, &mut out);
                out
            });
        prop::collection::vec(entry, 0..4)
            .prop_map(|entries| entries.concat())
            .boxed()
    }

    /// A whole request: the two Struct fields (each maybe twice), other
    /// fields of the generated type, and sometimes a stray byte string.
    fn request_bytes() -> impl Strategy<Value = Vec<u8>> {
        let field = prop_oneof![
            struct_body(3).prop_map(|body| {
                let mut out = Vec::new();
                delimited(REQUEST_AUTO_START_CONFIG, &body, &mut out);
                out
            }),
            struct_body(3).prop_map(|body| {
                let mut out = Vec::new();
                delimited(REQUEST_MULTI_COMPOSITION, &body, &mut out);
                out
            }),
            "[a-z]{0,6}".prop_map(|id| {
                let mut out = Vec::new();
                prost::encoding::string::encode(1, &id, &mut out);
                prost::encoding::string::encode(8, &id, &mut out);
                out
            }),
            prop::collection::vec(any::<u8>(), 0..12),
        ];
        prop::collection::vec(field, 0..5).prop_map(|fields| fields.concat())
    }

    fn decoded_alike(bytes: &[u8]) -> Result<(), TestCaseError> {
        let generic = pb::CreateRoomRequest::decode(bytes);
        let direct = CreateRoomInput::decode(bytes);
        match (generic, direct) {
            (Ok(generic), Ok(direct)) => {
                let expected = format!("{:?}", convert::create_params(generic));
                prop_assert_eq!(format!("{:?}", direct.into_params()), expected);
            }
            (Err(_), Err(_)) => {}
            (generic, direct) => prop_assert!(
                false,
                "generic {:?}, direct {:?}",
                generic.map(|_| ()),
                direct.map(|_| ())
            ),
        }
        Ok(())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        #[test]
        fn create_requests_decode_as_the_generated_type_does(bytes in request_bytes()) {
            decoded_alike(&bytes)?;
        }

        #[test]
        fn arbitrary_bytes_decode_as_the_generated_type_does(
            bytes in prop::collection::vec(any::<u8>(), 0..64)
        ) {
            decoded_alike(&bytes)?;
        }
    }

    #[test]
    fn create_input_round_trips() {
        let request = pb::CreateRoomRequest {
            custom_room_id: Some("standup".into()),
            auto_start_config: Some(convert::json_to_struct(object(
                json!({"a": [1, 2.5, "x", null, {"b": true}], "": {}}),
            ))),
            multi_composition: Some(convert::json_to_struct(object(json!({"layout": "grid"})))),
            allowed_participant_ids: vec!["p".into()],
            ..Default::default()
        };
        let bytes = request.encode_to_vec();
        let input = CreateRoomInput::decode(bytes.as_slice()).unwrap();
        assert_eq!(input.encoded_len(), bytes.len());
        assert_eq!(
            pb::CreateRoomRequest::decode(input.encode_to_vec().as_slice()).unwrap(),
            request
        );
        assert_eq!(
            format!("{:?}", input.into_params()),
            format!("{:?}", convert::create_params(request))
        );
    }

    /// The recursion limit is prost's: nesting past it is refused by both.
    #[test]
    fn deep_nesting_is_refused_as_before() {
        for depth in [10, 60, 200] {
            let mut body = Vec::new();
            for _ in 0..depth {
                let mut value = Vec::new();
                delimited(5, &body, &mut value);
                let mut entry = Vec::new();
                delimited(2, &value, &mut entry);
                body.clear();
                delimited(1, &entry, &mut body);
            }
            let mut bytes = Vec::new();
            delimited(REQUEST_AUTO_START_CONFIG, &body, &mut bytes);
            let generic = pb::CreateRoomRequest::decode(bytes.as_slice());
            let direct = CreateRoomInput::decode(bytes.as_slice());
            assert_eq!(generic.is_ok(), direct.is_ok(), "depth {depth}");
            assert_eq!(direct.is_ok(), depth < 60, "depth {depth}");
        }
    }
}
