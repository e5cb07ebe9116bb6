//! Identifiers, parsed once at the edge so the rest of the code can trust them.

use std::fmt;

use rand::Rng;
use sha2::{Digest, Sha256};

/// How many distinct roomIds exist: 12 characters of `[a-z0-9]`.
const ROOM_ID_SPACE: u64 = 36u64.pow(12);
const ROOM_ID_ALPHABET: &[u8; 36] = b"0123456789abcdefghijklmnopqrstuvwxyz";

/// A room's public id, `xxxx-xxxx-xxxx` of `[a-z0-9]`, e.g. `jvsg-8rjn-j304`.
///
/// It is a 62-bit number written in base 36, which lets the 24-hex document
/// id carry it (see [`DocumentId::for_room`]) so that no id index is needed.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
#[serde(into = "String", try_from = "String")]
pub struct RoomId(String);

impl RoomId {
    /// Returns the roomId if `s` has the roomId shape, `None` otherwise (it may
    /// then still be a customRoomId or a document id).
    pub fn parse(s: &str) -> Option<RoomId> {
        let bytes = s.as_bytes();
        if bytes.len() != 14 || bytes[4] != b'-' || bytes[9] != b'-' {
            return None;
        }
        let body_ok = bytes
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != 4 && *i != 9)
            .all(|(_, b)| b.is_ascii_digit() || b.is_ascii_lowercase());
        body_ok.then(|| RoomId(s.to_owned()))
    }

    /// A new random roomId from the operating system's CSPRNG.
    pub fn generate() -> RoomId {
        let number = rand::rng().random_range(0..ROOM_ID_SPACE);
        RoomId::from_number(number)
    }

    fn from_number(mut number: u64) -> RoomId {
        debug_assert!(number < ROOM_ID_SPACE);
        let mut digits = [0u8; 12];
        for slot in digits.iter_mut().rev() {
            *slot = ROOM_ID_ALPHABET[(number % 36) as usize];
            number /= 36;
        }
        let text = std::str::from_utf8(&digits).expect("alphabet is ascii");
        RoomId(format!("{}-{}-{}", &text[0..4], &text[4..8], &text[8..12]))
    }

    fn number(&self) -> u64 {
        self.0.bytes().filter(|b| *b != b'-').fold(0u64, |acc, b| {
            let digit = if b.is_ascii_digit() {
                b - b'0'
            } else {
                b - b'a' + 10
            };
            acc * 36 + u64::from(digit)
        })
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for RoomId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for RoomId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RoomId({})", self.0)
    }
}

/// A document id: 24 lowercase hex characters, MongoDB ObjectId style.
///
/// For rooms the first 4 bytes are the creation second and the last 8 bytes are
/// the roomId's number, so the id names its room without a lookup table. The
/// roomId is random, so the id is as unguessable as an ObjectId's random part.
#[derive(Clone, PartialEq, Eq, Hash, Debug)]
pub struct DocumentId(String);

impl DocumentId {
    /// Returns the id if `s` is 24 hex characters (either case).
    pub fn parse(s: &str) -> Option<DocumentId> {
        (s.len() == 24 && s.bytes().all(|b| b.is_ascii_hexdigit()))
            .then(|| DocumentId(s.to_ascii_lowercase()))
    }

    pub fn for_room(room_id: &RoomId, created_at_seconds: i64) -> DocumentId {
        // ObjectIds hold the seconds in 32 bits; they wrap in 2106.
        let seconds = created_at_seconds as u32;
        // Every room reply carries it: hexed by hand, not formatted.
        let mut hex = String::with_capacity(24);
        push_hex(&mut hex, u64::from(seconds), 8);
        push_hex(&mut hex, room_id.number(), 16);
        DocumentId(hex)
    }

    /// The roomId this id was made from, if it is a room's id.
    pub fn room_id(&self) -> Option<RoomId> {
        let number = u64::from_str_radix(&self.0[8..], 16).ok()?;
        (number < ROOM_ID_SPACE).then(|| RoomId::from_number(number))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn into_string(self) -> String {
        self.0
    }
}

/// Appends the low `digits` hex digits of `value`, lower case, zero-padded:
/// what `{:0width$x}` writes, without the formatting machinery, for ids
/// made on every call.
pub fn push_hex(out: &mut String, value: u64, digits: u32) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for shift in (0..digits).rev() {
        out.push(char::from(DIGITS[(value >> (shift * 4)) as usize & 0xf]));
    }
}

impl fmt::Display for DocumentId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Names that are fixed segments of the REST API right after `/v2/rooms/`:
/// a room so named could never be fetched or updated by its path.
const RESERVED_NAMES: [&str; 1] = ["deactivate"];

/// A caller-chosen room name, unique within one account.
#[derive(
    Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Debug, serde::Serialize, serde::Deserialize,
)]
#[serde(into = "String", try_from = "String")]
pub struct CustomRoomId(String);

impl CustomRoomId {
    pub const RULE: &'static str = "must be 1 to 128 characters of [A-Za-z0-9._-]";

    pub fn parse(s: &str) -> Result<CustomRoomId, &'static str> {
        let allowed = |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-');
        if s.is_empty() || s.len() > 128 || !s.bytes().all(allowed) {
            return Err(Self::RULE);
        }
        Ok(CustomRoomId(s.to_owned()))
    }

    /// [`CustomRoomId::parse`] plus the rule for names given to new rooms:
    /// not of the shape of a roomId or a document id. Lookups try those
    /// readings first, so such a name would shadow another room, or let a
    /// token scoped to one room reach two rooms under one name. Stored names
    /// are read back with the lenient [`CustomRoomId::parse`], so rooms made
    /// before this rule stay readable.
    pub fn parse_new(s: &str) -> Result<CustomRoomId, &'static str> {
        let id = CustomRoomId::parse(s)?;
        if s == "." || s == ".." {
            // URL parsers resolve them as path segments: such a room could
            // never be fetched by path.
            return Err("must not be \".\" or \"..\"");
        }
        if RESERVED_NAMES.contains(&s) {
            return Err("must not be \"deactivate\": /v2/rooms/deactivate is an endpoint");
        }
        if RoomId::parse(s).is_some() {
            return Err("must not have the shape of a roomId (xxxx-xxxx-xxxx)");
        }
        if DocumentId::parse(s).is_some() {
            return Err("must not have the shape of an id (24 hex characters)");
        }
        Ok(id)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for CustomRoomId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The account that owns rooms: 24 lowercase hex characters.
#[derive(
    Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Debug, serde::Serialize, serde::Deserialize,
)]
#[serde(into = "String", try_from = "String")]
pub struct UserId(String);

impl UserId {
    pub fn parse(s: &str) -> Result<UserId, &'static str> {
        DocumentId::parse(s)
            .map(|id| UserId(id.0))
            .ok_or("must be 24 hex characters")
    }

    /// A stable userId for an API key configured without one, so that restarts
    /// and replicas agree on who owns which rooms.
    pub fn derive_from_api_key(api_key: &str) -> UserId {
        let digest = Sha256::digest(format!("roomservice-user:{api_key}").as_bytes());
        let hex: String = digest[..12].iter().map(|b| format!("{b:02x}")).collect();
        UserId(hex)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for UserId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

// Stored forms (sessions keep their room's ids) are read back through the
// same parsers as outside input.
impl From<RoomId> for String {
    fn from(id: RoomId) -> String {
        id.0
    }
}

impl TryFrom<String> for RoomId {
    type Error = String;

    fn try_from(s: String) -> Result<RoomId, String> {
        RoomId::parse(&s).ok_or_else(|| format!("{s:?} is not a roomId"))
    }
}

impl From<CustomRoomId> for String {
    fn from(id: CustomRoomId) -> String {
        id.0
    }
}

impl TryFrom<String> for CustomRoomId {
    type Error = String;

    fn try_from(s: String) -> Result<CustomRoomId, String> {
        CustomRoomId::parse(&s).map_err(str::to_owned)
    }
}

impl From<UserId> for String {
    fn from(id: UserId) -> String {
        id.0
    }
}

impl TryFrom<String> for UserId {
    type Error = String;

    fn try_from(s: String) -> Result<UserId, String> {
        UserId::parse(&s).map_err(str::to_owned)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_room_ids_have_the_documented_shape() {
        for _ in 0..1000 {
            let id = RoomId::generate();
            assert_eq!(RoomId::parse(id.as_str()), Some(id.clone()), "{id}");
        }
    }

    #[test]
    fn room_id_shape_is_strict() {
        for bad in [
            "",
            "jvsg8rjnj304",
            "JVSG-8RJN-J304",
            "jvsg-8rjn-j30",
            "jvsg_8rjn_j304",
            "jvsg-8rjn-j3045",
        ] {
            assert_eq!(RoomId::parse(bad), None, "{bad:?}");
        }
        assert!(RoomId::parse("jvsg-8rjn-j304").is_some());
    }

    #[test]
    fn document_id_names_its_room() {
        let room = RoomId::parse("jvsg-8rjn-j304").unwrap();
        let id = DocumentId::for_room(&room, 1_648_183_751);
        assert_eq!(id.as_str().len(), 24);
        assert!(id.as_str().starts_with("623d49c7"), "{id}");
        assert_eq!(id.room_id(), Some(room));
        let extremes = [
            RoomId::parse("0000-0000-0000").unwrap(),
            RoomId::parse("zzzz-zzzz-zzzz").unwrap(),
        ];
        for room in extremes {
            assert_eq!(DocumentId::for_room(&room, 0).room_id(), Some(room));
        }
    }

    #[test]
    fn document_ids_outside_the_room_space_name_no_room() {
        let id = DocumentId::parse("623d49c7ffffffffffffffff").unwrap();
        assert_eq!(id.room_id(), None);
        assert!(DocumentId::parse("623d49c760a18e699abcc8a").is_none());
        assert!(DocumentId::parse("623d49c760a18e699abcc8ag").is_none());
    }

    #[test]
    fn custom_room_ids() {
        assert!(CustomRoomId::parse("final-testing").is_ok());
        assert!(CustomRoomId::parse("A.b_c-9").is_ok());
        assert!(CustomRoomId::parse(&"x".repeat(128)).is_ok());
        for bad in ["", "has space", "slash/inside", "ünï", "q?x"] {
            assert!(CustomRoomId::parse(bad).is_err(), "{bad:?}");
        }
        assert!(CustomRoomId::parse(&"x".repeat(129)).is_err());
    }

    #[test]
    fn new_custom_room_ids_cannot_look_like_other_ids() {
        assert!(CustomRoomId::parse_new("final-testing").is_ok());
        assert!(CustomRoomId::parse_new("abcd-efgh-ijkl-x").is_ok());
        assert!(CustomRoomId::parse_new("ABCD-EFGH-IJKL").is_ok());
        assert!(CustomRoomId::parse_new("abcd-efgh-ijkl").is_err());
        assert!(CustomRoomId::parse_new(".").is_err());
        assert!(CustomRoomId::parse_new("..").is_err());
        assert!(CustomRoomId::parse_new("...").is_ok());
        assert!(CustomRoomId::parse_new("deactivate").is_err());
        assert!(CustomRoomId::parse_new("Deactivate").is_ok());
        assert!(CustomRoomId::parse_new("623d49c760a18e699abcc8a4").is_err());
        // Still readable when stored before the rule.
        assert!(CustomRoomId::parse("abcd-efgh-ijkl").is_ok());
    }

    #[test]
    fn derived_user_ids_are_stable_and_distinct() {
        let a = UserId::derive_from_api_key("key-a");
        assert_eq!(a, UserId::derive_from_api_key("key-a"));
        assert_ne!(a, UserId::derive_from_api_key("key-b"));
        assert!(UserId::parse(a.as_str()).is_ok());
    }

    /// Arbitrary input to every parser: never a panic, and each accepts
    /// exactly its documented shape.
    mod properties {
        use super::*;
        use proptest::collection::vec;
        use proptest::prelude::*;

        fn any_text() -> impl Strategy<Value = String> {
            prop_oneof![
                vec(any::<char>(), 0..32).prop_map(String::from_iter),
                "[a-z0-9-]{12,16}",
                "[a-z0-9]{4}-[a-z0-9]{4}-[a-z0-9]{4}",
                "[0-9a-fA-F]{22,26}",
                "[A-Za-z0-9._-]{0,140}",
                "[A-Za-z0-9._/ -]{0,8}",
                "\\PC{0,30}",
            ]
        }

        fn room_id() -> impl Strategy<Value = RoomId> {
            "[a-z0-9]{4}-[a-z0-9]{4}-[a-z0-9]{4}".prop_map(|s| RoomId::parse(&s).unwrap())
        }

        fn has_room_id_shape(s: &str) -> bool {
            let parts: Vec<&str> = s.split('-').collect();
            parts.len() == 3
                && parts.iter().all(|p| {
                    p.len() == 4
                        && p.bytes()
                            .all(|b| b.is_ascii_digit() || b.is_ascii_lowercase())
                })
        }

        proptest! {
            #![proptest_config(ProptestConfig {
                cases: 1024,
                failure_persistence: None,
                ..ProptestConfig::default()
            })]

            #[test]
            fn room_ids_parse_exactly_their_shape(s in any_text()) {
                let parsed = RoomId::parse(&s);
                prop_assert_eq!(parsed.is_some(), has_room_id_shape(&s));
                if let Some(id) = parsed {
                    prop_assert_eq!(id.as_str(), s.as_str());
                    prop_assert_eq!(id.to_string(), s);
                }
            }

            #[test]
            fn generated_room_ids_parse_back(_seed in any::<u8>()) {
                let id = RoomId::generate();
                prop_assert_eq!(RoomId::parse(id.as_str()), Some(id));
            }

            #[test]
            fn document_ids_name_their_room(room in room_id(), seconds in any::<i64>()) {
                let id = DocumentId::for_room(&room, seconds);
                let formatted = format!("{:08x}{:016x}", seconds as u32, room.number());
                prop_assert_eq!(id.as_str(), formatted.as_str());
                prop_assert_eq!(id.as_str().len(), 24);
                prop_assert!(id.as_str().bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')));
                prop_assert_eq!(DocumentId::parse(id.as_str()), Some(id.clone()));
                prop_assert_eq!(id.room_id(), Some(room));
            }

            #[test]
            fn document_ids_parse_24_hex_only(s in any_text()) {
                let parsed = DocumentId::parse(&s);
                let is_hex_24 = s.len() == 24 && s.bytes().all(|b| b.is_ascii_hexdigit());
                prop_assert_eq!(parsed.is_some(), is_hex_24);
                if let Some(id) = parsed {
                    prop_assert_eq!(id.as_str(), s.to_ascii_lowercase());
                    // Any 24 hex may arrive; only those made from a roomId name one.
                    if let Some(room) = id.room_id() {
                        let seconds = i64::from(u32::from_str_radix(&id.as_str()[..8], 16).unwrap());
                        prop_assert_eq!(DocumentId::for_room(&room, seconds), id);
                    }
                }
            }

            #[test]
            fn custom_room_ids_follow_the_rules(s in any_text()) {
                let allowed = |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-');
                let has_shape = (1..=128).contains(&s.len()) && s.bytes().all(allowed);
                let parsed = CustomRoomId::parse(&s);
                prop_assert_eq!(parsed.is_ok(), has_shape);
                if let Ok(id) = &parsed {
                    prop_assert_eq!(id.as_str(), s.as_str());
                }
                match CustomRoomId::parse_new(&s) {
                    Ok(id) => {
                        prop_assert_eq!(Some(&id), parsed.as_ref().ok());
                        prop_assert!(RoomId::parse(&s).is_none());
                        prop_assert!(DocumentId::parse(&s).is_none());
                        prop_assert!(![".", "..", "deactivate"].contains(&s.as_str()));
                    }
                    Err(rule) => prop_assert!(rule.starts_with("must "), "{}", rule),
                }
            }
        }
    }
}
