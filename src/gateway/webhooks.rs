//! Webhook routes: the public key receivers verify signatures with, and an
//! account's deliveries, dead letters and replays. Calls into
//! [`crate::service::EventService`], like gRPC's EventService.

use axum::Json;
use axum::extract::{Path, RawQuery, State};
use serde::Serialize;

use super::GatewayState;
use super::error::ApiError;
use super::extract::ApiCaller;
use super::rooms::whole_number;
use crate::domain::{Event, format_timestamp};
use crate::store::DeliveryRecord;

type Answer<T> = Result<Json<T>, ApiError>;

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PublicKeyJson {
    public_key: String,
}

/// `GET /v2/public/rsa-public-key`, without a token: the SPKI PEM that
/// `videosdk-signature` verifies with.
pub async fn public_key(State(state): State<GatewayState>) -> Answer<PublicKeyJson> {
    Ok(Json(PublicKeyJson {
        public_key: state.events.public_key_pem().await?,
    }))
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DeliveryJson {
    event_id: String,
    webhook_id: String,
    room_id: String,
    webhook_type: String,
    end_point: String,
    outcome: String,
    status: Option<u16>,
    #[serde(skip_serializing_if = "String::is_empty")]
    error: String,
    attempt: u32,
    at: String,
}

impl DeliveryJson {
    fn of(record: DeliveryRecord) -> DeliveryJson {
        DeliveryJson {
            at: jiff::Timestamp::from_millisecond(record.at_ms)
                .map(format_timestamp)
                .unwrap_or_default(),
            event_id: record.event_id,
            webhook_id: record.webhook_id,
            room_id: record.room_id,
            webhook_type: record.webhook_type,
            end_point: record.end_point,
            outcome: record.outcome,
            status: record.status,
            error: record.error,
            attempt: record.attempt,
        }
    }
}

#[derive(Serialize)]
pub struct DataJson<T> {
    data: T,
}

/// `GET /v2/webhooks/deliveries?limit=`: the newest delivery attempts first.
pub async fn deliveries(
    State(state): State<GatewayState>,
    ApiCaller(caller): ApiCaller,
    RawQuery(query): RawQuery,
) -> Answer<DataJson<Vec<DeliveryJson>>> {
    let limit = limit(query.as_deref().unwrap_or_default())?;
    let records = state.events.deliveries(&caller, limit, false).await?;
    Ok(Json(DataJson {
        data: records.into_iter().map(DeliveryJson::of).collect(),
    }))
}

/// `GET /v2/webhooks/dead-letters?limit=`: deliveries given up, newest first.
pub async fn dead_letters(
    State(state): State<GatewayState>,
    ApiCaller(caller): ApiCaller,
    RawQuery(query): RawQuery,
) -> Answer<DataJson<Vec<DeliveryJson>>> {
    let limit = limit(query.as_deref().unwrap_or_default())?;
    let records = state.events.deliveries(&caller, limit, true).await?;
    Ok(Json(DataJson {
        data: records.into_iter().map(DeliveryJson::of).collect(),
    }))
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct EventJson {
    event_id: String,
    room_id: String,
    webhook_type: String,
    data: serde_json::Map<String, serde_json::Value>,
    at: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    replay_of: Option<String>,
}

impl EventJson {
    fn of(event: Event) -> EventJson {
        EventJson {
            event_id: event.id.to_string(),
            room_id: event.room_id.to_string(),
            webhook_type: event.kind,
            data: event.data,
            at: format_timestamp(event.at),
            replay_of: event.replay_of.map(|id| id.to_string()),
        }
    }
}

/// `POST /v2/webhooks/dead-letters/{eventId}/replay`: sends the event again.
pub async fn replay(
    State(state): State<GatewayState>,
    ApiCaller(caller): ApiCaller,
    Path(event_id): Path<String>,
) -> Answer<EventJson> {
    let event = state.events.replay(&caller, &event_id).await?;
    Ok(Json(EventJson::of(event)))
}

fn limit(raw_query: &str) -> Result<Option<i64>, ApiError> {
    let mut limit = None;
    for (name, value) in url::form_urlencoded::parse(raw_query.as_bytes()) {
        if name == "limit" {
            limit = Some(whole_number("limit", &value)?);
        }
    }
    Ok(limit)
}
