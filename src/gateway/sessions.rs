//! The `/v2/sessions` handlers: read the request, call [`SessionService`],
//! shape the answer. No rule lives here; the participant pages are only a
//! window on the session the service returned.
//!
//! [`SessionService`]: crate::service::SessionService

use axum::Json;
use axum::extract::{RawQuery, State};

use super::GatewayState;
use super::error::ApiError;
use super::extract::{ApiCaller, JsonBody, SessionPath};
use super::json::{EndSessionBody, EnvelopeJson, PageInfoJson, RemoveParticipantBody, SessionJson};
use super::rooms::whole_number;
use crate::domain::{Paging, Session};
use crate::service::{Error, SessionListRequest};

type Answer<T> = Result<Json<T>, ApiError>;

/// `GET /v2/sessions` and `GET /v2/sessions/`
/// `?roomId=&customRoomId=&status=&page=&perPage=`: newest start first.
pub async fn list(
    State(state): State<GatewayState>,
    ApiCaller(caller): ApiCaller,
    RawQuery(query): RawQuery,
) -> Answer<EnvelopeJson<Vec<SessionJson>>> {
    let request = list_request(query.as_deref().unwrap_or_default())?;
    let page = state.sessions.list_sessions(&caller, request).await?;
    Ok(Json(EnvelopeJson {
        page_info: PageInfoJson {
            current_page: page.paging.page,
            per_page: page.paging.per_page,
            last_page: page.last_page,
            total: page.total,
        },
        data: page
            .sessions
            .iter()
            .map(|s| SessionJson::of(s, &state.public_url))
            .collect(),
    }))
}

/// `GET /v2/sessions/{sessionId}`.
pub async fn fetch(
    State(state): State<GatewayState>,
    ApiCaller(caller): ApiCaller,
    SessionPath(id): SessionPath,
) -> Answer<SessionJson> {
    let session = state.sessions.get_session(&caller, &id).await?;
    Ok(Json(SessionJson::of(&session, &state.public_url)))
}

/// `GET /v2/sessions/{sessionId}/participants?page=&perPage=`: the session,
/// with one page of all its participants, as `data`.
pub async fn participants(
    State(state): State<GatewayState>,
    ApiCaller(caller): ApiCaller,
    SessionPath(id): SessionPath,
    RawQuery(query): RawQuery,
) -> Answer<EnvelopeJson<SessionJson>> {
    let paging = participant_paging(query.as_deref().unwrap_or_default())?;
    let session = state
        .sessions
        .list_participants(&caller, &id, false)
        .await?;
    let (page_info, data) = participant_page(&session, paging, &state);
    Ok(Json(EnvelopeJson { page_info, data }))
}

/// `GET /v2/sessions/{sessionId}/participants/active?page=&perPage=`: a
/// one-element list holding the session with one page of the participants
/// present now.
pub async fn active_participants(
    State(state): State<GatewayState>,
    ApiCaller(caller): ApiCaller,
    SessionPath(id): SessionPath,
    RawQuery(query): RawQuery,
) -> Answer<EnvelopeJson<Vec<SessionJson>>> {
    let paging = participant_paging(query.as_deref().unwrap_or_default())?;
    let session = state.sessions.list_participants(&caller, &id, true).await?;
    let (page_info, data) = participant_page(&session, paging, &state);
    Ok(Json(EnvelopeJson {
        page_info,
        data: vec![data],
    }))
}

/// `POST /v2/sessions/end` with `{"roomId", "sessionId"?}`: the ended session.
pub async fn end(
    State(state): State<GatewayState>,
    ApiCaller(caller): ApiCaller,
    JsonBody(body): JsonBody<EndSessionBody>,
) -> Answer<SessionJson> {
    let session = state
        .sessions
        .end_session(&caller, &body.room_id, body.session_id.as_deref())
        .await?;
    Ok(Json(SessionJson::of(&session, &state.public_url)))
}

/// `POST /v2/sessions/participants/remove` with
/// `{"participantId", "roomId", "sessionId"?}`: the session after removal.
pub async fn remove_participant(
    State(state): State<GatewayState>,
    ApiCaller(caller): ApiCaller,
    JsonBody(body): JsonBody<RemoveParticipantBody>,
) -> Answer<SessionJson> {
    let session = state
        .sessions
        .remove_participant(
            &caller,
            &body.room_id,
            &body.participant_id,
            body.session_id.as_deref(),
        )
        .await?;
    Ok(Json(SessionJson::of(&session, &state.public_url)))
}

/// One page of `session`'s participants (as the service filtered them), and
/// where it sits among them.
fn participant_page(
    session: &Session,
    paging: Paging,
    state: &GatewayState,
) -> (PageInfoJson, SessionJson) {
    let total = session.participants.len();
    let window: Vec<_> = session
        .participants
        .iter()
        .skip(paging.offset())
        .take(paging.per_page as usize)
        .cloned()
        .collect();
    let page_info = PageInfoJson {
        current_page: paging.page,
        per_page: paging.per_page,
        last_page: paging.last_page(total),
        total,
    };
    (
        page_info,
        SessionJson::new(session, &window, &state.public_url),
    )
}

/// `roomId`, `customRoomId`, `status`, `page` and `perPage` from a query
/// string; other parameters are ignored. `roomId` and `customRoomId` both
/// name the room (the service takes either); naming two different rooms at
/// once is a 400.
fn list_request(raw_query: &str) -> Result<SessionListRequest, ApiError> {
    let mut request = SessionListRequest::default();
    let mut room_id = None;
    let mut custom_room_id = None;
    for (name, value) in url::form_urlencoded::parse(raw_query.as_bytes()) {
        match name.as_ref() {
            "roomId" => room_id = Some(value.into_owned()),
            "customRoomId" => custom_room_id = Some(value.into_owned()),
            "status" => request.status = Some(value.into_owned()),
            "page" => request.page = Some(whole_number("page", &value)?),
            "perPage" => request.per_page = Some(whole_number("perPage", &value)?),
            _ => {}
        }
    }
    let given = |v: Option<String>| v.filter(|v| !v.is_empty());
    request.room = match (given(room_id), given(custom_room_id)) {
        (Some(a), Some(b)) if a != b => {
            return Err(ApiError::invalid(
                "customRoomId",
                "give roomId or customRoomId, not both",
            ));
        }
        (a, b) => a.or(b),
    };
    Ok(request)
}

/// `page` and `perPage` of a participants listing.
fn participant_paging(raw_query: &str) -> Result<Paging, ApiError> {
    let (mut page, mut per_page) = (None, None);
    for (name, value) in url::form_urlencoded::parse(raw_query.as_bytes()) {
        match name.as_ref() {
            "page" => page = Some(whole_number("page", &value)?),
            "perPage" => per_page = Some(whole_number("perPage", &value)?),
            _ => {}
        }
    }
    Paging::parse(page, per_page).map_err(|v| Error::InvalidArgument(v).into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn list_query_strings() {
        let request =
            list_request("roomId=abcd-efgh-ijkl&status=ended&page=2&perPage=5&x=1").unwrap();
        assert_eq!(request.room.as_deref(), Some("abcd-efgh-ijkl"));
        assert_eq!(request.status.as_deref(), Some("ended"));
        assert_eq!((request.page, request.per_page), (Some(2), Some(5)));
        let request = list_request("customRoomId=standup&roomId=").unwrap();
        assert_eq!(request.room.as_deref(), Some("standup"));
        let request = list_request("customRoomId=standup&roomId=standup").unwrap();
        assert_eq!(request.room.as_deref(), Some("standup"));
        assert!(list_request("customRoomId=a&roomId=b").is_err());
        assert!(list_request("page=x").is_err());
        assert!(list_request("").unwrap().room.is_none());
    }

    #[test]
    fn participant_query_strings() {
        assert_eq!(
            participant_paging("perPage=3&page=2").unwrap(),
            Paging {
                page: 2,
                per_page: 3
            }
        );
        assert!(participant_paging("perPage=0").is_err());
        assert!(participant_paging("page=1.5").is_err());
    }
}
