//! The rules of sessions: who may report joins and leaves, when a session
//! starts and ends, and how ended sessions are made durable (the sweeper).
//!
//! Every change is read → apply the domain rule → write naming the version
//! read; a write that loses a race is retried from a fresh read. So two
//! replicas never both start a session in one room, never both close one,
//! and a join racing a close either lands in the session or starts the next.

use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;

use super::rooms::{caller_room, check_scope, find_room};
use super::{Clock, Error};
use crate::auth::{Caller, Verifier};
use crate::domain::{
    self, AutoCloseType, EndReason, FieldViolation, LeaveReason, Paging, Room, Session, SessionId,
    SessionRules,
};
use crate::store::{
    EventStore, SaveOutcome, SaveSession, SessionFilter, SessionStatus, SessionStore, Store,
    Versioned,
};

/// How many times a change is retried after losing a race.
const ATTEMPTS: usize = 8;

pub const MAX_PARTICIPANT_ID_CHARS: usize = 256;
pub const MAX_NAME_CHARS: usize = 256;

/// Server-wide session settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SessionConfig {
    /// How long a session of a room without autoCloseConfig may last.
    pub max_session: Duration,
    /// How long a session may stay empty before it ends.
    pub empty_grace: Duration,
}

impl Default for SessionConfig {
    fn default() -> SessionConfig {
        SessionConfig {
            max_session: Duration::from_secs(480 * 60),
            empty_grace: Duration::from_secs(60),
        }
    }
}

/// A listing request as the caller sent it, before validation.
#[derive(Clone, Debug, Default)]
pub struct SessionListRequest {
    /// A roomId or customRoomId; all the account's sessions when absent.
    pub room: Option<String>,
    /// `ongoing` or `ended`.
    pub status: Option<String>,
    pub page: Option<i64>,
    pub per_page: Option<i64>,
}

/// One page of sessions, newest start first.
#[derive(Clone, Debug)]
pub struct SessionPage {
    pub sessions: Vec<Session>,
    pub paging: Paging,
    pub last_page: u32,
    pub total: usize,
}

/// What one sweep did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SweepReport {
    /// Sessions this sweep closed (another replica's closes are not counted).
    pub closed: usize,
    /// Entries looked at.
    pub examined: usize,
}

#[derive(Clone)]
pub struct SessionService {
    rooms: Arc<dyn Store>,
    sessions: Arc<dyn SessionStore>,
    /// Where the hint that an account has new events goes (the events
    /// themselves are written with the session).
    events: Arc<dyn EventStore>,
    verifier: Arc<Verifier>,
    clock: Arc<dyn Clock>,
    config: SessionConfig,
}

impl SessionService {
    /// How many deadline-index entries one sweep takes on.
    pub const SWEEP_BATCH: usize = 500;

    pub fn new(
        rooms: Arc<dyn Store>,
        sessions: Arc<dyn SessionStore>,
        events: Arc<dyn EventStore>,
        verifier: Arc<Verifier>,
        clock: Arc<dyn Clock>,
        config: SessionConfig,
    ) -> SessionService {
        SessionService {
            rooms,
            sessions,
            events,
            verifier,
            clock,
            config,
        }
    }

    /// A media server reports that a participant joined `room_key`, with the
    /// participant's own token. Starts the room's session if none runs.
    /// Idempotent: a repeated report changes nothing.
    pub async fn participant_joined(
        &self,
        caller: &Caller,
        room_key: &str,
        participant_id: &str,
        name: &str,
        participant_token: &str,
    ) -> Result<Session, Error> {
        caller.require_service()?;
        let mut violations = Vec::new();
        check_participant_id(participant_id, &mut violations);
        if name.chars().count() > MAX_NAME_CHARS || name.chars().any(char::is_control) {
            violations.push(FieldViolation::new(
                "name",
                format!("must be at most {MAX_NAME_CHARS} characters without control characters"),
            ));
        }
        if participant_token.is_empty() {
            violations.push(FieldViolation::new(
                "participantToken",
                "is required: the token the participant presented",
            ));
        }
        if !violations.is_empty() {
            return Err(Error::InvalidArgument(violations));
        }
        let participant = self
            .verifier
            .verify_participant(participant_token)
            .map_err(|refusal| {
                Error::Auth(crate::auth::AuthError::PermissionDenied(format!(
                    "participant token refused: {}",
                    crate::error::PublicError::public_message(&refusal)
                )))
            })?;
        // The participant's token names the account, so the room lookup
        // stays account-scoped: a media server cannot put anyone into a room
        // they hold no token for.
        let room = self.room_in(&participant.account.user_id, room_key).await?;
        if check_scope(&participant, &room).is_err() {
            return Err(permission_denied(
                "participant token is scoped to another room",
            ));
        }
        if let Some(claimed) = &participant.participant_id
            && claimed != participant_id
        {
            return Err(permission_denied(
                "participant token is for another participantId",
            ));
        }
        let allowed = &room.settings.allowed_participant_ids;
        if !allowed.is_empty() && !allowed.iter().any(|id| id == participant_id) {
            return Err(permission_denied(
                "participantId is not in the room's allowedParticipantIds",
            ));
        }
        if room.disabled {
            return Err(disabled(&room));
        }

        for _ in 0..ATTEMPTS {
            let now = self.clock.now();
            let latest = self
                .sessions
                .latest_session(&room.user_id, &room.room_id)
                .await?;
            match latest {
                Some(current) if current.value.is_overdue(now) => {
                    // Its deadline passed and the sweeper has not closed it
                    // yet: close it here, then start the next one.
                    self.close_overdue(&current, now).await?;
                }
                Some(current) if current.value.is_ongoing() => {
                    let mut session = current.value.clone();
                    if !session.join(participant_id, name, now) {
                        return Ok(session);
                    }
                    match self
                        .save(Change {
                            require_room_enabled: true,
                            ..Change::of(&current, &session)
                        })
                        .await?
                    {
                        SaveOutcome::Saved { .. } => {
                            tracing::info!(session_id = %session.id, room_id = %room.room_id, participant_id, "participant joined");
                            return Ok(session);
                        }
                        SaveOutcome::Conflict => continue,
                        SaveOutcome::RoomDisabled => return Err(disabled(&room)),
                        SaveOutcome::RoomMissing => return Err(room_not_found(room_key)),
                    }
                }
                latest => {
                    let rules = self.rules(&room);
                    let mut session = Session::start(
                        room.user_id.clone(),
                        room.room_id.clone(),
                        room.custom_room_id.clone(),
                        &rules,
                        now,
                    );
                    session.join(participant_id, name, now);
                    let previous = latest.as_ref().map(|v| &v.value.id);
                    match self
                        .save(Change {
                            before: None,
                            after: &session,
                            expected_version: None,
                            expected_latest: previous,
                            require_room_enabled: true,
                            disable_room: false,
                            leave_reason: LeaveReason::UserLeft,
                        })
                        .await?
                    {
                        SaveOutcome::Saved { .. } => {
                            tracing::info!(session_id = %session.id, room_id = %room.room_id, participant_id, "session started");
                            return Ok(session);
                        }
                        SaveOutcome::Conflict => continue,
                        SaveOutcome::RoomDisabled => return Err(disabled(&room)),
                        SaveOutcome::RoomMissing => return Err(room_not_found(room_key)),
                    }
                }
            }
        }
        Err(Error::Contended {
            what: format!("of room {}", room.room_id),
        })
    }

    /// A media server reports that a participant left the room of account
    /// `raw_user_id` (the `userId` of the session its join returned: there is
    /// no index across accounts to find the room by). Idempotent.
    pub async fn participant_left(
        &self,
        caller: &Caller,
        raw_user_id: &str,
        room_key: &str,
        participant_id: &str,
        raw_reason: &str,
    ) -> Result<Session, Error> {
        caller.require_service()?;
        let mut violations = Vec::new();
        let reason = LeaveReason::parse(raw_reason);
        if reason.is_none() {
            violations.push(FieldViolation::new(
                "reason",
                format!(
                    "must be user-left, connection-error or removed, got {}",
                    domain::excerpt(raw_reason)
                ),
            ));
        }
        let user_id = match domain::UserId::parse(raw_user_id) {
            Ok(id) => Some(id),
            Err(rule) => {
                violations.push(FieldViolation::new("userId", rule));
                None
            }
        };
        check_participant_id(participant_id, &mut violations);
        let (Some(user_id), Some(reason)) = (user_id.filter(|_| violations.is_empty()), reason)
        else {
            return Err(Error::InvalidArgument(violations));
        };
        let room = self.room_in(&user_id, room_key).await?;
        for _ in 0..ATTEMPTS {
            let now = self.clock.now();
            let Some(current) = self
                .sessions
                .latest_session(&room.user_id, &room.room_id)
                .await?
            else {
                return Err(Error::not_found(format!(
                    "session of room {}",
                    domain::excerpt(room_key)
                )));
            };
            let mut session = current.value.as_of(now);
            if !session.is_ongoing() || !session.leave(participant_id, now) {
                return Ok(session);
            }
            match self
                .save(Change {
                    leave_reason: reason,
                    ..Change::of(&current, &session)
                })
                .await?
            {
                SaveOutcome::Saved { .. } => {
                    tracing::info!(session_id = %session.id, participant_id, "participant left");
                    return Ok(session);
                }
                SaveOutcome::Conflict => continue,
                SaveOutcome::RoomDisabled | SaveOutcome::RoomMissing => {
                    return Err(room_not_found(room_key));
                }
            }
        }
        Err(Error::Contended {
            what: format!("of room {}", room.room_id),
        })
    }

    /// The caller's session, as it stands now.
    pub async fn get_session(&self, caller: &Caller, raw_id: &str) -> Result<Session, Error> {
        let session = self.find(caller, raw_id).await?.value;
        Ok(session.as_of(self.clock.now()))
    }

    /// One page of the caller's sessions, newest start first.
    pub async fn list_sessions(
        &self,
        caller: &Caller,
        request: SessionListRequest,
    ) -> Result<SessionPage, Error> {
        let mut violations = Vec::new();
        let paging = match Paging::parse(request.page, request.per_page) {
            Ok(paging) => Some(paging),
            Err(mut v) => {
                violations.append(&mut v);
                None
            }
        };
        let status = match request.status.as_deref() {
            None | Some("") => None,
            Some("ongoing") => Some(SessionStatus::Ongoing),
            Some("ended") => Some(SessionStatus::Ended),
            Some(other) => {
                violations.push(FieldViolation::new(
                    "status",
                    format!("must be ongoing or ended, got {}", domain::excerpt(other)),
                ));
                None
            }
        };
        let Some(paging) = paging.filter(|_| violations.is_empty()) else {
            return Err(Error::InvalidArgument(violations));
        };
        let room_id = match request.room.as_deref() {
            None | Some("") => None,
            Some(key) => Some(self.room(caller, key).await?.room_id),
        };
        if room_id.is_none() && caller.room_scope.is_some() {
            // A token scoped to one room lists that room's sessions only.
            let scope = caller.room_scope.clone().unwrap_or_default();
            let room = self.room(caller, &scope).await?;
            return self.page(caller, Some(room.room_id), status, paging).await;
        }
        self.page(caller, room_id, status, paging).await
    }

    async fn page(
        &self,
        caller: &Caller,
        room_id: Option<domain::RoomId>,
        status: Option<SessionStatus>,
        paging: Paging,
    ) -> Result<SessionPage, Error> {
        if status.is_some() {
            // The store filters by stored state, and a session past its
            // deadline may not be stored as ended yet: store those closes
            // first, so the filter and the counts agree with what is read.
            self.close_overdue_in(&caller.account.user_id, room_id.as_ref())
                .await?;
        }
        let filter = SessionFilter { room_id, status };
        let (sessions, total) = self
            .sessions
            .list_sessions(
                &caller.account.user_id,
                &filter,
                paging.offset(),
                paging.per_page as usize,
            )
            .await?;
        let now = self.clock.now();
        // A session past its deadline reads as ended even before the
        // sweeper has stored that; the page keeps the stored order.
        let sessions = sessions
            .into_iter()
            .map(|s| s.as_of(now))
            .filter(|s| match status {
                Some(SessionStatus::Ongoing) => s.is_ongoing(),
                _ => true,
            })
            .collect();
        Ok(SessionPage {
            sessions,
            paging,
            last_page: paging.last_page(total),
            total,
        })
    }

    /// Ends the room's running session (or the one named, if it runs).
    pub async fn end_session(
        &self,
        caller: &Caller,
        room_key: &str,
        session_id: Option<&str>,
    ) -> Result<Session, Error> {
        let room = self.room(caller, room_key).await?;
        for _ in 0..ATTEMPTS {
            let now = self.clock.now();
            let current = match session_id.filter(|id| !id.is_empty()) {
                Some(raw) => {
                    let found = self.find(caller, raw).await?;
                    if found.value.room_id != room.room_id {
                        return Err(session_not_found(raw));
                    }
                    found
                }
                None => self
                    .sessions
                    .latest_session(&room.user_id, &room.room_id)
                    .await?
                    .ok_or_else(|| {
                        Error::not_found(format!("session of room {}", domain::excerpt(room_key)))
                    })?,
            };
            if current.value.is_overdue(now) {
                self.close_overdue(&current, now).await?;
                continue;
            }
            let mut session = current.value.clone();
            if !session.is_ongoing() {
                return Ok(session);
            }
            session.close(now, EndReason::EndedByApi);
            let deactivates = session.deactivates_room;
            match self
                .save(Change {
                    disable_room: deactivates,
                    ..Change::of(&current, &session)
                })
                .await?
            {
                SaveOutcome::Saved { .. } => {
                    tracing::info!(session_id = %session.id, "session ended by api");
                    return Ok(session);
                }
                SaveOutcome::Conflict => continue,
                SaveOutcome::RoomDisabled | SaveOutcome::RoomMissing => {
                    return Err(room_not_found(room_key));
                }
            }
        }
        Err(Error::Contended {
            what: format!("of room {}", room.room_id),
        })
    }

    /// The session with all its participants, or only those present.
    pub async fn list_participants(
        &self,
        caller: &Caller,
        raw_id: &str,
        active_only: bool,
    ) -> Result<Session, Error> {
        let mut session = self.get_session(caller, raw_id).await?;
        if active_only {
            session.participants.retain(|p| p.is_present());
        }
        Ok(session)
    }

    /// Removes a participant from the room's running session (an account's
    /// call; the media plane learns of it from the session).
    pub async fn remove_participant(
        &self,
        caller: &Caller,
        room_key: &str,
        participant_id: &str,
        session_id: Option<&str>,
    ) -> Result<Session, Error> {
        let mut violations = Vec::new();
        check_participant_id(participant_id, &mut violations);
        if !violations.is_empty() {
            return Err(Error::InvalidArgument(violations));
        }
        let room = self.room(caller, room_key).await?;
        for _ in 0..ATTEMPTS {
            let now = self.clock.now();
            let current = match session_id.filter(|id| !id.is_empty()) {
                Some(raw) => self.find(caller, raw).await?,
                None => self
                    .sessions
                    .latest_session(&room.user_id, &room.room_id)
                    .await?
                    .ok_or_else(|| Error::not_found("running session"))?,
            };
            let mut session = current.value.as_of(now);
            if session.room_id != room.room_id || !session.is_ongoing() {
                return Err(Error::not_found(format!(
                    "running session of room {}",
                    domain::excerpt(room_key)
                )));
            }
            if !session.leave(participant_id, now) {
                return Err(Error::not_found(format!(
                    "participant {} in the session",
                    domain::excerpt(participant_id)
                )));
            }
            match self
                .save(Change {
                    leave_reason: LeaveReason::Removed,
                    ..Change::of(&current, &session)
                })
                .await?
            {
                SaveOutcome::Saved { .. } => return Ok(session),
                SaveOutcome::Conflict => continue,
                SaveOutcome::RoomDisabled | SaveOutcome::RoomMissing => {
                    return Err(room_not_found(room_key));
                }
            }
        }
        Err(Error::Contended {
            what: format!("of room {}", room.room_id),
        })
    }

    /// After a room was disabled: its running session ends.
    pub async fn room_deactivated(&self, room: &Room) -> Result<(), Error> {
        for _ in 0..ATTEMPTS {
            let now = self.clock.now();
            let Some(current) = self
                .sessions
                .latest_session(&room.user_id, &room.room_id)
                .await?
            else {
                return Ok(());
            };
            if current.value.is_overdue(now) {
                self.close_overdue(&current, now).await?;
                continue;
            }
            if !current.value.is_ongoing() {
                return Ok(());
            }
            let mut session = current.value.clone();
            session.close(now, EndReason::RoomDeactivated);
            match self.save(Change::of(&current, &session)).await? {
                SaveOutcome::Saved { .. } | SaveOutcome::RoomMissing => return Ok(()),
                SaveOutcome::Conflict | SaveOutcome::RoomDisabled => continue,
            }
        }
        Err(Error::Contended {
            what: format!("of room {}", room.room_id),
        })
    }

    /// Closes every session whose deadline has passed, durably, and keeps
    /// the deadline index in step. Any number of replicas may sweep at once:
    /// each close is a version-checked write, so exactly one of them stores
    /// it, and a sweep after a pause (every replica down) closes each session
    /// at its own deadline, not at the time of the sweep.
    pub async fn sweep(&self) -> Result<SweepReport, Error> {
        let now = self.clock.now();
        let mut report = SweepReport::default();
        for entry in self.sessions.due_sessions(now, Self::SWEEP_BATCH).await? {
            report.examined += 1;
            let current = self
                .sessions
                .get_session(&entry.user_id, &entry.session_id)
                .await?;
            let next = match current {
                None => None,
                Some(current) if !current.value.is_ongoing() => None,
                Some(current) if current.value.is_overdue(now) => {
                    if !self.close_overdue(&current, now).await? {
                        // Another writer got there first; a later sweep
                        // sees what it stored.
                        continue;
                    }
                    report.closed += 1;
                    // A close does not touch the entry, so it settles now.
                    None
                }
                Some(current) => Some(current.value.due().0),
            };
            self.sessions.settle_due(&entry, next).await?;
        }
        Ok(report)
    }

    /// Stores the close of every overdue session of the account (or room).
    /// Ongoing sessions are few (at most one per room), so this reads the
    /// ongoing listing only.
    async fn close_overdue_in(
        &self,
        user_id: &domain::UserId,
        room_id: Option<&domain::RoomId>,
    ) -> Result<(), Error> {
        const MAX_ONGOING_READ: usize = 10_000;
        let filter = SessionFilter {
            room_id: room_id.cloned(),
            status: Some(SessionStatus::Ongoing),
        };
        let (ongoing, _) = self
            .sessions
            .list_sessions(user_id, &filter, 0, MAX_ONGOING_READ)
            .await?;
        let now = self.clock.now();
        for session in ongoing.iter().filter(|s| s.is_overdue(now)) {
            if let Some(current) = self.sessions.get_session(user_id, &session.id).await?
                && current.value.is_overdue(now)
            {
                self.close_overdue(&current, now).await?;
            }
        }
        Ok(())
    }

    /// Closes an overdue session at its deadline (and disables its room
    /// when its rule says so). Returns whether this call stored the close.
    async fn close_overdue(
        &self,
        current: &Versioned<Session>,
        now: Timestamp,
    ) -> Result<bool, Error> {
        let closed = current.value.as_of(now);
        let outcome = self
            .save(Change {
                before: Some(&current.value),
                after: &closed,
                expected_version: Some(current.version),
                expected_latest: None,
                require_room_enabled: false,
                // session-end-and-deactivate: the room holds one session only.
                disable_room: closed.deactivates_room,
                leave_reason: LeaveReason::UserLeft,
            })
            .await?;
        let stored = matches!(outcome, SaveOutcome::Saved { .. });
        if stored {
            tracing::info!(
                session_id = %closed.id,
                room_id = %closed.room_id,
                reason = closed.end_reason.map(EndReason::as_str),
                "session closed"
            );
        }
        Ok(stored)
    }

    /// Writes a change with the events it makes, in one atomic step.
    async fn save(&self, change: Change<'_>) -> Result<SaveOutcome, Error> {
        let now = self.clock.now();
        let events =
            domain::lifecycle_events(change.before, change.after, change.leave_reason, now);
        if !events.is_empty() {
            // The hint index is not in the account's slot: set the hint
            // first, so a crash after the write leaves a hint and not an
            // event that no worker looks for.
            self.events
                .hint_delivery(&change.after.user_id, now)
                .await?;
        }
        Ok(self
            .sessions
            .save_session(SaveSession {
                session: change.after,
                expected_version: change.expected_version,
                expected_latest: change.expected_latest,
                require_room_enabled: change.require_room_enabled,
                disable_room: change.disable_room,
                now,
                events: &events,
            })
            .await?)
    }

    fn rules(&self, room: &Room) -> SessionRules {
        match room.settings.auto_close_config {
            Some(config) => SessionRules {
                lifetime: config.lifetime(),
                lifetime_reason: EndReason::AutoClose,
                deactivates_room: config.kind == AutoCloseType::SessionEndAndDeactivate,
                empty_grace: self.config.empty_grace,
            },
            None => SessionRules {
                lifetime: self.config.max_session,
                lifetime_reason: EndReason::MaxLength,
                deactivates_room: false,
                empty_grace: self.config.empty_grace,
            },
        }
    }

    /// The caller's room, within its token's scope.
    async fn room(&self, caller: &Caller, raw_key: &str) -> Result<Room, Error> {
        caller_room(self.rooms.as_ref(), caller, raw_key).await
    }

    async fn room_in(&self, user_id: &domain::UserId, raw_key: &str) -> Result<Room, Error> {
        find_room(self.rooms.as_ref(), user_id, raw_key).await
    }

    async fn find(&self, caller: &Caller, raw_id: &str) -> Result<Versioned<Session>, Error> {
        if raw_id.is_empty() {
            return Err(Error::invalid("sessionId", "is required"));
        }
        let id = SessionId::parse(raw_id).ok_or_else(|| session_not_found(raw_id))?;
        let found = self
            .sessions
            .get_session(&caller.account.user_id, &id)
            .await?
            .ok_or_else(|| session_not_found(raw_id))?;
        if caller.room_scope.is_some() {
            // The scope names the room; resolving it checks the token.
            let room_id = found.value.room_id.to_string();
            self.room(caller, &room_id).await?;
        }
        Ok(found)
    }
}

/// One session write: the session as read and as it will be stored.
#[derive(Clone, Copy)]
struct Change<'a> {
    /// `None` for a new session.
    before: Option<&'a Session>,
    after: &'a Session,
    expected_version: Option<u64>,
    expected_latest: Option<&'a SessionId>,
    require_room_enabled: bool,
    disable_room: bool,
    /// What a participant-left event of this change says.
    leave_reason: LeaveReason,
}

impl<'a> Change<'a> {
    /// A change to a stored session that leaves its room as it is.
    fn of(current: &'a Versioned<Session>, after: &'a Session) -> Change<'a> {
        Change {
            before: Some(&current.value),
            after,
            expected_version: Some(current.version),
            expected_latest: None,
            require_room_enabled: false,
            disable_room: false,
            leave_reason: LeaveReason::UserLeft,
        }
    }
}

fn check_participant_id(id: &str, violations: &mut Vec<FieldViolation>) {
    let chars = id.chars().count();
    if chars == 0
        || chars > MAX_PARTICIPANT_ID_CHARS
        || id.trim() != id
        || id.chars().any(char::is_control)
    {
        violations.push(FieldViolation::new(
            "participantId",
            format!(
                "must be 1 to {MAX_PARTICIPANT_ID_CHARS} characters, without control characters or leading or trailing whitespace"
            ),
        ));
    }
}

fn permission_denied(why: &str) -> Error {
    Error::Auth(crate::auth::AuthError::PermissionDenied(why.to_owned()))
}

fn disabled(room: &Room) -> Error {
    Error::RoomDisabled {
        room: room.room_id.to_string(),
    }
}

fn room_not_found(raw_key: &str) -> Error {
    Error::not_found(format!("room {}", domain::excerpt(raw_key)))
}

fn session_not_found(raw_id: &str) -> Error {
    Error::not_found(format!("session {}", domain::excerpt(raw_id)))
}
