//! Rooms and the rules for the fields a caller may set on them.

use std::collections::HashSet;
use std::sync::Arc;

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
    /// Shared: a room read from a cache is handed out without copying its
    /// settings' JSON, and they never change after creation.
    pub settings: Arc<RoomSettings>,
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
    /// The url crate's serialization of an absolute http(s) URL without user
    /// info: ASCII, no control characters, no whitespace.
    pub end_point: String,
    /// Distinct, in the order first given.
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

/// Exactly one of the two durations is set: `duration` in minutes (VideoSDK's
/// field), or `durationSeconds`, our extension for tests and demos.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AutoCloseConfig {
    #[serde(rename = "type")]
    pub kind: AutoCloseType,
    #[serde(rename = "duration", default, skip_serializing_if = "Option::is_none")]
    pub duration_minutes: Option<u32>,
    #[serde(
        rename = "durationSeconds",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub duration_seconds: Option<u32>,
}

impl AutoCloseConfig {
    pub const DEFAULT_DURATION_MINUTES: u32 = 480;
    pub const MAX_DURATION_MINUTES: u32 = 43_200;
    pub const MAX_DURATION_SECONDS: u32 = 43_200 * 60;

    /// How long a session of the room may last.
    pub fn lifetime(&self) -> std::time::Duration {
        match (self.duration_seconds, self.duration_minutes) {
            (Some(seconds), _) => std::time::Duration::from_secs(u64::from(seconds)),
            (None, minutes) => std::time::Duration::from_secs(
                60 * u64::from(minutes.unwrap_or(Self::DEFAULT_DURATION_MINUTES)),
            ),
        }
    }
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
    /// Minutes.
    pub duration: Option<i64>,
    /// Seconds; exclusive with `duration`.
    pub duration_seconds: Option<i64>,
}

/// A validated create request.
#[derive(Clone, Debug, PartialEq)]
pub struct RoomSpec {
    pub custom_room_id: Option<CustomRoomId>,
    pub settings: RoomSettings,
}

/// `autoStartConfig`, `multiComposition` and `allowedParticipantIds` are
/// stored as given, so together they bound what one room costs to store and
/// to send back: at most this many bytes of JSON, in the form stored.
pub const MAX_MEDIA_SETTINGS_BYTES: usize = 16 * 1024;
/// Counted after repeats are dropped.
pub const MAX_ALLOWED_PARTICIPANTS: usize = 1000;
pub const MAX_PARTICIPANT_ID_CHARS: usize = 256;
/// Both as given and as normalized (percent-encoding can lengthen a URL).
pub const MAX_WEBHOOK_URL_CHARS: usize = 512;
/// Counted after repeats are dropped. Every valid subscription fits in fewer
/// (21 names, `*` and 6 prefix patterns make 28), so this only ever refuses
/// junk; it bounds what a room stores and what an error lists.
pub const MAX_WEBHOOK_EVENTS: usize = 32;

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

        // A repeated id admits no one more: drop it, judge each id once, and
        // measure and count what is stored.
        let allowed_participant_ids = dedup_first_seen(params.allowed_participant_ids);
        check_media_settings_size(
            &params.auto_start_config,
            &params.multi_composition,
            &allowed_participant_ids,
            &mut violations,
        );
        if allowed_participant_ids.len() > MAX_ALLOWED_PARTICIPANTS {
            violations.push(FieldViolation::new(
                "allowedParticipantIds",
                format!(
                    "must hold at most {MAX_ALLOWED_PARTICIPANTS} distinct ids, got {}",
                    allowed_participant_ids.len()
                ),
            ));
        }
        for (i, id) in &allowed_participant_ids {
            if !is_valid_participant_id(id) {
                violations.push(FieldViolation::new(
                    format!("allowedParticipantIds[{i}]"),
                    format!(
                        "must be 1 to {MAX_PARTICIPANT_ID_CHARS} characters, without control \
                         characters or leading or trailing whitespace"
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
                allowed_participant_ids: allowed_participant_ids
                    .into_iter()
                    .map(|(_, id)| id)
                    .collect(),
            },
        })
    }
}

fn parse_webhook(params: WebhookParams, violations: &mut Vec<FieldViolation>) -> Option<Webhook> {
    let before = violations.len();
    let end_point = match parse_webhook_url(&params.end_point) {
        Ok(url) => Some(url),
        Err(rule) => {
            violations.push(FieldViolation::new("webhook.endPoint", rule));
            None
        }
    };
    // A repeated name subscribes to nothing more: drop it rather than refuse
    // it, and judge each name once.
    let events = dedup_first_seen(params.events);
    if events.len() > MAX_WEBHOOK_EVENTS {
        violations.push(FieldViolation::new(
            "webhook.events",
            format!(
                "must hold at most {MAX_WEBHOOK_EVENTS} distinct events, got {}",
                events.len()
            ),
        ));
    }
    let mut listed_known_events = false;
    for (i, event) in &events {
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
    if violations.len() != before {
        return None;
    }
    Some(Webhook {
        end_point: end_point?,
        events: events.into_iter().map(|(_, event)| event).collect(),
    })
}

/// The endpoint as it is to be stored: the url crate's serialization of `raw`.
///
/// The URL standard lets a parser drop tabs and newlines anywhere and trim
/// spaces and control characters at the ends, so a raw string that passed the
/// parser could still carry CR/LF or NUL into whatever later reads it. Such
/// characters are refused outright, and what is stored is the serialization:
/// exactly the URL that was checked, and a fixed point of this function.
fn parse_webhook_url(raw: &str) -> Result<String, String> {
    const ABSOLUTE_RULE: &str = "must be an absolute http or https URL";
    if raw.is_empty() {
        return Err("is required when webhook is given".into());
    }
    let chars = raw.chars().count();
    if chars > MAX_WEBHOOK_URL_CHARS {
        return Err(format!(
            "must be at most {MAX_WEBHOOK_URL_CHARS} characters, got {chars}"
        ));
    }
    if let Some(c) = raw.chars().find(|c| c.is_control() || c.is_whitespace()) {
        return Err(format!(
            "must not contain control characters or whitespace, found U+{:04X}",
            u32::from(c)
        ));
    }
    let Ok(url) = url::Url::parse(raw) else {
        return Err(ABSOLUTE_RULE.into());
    };
    if !matches!(url.scheme(), "http" | "https") || url.host().is_none() {
        return Err(ABSOLUTE_RULE.into());
    }
    // Credentials would sit in every stored copy and every log line that
    // names the endpoint.
    if !url.username().is_empty() || url.password().is_some() {
        return Err("must not contain user info (user:password@)".into());
    }
    let normalized = String::from(url);
    if normalized.len() > MAX_WEBHOOK_URL_CHARS {
        return Err(format!(
            "must be at most {MAX_WEBHOOK_URL_CHARS} characters once normalized, got {}",
            normalized.len()
        ));
    }
    Ok(normalized)
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

/// Drops repeats, keeping each value's first occurrence in order, paired with
/// its index in the request (the index a violation names).
fn dedup_first_seen(values: Vec<String>) -> Vec<(usize, String)> {
    let mut seen: HashSet<&str> = HashSet::with_capacity(values.len());
    let first: Vec<bool> = values.iter().map(|v| seen.insert(v.as_str())).collect();
    values
        .into_iter()
        .zip(first)
        .enumerate()
        .filter_map(|(i, (value, first))| first.then_some((i, value)))
        .collect()
}

fn is_valid_participant_id(id: &str) -> bool {
    let chars = id.chars().count();
    (1..=MAX_PARTICIPANT_ID_CHARS).contains(&chars)
        && id.trim() == id
        && !id.chars().any(char::is_control)
}

/// One violation for the three free-form settings together, on the largest of
/// them (the one to shrink first; the later one on a tie); its description
/// gives every size.
fn check_media_settings_size(
    auto_start_config: &Option<Map<String, Value>>,
    multi_composition: &Option<Map<String, Value>>,
    allowed_participant_ids: &[(usize, String)],
    violations: &mut Vec<FieldViolation>,
) {
    let ids: Vec<&str> = allowed_participant_ids
        .iter()
        .map(|(_, id)| id.as_str())
        .collect();
    // Absent and empty values are not stored, so they cost nothing.
    let sizes = [
        (
            "autoStartConfig",
            auto_start_config.as_ref().map_or(0, json_len),
        ),
        (
            "multiComposition",
            multi_composition.as_ref().map_or(0, json_len),
        ),
        (
            "allowedParticipantIds",
            if ids.is_empty() { 0 } else { json_len(&ids) },
        ),
    ];
    let total: usize = sizes.iter().map(|(_, size)| size).sum();
    if total <= MAX_MEDIA_SETTINGS_BYTES {
        return;
    }
    let (largest, _) = sizes
        .iter()
        .max_by_key(|(_, size)| *size)
        .expect("three sizes");
    let [(_, auto_start), (_, multi), (_, participants)] = sizes;
    violations.push(FieldViolation::new(
        *largest,
        format!(
            "autoStartConfig, multiComposition and allowedParticipantIds must be at most \
             {MAX_MEDIA_SETTINGS_BYTES} bytes of JSON together, got {total} \
             (autoStartConfig {auto_start}, multiComposition {multi}, allowedParticipantIds {participants})"
        ),
    ));
}

/// The length of `value` as compact JSON, the form the stores write.
fn json_len(value: &impl Serialize) -> usize {
    /// Counts what it is given, so that nothing is built only to be
    /// measured.
    struct Counter(usize);
    impl std::io::Write for Counter {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0 += bytes.len();
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut counter = Counter(0);
    // JSON maps and string lists always serialize (their keys are strings),
    // and the counter never fails.
    serde_json::to_writer(&mut counter, value).expect("JSON values serialize");
    counter.0
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
    let max_seconds = AutoCloseConfig::MAX_DURATION_SECONDS;
    let durations = match (params.duration, params.duration_seconds) {
        (Some(_), Some(_)) => {
            violations.push(FieldViolation::new(
                "autoCloseConfig.durationSeconds",
                "give duration (minutes) or durationSeconds, not both",
            ));
            None
        }
        (None, None) => Some((Some(AutoCloseConfig::DEFAULT_DURATION_MINUTES), None)),
        (Some(minutes), None) if (1..=i64::from(max)).contains(&minutes) => {
            Some((Some(minutes as u32), None))
        }
        (Some(minutes), None) => {
            violations.push(FieldViolation::new(
                "autoCloseConfig.duration",
                format!("must be a whole number of minutes from 1 to {max}, got {minutes}"),
            ));
            None
        }
        (None, Some(seconds)) if (1..=i64::from(max_seconds)).contains(&seconds) => {
            Some((None, Some(seconds as u32)))
        }
        (None, Some(seconds)) => {
            violations.push(FieldViolation::new(
                "autoCloseConfig.durationSeconds",
                format!("must be a whole number of seconds from 1 to {max_seconds}, got {seconds}"),
            ));
            None
        }
    };
    let (duration_minutes, duration_seconds) = durations?;
    Some(AutoCloseConfig {
        kind: kind?,
        duration_minutes,
        duration_seconds,
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
                duration_seconds: None,
            }),
            ..Default::default()
        })
        .unwrap();
        let config = spec.settings.auto_close_config.unwrap();
        assert_eq!(config.duration_minutes, Some(480));
        assert_eq!(config.lifetime(), std::time::Duration::from_secs(480 * 60));
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
                duration_seconds: None,
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
                duration_minutes: Some(10),
                duration_seconds: None,
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

    fn with_webhook(end_point: &str, events: &[&str]) -> CreateRoomParams {
        CreateRoomParams {
            webhook: Some(WebhookParams {
                end_point: end_point.into(),
                events: events.iter().map(|e| e.to_string()).collect(),
            }),
            ..Default::default()
        }
    }

    fn one_violation(params: CreateRoomParams) -> FieldViolation {
        let violations = RoomSpec::parse(params).unwrap_err();
        assert_eq!(violations.len(), 1, "{violations:?}");
        violations.into_iter().next().unwrap()
    }

    #[test]
    fn webhook_endpoints_with_hidden_or_foreign_parts_are_refused() {
        for (raw, rule) in [
            ("https://example.com/a\r\nX-Injected: 1", "found U+000D"),
            ("https://example.com/a\nb", "found U+000A"),
            ("https://example.com/\0", "found U+0000"),
            ("https://exa\tmple.com/", "found U+0009"),
            ("https://example.com/a b", "found U+0020"),
            (" https://example.com/", "found U+0020"),
            ("https://example.com/\u{7f}", "found U+007F"),
            ("https://example.com/\u{85}", "found U+0085"),
            ("https://example.com/\u{a0}", "found U+00A0"),
            ("https://example.com/\u{2028}", "found U+2028"),
            ("https://user:pass@example.com/", "user info"),
            ("https://user@example.com/", "user info"),
            ("https://:pass@example.com/", "user info"),
            ("javascript:alert(1)", "absolute http or https URL"),
            ("ftp://example.com/x", "absolute http or https URL"),
            ("file:///etc/passwd", "absolute http or https URL"),
            ("data:text/plain,hi", "absolute http or https URL"),
            ("//example.com/x", "absolute http or https URL"),
            ("https://", "absolute http or https URL"),
            ("https://exa mple.com", "found U+0020"),
        ] {
            let violation = one_violation(with_webhook(raw, &["*"]));
            assert_eq!(violation.field, "webhook.endPoint", "{raw:?}");
            assert!(
                violation.description.contains(rule),
                "{raw:?}: {}",
                violation.description
            );
        }
    }

    #[test]
    fn webhook_endpoints_are_stored_normalized() {
        for (raw, stored) in [
            ("HTTPS://Example.COM:443/a/../b", "https://example.com/b"),
            ("https://example.com", "https://example.com/"),
            (
                "http://example.com:80/x?y=1#z",
                "http://example.com/x?y=1#z",
            ),
            (
                "https://example.com:8443/p%41th",
                "https://example.com:8443/p%41th",
            ),
            ("https://exämple.com/ü", "https://xn--exmple-cua.com/%C3%BC"),
            ("https:\\\\example.com\\a", "https://example.com/a"),
            ("https://@example.com/", "https://example.com/"),
            ("https://0x7f.1/", "https://127.0.0.1/"),
        ] {
            let spec = RoomSpec::parse(with_webhook(raw, &["*"])).unwrap();
            assert_eq!(spec.settings.webhook.unwrap().end_point, stored, "{raw:?}");
            assert_eq!(parse_webhook_url(stored).as_deref(), Ok(stored));
        }
    }

    #[test]
    fn webhook_endpoint_length_counts_as_given_and_as_normalized() {
        let at_limit = format!("https://example.com/{}", "a".repeat(512 - 20));
        assert!(parse_webhook_url(&at_limit).is_ok());
        let over = format!("{at_limit}a");
        assert!(
            parse_webhook_url(&over)
                .unwrap_err()
                .contains("at most 512")
        );
        // 100 characters that percent-encode to 600.
        let grows = format!("https://example.com/{}", "ü".repeat(100));
        let err = parse_webhook_url(&grows).unwrap_err();
        assert!(err.contains("once normalized, got 620"), "{err}");
    }

    #[test]
    fn repeated_events_are_stored_once_in_first_seen_order() {
        let spec = RoomSpec::parse(with_webhook(
            "https://example.com/h",
            &["session-ended", "*", "session-ended", "*", "hls-*"],
        ))
        .unwrap();
        assert_eq!(
            spec.settings.webhook.unwrap().events,
            ["session-ended", "*", "hls-*"]
        );
        let many = vec!["*"; 60_000];
        let spec = RoomSpec::parse(with_webhook("https://example.com/h", &many)).unwrap();
        assert_eq!(spec.settings.webhook.unwrap().events, ["*"]);
    }

    #[test]
    fn every_valid_subscription_fits_under_the_event_cap() {
        let exact = &WEBHOOK_EVENTS[..WEBHOOK_EVENTS.len() - 2];
        let mut all: Vec<String> = exact.iter().map(|e| e.to_string()).collect();
        all.push("*".into());
        for name in exact {
            let (prefix, _) = name.split_once('-').unwrap();
            all.push(format!("{prefix}-*"));
        }
        let all: Vec<&str> = all.iter().map(String::as_str).collect();
        let spec = RoomSpec::parse(with_webhook("https://example.com/h", &all)).unwrap();
        let stored = spec.settings.webhook.unwrap().events;
        assert!(stored.len() <= MAX_WEBHOOK_EVENTS, "{}", stored.len());
    }

    #[test]
    fn more_than_32_distinct_events_are_refused_first() {
        let events: Vec<String> = (0..33).map(|i| format!("e{i}")).collect();
        let events: Vec<&str> = events.iter().map(String::as_str).collect();
        let violations =
            RoomSpec::parse(with_webhook("https://example.com/h", &events)).unwrap_err();
        assert_eq!(violations[0].field, "webhook.events");
        assert_eq!(
            violations[0].description,
            "must hold at most 32 distinct events, got 33"
        );
        // Each unknown name is still named, at its first index.
        assert_eq!(violations.len(), 34);
        assert_eq!(violations[33].field, "webhook.events[32]");
    }

    #[test]
    fn unknown_events_are_reported_once_each_at_their_first_index() {
        let fields = fields(RoomSpec::parse(with_webhook(
            "https://example.com/h",
            &["bogus", "*", "bogus", "nope-*", "bogus"],
        )));
        assert_eq!(fields, ["webhook.events[0]", "webhook.events[3]"]);
    }

    fn with_participants(ids: &[&str]) -> CreateRoomParams {
        CreateRoomParams {
            allowed_participant_ids: ids.iter().map(|id| id.to_string()).collect(),
            ..Default::default()
        }
    }

    #[test]
    fn participant_ids_are_stored_once_in_first_seen_order() {
        let spec = RoomSpec::parse(with_participants(&[
            "bob", "alice", "bob", "carol", "alice",
        ]))
        .unwrap();
        assert_eq!(
            spec.settings.allowed_participant_ids,
            ["bob", "alice", "carol"]
        );
        // 1000 distinct is the limit; repeats beyond it are not counted.
        let ids: Vec<String> = (0..1000).map(|i| format!("p{i}")).collect();
        let mut with_repeats: Vec<&str> = ids.iter().map(String::as_str).collect();
        with_repeats.extend(["p0"; 500]);
        let spec = RoomSpec::parse(with_participants(&with_repeats)).unwrap();
        assert_eq!(spec.settings.allowed_participant_ids.len(), 1000);
        let too_many: Vec<String> = (0..1001).map(|i| format!("p{i}")).collect();
        let too_many: Vec<&str> = too_many.iter().map(String::as_str).collect();
        let violation = one_violation(with_participants(&too_many));
        assert_eq!(violation.field, "allowedParticipantIds");
        assert_eq!(
            violation.description,
            "must hold at most 1000 distinct ids, got 1001"
        );
    }

    #[test]
    fn participant_ids_must_be_printable_and_trimmed() {
        let longest = "x".repeat(256);
        let too_long = "x".repeat(257);
        assert!(RoomSpec::parse(with_participants(&["bob with spaces", "ünï", &longest])).is_ok());
        for bad in [
            "",
            " lead",
            "trail\u{a0}",
            "tab\there",
            "nul\0",
            "line\nbreak",
            "del\u{7f}",
            "c1\u{9b}",
            too_long.as_str(),
        ] {
            let violation = one_violation(with_participants(&["ok", bad]));
            assert_eq!(violation.field, "allowedParticipantIds[1]", "{bad:?}");
            assert_eq!(
                violation.description,
                "must be 1 to 256 characters, without control characters or leading or \
                 trailing whitespace"
            );
        }
    }

    fn blob(bytes: usize) -> Map<String, Value> {
        // {"b":"xxx..."} is 8 bytes of JSON around the string.
        let mut map = Map::new();
        map.insert("b".into(), Value::String("x".repeat(bytes - 8)));
        map
    }

    #[test]
    fn media_settings_share_16_kib() {
        // 8 KiB each for the two objects is exactly the limit.
        let at_limit = CreateRoomParams {
            auto_start_config: Some(blob(8192)),
            multi_composition: Some(blob(8192)),
            ..Default::default()
        };
        assert!(RoomSpec::parse(at_limit.clone()).is_ok());

        // One more byte anywhere is over: here, one participant id.
        let over = CreateRoomParams {
            allowed_participant_ids: vec!["p".into()],
            ..at_limit
        };
        let violation = one_violation(over);
        assert_eq!(
            violation.field, "multiComposition",
            "the largest, last on a tie"
        );
        assert_eq!(
            violation.description,
            "autoStartConfig, multiComposition and allowedParticipantIds must be at most 16384 \
             bytes of JSON together, got 16389 (autoStartConfig 8192, multiComposition 8192, \
             allowedParticipantIds 5)"
        );

        // One field alone may take it all, and is named when over.
        assert!(
            RoomSpec::parse(CreateRoomParams {
                auto_start_config: Some(blob(16384)),
                ..Default::default()
            })
            .is_ok()
        );
        let violation = one_violation(CreateRoomParams {
            auto_start_config: Some(blob(16385)),
            ..Default::default()
        });
        assert_eq!(violation.field, "autoStartConfig");

        // Participant ids are measured as stored: repeats cost nothing.
        let id = "p".repeat(250);
        let ids: Vec<String> = (0..70).map(|i| format!("{id}{i:02}")).collect();
        let ids: Vec<&str> = ids.iter().map(String::as_str).collect();
        let violation = one_violation(with_participants(&ids));
        assert_eq!(violation.field, "allowedParticipantIds");
        let repeated = vec![ids[0]; 1000];
        assert!(RoomSpec::parse(with_participants(&repeated)).is_ok());
    }

    /// Random inputs for every field, biased towards the shapes the rules
    /// care about, and the properties every answer must have.
    mod properties {
        use super::*;
        use proptest::collection::{btree_map, vec};
        use proptest::option;
        use proptest::prelude::*;
        use proptest::sample::select;

        /// Any string: control characters, unassigned code points and all.
        fn any_text() -> impl Strategy<Value = String> {
            prop_oneof![
                vec(any::<char>(), 0..40).prop_map(String::from_iter),
                "\\PC{0,40}",
                "[\\x00-\\x7f]{0,40}",
            ]
        }

        /// URLs assembled from parts, mostly well-formed so that the checks
        /// after parsing are reached, with odd parts now and then.
        fn url_like() -> impl Strategy<Value = String> {
            let scheme = prop_oneof![
                6 => select(vec!["http", "https", "HTTPS", "hTtP"]),
                1 => select(vec!["ftp", "javascript", "file", "data", "ws", ""]),
            ];
            let separator = prop_oneof![
                6 => Just("://"),
                1 => select(vec![":", ":/", ":\\\\", ":///", "://@", "//", ":\\/"]),
            ];
            let user_info = option::weighted(
                0.1,
                prop_oneof![
                    Just("user:pass@".to_string()),
                    Just(":@".to_string()),
                    "[a-z%:]{0,6}@",
                ],
            );
            let host = prop_oneof![
                6 => "[a-zA-Z0-9-]{1,10}(\\.[a-z0-9-]{1,6}){0,2}\\.?",
                1 => "[0-9]{1,3}(\\.[0-9]{1,3}){0,3}",
                1 => "0x[0-9a-f]{1,8}",
                1 => "\\[[0-9a-f:.]{0,20}\\]",
                1 => "\\PC{1,8}",
                1 => "[a-z%0-9.]{0,12}",
            ];
            let port = option::weighted(
                0.3,
                prop_oneof![
                    (0u32..70_000).prop_map(|p| format!(":{p}")),
                    "[:0-9a-z]{0,7}",
                ],
            );
            let path = prop_oneof![
                3 => "(/[A-Za-z0-9%._~-]{0,8}){0,4}",
                1 => "(/(\\.|\\.\\.|%2e|%2E|\\.%2e)){0,4}",
                1 => "[/\\\\?#\\PC]{0,24}",
            ];
            let tail = prop_oneof![
                3 => Just(String::new()),
                1 => "[?#][A-Za-z0-9=&%?#]{0,12}",
                1 => any_text(),
            ];
            (scheme, separator, user_info, host, port, path, tail).prop_map(
                |(scheme, separator, user_info, host, port, path, tail)| {
                    format!(
                        "{scheme}{separator}{}{host}{}{path}{tail}",
                        user_info.unwrap_or_default(),
                        port.unwrap_or_default()
                    )
                },
            )
        }

        fn endpoint() -> impl Strategy<Value = String> {
            prop_oneof![6 => url_like(), 1 => any_text()]
        }

        fn event() -> impl Strategy<Value = String> {
            prop_oneof![
                12 => select(WEBHOOK_EVENTS.to_vec()).prop_map(String::from),
                1 => "[a-z]{0,12}-\\*",
                1 => "[a-z*-]{0,16}",
                1 => any_text(),
            ]
        }

        fn json_value() -> impl Strategy<Value = Value> {
            let leaf = prop_oneof![
                Just(Value::Null),
                any::<bool>().prop_map(Value::Bool),
                any::<i64>().prop_map(Value::from),
                any::<f64>().prop_map(
                    |f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)
                ),
                any_text().prop_map(Value::String),
            ];
            leaf.prop_recursive(4, 48, 6, |inner| {
                prop_oneof![
                    vec(inner.clone(), 0..6).prop_map(Value::Array),
                    btree_map(any_text(), inner, 0..6)
                        .prop_map(|m| Value::Object(m.into_iter().collect())),
                ]
            })
        }

        fn json_object() -> impl Strategy<Value = Map<String, Value>> {
            prop_oneof![
                4 => btree_map(any_text(), json_value(), 0..6).prop_map(|m| m.into_iter().collect()),
                // Now and then big enough to meet the size limit.
                1 => (0usize..20_000).prop_map(|n| {
                    let mut map = Map::new();
                    map.insert("blob".into(), Value::String("x".repeat(n)));
                    map
                }),
            ]
        }

        fn participant_id() -> impl Strategy<Value = String> {
            prop_oneof![
                8 => select(vec!["alice", "bob", "carol"]).prop_map(String::from),
                8 => "[a-z0-9]{1,12}",
                1 => any_text(),
                1 => "[ a-z]{0,4}",
            ]
        }

        fn create_params() -> impl Strategy<Value = CreateRoomParams> {
            let custom_room_id = option::of(prop_oneof![
                8 => "[A-Za-z0-9._-]{1,20}",
                1 => any_text(),
                1 => "[A-Za-z0-9._-]{0,130}",
                1 => "[a-z0-9]{4}-[a-z0-9]{4}-[a-z0-9]{4}",
                1 => "[0-9a-fA-F]{24}",
                1 => select(vec![".", "..", "...", "deactivate", "validate"]).prop_map(String::from),
            ]);
            let geo_fence = option::of(prop_oneof![
                8 => select(GeoFence::ALL.iter().map(|(_, n)| *n).collect::<Vec<_>>())
                    .prop_map(String::from),
                1 => any_text(),
            ]);
            let webhook = option::of(
                (endpoint(), vec(event(), 0..40))
                    .prop_map(|(end_point, events)| WebhookParams { end_point, events }),
            );
            let auto_close = option::of(
                (
                    option::weighted(
                        0.9,
                        prop_oneof![
                            8 => select(vec!["session-ends", "session-end-and-deactivate"])
                                .prop_map(String::from),
                            1 => any_text(),
                        ],
                    ),
                    option::of(prop_oneof![
                        8 => 1i64..=43_200,
                        1 => -5i64..50_000,
                        1 => any::<i64>()
                    ]),
                )
                    .prop_map(|(kind, duration)| AutoCloseParams {
                        kind,
                        duration,
                        duration_seconds: None,
                    }),
            );
            (
                custom_room_id,
                geo_fence,
                webhook,
                auto_close,
                option::of(json_object()),
                option::of(json_object()),
                vec(participant_id(), 0..24),
            )
                .prop_map(
                    |(
                        custom_room_id,
                        geo_fence,
                        webhook,
                        auto_close_config,
                        auto_start_config,
                        multi_composition,
                        allowed_participant_ids,
                    )| CreateRoomParams {
                        custom_room_id,
                        geo_fence,
                        webhook,
                        auto_close_config,
                        auto_start_config,
                        multi_composition,
                        allowed_participant_ids,
                    },
                )
        }

        /// The request that would store `spec` exactly: what a client
        /// echoing back a room would send.
        fn params_of(spec: &RoomSpec) -> CreateRoomParams {
            let settings = &spec.settings;
            CreateRoomParams {
                custom_room_id: spec
                    .custom_room_id
                    .as_ref()
                    .map(|id| id.as_str().to_owned()),
                geo_fence: settings.geo_fence.map(|g| g.as_str().to_owned()),
                webhook: settings.webhook.as_ref().map(|w| WebhookParams {
                    end_point: w.end_point.clone(),
                    events: w.events.clone(),
                }),
                auto_close_config: settings.auto_close_config.map(|a| AutoCloseParams {
                    kind: Some(a.kind.as_str().to_owned()),
                    duration: a.duration_minutes.map(i64::from),
                    duration_seconds: a.duration_seconds.map(i64::from),
                }),
                auto_start_config: settings.auto_start_config.clone(),
                multi_composition: settings.multi_composition.clone(),
                allowed_participant_ids: settings.allowed_participant_ids.clone(),
            }
        }

        fn is_distinct(values: &[String]) -> bool {
            values.iter().collect::<HashSet<_>>().len() == values.len()
        }

        const FIELDS: [&str; 8] = [
            "customRoomId",
            "geoFence",
            "webhook.endPoint",
            "webhook.events",
            "autoCloseConfig.",
            "autoStartConfig",
            "multiComposition",
            "allowedParticipantIds",
        ];

        proptest! {
            #![proptest_config(ProptestConfig {
                cases: 512,
                failure_persistence: None,
                ..ProptestConfig::default()
            })]

            #[test]
            fn webhook_urls_are_stored_as_checked(raw in endpoint()) {
                if let Ok(stored) = parse_webhook_url(&raw) {
                    // A fixed point: checking the stored form again changes nothing.
                    prop_assert_eq!(parse_webhook_url(&stored), Ok(stored.clone()));
                    // The same URL the caller's string meant.
                    prop_assert_eq!(url::Url::parse(&stored).ok(), url::Url::parse(&raw).ok());
                    prop_assert!(stored.is_ascii(), "{}", stored);
                    prop_assert!(
                        !stored.bytes().any(|b| b.is_ascii_control() || b == b' '),
                        "{:?}", stored
                    );
                    prop_assert!(stored.starts_with("http://") || stored.starts_with("https://"));
                    prop_assert!(stored.len() <= MAX_WEBHOOK_URL_CHARS);
                    let url = url::Url::parse(&stored).unwrap();
                    prop_assert!(url.username().is_empty() && url.password().is_none());
                }
            }

            #[test]
            fn room_specs_hold_only_checked_values(params in create_params()) {
                match RoomSpec::parse(params) {
                    Ok(spec) => {
                        // Parsing what was stored gives it back unchanged.
                        prop_assert_eq!(RoomSpec::parse(params_of(&spec)), Ok(spec.clone()));
                        let settings = &spec.settings;
                        if let Some(id) = &spec.custom_room_id {
                            prop_assert!(CustomRoomId::parse_new(id.as_str()).is_ok());
                        }
                        if let Some(webhook) = &settings.webhook {
                            prop_assert_eq!(
                                parse_webhook_url(&webhook.end_point),
                                Ok(webhook.end_point.clone())
                            );
                            prop_assert!(
                                !webhook.end_point.chars().any(|c| c.is_control() || c.is_whitespace())
                            );
                            prop_assert!(webhook.events.len() <= MAX_WEBHOOK_EVENTS);
                            prop_assert!(is_distinct(&webhook.events));
                            prop_assert!(webhook.events.iter().all(|e| is_known_event_pattern(e)));
                        }
                        let ids = &settings.allowed_participant_ids;
                        prop_assert!(ids.len() <= MAX_ALLOWED_PARTICIPANTS);
                        prop_assert!(is_distinct(ids));
                        prop_assert!(ids.iter().all(|id| is_valid_participant_id(id)));
                        let mut media = Vec::new();
                        check_media_settings_size(
                            &settings.auto_start_config,
                            &settings.multi_composition,
                            &ids.iter().cloned().enumerate().collect::<Vec<_>>(),
                            &mut media,
                        );
                        prop_assert!(media.is_empty());
                    }
                    Err(violations) => {
                        prop_assert!(!violations.is_empty());
                        for v in &violations {
                            prop_assert!(
                                FIELDS.iter().any(|f| v.field.starts_with(f)),
                                "unexpected field {:?}", v.field
                            );
                            // Bounded whatever the input: long values are excerpted.
                            prop_assert!(v.description.len() <= 1200, "{:?}", v);
                        }
                    }
                }
            }
        }
    }
}
