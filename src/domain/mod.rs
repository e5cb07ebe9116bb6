//! Domain values: identifiers, rooms and their validation rules. Nothing here
//! knows about tonic, axum or Redis.

mod event;
mod ids;
mod page;
mod room;
mod session;

pub use event::{
    Event, EventId, LIFECYCLE_EVENTS, LeaveReason, NewEvent, is_known_event, lifecycle_events,
    subscribed, webhook_timestamp,
};
pub use ids::{CustomRoomId, DocumentId, RoomId, UserId, push_hex};
pub use page::Paging;
pub use room::{
    AutoCloseConfig, AutoCloseParams, AutoCloseType, CreateRoomParams, GeoFence, Room,
    RoomSettings, RoomSpec, RoomStatus, WEBHOOK_EVENTS, Webhook, WebhookParams,
};
pub use session::{EndReason, Participant, Session, SessionId, SessionRules, TimeLog};

use jiff::Timestamp;

/// One invalid field of a request: `field` is its JSON path in the REST shape
/// (`webhook.events[1]`), so gRPC and REST callers read the same name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldViolation {
    pub field: String,
    pub description: String,
}

impl FieldViolation {
    pub fn new(field: impl Into<String>, description: impl Into<String>) -> FieldViolation {
        FieldViolation {
            field: field.into(),
            description: description.into(),
        }
    }
}

/// A caller-supplied value fit to quote in an error message or log line:
/// Debug-quoted and cut to 64 characters, since it can be anything.
pub fn excerpt(value: &str) -> String {
    const MAX_CHARS: usize = 64;
    if value.chars().count() <= MAX_CHARS {
        return format!("{value:?}");
    }
    let head: String = value.chars().take(MAX_CHARS).collect();
    format!("{head:?}...")
}

/// The current time, truncated to the millisecond precision the API shows, so
/// a stored room and the room just returned never disagree.
pub fn now() -> Timestamp {
    Timestamp::from_millisecond(Timestamp::now().as_millisecond()).expect("now is in range")
}

/// Formats a timestamp the way the API shows it: `2022-03-25T04:49:11.024Z`.
pub fn format_timestamp(ts: Timestamp) -> String {
    format!("{ts:.3}")
}

/// The base of every `links` URL: the server's public URL without a trailing
/// slash, e.g. `https://rooms.example.com`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PublicUrl(String);

impl PublicUrl {
    pub fn parse(raw: &str) -> Result<PublicUrl, String> {
        let url = url::Url::parse(raw).map_err(|e| format!("{raw:?} is not a URL: {e}"))?;
        if !matches!(url.scheme(), "http" | "https") || url.host().is_none() {
            return Err(format!("{raw:?} must be an absolute http or https URL"));
        }
        Ok(PublicUrl(raw.trim_end_matches('/').to_owned()))
    }

    /// `<base>/v2/rooms/<roomId>`.
    pub fn room(&self, room_id: &RoomId) -> String {
        self.join("/v2/rooms/", room_id.as_str())
    }

    /// `<base>/v2/sessions/`, or one session's URL when `session_id` is given.
    pub fn session(&self, session_id: Option<&str>) -> String {
        self.join("/v2/sessions/", session_id.unwrap_or_default())
    }

    /// Every room reply carries two links: copied, not formatted.
    fn join(&self, path: &str, id: &str) -> String {
        let mut url = String::with_capacity(self.0.len() + path.len() + id.len());
        url.push_str(&self.0);
        url.push_str(path);
        url.push_str(id);
        url
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}
