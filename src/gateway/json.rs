//! The VideoSDK v2 JSON shapes: request bodies as clients send them, and the
//! room and session documents the API answers with. Written out here, field
//! by field, rather than derived from the stored format, so storage can
//! change without changing the API.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::auth::Account;
use crate::domain::{
    self, AutoCloseParams, CreateRoomParams, EndReason, Participant, PublicUrl, Room, RoomStatus,
    Session, WebhookParams,
};

/// `POST /v2/rooms`. Every field is optional; unknown fields are ignored.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CreateRoomBody {
    custom_room_id: Option<String>,
    /// Discontinued by VideoSDK: accepted in any form and ignored.
    #[allow(dead_code)]
    region: Option<serde::de::IgnoredAny>,
    geo_fence: Option<String>,
    webhook: Option<WebhookBody>,
    auto_close_config: Option<AutoCloseBody>,
    auto_start_config: Option<Map<String, Value>>,
    multi_composition: Option<Map<String, Value>>,
    allowed_participant_ids: Option<Vec<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct WebhookBody {
    end_point: Option<String>,
    events: Option<Vec<String>>,
}

#[derive(Debug, Default, Deserialize)]
struct AutoCloseBody {
    #[serde(rename = "type")]
    kind: Option<String>,
    duration: Option<i64>,
    #[serde(rename = "durationSeconds")]
    duration_seconds: Option<i64>,
}

impl CreateRoomBody {
    pub fn into_params(self) -> CreateRoomParams {
        CreateRoomParams {
            custom_room_id: self.custom_room_id,
            geo_fence: self.geo_fence,
            webhook: self.webhook.map(|w| WebhookParams {
                end_point: w.end_point.unwrap_or_default(),
                events: w.events.unwrap_or_default(),
            }),
            auto_close_config: self.auto_close_config.map(|a| AutoCloseParams {
                kind: a.kind,
                duration: a.duration,
                duration_seconds: a.duration_seconds,
            }),
            auto_start_config: self.auto_start_config,
            multi_composition: self.multi_composition,
            allowed_participant_ids: self.allowed_participant_ids.unwrap_or_default(),
        }
    }
}

/// `POST /v2/rooms/deactivate`.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeactivateBody {
    #[serde(default)]
    pub room_id: String,
}

/// `POST /v2/rooms/{roomId}`.
#[derive(Debug, Default, Deserialize)]
pub struct StatusBody {
    #[serde(default)]
    pub status: String,
}

/// A room as the API shows it. Which optional parts appear depends on the
/// endpoint; see the constructors.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RoomJson {
    #[serde(skip_serializing_if = "Option::is_none")]
    meeting_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    user_meeting_id: Option<Option<String>>,
    room_id: String,
    custom_room_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    user_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    user: Option<UserJson>,
    disabled: bool,
    created_at: String,
    updated_at: String,
    id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    links: Option<LinksJson>,
    #[serde(skip_serializing_if = "Option::is_none")]
    status: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    webhook: Option<WebhookJson>,
    #[serde(skip_serializing_if = "Option::is_none")]
    auto_close_config: Option<AutoCloseJson>,
    #[serde(skip_serializing_if = "Option::is_none")]
    geo_fence: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    auto_start_config: Option<Map<String, Value>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    multi_composition: Option<Map<String, Value>>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    allowed_participant_ids: Vec<String>,
}

/// The owner of a room, as fetch and list show it.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct UserJson {
    id: String,
    name: Option<String>,
    email: Option<String>,
    discontinued_reason: Option<String>,
}

#[derive(Serialize)]
pub struct LinksJson {
    get_room: String,
    get_session: String,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct WebhookJson {
    end_point: String,
    events: Vec<String>,
}

#[derive(Serialize)]
struct AutoCloseJson {
    #[serde(rename = "type")]
    kind: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    duration: Option<u32>,
    #[serde(rename = "durationSeconds", skip_serializing_if = "Option::is_none")]
    duration_seconds: Option<u32>,
}

impl RoomJson {
    fn base(room: &Room) -> RoomJson {
        let settings = &room.settings;
        RoomJson {
            meeting_id: None,
            user_meeting_id: None,
            room_id: room.room_id.to_string(),
            custom_room_id: room.custom_room_id.as_ref().map(ToString::to_string),
            user_id: None,
            user: None,
            disabled: room.disabled,
            created_at: domain::format_timestamp(room.created_at),
            updated_at: domain::format_timestamp(room.updated_at),
            id: room.id().to_string(),
            links: None,
            status: None,
            webhook: settings.webhook.as_ref().map(|w| WebhookJson {
                end_point: w.end_point.clone(),
                events: w.events.clone(),
            }),
            auto_close_config: settings.auto_close_config.map(|a| AutoCloseJson {
                kind: a.kind.as_str(),
                duration: a.duration_minutes,
                duration_seconds: a.duration_seconds,
            }),
            geo_fence: settings.geo_fence.map(|g| g.as_str()),
            auto_start_config: settings.auto_start_config.clone(),
            multi_composition: settings.multi_composition.clone(),
            allowed_participant_ids: settings.allowed_participant_ids.clone(),
        }
    }

    fn links(room: &Room, base: &PublicUrl) -> LinksJson {
        LinksJson {
            get_room: base.room(&room.room_id),
            get_session: base.session(None),
        }
    }

    /// Create and validate: `userId` and `links`.
    pub fn created(room: &Room, base: &PublicUrl) -> RoomJson {
        RoomJson {
            user_id: Some(room.user_id.to_string()),
            links: Some(RoomJson::links(room, base)),
            ..RoomJson::base(room)
        }
    }

    /// Fetch and list items: the `user` object instead of `userId`.
    pub fn fetched(room: &Room, owner: &Account, base: &PublicUrl) -> RoomJson {
        RoomJson {
            user: Some(UserJson::of(owner)),
            links: Some(RoomJson::links(room, base)),
            ..RoomJson::base(room)
        }
    }

    /// `POST /v2/rooms/{roomId}`: the create shape plus `status`.
    pub fn with_status(room: &Room, base: &PublicUrl) -> RoomJson {
        RoomJson {
            status: Some(RoomStatus::of(room).as_str()),
            ..RoomJson::created(room, base)
        }
    }

    /// Deactivate: the stored document with its legacy names (`meetingId`,
    /// `userMeetingId`) beside the current ones, `userId` and `user`, no links.
    pub fn deactivated(room: &Room, owner: &Account) -> RoomJson {
        RoomJson {
            meeting_id: Some(room.room_id.to_string()),
            user_meeting_id: Some(room.custom_room_id.as_ref().map(ToString::to_string)),
            user_id: Some(room.user_id.to_string()),
            user: Some(UserJson::of(owner)),
            ..RoomJson::base(room)
        }
    }
}

impl UserJson {
    fn of(account: &Account) -> UserJson {
        UserJson {
            id: account.user_id.to_string(),
            name: account.name.clone(),
            email: account.email.clone(),
            discontinued_reason: None,
        }
    }
}

/// `GET /v2/rooms`.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PageJson {
    pub page_info: PageInfoJson,
    pub data: Vec<RoomJson>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PageInfoJson {
    pub current_page: u32,
    pub per_page: u32,
    pub last_page: u32,
    pub total: usize,
}

/// `POST /v2/sessions/end`. Unknown fields are ignored.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EndSessionBody {
    /// The room: roomId, customRoomId or id.
    #[serde(default)]
    pub room_id: String,
    /// A session of the room to end; `null` or absent: the room's latest.
    #[serde(default)]
    pub session_id: Option<String>,
}

/// `POST /v2/sessions/participants/remove`. Unknown fields are ignored.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RemoveParticipantBody {
    #[serde(default)]
    pub participant_id: String,
    #[serde(default)]
    pub room_id: String,
    #[serde(default)]
    pub session_id: Option<String>,
}

/// A session as the API shows it: VideoSDK's session object, plus our
/// `endReason`. `customRoomId`, `end` and `endReason` are `null` when unset.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SessionJson {
    id: String,
    user_id: String,
    room_id: String,
    custom_room_id: Option<String>,
    start: String,
    end: Option<String>,
    status: &'static str,
    active_duration: i64,
    end_reason: Option<&'static str>,
    participants: Vec<ParticipantJson>,
    links: LinksJson,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ParticipantJson {
    participant_id: String,
    name: String,
    timelog: Vec<TimeLogJson>,
}

#[derive(Serialize)]
struct TimeLogJson {
    start: String,
    end: Option<String>,
}

impl SessionJson {
    /// The whole session, or only `participants` (a page of them).
    pub fn new(session: &Session, participants: &[Participant], base: &PublicUrl) -> SessionJson {
        SessionJson {
            id: session.id.to_string(),
            user_id: session.user_id.to_string(),
            room_id: session.room_id.to_string(),
            custom_room_id: session.custom_room_id.as_ref().map(ToString::to_string),
            start: domain::format_timestamp(session.start),
            end: session.end.map(domain::format_timestamp),
            status: if session.is_ongoing() {
                "ongoing"
            } else {
                "ended"
            },
            // The service answers with the session as of its own clock; only
            // an ongoing session's length still depends on "now".
            active_duration: session.active_seconds(domain::now()),
            end_reason: session.end_reason.map(EndReason::as_str),
            participants: participants
                .iter()
                .map(|p| ParticipantJson {
                    participant_id: p.participant_id.clone(),
                    name: p.name.clone(),
                    timelog: p
                        .timelog
                        .iter()
                        .map(|t| TimeLogJson {
                            start: domain::format_timestamp(t.start),
                            end: t.end.map(domain::format_timestamp),
                        })
                        .collect(),
                })
                .collect(),
            links: LinksJson {
                get_room: base.room(&session.room_id),
                get_session: base.session(Some(session.id.as_str())),
            },
        }
    }

    pub fn of(session: &Session, base: &PublicUrl) -> SessionJson {
        SessionJson::new(session, &session.participants, base)
    }
}

/// `{pageInfo, data}`: `data` is a list of sessions (`GET /v2/sessions`,
/// `.../participants/active`) or one session (`.../participants`).
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct EnvelopeJson<T> {
    pub page_info: PageInfoJson,
    pub data: T,
}
