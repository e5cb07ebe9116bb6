//! Sessions: live occurrences of a room, and the pure rules of their
//! lifecycle (join, leave, when they fall due, how they close). Stores keep
//! them; the service decides when to apply these rules; nothing here knows
//! about time sources, storage or transports.

use std::fmt;
use std::time::Duration;

use jiff::Timestamp;
use rand::Rng;
use serde::{Deserialize, Serialize};

use super::{CustomRoomId, RoomId, UserId};

/// A session's id: 24 lowercase hex characters, ObjectId style: the start
/// second, then 64 random bits.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct SessionId(String);

impl SessionId {
    pub fn parse(s: &str) -> Option<SessionId> {
        (s.len() == 24 && s.bytes().all(|b| b.is_ascii_hexdigit()))
            .then(|| SessionId(s.to_ascii_lowercase()))
    }

    pub fn generate(start: Timestamp) -> SessionId {
        // ObjectIds hold the seconds in 32 bits; they wrap in 2106.
        let seconds = start.as_second() as u32;
        let random: u64 = rand::rng().random();
        SessionId(format!("{seconds:08x}{random:016x}"))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SessionId({})", self.0)
    }
}

/// Why a session ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum EndReason {
    /// EndSession, by an account's call.
    EndedByApi,
    /// The room's autoCloseConfig duration passed.
    AutoClose,
    /// No autoCloseConfig: the server's maximum session length passed.
    MaxLength,
    /// Everyone left and nobody came back within the grace period.
    Empty,
    /// The room was deactivated while the session ran.
    RoomDeactivated,
}

impl EndReason {
    pub fn as_str(self) -> &'static str {
        match self {
            EndReason::EndedByApi => "ended-by-api",
            EndReason::AutoClose => "auto-close",
            EndReason::MaxLength => "max-length",
            EndReason::Empty => "empty",
            EndReason::RoomDeactivated => "room-deactivated",
        }
    }
}

/// One stretch of a participant's presence; `end` is `None` while present.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TimeLog {
    #[serde(with = "millis")]
    pub start: Timestamp,
    #[serde(with = "millis_opt", default, skip_serializing_if = "Option::is_none")]
    pub end: Option<Timestamp>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Participant {
    #[serde(rename = "id")]
    pub participant_id: String,
    #[serde(rename = "n")]
    pub name: String,
    #[serde(rename = "t")]
    pub timelog: Vec<TimeLog>,
}

impl Participant {
    pub fn is_present(&self) -> bool {
        self.timelog.last().is_some_and(|t| t.end.is_none())
    }
}

/// A session as stored. Serialized compactly by the stores (field names are
/// part of the stored format).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Session {
    pub id: SessionId,
    #[serde(rename = "u")]
    pub user_id: UserId,
    #[serde(rename = "r")]
    pub room_id: RoomId,
    #[serde(rename = "c", default, skip_serializing_if = "Option::is_none")]
    pub custom_room_id: Option<CustomRoomId>,
    #[serde(rename = "s", with = "millis")]
    pub start: Timestamp,
    #[serde(
        rename = "e",
        with = "millis_opt",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub end: Option<Timestamp>,
    #[serde(rename = "x", default, skip_serializing_if = "Option::is_none")]
    pub end_reason: Option<EndReason>,
    /// When the session ends at the latest: start + the room's autoClose
    /// duration, or + the server maximum.
    #[serde(rename = "h", with = "millis")]
    pub hard_deadline: Timestamp,
    /// Why it ends at `hard_deadline`: AutoClose or MaxLength.
    #[serde(rename = "hr")]
    pub hard_reason: EndReason,
    /// Closing also disables the room (`session-end-and-deactivate`).
    #[serde(rename = "dz", default, skip_serializing_if = "std::ops::Not::not")]
    pub deactivates_room: bool,
    /// How long the session may stay empty before it ends.
    #[serde(rename = "g", with = "millis_duration")]
    pub empty_grace: Duration,
    /// Since when nobody is present; `None` while someone is.
    #[serde(
        rename = "z",
        with = "millis_opt",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub empty_since: Option<Timestamp>,
    #[serde(rename = "p", default)]
    pub participants: Vec<Participant>,
}

/// What a new session is started with.
#[derive(Clone, Debug)]
pub struct SessionRules {
    pub lifetime: Duration,
    pub lifetime_reason: EndReason,
    pub deactivates_room: bool,
    pub empty_grace: Duration,
}

impl Session {
    /// A session starting now with one participant present.
    pub fn start(
        user_id: UserId,
        room_id: RoomId,
        custom_room_id: Option<CustomRoomId>,
        rules: &SessionRules,
        now: Timestamp,
    ) -> Session {
        Session {
            id: SessionId::generate(now),
            user_id,
            room_id,
            custom_room_id,
            start: now,
            end: None,
            end_reason: None,
            hard_deadline: add(now, rules.lifetime),
            hard_reason: rules.lifetime_reason,
            deactivates_room: rules.deactivates_room,
            empty_grace: rules.empty_grace,
            // Empty until the first participant is added.
            empty_since: Some(now),
            participants: Vec::new(),
        }
    }

    pub fn is_ongoing(&self) -> bool {
        self.end.is_none()
    }

    /// When the session ends unless something changes, and why.
    pub fn due(&self) -> (Timestamp, EndReason) {
        match self.empty_since {
            Some(since) if add(since, self.empty_grace) < self.hard_deadline => {
                (add(since, self.empty_grace), EndReason::Empty)
            }
            _ => (self.hard_deadline, self.hard_reason),
        }
    }

    /// Whether it has run past its due time without being closed yet.
    pub fn is_overdue(&self, now: Timestamp) -> bool {
        self.is_ongoing() && self.due().0 <= now
    }

    /// The session as it stands at `now`: one past its due time reads as
    /// ended at that time, whether or not the close has been stored yet.
    pub fn as_of(&self, now: Timestamp) -> Session {
        let mut session = self.clone();
        if session.is_overdue(now) {
            let (at, reason) = session.due();
            session.close(at, reason);
        }
        session
    }

    /// Ends the session at `at`, closing every open timelog. No effect on an
    /// ended session.
    pub fn close(&mut self, at: Timestamp, reason: EndReason) {
        if !self.is_ongoing() {
            return;
        }
        let at = at.max(self.start);
        for participant in &mut self.participants {
            if let Some(open) = participant.timelog.last_mut().filter(|t| t.end.is_none()) {
                open.end = Some(at.max(open.start));
            }
        }
        self.end = Some(at);
        self.end_reason = Some(reason);
        self.empty_since = None;
    }

    /// Records `participant_id` as present from `now`. Returns false when it
    /// already was (a repeated report changes nothing).
    pub fn join(&mut self, participant_id: &str, name: &str, now: Timestamp) -> bool {
        let entry = match self
            .participants
            .iter_mut()
            .find(|p| p.participant_id == participant_id)
        {
            Some(existing) if existing.is_present() => return false,
            Some(existing) => existing,
            None => {
                self.participants.push(Participant {
                    participant_id: participant_id.to_owned(),
                    name: name.to_owned(),
                    timelog: Vec::new(),
                });
                self.participants.last_mut().expect("just pushed")
            }
        };
        if !name.is_empty() {
            entry.name = name.to_owned();
        }
        entry.timelog.push(TimeLog {
            start: now,
            end: None,
        });
        self.empty_since = None;
        true
    }

    /// Records `participant_id` as gone from `now`. Returns false when it was
    /// not present.
    pub fn leave(&mut self, participant_id: &str, now: Timestamp) -> bool {
        let Some(open) = self
            .participants
            .iter_mut()
            .find(|p| p.participant_id == participant_id)
            .and_then(|p| p.timelog.last_mut())
            .filter(|t| t.end.is_none())
        else {
            return false;
        };
        open.end = Some(now.max(open.start));
        if !self.participants.iter().any(Participant::is_present) {
            self.empty_since = Some(now);
        }
        true
    }

    /// Seconds from start to end, or to `now` while ongoing.
    pub fn active_seconds(&self, now: Timestamp) -> i64 {
        let until = self.end.unwrap_or(now);
        (until.as_millisecond() - self.start.as_millisecond()).max(0) / 1000
    }
}

fn add(at: Timestamp, duration: Duration) -> Timestamp {
    let millis = i64::try_from(duration.as_millis()).unwrap_or(i64::MAX);
    Timestamp::from_millisecond(at.as_millisecond().saturating_add(millis))
        .unwrap_or(Timestamp::MAX)
}

/// Timestamps as unix milliseconds in the stored form.
mod millis {
    use jiff::Timestamp;
    use serde::{Deserialize, Deserializer, Serializer, de::Error};

    pub fn serialize<S: Serializer>(t: &Timestamp, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_i64(t.as_millisecond())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Timestamp, D::Error> {
        Timestamp::from_millisecond(i64::deserialize(d)?).map_err(D::Error::custom)
    }
}

mod millis_opt {
    use jiff::Timestamp;
    use serde::{Deserialize, Deserializer, Serializer, de::Error};

    pub fn serialize<S: Serializer>(t: &Option<Timestamp>, s: S) -> Result<S::Ok, S::Error> {
        match t {
            Some(t) => s.serialize_some(&t.as_millisecond()),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Timestamp>, D::Error> {
        Option::<i64>::deserialize(d)?
            .map(|ms| Timestamp::from_millisecond(ms).map_err(D::Error::custom))
            .transpose()
    }
}

mod millis_duration {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        Ok(Duration::from_millis(u64::deserialize(d)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(seconds: i64) -> Timestamp {
        Timestamp::from_second(1_700_000_000 + seconds).unwrap()
    }

    fn rules(lifetime_s: u64, grace_s: u64) -> SessionRules {
        SessionRules {
            lifetime: Duration::from_secs(lifetime_s),
            lifetime_reason: EndReason::AutoClose,
            deactivates_room: false,
            empty_grace: Duration::from_secs(grace_s),
        }
    }

    fn session(lifetime_s: u64, grace_s: u64) -> Session {
        let mut session = Session::start(
            UserId::parse("5f7edbb14c938bcd42944527").unwrap(),
            RoomId::parse("jvsg-8rjn-j304").unwrap(),
            None,
            &rules(lifetime_s, grace_s),
            at(0),
        );
        assert!(session.join("alice", "Alice", at(0)));
        session
    }

    #[test]
    fn ids_carry_the_start_second() {
        let id = SessionId::generate(at(0));
        assert!(
            id.as_str()
                .starts_with(&format!("{:08x}", at(0).as_second()))
        );
        assert_eq!(SessionId::parse(id.as_str()), Some(id));
        assert_eq!(SessionId::parse("xyz"), None);
    }

    #[test]
    fn joins_and_leaves_are_idempotent() {
        let mut s = session(600, 60);
        assert!(!s.join("alice", "Alice", at(5)), "already present");
        assert!(s.leave("alice", at(10)));
        assert!(!s.leave("alice", at(11)), "already gone");
        assert!(s.join("alice", "", at(20)), "rejoin");
        assert_eq!(s.participants.len(), 1);
        assert_eq!(
            s.participants[0].name, "Alice",
            "an empty name keeps the old one"
        );
        assert_eq!(
            s.participants[0].timelog,
            vec![
                TimeLog {
                    start: at(0),
                    end: Some(at(10))
                },
                TimeLog {
                    start: at(20),
                    end: None
                },
            ]
        );
    }

    #[test]
    fn an_empty_session_falls_due_after_the_grace() {
        let mut s = session(600, 60);
        assert_eq!(s.due(), (at(600), EndReason::AutoClose));
        s.join("bob", "Bob", at(1));
        s.leave("alice", at(10));
        assert_eq!(
            s.due(),
            (at(600), EndReason::AutoClose),
            "bob is still there"
        );
        s.leave("bob", at(30));
        assert_eq!(s.due(), (at(90), EndReason::Empty));
        s.join("bob", "Bob", at(80));
        assert_eq!(
            s.due(),
            (at(600), EndReason::AutoClose),
            "someone came back"
        );
        s.leave("bob", at(590));
        assert_eq!(
            s.due(),
            (at(600), EndReason::AutoClose),
            "the hard deadline comes first"
        );
    }

    #[test]
    fn an_overdue_session_reads_as_ended_at_its_due_time() {
        let s = session(600, 60);
        assert_eq!(s.as_of(at(599)), s);
        let read = s.as_of(at(700));
        assert_eq!(read.end, Some(at(600)));
        assert_eq!(read.end_reason, Some(EndReason::AutoClose));
        assert_eq!(read.participants[0].timelog[0].end, Some(at(600)));
        assert_eq!(read.active_seconds(at(900)), 600);
    }

    #[test]
    fn closing_twice_keeps_the_first_close() {
        let mut s = session(600, 60);
        s.close(at(100), EndReason::EndedByApi);
        s.close(at(200), EndReason::AutoClose);
        assert_eq!(s.end, Some(at(100)));
        assert_eq!(s.end_reason, Some(EndReason::EndedByApi));
        assert!(!s.is_overdue(at(10_000)));
    }

    #[test]
    fn the_stored_form_round_trips() {
        let mut s = session(600, 60);
        s.leave("alice", at(3));
        let json = serde_json::to_string(&s).unwrap();
        assert_eq!(serde_json::from_str::<Session>(&json).unwrap(), s);
    }
}
