//! proto ⇄ domain. Proto3 cannot tell an unset message from an empty one, so
//! an absent `webhook` or `autoCloseConfig` message means "not given".

use std::collections::BTreeMap;

use prost_types::value::Kind;
use serde_json::{Map, Number, Value};

use super::pb;
use crate::domain::{
    self, AutoCloseParams, CreateRoomParams, Event, PublicUrl, Room, Session, WebhookParams,
    format_timestamp,
};
use crate::service::{ListPage, SessionPage};
use crate::store::DeliveryRecord;

pub fn create_params(request: pb::CreateRoomRequest) -> CreateRoomParams {
    CreateRoomParams {
        custom_room_id: request.custom_room_id,
        geo_fence: request.geo_fence,
        webhook: request.webhook.map(|w| WebhookParams {
            end_point: w.end_point,
            events: w.events,
        }),
        auto_close_config: request.auto_close_config.map(|a| AutoCloseParams {
            kind: Some(a.r#type),
            duration: a.duration.map(i64::from),
            duration_seconds: a.duration_seconds.map(i64::from),
        }),
        auto_start_config: request.auto_start_config.map(struct_to_json),
        multi_composition: request.multi_composition.map(struct_to_json),
        allowed_participant_ids: request.allowed_participant_ids,
    }
}

pub fn room(room: &Room, base: &PublicUrl) -> pb::Room {
    let settings = &room.settings;
    pb::Room {
        auto_start_config: settings.auto_start_config.clone().map(json_to_struct),
        multi_composition: settings.multi_composition.clone().map(json_to_struct),
        ..room_head(room, base)
    }
}

/// Every field of [`room`] but the two `Struct` ones (`autoStartConfig`,
/// `multiComposition`), which are left unset: for a reply that encodes them
/// from the JSON itself (`wire::RoomReply`).
pub fn room_head(room: &Room, base: &PublicUrl) -> pb::Room {
    let settings = &room.settings;
    pb::Room {
        room_id: room.room_id.as_str().to_owned(),
        custom_room_id: room.custom_room_id.as_ref().map(|c| c.as_str().to_owned()),
        user_id: room.user_id.as_str().to_owned(),
        disabled: room.disabled,
        created_at: domain::format_timestamp(room.created_at),
        updated_at: domain::format_timestamp(room.updated_at),
        id: room.id().into_string(),
        links: Some(pb::Links {
            get_room: base.room(&room.room_id),
            get_session: base.session(None),
        }),
        webhook: settings.webhook.as_ref().map(|w| pb::Webhook {
            end_point: w.end_point.clone(),
            events: w.events.clone(),
        }),
        auto_close_config: settings.auto_close_config.map(|a| pb::AutoCloseConfig {
            r#type: a.kind.as_str().to_owned(),
            duration: a.duration_minutes.map(|m| m as i32),
            duration_seconds: a.duration_seconds.map(|s| s as i32),
        }),
        geo_fence: settings.geo_fence.map(|g| g.as_str().to_owned()),
        auto_start_config: None,
        multi_composition: None,
        allowed_participant_ids: settings.allowed_participant_ids.clone(),
    }
}

pub fn page(page: &ListPage, base: &PublicUrl) -> pb::ListRoomsResponse {
    pb::ListRoomsResponse {
        page_info: Some(pb::PageInfo {
            current_page: page.paging.page as i32,
            per_page: page.paging.per_page as i32,
            last_page: i32::try_from(page.last_page).unwrap_or(i32::MAX),
            total: page.total as i64,
        }),
        data: page.rooms.iter().map(|r| room(r, base)).collect(),
    }
}

/// A session as grpcurl shows it: the REST session object's names and
/// values (`status` and `endReason` as strings, timestamps formatted).
pub fn session(session: &Session, base: &PublicUrl) -> pb::Session {
    let ongoing = session.is_ongoing();
    pb::Session {
        id: session.id.to_string(),
        user_id: session.user_id.to_string(),
        room_id: session.room_id.to_string(),
        custom_room_id: session.custom_room_id.as_ref().map(ToString::to_string),
        start: domain::format_timestamp(session.start),
        end: session.end.map(domain::format_timestamp),
        status: if ongoing { "ongoing" } else { "ended" }.to_owned(),
        // The service answers with the session as of its own clock; only an
        // ongoing session's length still depends on "now".
        active_duration: Some(
            i32::try_from(session.active_seconds(domain::now())).unwrap_or(i32::MAX),
        ),
        end_reason: session.end_reason.map(|r| r.as_str().to_owned()),
        participants: session
            .participants
            .iter()
            .map(|p| pb::SessionParticipant {
                participant_id: p.participant_id.clone(),
                name: p.name.clone(),
                timelog: p
                    .timelog
                    .iter()
                    .map(|t| pb::TimeLog {
                        start: domain::format_timestamp(t.start),
                        end: t.end.map(domain::format_timestamp),
                    })
                    .collect(),
            })
            .collect(),
        links: Some(pb::SessionLinks {
            get_room: base.room(&session.room_id),
            get_session: base.session(Some(session.id.as_str())),
        }),
    }
}

pub fn session_page(page: &SessionPage, base: &PublicUrl) -> pb::ListSessionsResponse {
    pb::ListSessionsResponse {
        page_info: Some(pb::PageInfo {
            current_page: page.paging.page as i32,
            per_page: page.paging.per_page as i32,
            last_page: i32::try_from(page.last_page).unwrap_or(i32::MAX),
            total: page.total as i64,
        }),
        data: page.sessions.iter().map(|s| session(s, base)).collect(),
    }
}

pub fn event(event: &Event) -> pb::RoomEvent {
    pb::RoomEvent {
        event_id: event.id.to_string(),
        room_id: event.room_id.to_string(),
        webhook_type: event.kind.clone(),
        data: Some(json_to_struct(event.data.clone())),
        at: format_timestamp(event.at),
        replay_of: event.replay_of.map(|id| id.to_string()),
    }
}

pub fn delivery(record: &DeliveryRecord) -> pb::Delivery {
    pb::Delivery {
        event_id: record.event_id.clone(),
        webhook_id: record.webhook_id.clone(),
        room_id: record.room_id.clone(),
        webhook_type: record.webhook_type.clone(),
        end_point: record.end_point.clone(),
        outcome: record.outcome.clone(),
        status: record.status.map(i32::from),
        error: record.error.clone(),
        attempt: i32::try_from(record.attempt).unwrap_or(i32::MAX),
        at: jiff::Timestamp::from_millisecond(record.at_ms)
            .map(format_timestamp)
            .unwrap_or_default(),
    }
}

pub fn struct_to_json(s: prost_types::Struct) -> Map<String, Value> {
    s.fields
        .into_iter()
        .map(|(k, v)| (k, value_to_json(v)))
        .collect()
}

fn value_to_json(value: prost_types::Value) -> Value {
    match value.kind {
        None | Some(Kind::NullValue(_)) => Value::Null,
        Some(Kind::BoolValue(b)) => Value::Bool(b),
        Some(Kind::StringValue(s)) => Value::String(s),
        Some(Kind::NumberValue(n)) => number_to_json(n),
        Some(Kind::StructValue(s)) => Value::Object(struct_to_json(s)),
        Some(Kind::ListValue(l)) => Value::Array(l.values.into_iter().map(value_to_json).collect()),
    }
}

/// A `google.protobuf.Value` number as JSON. Protobuf numbers are doubles;
/// whole ones go back to JSON integers so that `{"x": 1}` sent over gRPC
/// reads the same as over REST. NaN and the infinities have no JSON form:
/// null.
pub fn number_to_json(n: f64) -> Value {
    if n.fract() == 0.0 && n.abs() < 9.007_199_254_740_992e15 {
        Value::Number(Number::from(n as i64))
    } else {
        Number::from_f64(n).map_or(Value::Null, Value::Number)
    }
}

pub fn json_to_struct(map: Map<String, Value>) -> prost_types::Struct {
    prost_types::Struct {
        fields: map
            .into_iter()
            .map(|(k, v)| (k, json_to_value(v)))
            .collect::<BTreeMap<_, _>>(),
    }
}

pub fn json_to_value(value: Value) -> prost_types::Value {
    let kind = match value {
        Value::Null => Kind::NullValue(0),
        Value::Bool(b) => Kind::BoolValue(b),
        Value::Number(n) => Kind::NumberValue(n.as_f64().unwrap_or_default()),
        Value::String(s) => Kind::StringValue(s),
        Value::Array(items) => Kind::ListValue(prost_types::ListValue {
            values: items.into_iter().map(json_to_value).collect(),
        }),
        Value::Object(map) => Kind::StructValue(json_to_struct(map)),
    };
    prost_types::Value { kind: Some(kind) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn free_form_json_survives_the_round_trip() {
        let json: Map<String, Value> = serde_json::from_str(
            r#"{"n":1,"f":1.5,"s":"x","b":true,"z":null,"l":[1,"a"],"o":{"deep":[{"k":-3}]}}"#,
        )
        .unwrap();
        assert_eq!(struct_to_json(json_to_struct(json.clone())), json);
    }
}
