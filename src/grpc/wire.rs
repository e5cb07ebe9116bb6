//! A room reply encoded straight from the room's JSON settings.
//!
//! The generated `pb::Room` holds `autoStartConfig` and `multiComposition` as
//! `google.protobuf.Struct`: building those maps of boxed values from the
//! stored JSON, then measuring and encoding them, was about a tenth of the
//! server's CPU per GetRoom (docs/performance.md). [`RoomReply`] encodes the
//! same message: the generated code encodes every other field, and the two
//! Struct fields are written here from the JSON, with no intermediate value.
//! A test decodes the result as `pb::Room` and compares it with the generic
//! conversion.

use std::sync::Arc;

use bytes::{Buf, BufMut};
use prost::DecodeError;
use prost::encoding::{DecodeContext, WireType, encode_key, encode_varint, encoded_len_varint};
use serde_json::{Map, Value};

use super::{convert, pb};
use crate::domain::{PublicUrl, Room, RoomSettings};

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
    tail: Vec<u8>,
}

const AUTO_START_CONFIG: u32 = 12;
const MULTI_COMPOSITION: u32 = 13;

impl RoomReply {
    pub fn new(room: Room, base: &PublicUrl) -> RoomReply {
        let mut reply = RoomReply {
            head: convert::room_head(&room, base),
            settings: room.settings,
            tail: Vec::new(),
        };
        reply.encode_tail();
        reply
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

    fn encode_tail(&mut self) {
        self.tail.clear();
        // Protobuf readers accept fields in any order: these two come after
        // the generated part's field 14.
        if let Some(map) = &self.settings.auto_start_config {
            encode_struct_field(AUTO_START_CONFIG, map, &mut self.tail);
        }
        if let Some(map) = &self.settings.multi_composition {
            encode_struct_field(MULTI_COMPOSITION, map, &mut self.tail);
        }
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
        self.encode_tail();
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
}
