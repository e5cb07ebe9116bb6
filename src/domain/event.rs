//! Room events: what the webhook deliveries and `WatchEvents` carry. The
//! session lifecycle makes four of them (session-started, session-ended,
//! participant-joined, participant-left); media services publish the rest.
//! Each event lives in its account's ordered log, and its id is its place in
//! that log.

use std::fmt;

use jiff::Timestamp;
use serde_json::{Map, Value, json};

use super::{RoomId, Session};

/// The event names the service makes itself from the session lifecycle;
/// `PublishRoomEvent` refuses them, so a receiver can trust them.
pub const LIFECYCLE_EVENTS: [&str; 4] = [
    "participant-joined",
    "participant-left",
    "session-started",
    "session-ended",
];

/// Whether `kind` is one of the names in the webhook contract.
pub fn is_known_event(kind: &str) -> bool {
    super::WEBHOOK_EVENTS
        .iter()
        .take_while(|name| **name != "*")
        .any(|name| *name == kind)
}

/// Whether a room subscribed with `patterns` (its `webhook.events`) gets
/// `kind`: an exact name, `*`, or `prefix-*`.
pub fn subscribed(patterns: &[String], kind: &str) -> bool {
    patterns.iter().any(|pattern| {
        if pattern == "*" {
            return true;
        }
        match pattern.strip_suffix('*') {
            Some(prefix) => prefix.ends_with('-') && kind.starts_with(prefix),
            None => pattern == kind,
        }
    })
}

/// An event's place in its account's log: `<milliseconds>-<sequence>`, as
/// Redis stream ids are. Ordered; unique within the account.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct EventId {
    pub millis: u64,
    pub seq: u64,
}

impl EventId {
    pub fn parse(raw: &str) -> Option<EventId> {
        let (millis, seq) = raw.split_once('-')?;
        let digits =
            |s: &str| !s.is_empty() && s.len() <= 20 && s.bytes().all(|b| b.is_ascii_digit());
        if !digits(millis) || !digits(seq) {
            return None;
        }
        Some(EventId {
            millis: millis.parse().ok()?,
            seq: seq.parse().ok()?,
        })
    }

    /// The id just after this one, for reading a log after it.
    pub fn next(self) -> EventId {
        match self.seq.checked_add(1) {
            Some(seq) => EventId { seq, ..self },
            None => EventId {
                millis: self.millis.saturating_add(1),
                seq: 0,
            },
        }
    }
}

impl fmt::Display for EventId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.millis, self.seq)
    }
}

impl serde::Serialize for EventId {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for EventId {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<EventId, D::Error> {
        let raw = String::deserialize(deserializer)?;
        EventId::parse(&raw).ok_or_else(|| serde::de::Error::custom("not an event id"))
    }
}

impl fmt::Debug for EventId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "EventId({self})")
    }
}

/// An event about to be written.
#[derive(Clone, Debug, PartialEq)]
pub struct NewEvent {
    pub room_id: RoomId,
    /// The `webhookType`.
    pub kind: String,
    /// The webhook's `data` object.
    pub data: Map<String, Value>,
    pub at: Timestamp,
    /// A replayed dead letter: the event it repeats (its webhook-id is kept).
    pub replay_of: Option<EventId>,
}

/// An event as stored in its account's log.
#[derive(Clone, Debug, PartialEq)]
pub struct Event {
    pub id: EventId,
    pub room_id: RoomId,
    pub kind: String,
    pub data: Map<String, Value>,
    pub at: Timestamp,
    pub replay_of: Option<EventId>,
}

impl Event {
    pub fn stored(id: EventId, new: NewEvent) -> Event {
        Event {
            id,
            room_id: new.room_id,
            kind: new.kind,
            data: new.data,
            at: new.at,
            replay_of: new.replay_of,
        }
    }

    /// The webhook body, exactly as signed and sent:
    /// `{"webhookType":"...","data":{...}}`, compact.
    pub fn webhook_body(&self) -> Vec<u8> {
        // A struct, not a map, so that `webhookType` comes first as in
        // VideoSDK's own bodies.
        #[derive(serde::Serialize)]
        struct Body<'a> {
            #[serde(rename = "webhookType")]
            kind: &'a str,
            data: &'a Map<String, Value>,
        }
        let body = Body {
            kind: &self.kind,
            data: &self.data,
        };
        serde_json::to_vec(&body).unwrap_or_default()
    }

    /// The id a receiver uses to drop duplicates: the same on every retry and
    /// on a replay. Event ids are per account, so the account is part of it.
    pub fn webhook_id(&self, user_id: &super::UserId) -> String {
        format!("evt_{user_id}_{}", self.replay_of.unwrap_or(self.id))
    }
}

/// Why a participant left, in the `participant-left` webhook's words.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LeaveReason {
    UserLeft,
    ConnectionError,
    Removed,
}

impl LeaveReason {
    /// An empty reason is `user-left`.
    pub fn parse(raw: &str) -> Option<LeaveReason> {
        match raw {
            "" | "user-left" => Some(LeaveReason::UserLeft),
            "connection-error" => Some(LeaveReason::ConnectionError),
            "removed" => Some(LeaveReason::Removed),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            LeaveReason::UserLeft => "user-left",
            LeaveReason::ConnectionError => "connection-error",
            LeaveReason::Removed => "removed",
        }
    }
}

/// Webhook timestamps: `2022-07-05T15:55:35.047+00:00` (the contract's
/// form, unlike the API's `Z`).
pub fn webhook_timestamp(ts: Timestamp) -> String {
    let utc = format!("{ts:.3}");
    format!("{}+00:00", utc.trim_end_matches('Z'))
}

/// The events of a session change, in the order they happened: what the
/// lifecycle emits when `before` (None: the session is new) became `after`.
pub fn lifecycle_events(
    before: Option<&Session>,
    after: &Session,
    leave_reason: LeaveReason,
    now: Timestamp,
) -> Vec<NewEvent> {
    let mut events = Vec::new();
    let event = |kind: &str, data: Value, at: Timestamp| NewEvent {
        room_id: after.room_id.clone(),
        kind: kind.to_owned(),
        data: match data {
            Value::Object(map) => map,
            _ => Map::new(),
        },
        at,
        replay_of: None,
    };
    let session_id = after.id.to_string();
    let meeting_id = after.room_id.to_string();
    if before.is_none() {
        events.push(event(
            "session-started",
            json!({
                "sessionId": session_id,
                "meetingId": meeting_id,
                "start": webhook_timestamp(after.start),
            }),
            after.start,
        ));
    }
    let present = |session: Option<&Session>, id: &str| {
        session.is_some_and(|s| {
            s.is_ongoing()
                && s.participants
                    .iter()
                    .any(|p| p.participant_id == id && p.is_present())
        })
    };
    for participant in &after.participants {
        let id = participant.participant_id.as_str();
        let was = present(before, id);
        let is = after.is_ongoing() && participant.is_present();
        let base = |reason: Option<&str>| {
            let mut data = json!({
                "meetingId": meeting_id,
                "sessionId": session_id,
                "participantId": id,
                "participantName": participant.name,
            });
            if let (Some(reason), Value::Object(map)) = (reason, &mut data) {
                map.insert("reason".into(), Value::String(reason.to_owned()));
            }
            data
        };
        if !was && is {
            events.push(event("participant-joined", base(None), now));
        } else if was && !is && after.is_ongoing() {
            // Only a reported leave: someone still present when the session
            // ends gets no participant-left; session-ended says all are gone.
            events.push(event(
                "participant-left",
                base(Some(leave_reason.as_str())),
                now,
            ));
        }
    }
    if let (Some(end), Some(reason)) = (after.end, after.end_reason)
        && before.is_none_or(Session::is_ongoing)
    {
        events.push(event(
            "session-ended",
            json!({
                "sessionId": session_id,
                "meetingId": meeting_id,
                "start": webhook_timestamp(after.start),
                "end": webhook_timestamp(end),
                "reason": reason.as_str(),
                "error": Value::Null,
            }),
            end,
        ));
    }
    events
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subscriptions_match_names_star_and_prefixes() {
        let patterns = |p: &[&str]| p.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert!(subscribed(&patterns(&["*"]), "hls-started"));
        assert!(subscribed(&patterns(&["recording-*"]), "recording-failed"));
        assert!(!subscribed(&patterns(&["recording-*"]), "hls-started"));
        assert!(subscribed(&patterns(&["session-ended"]), "session-ended"));
        assert!(!subscribed(
            &patterns(&["session-ended"]),
            "session-started"
        ));
        assert!(!subscribed(&patterns(&[]), "session-ended"));
    }

    #[test]
    fn event_ids_order_and_round_trip() {
        let a = EventId::parse("1700000000000-0").unwrap();
        let b = EventId::parse("1700000000000-1").unwrap();
        assert!(a < b);
        assert_eq!(a.next(), b);
        assert_eq!(a.to_string(), "1700000000000-0");
        for bad in ["", "1", "-1", "1-", "a-1", "1-1-1", " 1-1"] {
            assert_eq!(EventId::parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn webhook_timestamps_use_the_contract_offset() {
        let ts: Timestamp = "2022-07-05T15:55:35.047Z".parse().unwrap();
        assert_eq!(webhook_timestamp(ts), "2022-07-05T15:55:35.047+00:00");
    }

    #[test]
    fn known_events_are_the_contract_names() {
        assert!(is_known_event("hls-playable"));
        assert!(!is_known_event("*"));
        assert!(!is_known_event("<prefix>-*"));
        assert!(!is_known_event("hls-"));
    }
}
