//! The `/v2/rooms` handlers: read the request, call [`RoomService`], shape the
//! answer. No rule lives here.

use axum::Json;
use axum::extract::{RawQuery, State};

use super::GatewayState;
use super::error::ApiError;
use super::extract::{ApiCaller, JsonBody, RoomPath};
use super::json::{CreateRoomBody, DeactivateBody, PageInfoJson, PageJson, RoomJson, StatusBody};
use crate::service::PageRequest;

type Answer<T> = Result<Json<T>, ApiError>;

/// `POST /v2/rooms`: 200 with the room, new or (same customRoomId) existing.
pub async fn create(
    State(state): State<GatewayState>,
    ApiCaller(caller): ApiCaller,
    headers: http::HeaderMap,
    JsonBody(body): JsonBody<CreateRoomBody>,
) -> Answer<RoomJson> {
    // Not ASCII: replaced by a value the service refuses by name.
    let key = headers
        .get("idempotency-key")
        .map(|v| v.to_str().unwrap_or("\u{0}").to_owned());
    let created = state
        .rooms
        .create_room(&caller, body.into_params(), key.as_deref())
        .await?;
    Ok(Json(RoomJson::created(&created.room, &state.public_url)))
}

/// `GET /v2/rooms/{roomId}`: by roomId, customRoomId or id.
pub async fn fetch(
    State(state): State<GatewayState>,
    ApiCaller(caller): ApiCaller,
    RoomPath(key): RoomPath,
) -> Answer<RoomJson> {
    let room = state.rooms.get_room(&caller, &key).await?;
    Ok(Json(RoomJson::fetched(
        &room,
        &caller.account,
        &state.public_url,
    )))
}

/// `GET /v2/rooms?page=&perPage=&query=`.
pub async fn list(
    State(state): State<GatewayState>,
    ApiCaller(caller): ApiCaller,
    RawQuery(query): RawQuery,
) -> Answer<PageJson> {
    let request = page_request(query.as_deref().unwrap_or_default())?;
    let page = state.rooms.list_rooms(&caller, request).await?;
    Ok(Json(PageJson {
        page_info: PageInfoJson {
            current_page: page.paging.page,
            per_page: page.paging.per_page,
            last_page: page.last_page,
            total: page.total,
        },
        data: page
            .rooms
            .iter()
            .map(|room| RoomJson::fetched(room, &caller.account, &state.public_url))
            .collect(),
    }))
}

/// `GET /v2/rooms/validate/{roomId}`: the room, or 400 "Room not found".
pub async fn validate(
    State(state): State<GatewayState>,
    ApiCaller(caller): ApiCaller,
    RoomPath(key): RoomPath,
) -> Answer<RoomJson> {
    let room = state
        .rooms
        .validate_room(&caller, &key)
        .await
        .map_err(ApiError::from_validate)?;
    Ok(Json(RoomJson::created(&room, &state.public_url)))
}

/// `POST /v2/rooms/deactivate` with `{"roomId"}`.
pub async fn deactivate(
    State(state): State<GatewayState>,
    ApiCaller(caller): ApiCaller,
    JsonBody(body): JsonBody<DeactivateBody>,
) -> Answer<RoomJson> {
    let room = state.rooms.deactivate_room(&caller, &body.room_id).await?;
    Ok(Json(RoomJson::deactivated(&room, &caller.account)))
}

/// `POST /v2/rooms/{roomId}` with `{"status": "enabled" | "disabled"}`.
pub async fn update_status(
    State(state): State<GatewayState>,
    ApiCaller(caller): ApiCaller,
    RoomPath(key): RoomPath,
    JsonBody(body): JsonBody<StatusBody>,
) -> Answer<RoomJson> {
    let room = state
        .rooms
        .update_room_status(&caller, &key, &body.status)
        .await?;
    Ok(Json(RoomJson::with_status(&room, &state.public_url)))
}

/// `page`, `perPage` and `query` from a query string; other parameters are
/// ignored, as unknown body fields are. A number that does not parse is a 400
/// naming the parameter; its range is the service's to check.
fn page_request(raw_query: &str) -> Result<PageRequest, ApiError> {
    let mut request = PageRequest::default();
    for (name, value) in url::form_urlencoded::parse(raw_query.as_bytes()) {
        match name.as_ref() {
            "page" => request.page = Some(whole_number("page", &value)?),
            "perPage" => request.per_page = Some(whole_number("perPage", &value)?),
            "query" => request.query = Some(value.into_owned()),
            _ => {}
        }
    }
    Ok(request)
}

pub(super) fn whole_number(name: &str, value: &str) -> Result<i64, ApiError> {
    value.parse().map_err(|_| {
        ApiError::invalid(
            name,
            format!(
                "must be a whole number, got {}",
                crate::domain::excerpt(value)
            ),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_strings() {
        let request = page_request("page=2&perPage=5&query=my%20room&other=x").unwrap();
        assert_eq!(request.page, Some(2));
        assert_eq!(request.per_page, Some(5));
        assert_eq!(request.query.as_deref(), Some("my room"));
        assert!(page_request("page=two").is_err());
        assert!(page_request("perPage=1.5").is_err());
        let empty = page_request("").unwrap();
        assert_eq!(
            (empty.page, empty.per_page, empty.query),
            (None, None, None)
        );
    }
}
