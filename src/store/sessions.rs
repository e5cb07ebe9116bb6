//! Storage of sessions, the second concept beside rooms. The rules of a
//! session's life are in `domain::Session` and `service::SessionService`;
//! a store only keeps sessions and applies each change atomically, checked
//! against the version the writer read (optimistic concurrency), so the
//! rules live in one place for every store.
//!
//! Deadlines: every ongoing session is also an entry of a deadline index
//! that spans accounts (on Redis: 16 sorted sets on their own slots), read by
//! the sweeper. That index cannot be written in the same atomic step as the
//! session, so it is kept as a lower bound and never trusted alone: a writer
//! lowers an entry before saving (never raises it) and touches it again
//! after, the sweeper raises or removes an entry only if no writer touched it
//! since it was read (even one that left its time as it was: a sweeper that
//! read the session before a save must not settle the entry with the old
//! session's due time), and the session itself is always the truth.

use async_trait::async_trait;
use jiff::Timestamp;

use super::StoreError;
use crate::domain::{NewEvent, RoomId, Session, SessionId, UserId};

/// A stored value and the version a write must name to replace it.
#[derive(Clone, Debug, PartialEq)]
pub struct Versioned<T> {
    pub value: T,
    pub version: u64,
}

/// One atomic write of a session.
#[derive(Clone, Debug)]
pub struct SaveSession<'a> {
    pub session: &'a Session,
    /// The version read, or `None` for a session that must not exist yet.
    pub expected_version: Option<u64>,
    /// For a new session: the room's latest session as read (`None`: the room
    /// had none). Another session started meanwhile makes this a conflict, so
    /// a room never gets two sessions from concurrent joins.
    pub expected_latest: Option<&'a SessionId>,
    /// Refuse (`RoomDisabled`) if the room is disabled at the time of writing.
    pub require_room_enabled: bool,
    /// Disable the room in the same step (`session-end-and-deactivate`).
    pub disable_room: bool,
    pub now: Timestamp,
    /// Appended to the account's event log in the same atomic step, in
    /// order, if (and only if) the session is saved.
    pub events: &'a [NewEvent],
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SaveOutcome {
    Saved {
        version: u64,
    },
    /// Someone wrote first: nothing was written; read again and retry.
    Conflict,
    /// `require_room_enabled` and the room is disabled; nothing was written.
    RoomDisabled,
    /// The account has no such room; nothing was written.
    RoomMissing,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SessionStatus {
    Ongoing,
    Ended,
}

/// Which sessions a listing holds.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SessionFilter {
    pub room_id: Option<RoomId>,
    /// As stored: a session past its deadline that the sweeper has not
    /// closed yet is still stored as ongoing.
    pub status: Option<SessionStatus>,
}

/// An entry of the deadline index: a session that may be due.
#[derive(Clone, Debug, PartialEq)]
pub struct DueSession {
    pub user_id: UserId,
    pub session_id: SessionId,
    /// When the entry says the session falls due (at most its real deadline).
    pub due: Timestamp,
    /// The entry as read, so that settling it can tell whether it changed.
    pub entry: String,
}

/// Sessions, partitioned by account like rooms.
#[async_trait]
pub trait SessionStore: Send + Sync + 'static {
    /// The room's most recently started session, ongoing or not.
    async fn latest_session(
        &self,
        user_id: &UserId,
        room_id: &RoomId,
    ) -> Result<Option<Versioned<Session>>, StoreError>;

    async fn get_session(
        &self,
        user_id: &UserId,
        session_id: &SessionId,
    ) -> Result<Option<Versioned<Session>>, StoreError>;

    /// Writes the session and its index entries in one atomic step, if the
    /// conditions hold. An ongoing session's deadline entry is lowered to
    /// its due time first, and once saved, an earlier read of that entry can
    /// no longer be settled.
    async fn save_session(&self, save: SaveSession<'_>) -> Result<SaveOutcome, StoreError>;

    /// One page of the account's sessions, newest start first, and the total.
    async fn list_sessions(
        &self,
        user_id: &UserId,
        filter: &SessionFilter,
        offset: usize,
        limit: usize,
    ) -> Result<(Vec<Session>, usize), StoreError>;

    /// Up to `limit` deadline-index entries due at `now`, across accounts,
    /// in no promised order (each is closed at its own deadline anyway).
    async fn due_sessions(
        &self,
        now: Timestamp,
        limit: usize,
    ) -> Result<Vec<DueSession>, StoreError>;

    /// After the sweeper looked at `due`: remove the entry (`next` = None:
    /// the session ended or does not exist) or move it to `next`, but only
    /// if the entry is still as read; a writer that saved the session
    /// meanwhile wins, even one that left the entry's time as it was.
    async fn settle_due(&self, due: &DueSession, next: Option<Timestamp>)
    -> Result<(), StoreError>;
}
