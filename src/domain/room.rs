//! Rooms and the rules for the fields a caller may set on them.

use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::{CustomRoomId, DocumentId, FieldViolation, RoomId, UserId};

/// The stored room. Everything but `disabled` and `updated_at` is fixed at
/// creation.
#[derive(Clone, Debug, PartialEq)]
pub struct Room {
    pub room_id: RoomId,
    pub user_id: UserId,
    pub custom_room_id: Option<CustomRoomId>,
    pub disabled: bool,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
    pub settings: RoomSettings,
}

impl Room {
    /// The document id; derived from roomId and creation time, never stored.
    pub fn id(&self) -> DocumentId {
        DocumentId::for_room(&self.room_id, self.created_at.as_second())
    }
}

/// Whether a room accepts sessions, as the REST API spells it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RoomStatus {
    Enabled,
    Disabled,
}

impl RoomStatus {
    pub const RULE: &'static str = "must be \"enabled\" or \"disabled\"";

    pub fn parse(s: &str) -> Option<RoomStatus> {
        match s {
            "enabled" => Some(RoomStatus::Enabled),
            "disabled" => Some(RoomStatus::Disabled),
            _ => None,
        }
    }

    pub fn of(room: &Room) -> RoomStatus {
        if room.disabled {
            RoomStatus::Disabled
        } else {
            RoomStatus::Enabled
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            RoomStatus::Enabled => "enabled",
            RoomStatus::Disabled => "disabled",
        }
    }

    pub fn disabled(self) -> bool {
        self == RoomStatus::Disabled
    }
}

/// The optional settings of a room, as validated at creation.
///
/// Serialized (camelCase, absent fields omitted) by the stores; keep field
/// names stable, they are part of the stored format.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RoomSettings {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub geo_fence: Option<GeoFence>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook: Option<Webhook>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auto_close_config: Option<AutoCloseConfig>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auto_start_config: Option<Map<String, Value>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub multi_composition: Option<Map<String, Value>>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allowed_participant_ids: Vec<String>,
}

impl RoomSettings {
    pub fn is_empty(&self) -> bool {
        *self == RoomSettings::default()
    }
}

/// The regions a room's media may be pinned to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum GeoFence {
    Us001,
    Uk001,
    Sg001,
    Eu001,
    Uae001,
    In001,
    In002,
    In003,
    Sg002,
    Us002,
    Aus001,
}

impl GeoFence {
    const ALL: [(GeoFence, &'static str); 11] = [
        (GeoFence::Us001, "us001"),
        (GeoFence::Uk001, "uk001"),
        (GeoFence::Sg001, "sg001"),
        (GeoFence::Eu001, "eu001"),
        (GeoFence::Uae001, "uae001"),
        (GeoFence::In001, "in001"),
        (GeoFence::In002, "in002"),
        (GeoFence::In003, "in003"),
        (GeoFence::Sg002, "sg002"),
        (GeoFence::Us002, "us002"),
        (GeoFence::Aus001, "aus001"),
    ];

    pub fn parse(s: &str) -> Option<GeoFence> {
        Self::ALL
            .iter()
            .find(|(_, name)| *name == s)
            .map(|(g, _)| *g)
    }

    pub fn as_str(self) -> &'static str {
        Self::ALL
            .iter()
            .find(|(g, _)| *g == self)
            .map(|(_, n)| *n)
            .expect("every variant is listed")
    }

    fn names() -> String {
        Self::ALL
            .iter()
            .map(|(_, n)| *n)
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// Every webhook event name a room can subscribe to.
pub const WEBHOOK_EVENTS: [&str; 23] = [
    "participant-joined",
    "participant-left",
    "session-started",
    "session-ended",
    "recording-starting",
    "recording-started",
    "recording-stopping",
    "recording-stopped",
    "recording-failed",
    "livestream-starting",
    "livestream-started",
    "livestream-stopping",
    "livestream-stopped",
    "livestream-failed",
    "hls-starting",
    "hls-started",
    "hls-playable",
    "hls-stopping",
    "hls-stopped",
    "hls-failed",
    "transcription-completed",
    // Patterns are checked separately; these two are listed so the error
    // message names every accepted form.
    "*",
    "<prefix>-*",
];

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Webhook {
    pub end_point: String,
    pub events: Vec<String>,
}

/// What happens when a session has run for `duration_minutes`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum AutoCloseType {
    #[serde(rename = "session-ends")]
    SessionEnds,
    #[serde(rename = "session-end-and-deactivate")]
    SessionEndAndDeactivate,
}

impl AutoCloseType {
    pub fn as_str(self) -> &'static str {
        match self {
            AutoCloseType::SessionEnds => "session-ends",
            AutoCloseType::SessionEndAndDeactivate => "session-end-and-deactivate",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AutoCloseConfig {
    #[serde(rename = "type")]
    pub kind: AutoCloseType,
    #[serde(rename = "duration")]
    pub duration_minutes: u32,
}

impl AutoCloseConfig {
    pub const DEFAULT_DURATION_MINUTES: u32 = 480;
    pub const MAX_DURATION_MINUTES: u32 = 43_200;
}

/// A create request as the caller sent it, before validation. Transports fill
/// this in; [`RoomSpec::parse`] turns it into trusted values.
#[derive(Clone, Debug, Default)]
pub struct CreateRoomParams {
    pub custom_room_id: Option<String>,
    pub geo_fence: Option<String>,
    pub webhook: Option<WebhookParams>,
    pub auto_close_config: Option<AutoCloseParams>,
    pub auto_start_config: Option<Map<String, Value>>,
    pub multi_composition: Option<Map<String, Value>>,
    pub allowed_participant_ids: Vec<String>,
}

#[derive(Clone, Debug, Default)]
pub struct WebhookParams {
    pub end_point: String,
    pub events: Vec<String>,
}

#[derive(Clone, Debug, Default)]
pub struct AutoCloseParams {
    /// `None` when the caller sent no type at all.
    pub kind: Option<String>,
    pub duration: Option<i64>,
}

/// A validated create request.
#[derive(Clone, Debug, PartialEq)]
pub struct RoomSpec {
    pub custom_room_id: Option<CustomRoomId>,
    pub settings: RoomSettings,
}

/// The largest JSON document accepted for each free-form media setting.
pub const MAX_FREE_FORM_BYTES: usize = 8 * 1024;
pub const MAX_ALLOWED_PARTICIPANTS: usize = 1000;
pub const MAX_PARTICIPANT_ID_CHARS: usize = 256;
pub const MAX_WEBHOOK_URL_CHARS: usize = 512;

impl RoomSpec {
    /// Validates every field, collecting all violations rather than stopping at
    /// the first, so a caller fixes a request in one round.
    pub fn parse(params: CreateRoomParams) -> Result<RoomSpec, Vec<FieldViolation>> {
        let mut violations = Vec::new();

        let custom_room_id = match params.custom_room_id.as_deref() {
            None => None,
            Some(raw) => match CustomRoomId::parse_new(raw) {
                Ok(id) => Some(id),
                Err(rule) => {
                    violations.push(FieldViolation::new("customRoomId", rule));
                    None
                }
            },
        };

        let geo_fence = params.geo_fence.as_deref().and_then(|raw| {
            let parsed = GeoFence::parse(raw);
            if parsed.is_none() {
                violations.push(FieldViolation::new(
                    "geoFence",
                    format!("must be one of {}", GeoFence::names()),
                ));
            }
            parsed
        });

        let webhook = params
            .webhook
            .and_then(|w| parse_webhook(w, &mut violations));
        let auto_close_config = params
            .auto_close_config
            .and_then(|a| parse_auto_close(a, &mut violations));

        for (field, value) in [
            ("autoStartConfig", &params.auto_start_config),
            ("multiComposition", &params.multi_composition),
        ] {
            if let Some(object) = value {
                let size = serde_json::to_vec(object)
                    .map(|v| v.len())
                    .unwrap_or(usize::MAX);
                if size > MAX_FREE_FORM_BYTES {
                    violations.push(FieldViolation::new(
                        field,
                        format!("must be at most {MAX_FREE_FORM_BYTES} bytes of JSON, got {size}"),
                    ));
                }
            }
        }

        if params.allowed_participant_ids.len() > MAX_ALLOWED_PARTICIPANTS {
            violations.push(FieldViolation::new(
                "allowedParticipantIds",
                format!("must hold at most {MAX_ALLOWED_PARTICIPANTS} ids"),
            ));
        }
        for (i, id) in params.allowed_participant_ids.iter().enumerate() {
            let chars = id.chars().count();
            if chars == 0 || chars > MAX_PARTICIPANT_ID_CHARS || id.trim() != id {
                violations.push(FieldViolation::new(
                    format!("allowedParticipantIds[{i}]"),
                    format!(
                        "must be 1 to {MAX_PARTICIPANT_ID_CHARS} characters without leading or trailing spaces"
                    ),
                ));
            }
        }

        if !violations.is_empty() {
            return Err(violations);
        }
        Ok(RoomSpec {
            custom_room_id,
            settings: RoomSettings {
                geo_fence,
                webhook,
                auto_close_config,
                auto_start_config: params.auto_start_config,
                multi_composition: params.multi_composition,
                allowed_participant_ids: params.allowed_participant_ids,
            },
        })
    }
}

fn parse_webhook(params: WebhookParams, violations: &mut Vec<FieldViolation>) -> Option<Webhook> {
    let before = violations.len();
    let end_point = params.end_point;
    if end_point.is_empty() {
        violations.push(FieldViolation::new(
            "webhook.endPoint",
            "is required when webhook is given",
        ));
    } else if end_point.chars().count() > MAX_WEBHOOK_URL_CHARS {
        violations.push(FieldViolation::new(
            "webhook.endPoint",
            format!("must be at most {MAX_WEBHOOK_URL_CHARS} characters"),
        ));
    } else {
        match url::Url::parse(&end_point) {
            Ok(url) if matches!(url.scheme(), "http" | "https") && url.host().is_some() => {}
            _ => violations.push(FieldViolation::new(
                "webhook.endPoint",
                "must be an absolute http or https URL",
            )),
        }
    }
    let mut listed_known_events = false;
    for (i, event) in params.events.iter().enumerate() {
        if is_known_event_pattern(event) {
            continue;
        }
        // The list of valid names is long: say it once per request.
        let hint = if listed_known_events {
            String::new()
        } else {
            listed_known_events = true;
            format!(": use one of {}", WEBHOOK_EVENTS.join(", "))
        };
        violations.push(FieldViolation::new(
            format!("webhook.events[{i}]"),
            format!("unknown event {}{hint}", super::excerpt(event)),
        ));
    }
    (violations.len() == before).then_some(Webhook {
        end_point,
        events: params.events,
    })
}

/// An exact event name, `*`, or `<prefix>-*` where some event starts with
/// `<prefix>-`.
fn is_known_event_pattern(event: &str) -> bool {
    let exact = &WEBHOOK_EVENTS[..WEBHOOK_EVENTS.len() - 2];
    if event == "*" || exact.contains(&event) {
        return true;
    }
    match event.strip_suffix('*') {
        Some(prefix) if prefix.ends_with('-') => exact.iter().any(|name| name.starts_with(prefix)),
        _ => false,
    }
}

fn parse_auto_close(
    params: AutoCloseParams,
    violations: &mut Vec<FieldViolation>,
) -> Option<AutoCloseConfig> {
    let kind = match params.kind.as_deref() {
        None | Some("") => {
            violations.push(FieldViolation::new(
                "autoCloseConfig.type",
                "is required: session-ends or session-end-and-deactivate",
            ));
            None
        }
        Some("session-ends") => Some(AutoCloseType::SessionEnds),
        Some("session-end-and-deactivate") => Some(AutoCloseType::SessionEndAndDeactivate),
        Some(other) => {
            violations.push(FieldViolation::new(
                "autoCloseConfig.type",
                format!(
                    "unknown type {}: use session-ends or session-end-and-deactivate",
                    super::excerpt(other)
                ),
            ));
            None
        }
    };
    let max = AutoCloseConfig::MAX_DURATION_MINUTES;
    let duration = match params.duration {
        None => Some(AutoCloseConfig::DEFAULT_DURATION_MINUTES),
        Some(minutes) if (1..=i64::from(max)).contains(&minutes) => Some(minutes as u32),
        Some(minutes) => {
            violations.push(FieldViolation::new(
                "autoCloseConfig.duration",
                format!("must be a whole number of minutes from 1 to {max}, got {minutes}"),
            ));
            None
        }
    };
    Some(AutoCloseConfig {
        kind: kind?,
        duration_minutes: duration?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(result: Result<RoomSpec, Vec<FieldViolation>>) -> Vec<String> {
        result.unwrap_err().into_iter().map(|v| v.field).collect()
    }

    #[test]
    fn empty_request_is_valid() {
        let spec = RoomSpec::parse(CreateRoomParams::default()).unwrap();
        assert_eq!(spec.custom_room_id, None);
        assert!(spec.settings.is_empty());
    }

    #[test]
    fn auto_close_duration_defaults_to_480() {
        let spec = RoomSpec::parse(CreateRoomParams {
            auto_close_config: Some(AutoCloseParams {
                kind: Some("session-ends".into()),
                duration: None,
            }),
            ..Default::default()
        })
        .unwrap();
        let config = spec.settings.auto_close_config.unwrap();
        assert_eq!(config.duration_minutes, 480);
        assert_eq!(config.kind, AutoCloseType::SessionEnds);
    }

    #[test]
    fn every_violation_is_reported_with_its_field() {
        let params = CreateRoomParams {
            custom_room_id: Some("no spaces allowed".into()),
            geo_fence: Some("mars001".into()),
            webhook: Some(WebhookParams {
                end_point: "ftp://example.com/hook".into(),
                events: vec![
                    "session-started".into(),
                    "bogus".into(),
                    "recording-*".into(),
                    "nope-*".into(),
                ],
            }),
            auto_close_config: Some(AutoCloseParams {
                kind: None,
                duration: Some(0),
            }),
            allowed_participant_ids: vec!["ok".into(), "".into()],
            ..Default::default()
        };
        assert_eq!(
            fields(RoomSpec::parse(params)),
            [
                "customRoomId",
                "geoFence",
                "webhook.endPoint",
                "webhook.events[1]",
                "webhook.events[3]",
                "autoCloseConfig.type",
                "autoCloseConfig.duration",
                "allowedParticipantIds[1]",
            ]
        );
    }

    #[test]
    fn event_patterns() {
        for ok in [
            "*",
            "recording-*",
            "hls-*",
            "session-ended",
            "participant-*",
        ] {
            assert!(is_known_event_pattern(ok), "{ok}");
        }
        for bad in [
            "",
            "recording",
            "recording*",
            "foo-*",
            "-*",
            "<prefix>-*",
            "SESSION-ENDED",
        ] {
            assert!(!is_known_event_pattern(bad), "{bad}");
        }
    }

    #[test]
    fn settings_round_trip_through_json() {
        let settings = RoomSettings {
            geo_fence: Some(GeoFence::Uae001),
            auto_close_config: Some(AutoCloseConfig {
                kind: AutoCloseType::SessionEndAndDeactivate,
                duration_minutes: 10,
            }),
            ..Default::default()
        };
        let json = serde_json::to_string(&settings).unwrap();
        assert_eq!(
            json,
            r#"{"geoFence":"uae001","autoCloseConfig":{"type":"session-end-and-deactivate","duration":10}}"#
        );
        assert_eq!(
            serde_json::from_str::<RoomSettings>(&json).unwrap(),
            settings
        );
    }
}
