//! SessionService over gRPC and the `/v2/sessions` REST routes, against the
//! in-process server: media-plane joins and leaves (a service key reporting
//! with the participant's own token), every refusal of a participant token,
//! the account calls and their shapes on both transports, and autoClose by
//! `durationSeconds` through the server's own sweeper.

use std::time::Duration;

use http::StatusCode;
use jiff::Timestamp;
use roomservice::grpc::pb::session_service_client::SessionServiceClient;
use roomservice::grpc::pb::{
    self, AutoCloseConfig, CreateRoomRequest, DeactivateRoomRequest, EndSessionRequest,
    GetRoomRequest, GetSessionRequest, ListParticipantsRequest, ListSessionsRequest,
    ParticipantJoinedRequest, ParticipantLeftRequest, RemoveParticipantRequest,
};
use serde_json::{Value, json};
use tonic::transport::Channel;
use tonic::{Code, Status};

use crate::harness::*;

/* --------------------------------- helpers ---------------------------------- */

async fn client(server: &TestServer) -> SessionServiceClient<Channel> {
    SessionServiceClient::new(server.channel().await)
}

/// A media server's token: signed by the `service = true` key.
fn media_token() -> String {
    sign(&sdk_claims(MEDIA_KEY), MEDIA_SECRET)
}

/// Acme's join claims: `rtc` only, `allow_join`, valid for an hour.
fn join_claims() -> Value {
    let mut claims = sdk_claims(ACME_KEY);
    claims["roles"] = json!(["rtc"]);
    claims["permissions"] = json!(["allow_join"]);
    claims
}

/// A participant's token for Acme, with `extra` claims set (or, when null,
/// removed).
fn participant_token(extra: Value) -> String {
    let mut claims = join_claims();
    for (name, value) in extra.as_object().expect("an object of claims") {
        if value.is_null() {
            claims.as_object_mut().unwrap().remove(name);
        } else {
            claims[name] = value.clone();
        }
    }
    sign(&claims, ACME_SECRET)
}

async fn create_room(server: &TestServer, request: CreateRoomRequest) -> pb::Room {
    server
        .rooms()
        .await
        .create_room(authed(request, &acme_token()))
        .await
        .expect("create room")
        .into_inner()
}

async fn create_custom(server: &TestServer, custom: &str) -> pb::Room {
    create_room(
        server,
        CreateRoomRequest {
            custom_room_id: Some(custom.into()),
            ..Default::default()
        },
    )
    .await
}

/// Reports a join by the media plane with `token` as the participant's own.
async fn join_with(
    server: &TestServer,
    room: &str,
    participant: &str,
    token: &str,
) -> Result<pb::Session, Status> {
    client(server)
        .await
        .participant_joined(authed(
            ParticipantJoinedRequest {
                room_id: room.into(),
                participant_id: participant.into(),
                name: format!("{participant} (name)"),
                participant_token: token.into(),
            },
            &media_token(),
        ))
        .await
        .map(tonic::Response::into_inner)
}

async fn join(server: &TestServer, room: &str, participant: &str) -> pb::Session {
    join_with(server, room, participant, &participant_token(json!({})))
        .await
        .unwrap_or_else(|s| panic!("join of {participant} to {room}: {s:?}"))
}

async fn leave(server: &TestServer, room: &str, participant: &str) -> pb::Session {
    client(server)
        .await
        .participant_left(authed(
            ParticipantLeftRequest {
                user_id: ACME_USER.into(),
                room_id: room.into(),
                participant_id: participant.into(),
                reason: "user-left".into(),
            },
            &media_token(),
        ))
        .await
        .unwrap_or_else(|s| panic!("leave of {participant} from {room}: {s:?}"))
        .into_inner()
}

/// Starts (or joins) `room`'s session with one participant present; for
/// other test modules that need a live session.
pub async fn start_session(server: &TestServer, room: &str, participant: &str) -> pb::Session {
    join(server, room, participant).await
}

async fn get_session(server: &TestServer, id: &str) -> pb::Session {
    client(server)
        .await
        .get_session(authed(
            GetSessionRequest {
                session_id: id.into(),
            },
            &acme_token(),
        ))
        .await
        .expect("get session")
        .into_inner()
}

async fn get_room(server: &TestServer, room: &str) -> pb::Room {
    server
        .rooms()
        .await
        .get_room(authed(
            GetRoomRequest {
                room_id: room.into(),
            },
            &acme_token(),
        ))
        .await
        .expect("get room")
        .into_inner()
}

async fn list(
    server: &TestServer,
    request: ListSessionsRequest,
    token: &str,
) -> Result<pb::ListSessionsResponse, Status> {
    client(server)
        .await
        .list_sessions(authed(request, token))
        .await
        .map(tonic::Response::into_inner)
}

/// A REST GET with Acme's token: status and JSON body.
async fn rest_get(server: &TestServer, path: &str) -> (StatusCode, Value) {
    rest_get_as(server, path, &acme_token()).await
}

async fn rest_get_as(server: &TestServer, path: &str, token: &str) -> (StatusCode, Value) {
    let response = server
        .http()
        .get(format!("{}{path}", server.url()))
        .header("authorization", token)
        .send()
        .await
        .expect("the server answers");
    let status = response.status();
    (status, response.json().await.expect("a JSON body"))
}

async fn rest_post(server: &TestServer, path: &str, body: Value) -> (StatusCode, Value) {
    let response = server
        .http()
        .post(format!("{}{path}", server.url()))
        .header("authorization", acme_token())
        .json(&body)
        .send()
        .await
        .expect("the server answers");
    let status = response.status();
    (status, response.json().await.expect("a JSON body"))
}

fn ts(text: &str) -> Timestamp {
    text.parse()
        .unwrap_or_else(|e| panic!("{text:?} is not a timestamp: {e}"))
}

fn millis_between(from: &str, to: &str) -> i64 {
    ts(to).as_millisecond() - ts(from).as_millisecond()
}

fn assert_refused(result: Result<pb::Session, Status>, code: Code, needle: &str) {
    let status = result.expect_err("refused");
    assert_eq!(status.code(), code, "{status:?}");
    assert!(
        status.message().contains(needle),
        "{:?} does not contain {needle:?}",
        status.message()
    );
}

fn keys_of(value: &Value) -> Vec<&str> {
    let mut keys: Vec<&str> = value
        .as_object()
        .expect("an object")
        .keys()
        .map(String::as_str)
        .collect();
    keys.sort_unstable();
    keys
}

/* ------------------------------ media plane --------------------------------- */

#[tokio::test]
async fn a_join_starts_a_session_shaped_like_the_rest_object() {
    let server = TestServer::start().await;
    let room = create_custom(&server, "standup").await;
    let session = join(&server, "standup", "alice").await;

    assert_eq!(session.id.len(), 24);
    assert_eq!(session.user_id, ACME_USER);
    assert_eq!(session.room_id, room.room_id);
    assert_eq!(session.custom_room_id.as_deref(), Some("standup"));
    assert_eq!(session.status, "ongoing");
    assert_eq!(session.end, None);
    assert_eq!(session.end_reason, None);
    assert!(
        matches!(session.active_duration, Some(0 | 1)),
        "{session:?}"
    );
    assert_eq!(session.participants.len(), 1);
    let alice = &session.participants[0];
    assert_eq!(alice.participant_id, "alice");
    assert_eq!(alice.name, "alice (name)");
    assert_eq!(alice.timelog.len(), 1);
    assert_eq!(alice.timelog[0].end, None);
    assert!(ts(&alice.timelog[0].start) >= ts(&session.start));
    let links = session.links.as_ref().unwrap();
    assert_eq!(
        links.get_room,
        format!("{}/v2/rooms/{}", server.url(), room.room_id)
    );
    assert_eq!(
        links.get_session,
        format!("{}/v2/sessions/{}", server.url(), session.id)
    );
    // RFC 3339 UTC with exactly three fractional digits.
    assert_eq!(session.start.len(), "2022-02-22T07:26:43.863Z".len());
    assert!(session.start.ends_with('Z'));

    // The REST object: the same values, VideoSDK's names, nulls while ongoing.
    let (status, rest) = rest_get(&server, &format!("/v2/sessions/{}", session.id)).await;
    assert_eq!(status, StatusCode::OK, "{rest}");
    assert_eq!(
        keys_of(&rest),
        [
            "activeDuration",
            "customRoomId",
            "end",
            "endReason",
            "id",
            "links",
            "participants",
            "roomId",
            "start",
            "status",
            "userId"
        ]
    );
    assert_eq!(rest["id"], session.id.as_str());
    assert_eq!(rest["userId"], ACME_USER);
    assert_eq!(rest["roomId"], room.room_id.as_str());
    assert_eq!(rest["customRoomId"], "standup");
    assert_eq!(rest["start"], session.start.as_str());
    assert_eq!(rest["end"], Value::Null);
    assert_eq!(rest["endReason"], Value::Null);
    assert_eq!(rest["status"], "ongoing");
    assert!(rest["activeDuration"].is_u64(), "{rest}");
    assert_eq!(
        rest["participants"],
        json!([{"participantId": "alice", "name": "alice (name)",
                "timelog": [{"start": alice.timelog[0].start, "end": null}]}])
    );
    assert_eq!(
        rest["links"],
        json!({"get_room": links.get_room, "get_session": links.get_session})
    );

    // A room without a customRoomId shows null.
    let plain = create_room(&server, CreateRoomRequest::default()).await;
    let session = join(&server, &plain.room_id, "bob").await;
    assert_eq!(session.custom_room_id, None);
    let (_, rest) = rest_get(&server, &format!("/v2/sessions/{}", session.id)).await;
    assert_eq!(rest["customRoomId"], Value::Null);
}

/// grpcurl prints the proto3 JSON names, so these must be the REST names.
#[test]
fn the_session_messages_carry_the_rest_json_names() {
    use prost::Message;
    let set = prost_types::FileDescriptorSet::decode(roomservice::grpc::FILE_DESCRIPTOR_SET)
        .expect("the descriptor set decodes");
    let message = |name: &str| -> Vec<String> {
        let found = set
            .file
            .iter()
            .filter(|f| f.package() == "rooms.v1")
            .flat_map(|f| f.message_type.iter())
            .find(|m| m.name() == name)
            .unwrap_or_else(|| panic!("rooms.v1.{name} is described"));
        found
            .field
            .iter()
            .map(|f| f.json_name().to_owned())
            .collect()
    };
    assert_eq!(
        message("Session"),
        [
            "id",
            "userId",
            "roomId",
            "customRoomId",
            "start",
            "end",
            "status",
            "activeDuration",
            "endReason",
            "participants",
            "links"
        ]
    );
    assert_eq!(
        message("SessionParticipant"),
        ["participantId", "name", "timelog"]
    );
    assert_eq!(message("TimeLog"), ["start", "end"]);
    assert_eq!(message("SessionLinks"), ["get_room", "get_session"]);
    assert_eq!(
        message("ListSessionsResponse"),
        ["pageInfo", "data"],
        "the REST list envelope"
    );
    assert_eq!(
        message("ParticipantJoinedRequest"),
        ["roomId", "participantId", "name", "participantToken"]
    );
    assert_eq!(
        message("ParticipantLeftRequest"),
        ["userId", "roomId", "participantId", "reason"]
    );
}

#[tokio::test]
async fn joins_and_leaves_are_idempotent_and_a_rejoin_adds_a_timelog_entry() {
    let server = TestServer::start().await;
    let room = create_custom(&server, "idem").await;
    let first = join(&server, "idem", "alice").await;
    let again = join(&server, &room.room_id, "alice").await;
    assert_eq!(again.id, first.id, "same session");
    assert_eq!(
        again.participants, first.participants,
        "a repeated join changes nothing"
    );

    let with_bob = join(&server, "idem", "bob").await;
    assert_eq!(with_bob.id, first.id);
    assert_eq!(with_bob.participants.len(), 2);

    let left = leave(&server, "idem", "alice").await;
    let alice = &left.participants[0];
    assert_eq!(alice.timelog.len(), 1);
    let left_at = alice.timelog[0].end.clone().expect("alice's entry closed");
    let left_again = leave(&server, &room.room_id, "alice").await;
    assert_eq!(
        left_again.participants, left.participants,
        "a repeated leave changes nothing"
    );
    assert_eq!(left_again.status, "ongoing", "bob is still there");

    tokio::time::sleep(Duration::from_millis(5)).await;
    let back = join(&server, "idem", "alice").await;
    assert_eq!(back.id, first.id);
    let alice = &back.participants[0];
    assert_eq!(alice.timelog.len(), 2, "{alice:?}");
    assert_eq!(alice.timelog[0].end.as_deref(), Some(left_at.as_str()));
    assert_eq!(alice.timelog[1].end, None);
    assert!(ts(&alice.timelog[1].start) > ts(&left_at));

    // Leave of someone who never joined: the session, unchanged.
    let unchanged = leave(&server, "idem", "carol").await;
    assert_eq!(unchanged.participants, back.participants);
}

#[tokio::test]
async fn leave_needs_the_rooms_account_and_a_session() {
    let server = TestServer::start().await;
    create_custom(&server, "quiet").await;
    let mut sessions = client(&server).await;
    let leave_as = |user_id: &str| {
        authed(
            ParticipantLeftRequest {
                user_id: user_id.into(),
                room_id: "quiet".into(),
                participant_id: "alice".into(),
                reason: String::new(),
            },
            &media_token(),
        )
    };
    let never = sessions.participant_left(leave_as(ACME_USER)).await;
    assert_eq!(never.unwrap_err().code(), Code::NotFound, "no session yet");
    join(&server, "quiet", "alice").await;
    let other_account = sessions
        .participant_left(leave_as("0123456789abcdef01234567"))
        .await
        .unwrap_err();
    assert_eq!(other_account.code(), Code::NotFound, "{other_account:?}");
    let malformed = sessions
        .participant_left(leave_as("acme"))
        .await
        .unwrap_err();
    assert_eq!(malformed.code(), Code::InvalidArgument);
    assert!(malformed.message().contains("userId"), "{malformed:?}");
    let left = sessions
        .participant_left(leave_as(ACME_USER))
        .await
        .unwrap();
    assert!(left.into_inner().participants[0].timelog[0].end.is_some());
}

#[tokio::test]
async fn only_service_keys_report_joins_and_leaves() {
    let server = TestServer::start().await;
    create_custom(&server, "svc").await;
    let mut sessions = client(&server).await;
    let join_request = || ParticipantJoinedRequest {
        room_id: "svc".into(),
        participant_id: "alice".into(),
        name: "Alice".into(),
        participant_token: participant_token(json!({})),
    };
    for token in [acme_token(), globex_token()] {
        let refused = sessions
            .participant_joined(authed(join_request(), &token))
            .await
            .unwrap_err();
        assert_eq!(refused.code(), Code::PermissionDenied, "{refused:?}");
        assert!(refused.message().contains("service"), "{refused:?}");
        let refused = sessions
            .participant_left(authed(
                ParticipantLeftRequest {
                    user_id: ACME_USER.into(),
                    room_id: "svc".into(),
                    participant_id: "alice".into(),
                    reason: String::new(),
                },
                &token,
            ))
            .await
            .unwrap_err();
        assert_eq!(refused.code(), Code::PermissionDenied, "{refused:?}");
    }
    // The participant's own token is no media server's either.
    let refused = sessions
        .participant_joined(authed(join_request(), &participant_token(json!({}))))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied, "{refused:?}");
    let refused = sessions
        .participant_joined(tonic::Request::new(join_request()))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::Unauthenticated, "{refused:?}");
    // Nothing was started by any of them.
    let page = list(&server, ListSessionsRequest::default(), &acme_token())
        .await
        .unwrap();
    assert!(page.data.is_empty());
}

#[tokio::test]
async fn every_participant_token_refusal() {
    let server = TestServer::start().await;
    create_custom(&server, "gate").await;
    create_custom(&server, "elsewhere").await;
    let try_join = |token: String, participant: &'static str| {
        let server = &server;
        async move { join_with(server, "gate", participant, &token).await }
    };

    // Another account's participant cannot reach Acme's room: not found,
    // exactly as if it did not exist.
    let mut globex = join_claims();
    globex["apikey"] = json!(GLOBEX_KEY);
    assert_refused(
        try_join(sign(&globex, GLOBEX_SECRET), "alice").await,
        Code::NotFound,
        "not found",
    );
    // A token for the management API only.
    assert_refused(
        try_join(participant_token(json!({"roles": ["crawler"]})), "alice").await,
        Code::PermissionDenied,
        "rtc",
    );
    // No join permission.
    assert_refused(
        try_join(
            participant_token(json!({"permissions": ["allow_mod"]})),
            "alice",
        )
        .await,
        Code::PermissionDenied,
        "allow_join",
    );
    // Scoped to another room.
    assert_refused(
        try_join(participant_token(json!({"roomId": "elsewhere"})), "alice").await,
        Code::PermissionDenied,
        "another room",
    );
    // For another participant.
    assert_refused(
        try_join(participant_token(json!({"participantId": "bob"})), "alice").await,
        Code::PermissionDenied,
        "participantId",
    );
    // Expired.
    assert_refused(
        try_join(
            participant_token(json!({"iat": now() - 7200, "exp": now() - 3600})),
            "alice",
        )
        .await,
        Code::PermissionDenied,
        "expired",
    );
    // Badly signed.
    assert_refused(
        try_join(sign(&join_claims(), "not-acme-secret"), "alice").await,
        Code::PermissionDenied,
        "signature",
    );
    assert_refused(
        try_join("not a jwt".into(), "alice").await,
        Code::PermissionDenied,
        "malformed token",
    );
    assert_refused(
        try_join(String::new(), "alice").await,
        Code::InvalidArgument,
        "participantToken",
    );
    let none = list(&server, ListSessionsRequest::default(), &acme_token())
        .await
        .unwrap();
    assert!(none.data.is_empty(), "no refusal started a session");

    // What each rule allows: the claims naming this room (by any name) and
    // this participant; no roles claim at all; ask_join.
    for (token, participant) in [
        (
            participant_token(json!({"roomId": "gate", "participantId": "alice"})),
            "alice",
        ),
        (participant_token(json!({"roles": null})), "bob"),
        (
            participant_token(json!({"permissions": ["ask_join"]})),
            "carol",
        ),
        (
            sign(
                &json!({"apikey": ACME_KEY_2, "permissions": ["allow_join"], "exp": now() + 60}),
                ACME_SECRET_2,
            ),
            "dave",
        ),
    ] {
        try_join(token, participant)
            .await
            .unwrap_or_else(|s| panic!("{participant}: {s:?}"));
    }
    let joined = list(&server, ListSessionsRequest::default(), &acme_token())
        .await
        .unwrap();
    assert_eq!(joined.data.len(), 1);
    assert_eq!(joined.data[0].participants.len(), 4);
}

#[tokio::test]
async fn allowed_participant_ids_are_enforced() {
    let server = TestServer::start().await;
    create_room(
        &server,
        CreateRoomRequest {
            custom_room_id: Some("vip".into()),
            allowed_participant_ids: vec!["alice".into(), "bob".into()],
            ..Default::default()
        },
    )
    .await;
    assert_refused(
        join_with(&server, "vip", "mallory", &participant_token(json!({}))).await,
        Code::PermissionDenied,
        "allowedParticipantIds",
    );
    let session = join(&server, "vip", "alice").await;
    assert_eq!(session.participants.len(), 1);
    let session = join(&server, "vip", "bob").await;
    assert_eq!(session.participants.len(), 2);
}

#[tokio::test]
async fn a_disabled_room_refuses_joins_and_deactivating_ends_the_session() {
    let server = TestServer::start().await;
    let room = create_custom(&server, "closing").await;
    let session = join(&server, "closing", "alice").await;
    server
        .rooms()
        .await
        .deactivate_room(authed(
            DeactivateRoomRequest {
                room_id: room.room_id.clone(),
            },
            &acme_token(),
        ))
        .await
        .expect("deactivate");
    let ended = get_session(&server, &session.id).await;
    assert_eq!(ended.status, "ended");
    assert_eq!(ended.end_reason.as_deref(), Some("room-deactivated"));
    let end = ended.end.clone().expect("end set");
    assert_eq!(
        ended.participants[0].timelog[0].end.as_deref(),
        Some(end.as_str())
    );

    assert_refused(
        join_with(&server, "closing", "alice", &participant_token(json!({}))).await,
        Code::FailedPrecondition,
        "disabled",
    );
    assert_refused(
        join_with(&server, "closing", "bob", &participant_token(json!({}))).await,
        Code::FailedPrecondition,
        "disabled",
    );

    // A room disabled before anyone joined refuses the first join too.
    let cold = create_custom(&server, "cold").await;
    server
        .rooms()
        .await
        .deactivate_room(authed(
            DeactivateRoomRequest {
                room_id: cold.room_id,
            },
            &acme_token(),
        ))
        .await
        .unwrap();
    assert_refused(
        join_with(&server, "cold", "alice", &participant_token(json!({}))).await,
        Code::FailedPrecondition,
        "disabled",
    );
}

/* ------------------------------ account calls ------------------------------- */

#[tokio::test]
async fn end_session_closes_everything_and_a_new_join_starts_the_next() {
    let server = TestServer::start().await;
    create_custom(&server, "weekly").await;
    let session = join(&server, "weekly", "alice").await;
    join(&server, "weekly", "bob").await;
    leave(&server, "weekly", "bob").await;
    tokio::time::sleep(Duration::from_millis(1100)).await;

    let ended = client(&server)
        .await
        .end_session(authed(
            EndSessionRequest {
                room_id: "weekly".into(),
                session_id: None,
            },
            &acme_token(),
        ))
        .await
        .expect("end session")
        .into_inner();
    assert_eq!(ended.id, session.id);
    assert_eq!(ended.status, "ended");
    assert_eq!(ended.end_reason.as_deref(), Some("ended-by-api"));
    let end = ended.end.clone().expect("end set");
    assert!(millis_between(&ended.start, &end) >= 1100);
    assert!(ended.active_duration.unwrap() >= 1, "{ended:?}");
    for participant in &ended.participants {
        let last = participant.timelog.last().unwrap();
        assert!(last.end.is_some(), "{participant:?} closed");
    }
    assert_eq!(
        ended.participants[0].timelog[0].end.as_deref(),
        Some(end.as_str()),
        "alice's open entry closed at the end"
    );
    assert_eq!(get_session(&server, &session.id).await, ended);

    // REST: ending it again answers the same ended session.
    let (status, rest) = rest_post(
        &server,
        "/v2/sessions/end",
        json!({"roomId": "weekly", "sessionId": session.id}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{rest}");
    assert_eq!(rest["status"], "ended");
    assert_eq!(rest["end"], end.as_str());
    assert_eq!(rest["endReason"], "ended-by-api");
    assert_eq!(rest["participants"][0]["timelog"][0]["end"], end.as_str());

    // The room is still enabled: the next join starts the next session.
    let next = join(&server, "weekly", "alice").await;
    assert_ne!(next.id, session.id);
    assert_eq!(next.status, "ongoing");
    assert_eq!(next.participants.len(), 1);

    // REST end of the running one, by customRoomId, without sessionId.
    let (status, rest) = rest_post(&server, "/v2/sessions/end", json!({"roomId": "weekly"})).await;
    assert_eq!(status, StatusCode::OK, "{rest}");
    assert_eq!(rest["id"], next.id.as_str());
    assert_eq!(rest["endReason"], "ended-by-api");

    // Errors: no room, unknown room, another room's session, no session yet.
    let (status, rest) = rest_post(&server, "/v2/sessions/end", json!({})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{rest}");
    assert_eq!(rest["code"], "invalid_argument");
    let (status, _) = rest_post(&server, "/v2/sessions/end", json!({"roomId": "nope"})).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    create_custom(&server, "other").await;
    let (status, _) = rest_post(
        &server,
        "/v2/sessions/end",
        json!({"roomId": "other", "sessionId": session.id}),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "a session of another room");
    let (status, rest) = rest_post(&server, "/v2/sessions/end", json!({"roomId": "other"})).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{rest}");
}

#[tokio::test]
async fn list_sessions_filters_and_pages_on_both_transports() {
    let server = TestServer::start().await;
    let a = create_custom(&server, "room-a").await;
    create_custom(&server, "room-b").await;
    let first = join(&server, "room-a", "alice").await;
    client(&server)
        .await
        .end_session(authed(
            EndSessionRequest {
                room_id: "room-a".into(),
                session_id: None,
            },
            &acme_token(),
        ))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(5)).await;
    let second = join(&server, "room-a", "alice").await;
    tokio::time::sleep(Duration::from_millis(5)).await;
    let third = join(&server, "room-b", "bob").await;

    let ids = |page: &pb::ListSessionsResponse| -> Vec<String> {
        page.data.iter().map(|s| s.id.clone()).collect()
    };
    let acme = acme_token();
    let grpc = |request: ListSessionsRequest| list(&server, request, &acme);

    let all = grpc(ListSessionsRequest::default()).await.unwrap();
    assert_eq!(
        ids(&all),
        [third.id.as_str(), second.id.as_str(), first.id.as_str()],
        "newest first"
    );
    let info = all.page_info.unwrap();
    assert_eq!(
        (info.current_page, info.per_page, info.last_page, info.total),
        (1, 20, 1, 3)
    );
    let of_a = grpc(ListSessionsRequest {
        room_id: Some(a.room_id.clone()),
        ..Default::default()
    })
    .await
    .unwrap();
    assert_eq!(ids(&of_a), [second.id.as_str(), first.id.as_str()]);
    let ended = grpc(ListSessionsRequest {
        status: Some("ended".into()),
        ..Default::default()
    })
    .await
    .unwrap();
    assert_eq!(ids(&ended), [first.id.as_str()]);
    let ongoing_a = grpc(ListSessionsRequest {
        room_id: Some("room-a".into()),
        status: Some("ongoing".into()),
        ..Default::default()
    })
    .await
    .unwrap();
    assert_eq!(ids(&ongoing_a), [second.id.as_str()]);
    let page_two = grpc(ListSessionsRequest {
        page: Some(2),
        per_page: Some(1),
        ..Default::default()
    })
    .await
    .unwrap();
    assert_eq!(ids(&page_two), [second.id.as_str()]);
    let info = page_two.page_info.unwrap();
    assert_eq!((info.current_page, info.last_page, info.total), (2, 3, 3));
    let bad = grpc(ListSessionsRequest {
        status: Some("live".into()),
        ..Default::default()
    })
    .await
    .unwrap_err();
    assert_eq!(bad.code(), Code::InvalidArgument);
    assert!(bad.message().contains("status"), "{bad:?}");
    let unknown = grpc(ListSessionsRequest {
        room_id: Some("no-such-room".into()),
        ..Default::default()
    })
    .await
    .unwrap_err();
    assert_eq!(unknown.code(), Code::NotFound);
    // Another account sees none of them.
    let globex = list(&server, ListSessionsRequest::default(), &globex_token())
        .await
        .unwrap();
    assert!(globex.data.is_empty());
    assert_eq!(globex.page_info.unwrap().total, 0);
    // A token scoped to room-b lists room-b's sessions only.
    let mut scoped = sdk_claims(ACME_KEY);
    scoped["roomId"] = json!("room-b");
    let scoped = list(
        &server,
        ListSessionsRequest::default(),
        &sign(&scoped, ACME_SECRET),
    )
    .await
    .unwrap();
    assert_eq!(ids(&scoped), [third.id.as_str()]);

    // REST, at both paths: the same pages.
    let rest_ids = |body: &Value| -> Vec<String> {
        body["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["id"].as_str().unwrap().to_owned())
            .collect()
    };
    for base in ["/v2/sessions", "/v2/sessions/"] {
        let (status, body) = rest_get(&server, base).await;
        assert_eq!(status, StatusCode::OK, "{base}: {body}");
        assert_eq!(keys_of(&body), ["data", "pageInfo"]);
        assert_eq!(
            body["pageInfo"],
            json!({"currentPage": 1, "perPage": 20, "lastPage": 1, "total": 3})
        );
        assert_eq!(
            rest_ids(&body),
            [third.id.as_str(), second.id.as_str(), first.id.as_str()]
        );
        assert_eq!(body["data"][2]["status"], "ended");
        assert_eq!(body["data"][2]["endReason"], "ended-by-api");

        for (query, expected) in [
            (
                format!("roomId={}", a.room_id),
                vec![second.id.as_str(), first.id.as_str()],
            ),
            (
                "roomId=room-a".to_owned(),
                vec![second.id.as_str(), first.id.as_str()],
            ),
            ("customRoomId=room-b".to_owned(), vec![third.id.as_str()]),
            ("status=ended".to_owned(), vec![first.id.as_str()]),
            (
                "status=ongoing".to_owned(),
                vec![third.id.as_str(), second.id.as_str()],
            ),
            (
                "roomId=room-a&status=ongoing".to_owned(),
                vec![second.id.as_str()],
            ),
            ("page=3&perPage=1".to_owned(), vec![first.id.as_str()]),
            ("page=4&perPage=1".to_owned(), vec![]),
        ] {
            let (status, body) = rest_get(&server, &format!("{base}?{query}")).await;
            assert_eq!(status, StatusCode::OK, "{base}?{query}: {body}");
            assert_eq!(rest_ids(&body), expected, "{base}?{query}");
        }
        let (status, body) = rest_get(&server, &format!("{base}?page=2&perPage=2")).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(
            body["pageInfo"],
            json!({"currentPage": 2, "perPage": 2, "lastPage": 2, "total": 3})
        );
        for (query, code, status_code) in [
            ("status=live", "invalid_argument", StatusCode::BAD_REQUEST),
            ("perPage=0", "invalid_argument", StatusCode::BAD_REQUEST),
            ("page=x", "invalid_argument", StatusCode::BAD_REQUEST),
            (
                "roomId=room-a&customRoomId=room-b",
                "invalid_argument",
                StatusCode::BAD_REQUEST,
            ),
            ("roomId=nope", "not_found", StatusCode::NOT_FOUND),
        ] {
            let (status, body) = rest_get(&server, &format!("{base}?{query}")).await;
            assert_eq!(status, status_code, "{base}?{query}: {body}");
            assert_eq!(body["code"], code, "{base}?{query}");
        }
        let (status, body) = rest_get_as(&server, base, &globex_token()).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body["data"], json!([]));
    }
}

#[tokio::test]
async fn participants_and_active_participants() {
    let server = TestServer::start().await;
    create_custom(&server, "panel").await;
    let session = join(&server, "panel", "alice").await;
    join(&server, "panel", "bob").await;
    join(&server, "panel", "carol").await;
    leave(&server, "panel", "alice").await;

    // gRPC: everyone, or only those present.
    let mut sessions = client(&server).await;
    let participants = |active_only| {
        authed(
            ListParticipantsRequest {
                session_id: session.id.clone(),
                active_only,
            },
            &acme_token(),
        )
    };
    let everyone = sessions
        .list_participants(participants(false))
        .await
        .unwrap()
        .into_inner();
    let names = |s: &pb::Session| -> Vec<String> {
        s.participants
            .iter()
            .map(|p| p.participant_id.clone())
            .collect()
    };
    assert_eq!(names(&everyone), ["alice", "bob", "carol"]);
    let present = sessions
        .list_participants(participants(true))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(names(&present), ["bob", "carol"]);
    assert_eq!(present.id, session.id);

    // REST: `{pageInfo, data: session}` and `{pageInfo, data: [session]}`.
    let path = format!("/v2/sessions/{}/participants", session.id);
    let (status, body) = rest_get(&server, &path).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(keys_of(&body), ["data", "pageInfo"]);
    assert_eq!(
        body["pageInfo"],
        json!({"currentPage": 1, "perPage": 20, "lastPage": 1, "total": 3})
    );
    assert!(body["data"].is_object(), "{body}");
    assert_eq!(body["data"]["id"], session.id.as_str());
    let ids = |session: &Value| -> Vec<String> {
        session["participants"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["participantId"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(ids(&body["data"]), ["alice", "bob", "carol"]);
    assert!(body["data"]["participants"][0]["timelog"][0]["end"].is_string());

    let (status, body) = rest_get(&server, &format!("{path}?page=2&perPage=2")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        body["pageInfo"],
        json!({"currentPage": 2, "perPage": 2, "lastPage": 2, "total": 3})
    );
    assert_eq!(ids(&body["data"]), ["carol"]);

    let (status, body) = rest_get(&server, &format!("{path}/active")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(keys_of(&body), ["data", "pageInfo"]);
    assert_eq!(
        body["pageInfo"],
        json!({"currentPage": 1, "perPage": 20, "lastPage": 1, "total": 2})
    );
    let data = body["data"].as_array().expect("a list");
    assert_eq!(data.len(), 1);
    assert_eq!(data[0]["id"], session.id.as_str());
    assert_eq!(ids(&data[0]), ["bob", "carol"]);
    assert!(data[0]["participants"][0]["timelog"][0]["end"].is_null());

    let (status, body) = rest_get(&server, &format!("{path}/active?perPage=1")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["pageInfo"]["lastPage"], 2);
    assert_eq!(ids(&body["data"][0]), ["bob"]);

    // Unknown or foreign sessions, bad paging, no token.
    for bad in [
        "/v2/sessions/0123456789abcdef01234567/participants",
        "/v2/sessions/not-a-session/participants/active",
        "/v2/sessions/0123456789abcdef01234567",
    ] {
        let (status, body) = rest_get(&server, bad).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{bad}: {body}");
        assert_eq!(body["code"], "not_found");
    }
    let (status, _) = rest_get_as(&server, &path, &globex_token()).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "another account's session");
    let (status, _) = rest_get(&server, &format!("{path}?perPage=101")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, body) = rest_get_as(&server, &path, "").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    let mut rtc_only = sdk_claims(ACME_KEY);
    rtc_only["roles"] = json!(["rtc"]);
    let (status, _) = rest_get_as(&server, &path, &sign(&rtc_only, ACME_SECRET)).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn remove_participant_on_both_transports() {
    let server = TestServer::start().await;
    create_custom(&server, "kick").await;
    let session = join(&server, "kick", "alice").await;
    join(&server, "kick", "bob").await;

    let (status, body) = rest_post(
        &server,
        "/v2/sessions/participants/remove",
        json!({"participantId": "bob", "roomId": "kick"}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["id"], session.id.as_str());
    assert_eq!(body["status"], "ongoing");
    assert_eq!(body["participants"][1]["participantId"], "bob");
    assert!(body["participants"][1]["timelog"][0]["end"].is_string());
    assert!(body["participants"][0]["timelog"][0]["end"].is_null());

    // bob is gone: removing him again is not found.
    let (status, body) = rest_post(
        &server,
        "/v2/sessions/participants/remove",
        json!({"participantId": "bob", "roomId": "kick", "sessionId": session.id}),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    let (status, body) = rest_post(
        &server,
        "/v2/sessions/participants/remove",
        json!({"roomId": "kick"}),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(body["error"].as_str().unwrap().contains("participantId"));

    let mut sessions = client(&server).await;
    let remove = |participant: &str, session_id: Option<String>| {
        authed(
            RemoveParticipantRequest {
                room_id: "kick".into(),
                participant_id: participant.into(),
                session_id,
            },
            &acme_token(),
        )
    };
    let after = sessions
        .remove_participant(remove("alice", Some(session.id.clone())))
        .await
        .unwrap()
        .into_inner();
    assert!(after.participants[0].timelog[0].end.is_some());
    let nobody = sessions
        .remove_participant(remove("zed", None))
        .await
        .unwrap_err();
    assert_eq!(nobody.code(), Code::NotFound);
    // A removed participant may come back.
    let back = join(&server, "kick", "bob").await;
    assert_eq!(back.participants[1].timelog.len(), 2);
}

/* -------------------------------- autoClose --------------------------------- */

#[tokio::test]
async fn auto_close_by_duration_seconds_ends_and_deactivates() {
    let server = TestServer::start().await;
    let room = create_room(
        &server,
        CreateRoomRequest {
            custom_room_id: Some("demo".into()),
            auto_close_config: Some(AutoCloseConfig {
                r#type: "session-end-and-deactivate".into(),
                duration: None,
                duration_seconds: Some(2),
            }),
            ..Default::default()
        },
    )
    .await;
    let session = join(&server, "demo", "alice").await;
    assert_eq!(get_session(&server, &session.id).await.status, "ongoing");
    let (status, body) = rest_get(&server, &format!("/v2/sessions?roomId={}", room.room_id)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["data"][0]["status"], "ongoing");

    tokio::time::sleep(Duration::from_secs(3)).await;
    let ended = get_session(&server, &session.id).await;
    assert_eq!(ended.status, "ended", "{ended:?}");
    assert_eq!(ended.end_reason.as_deref(), Some("auto-close"));
    let end = ended.end.clone().unwrap();
    let length = millis_between(&ended.start, &end);
    assert!(
        (1000..=3000).contains(&length),
        "ended {length} ms after start"
    );
    assert_eq!(ended.active_duration, Some(2));
    assert_eq!(
        ended.participants[0].timelog[0].end.as_deref(),
        Some(end.as_str())
    );
    // The sweeper (every 250 ms) has stored the close and disabled the room.
    let mut disabled = get_room(&server, "demo").await.disabled;
    for _ in 0..20 {
        if disabled {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        disabled = get_room(&server, "demo").await.disabled;
    }
    assert!(disabled, "session-end-and-deactivate disables the room");
    assert_refused(
        join_with(&server, "demo", "bob", &participant_token(json!({}))).await,
        Code::FailedPrecondition,
        "disabled",
    );
    let (_, body) = rest_get(&server, &format!("/v2/sessions/{}", session.id)).await;
    assert_eq!(body["status"], "ended");
    assert_eq!(body["end"], end.as_str());
    assert_eq!(body["endReason"], "auto-close");
    assert_eq!(body["activeDuration"], 2);
}

#[tokio::test]
async fn auto_close_session_ends_leaves_the_room_open() {
    let server = TestServer::start().await;
    create_room(
        &server,
        CreateRoomRequest {
            custom_room_id: Some("recurring".into()),
            auto_close_config: Some(AutoCloseConfig {
                r#type: "session-ends".into(),
                duration: None,
                duration_seconds: Some(1),
            }),
            ..Default::default()
        },
    )
    .await;
    let session = join(&server, "recurring", "alice").await;
    tokio::time::sleep(Duration::from_millis(1600)).await;
    let ended = get_session(&server, &session.id).await;
    assert_eq!(ended.status, "ended");
    assert_eq!(ended.end_reason.as_deref(), Some("auto-close"));
    let length = millis_between(&ended.start, ended.end.as_deref().unwrap());
    assert!((0..=2000).contains(&length), "{length} ms");
    assert!(!get_room(&server, "recurring").await.disabled);
    let next = join(&server, "recurring", "alice").await;
    assert_ne!(next.id, session.id, "a new session");
}

/* ------------------------------ health, token ------------------------------- */

#[tokio::test]
async fn the_service_is_reported_healthy() {
    use tonic_health::pb::HealthCheckRequest;
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::health_client::HealthClient;
    let server = TestServer::start().await;
    let reply = HealthClient::new(server.channel().await)
        .check(HealthCheckRequest {
            service: "rooms.v1.SessionService".into(),
        })
        .await
        .expect("registered")
        .into_inner();
    assert_eq!(reply.status(), ServingStatus::Serving);
}

#[tokio::test]
async fn token_participant_id_mints_a_join_token_for_one_participant() {
    let server = TestServer::start().await;
    create_custom(&server, "standup").await;
    let mint = |extra: &[&str]| {
        roomservice()
            .args([
                "token",
                "--api-key",
                ACME_KEY,
                "--secret",
                ACME_SECRET,
                "--roles",
                "rtc",
                "--permissions",
                "allow_join",
            ])
            .args(extra)
            .output()
            .unwrap()
    };
    let output = mint(&["--participant-id", "alice", "--room-id", "standup"]);
    assert!(output.status.success(), "{output:?}");
    let token = String::from_utf8(output.stdout).unwrap().trim().to_owned();
    let claims = claims_of(&token);
    assert_eq!(claims["participantId"], "alice");
    assert_eq!(claims["roomId"], "standup");
    assert_eq!(claims["roles"], json!(["rtc"]));

    join_with(&server, "standup", "alice", &token)
        .await
        .expect("alice joins with her token");
    assert_refused(
        join_with(&server, "standup", "bob", &token).await,
        Code::PermissionDenied,
        "participantId",
    );

    // Without the flag there is no claim; an empty one is refused.
    let plain = mint(&[]);
    assert!(plain.status.success(), "{plain:?}");
    let claims = claims_of(String::from_utf8(plain.stdout).unwrap().trim());
    assert_eq!(claims.get("participantId"), None, "{claims}");
    let empty = mint(&["--participant-id", ""]);
    assert!(!empty.status.success());
    assert!(String::from_utf8_lossy(&empty.stderr).contains("--participant-id"));
    assert!(empty.stdout.is_empty());
}

/// The payload of a JWT, unverified.
fn claims_of(token: &str) -> Value {
    use base64::Engine;
    let payload = token.split('.').nth(1).expect("three segments");
    serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload)
            .expect("base64url"),
    )
    .expect("a JSON payload")
}

/* ---------------------------- the official SDK ------------------------------ */

/// `videosdk-server-sdk`, unchanged, reads every session route: its types
/// decode our shapes, and its room-keyed participants resource finds the
/// live session through `GET /v2/sessions?roomId=&status=ongoing&perPage=1`.
#[tokio::test]
async fn the_official_sdk_reads_and_ends_sessions() {
    use videosdk::{
        ListParams, SessionEndParams, SessionListParams, SessionRemoveParticipantParams,
        SessionStatus,
    };
    let server = TestServer::start().await;
    let room = create_custom(&server, "sdk-room").await;
    let session = join(&server, "sdk-room", "alice").await;
    join(&server, "sdk-room", "bob").await;
    join(&server, "sdk-room", "carol").await;
    leave(&server, "sdk-room", "alice").await;
    let sdk = videosdk::Client::builder()
        .api_key(ACME_KEY)
        .secret(ACME_SECRET)
        .base_url(server.url())
        .max_retries(0)
        .request_timeout(Duration::from_secs(10))
        .http_client(reqwest::Client::builder().no_proxy().build().unwrap())
        .build()
        .expect("the SDK builds a client");
    let ids = |participants: &[videosdk::Participant]| -> Vec<String> {
        participants
            .iter()
            .map(|p| p.participant_id.clone())
            .collect()
    };

    let page = sdk
        .sessions()
        .list(SessionListParams {
            room_id: Some(room.room_id.clone()),
            ..Default::default()
        })
        .await
        .expect("list sessions");
    assert_eq!(page.data.len(), 1);
    assert_eq!(page.total(), 1);
    let listed = &page.data[0];
    assert_eq!(listed.id, session.id);
    assert_eq!(listed.status, Some(SessionStatus::ONGOING));
    assert_eq!(listed.custom_room_id.as_deref(), Some("sdk-room"));
    assert_eq!(listed.end, None);

    let fetched = sdk.sessions().get(&session.id).await.expect("get session");
    assert_eq!(fetched.room_id, room.room_id);
    assert_eq!(ids(&fetched.participants), ["alice", "bob", "carol"]);
    assert!(fetched.participants[0].timelog[0].end.is_some());
    assert_eq!(
        fetched.links.get("get_session").map(String::as_str),
        Some(format!("{}/v2/sessions/{}", server.url(), session.id).as_str())
    );
    assert_eq!(fetched.extra.get("endReason"), Some(&Value::Null));

    let everyone = sdk
        .sessions()
        .list_participants(
            &session.id,
            ListParams {
                per_page: Some(2),
                ..Default::default()
            },
        )
        .await
        .expect("list participants");
    assert_eq!(ids(&everyone.data), ["alice", "bob"]);
    assert!(everyone.has_next_page());
    let rest = everyone.next_page().await.unwrap().expect("a second page");
    assert_eq!(ids(&rest.data), ["carol"]);
    assert!(!rest.has_next_page());

    let present = sdk
        .sessions()
        .list_active_participants(&session.id, ListParams::default())
        .await
        .expect("list active participants");
    assert_eq!(ids(&present.data), ["bob", "carol"]);
    let live = sdk
        .participants()
        .list("sdk-room", ListParams::default())
        .await
        .expect("the room's live participants");
    assert_eq!(ids(&live.data), ["bob", "carol"]);

    sdk.sessions()
        .remove_participant(SessionRemoveParticipantParams {
            participant_id: "bob".into(),
            room_id: Some("sdk-room".into()),
            session_id: None,
        })
        .await
        .expect("remove bob");
    sdk.participants()
        .remove("sdk-room", "carol")
        .await
        .expect("remove carol");
    let live = sdk
        .participants()
        .list("sdk-room", ListParams::default())
        .await
        .unwrap();
    assert!(live.data.is_empty());

    let ended = sdk
        .sessions()
        .end(SessionEndParams {
            room_id: Some("sdk-room".into()),
            ..Default::default()
        })
        .await
        .expect("end session");
    assert_eq!(ended.id, session.id);
    assert_eq!(ended.status, Some(SessionStatus::ENDED));
    assert!(ended.end.is_some());
    assert_eq!(ended.extra.get("endReason"), Some(&json!("ended-by-api")));
    let ended_only = sdk
        .sessions()
        .list(SessionListParams {
            status: Some(SessionStatus::ENDED),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(ended_only.data.len(), 1);
}
