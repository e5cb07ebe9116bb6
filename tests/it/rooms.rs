//! CreateRoom and GetRoom as a gRPC client sees them.

use std::collections::HashSet;

use roomservice::grpc::pb::{AutoCloseConfig, CreateRoomRequest, GetRoomRequest, Room, Webhook};
use tonic::Code;
use tonic_types::StatusExt;

use crate::harness::*;

async fn create(
    server: &TestServer,
    token: &str,
    request: CreateRoomRequest,
) -> Result<Room, tonic::Status> {
    let mut client = server.rooms().await;
    client
        .create_room(authed(request, token))
        .await
        .map(|r| r.into_inner())
}

async fn get(server: &TestServer, token: &str, key: &str) -> Result<Room, tonic::Status> {
    let mut client = server.rooms().await;
    let request = GetRoomRequest {
        room_id: key.into(),
    };
    client
        .get_room(authed(request, token))
        .await
        .map(|r| r.into_inner())
}

fn custom(id: &str) -> CreateRoomRequest {
    CreateRoomRequest {
        custom_room_id: Some(id.into()),
        ..Default::default()
    }
}

#[tokio::test]
async fn created_room_has_the_rest_shape() {
    let server = TestServer::start().await;
    let room = create(&server, &acme_token(), custom("final-testing"))
        .await
        .unwrap();

    assert!(
        roomservice::domain::RoomId::parse(&room.room_id).is_some(),
        "{}",
        room.room_id
    );
    assert_eq!(room.custom_room_id.as_deref(), Some("final-testing"));
    assert_eq!(room.user_id, ACME_USER);
    assert!(!room.disabled);
    assert_eq!(room.id.len(), 24);
    assert!(
        room.id
            .bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
    );
    // RFC 3339 UTC with exactly three fractional digits and Z.
    for ts in [&room.created_at, &room.updated_at] {
        assert_eq!(ts.len(), 24, "{ts}");
        assert!(ts.ends_with('Z') && ts.as_bytes()[19] == b'.', "{ts}");
        ts.parse::<jiff::Timestamp>().unwrap();
    }
    assert_eq!(room.created_at, room.updated_at);
    let links = room.links.unwrap();
    assert_eq!(
        links.get_room,
        format!("{}/v2/rooms/{}", server.url(), room.room_id)
    );
    assert_eq!(links.get_session, format!("{}/v2/sessions/", server.url()));
}

#[tokio::test]
async fn room_without_custom_id_has_none() {
    let server = TestServer::start().await;
    let room = create(&server, &acme_token(), CreateRoomRequest::default())
        .await
        .unwrap();
    assert_eq!(room.custom_room_id, None);
    let again = create(&server, &acme_token(), CreateRoomRequest::default())
        .await
        .unwrap();
    assert_ne!(
        room.room_id, again.room_id,
        "rooms without customRoomId are always new"
    );
}

#[tokio::test]
async fn get_room_by_room_id_custom_room_id_and_id() {
    let server = TestServer::start().await;
    let token = acme_token();
    let created = create(&server, &token, custom("standup")).await.unwrap();
    for key in [&created.room_id, "standup", &created.id] {
        let fetched = get(&server, &token, key)
            .await
            .unwrap_or_else(|e| panic!("get by {key}: {e}"));
        assert_eq!(fetched, created, "get by {key}");
    }
    // The id is case-insensitive hex; uppercase finds the room too.
    assert_eq!(
        get(&server, &token, &created.id.to_uppercase())
            .await
            .unwrap()
            .room_id,
        created.room_id
    );
}

#[tokio::test]
async fn every_create_field_is_stored_and_echoed() {
    let server = TestServer::start().await;
    let token = acme_token();
    let auto_start: prost_types::Struct = prost_types::Struct {
        fields: [(
            "recording".to_string(),
            prost_types::Value {
                kind: Some(prost_types::value::Kind::BoolValue(true)),
            },
        )]
        .into(),
    };
    let request = CreateRoomRequest {
        custom_room_id: Some("all-fields".into()),
        region: Some("sg001".into()),
        geo_fence: Some("eu001".into()),
        webhook: Some(Webhook {
            end_point: "https://hooks.example.com/rooms".into(),
            events: vec!["session-started".into(), "recording-*".into()],
        }),
        auto_close_config: Some(AutoCloseConfig {
            r#type: "session-end-and-deactivate".into(),
            duration: None,
            duration_seconds: None,
        }),
        auto_start_config: Some(auto_start.clone()),
        multi_composition: Some(auto_start.clone()),
        allowed_participant_ids: vec!["alice".into(), "bob".into()],
    };
    let created = create(&server, &token, request).await.unwrap();
    let fetched = get(&server, &token, "all-fields").await.unwrap();
    assert_eq!(created, fetched);
    assert_eq!(fetched.geo_fence.as_deref(), Some("eu001"));
    assert_eq!(
        fetched.webhook.unwrap().events,
        ["session-started", "recording-*"]
    );
    let auto_close = fetched.auto_close_config.unwrap();
    assert_eq!(auto_close.r#type, "session-end-and-deactivate");
    assert_eq!(
        auto_close.duration,
        Some(480),
        "duration defaults to 480 minutes"
    );
    assert_eq!(fetched.auto_start_config, Some(auto_start.clone()));
    assert_eq!(fetched.multi_composition, Some(auto_start));
    assert_eq!(fetched.allowed_participant_ids, ["alice", "bob"]);
}

#[tokio::test]
async fn create_is_idempotent_on_custom_room_id() {
    let server = TestServer::start().await;
    let first = create(&server, &acme_token(), custom("weekly"))
        .await
        .unwrap();
    // Different settings on the second call change nothing: the room is returned unchanged.
    let second = create(
        &server,
        &acme_token(),
        CreateRoomRequest {
            custom_room_id: Some("weekly".into()),
            geo_fence: Some("us001".into()),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(first, second);
    assert_eq!(second.geo_fence, None);
    // Another key of the same account sees the same room.
    let other_key = sign(&sdk_claims(ACME_KEY_2), ACME_SECRET_2);
    assert_eq!(
        create(&server, &other_key, custom("weekly")).await.unwrap(),
        first
    );
}

#[tokio::test]
async fn fifty_concurrent_creates_make_exactly_one_room() {
    let server = TestServer::start().await;
    let channel = server.channel().await;
    let token = acme_token();
    let calls = (0..50).map(|_| {
        let mut client =
            roomservice::grpc::pb::room_service_client::RoomServiceClient::new(channel.clone());
        let token = token.clone();
        tokio::spawn(async move {
            client
                .create_room(authed(custom("rush-hour"), &token))
                .await
        })
    });
    let mut room_ids = HashSet::new();
    for call in calls.collect::<Vec<_>>() {
        let room = call
            .await
            .unwrap()
            .expect("every concurrent create succeeds")
            .into_inner();
        room_ids.insert(room.room_id);
    }
    assert_eq!(
        room_ids.len(),
        1,
        "all callers got the same room: {room_ids:?}"
    );
    let (_, total) = server
        .store
        .list_rooms(
            &roomservice::domain::UserId::parse(ACME_USER).unwrap(),
            0,
            100,
        )
        .await
        .unwrap();
    assert_eq!(total, 1, "exactly one room stored");
}

#[tokio::test]
async fn custom_room_ids_are_per_account() {
    let server = TestServer::start().await;
    let acme = create(&server, &acme_token(), custom("lobby"))
        .await
        .unwrap();
    let globex = create(&server, &globex_token(), custom("lobby"))
        .await
        .unwrap();
    assert_ne!(acme.room_id, globex.room_id);
    assert_ne!(acme.user_id, globex.user_id);
}

#[tokio::test]
async fn another_accounts_room_is_not_found() {
    let server = TestServer::start().await;
    let room = create(&server, &acme_token(), custom("private"))
        .await
        .unwrap();
    for key in [room.room_id.as_str(), "private", room.id.as_str()] {
        let err = get(&server, &globex_token(), key).await.unwrap_err();
        assert_eq!(err.code(), Code::NotFound, "{key}: {err:?}");
        // Indistinguishable from a room that never existed.
        let missing = get(&server, &globex_token(), "never-existed")
            .await
            .unwrap_err();
        assert_eq!(
            err.message().replace(key, "X"),
            missing.message().replace("never-existed", "X")
        );
    }
}

#[tokio::test]
async fn unknown_rooms_are_not_found() {
    let server = TestServer::start().await;
    let token = acme_token();
    for key in [
        "zzzz-zzzz-zzzz",
        "no-such-room",
        "623d49c760a18e699abcc8a4",
        "has space",
        "a/b",
    ] {
        let err = get(&server, &token, key).await.unwrap_err();
        assert_eq!(err.code(), Code::NotFound, "{key}");
        assert!(
            err.message().contains("not found"),
            "{key}: {}",
            err.message()
        );
    }
    // An id whose roomId part names a real room but whose time part is wrong is not that room.
    let room = create(&server, &token, CreateRoomRequest::default())
        .await
        .unwrap();
    let forged = format!("00000000{}", &room.id[8..]);
    assert_eq!(
        get(&server, &token, &forged).await.unwrap_err().code(),
        Code::NotFound
    );
}

#[tokio::test]
async fn get_room_without_a_key_is_invalid() {
    let server = TestServer::start().await;
    let err = get(&server, &acme_token(), "").await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    let violations = err
        .get_details_bad_request()
        .expect("BadRequest details")
        .field_violations;
    assert_eq!(violations[0].field, "roomId");
}

/// Each invalid field is INVALID_ARGUMENT naming the field, with BadRequest
/// details, and nothing is stored.
#[tokio::test]
async fn each_validation_error_names_its_field() {
    let server = TestServer::start().await;
    let token = acme_token();
    let hook = |end_point: &str, events: &[&str]| Webhook {
        end_point: end_point.into(),
        events: events.iter().map(|e| e.to_string()).collect(),
    };
    let close = |kind: &str, duration: Option<i32>| AutoCloseConfig {
        r#type: kind.into(),
        duration,
        duration_seconds: None,
    };
    let big_struct = prost_types::Struct {
        fields: [(
            "blob".to_string(),
            prost_types::Value {
                // Over the 16 KiB the three media settings share.
                kind: Some(prost_types::value::Kind::StringValue("x".repeat(17_000))),
            },
        )]
        .into(),
    };
    let webhook_to = |end_point: &str| CreateRoomRequest {
        webhook: Some(hook(end_point, &["*"])),
        ..Default::default()
    };
    let participants = |ids: Vec<String>| CreateRoomRequest {
        allowed_participant_ids: ids,
        ..Default::default()
    };
    let distinct_events: Vec<String> = (0..33).map(|i| format!("e{i}")).collect();
    let distinct_events: Vec<&str> = distinct_events.iter().map(String::as_str).collect();
    let mut cases: Vec<(CreateRoomRequest, &str)> = vec![
        (custom(""), "customRoomId"),
        (custom("has space"), "customRoomId"),
        (custom(&"x".repeat(129)), "customRoomId"),
        (custom("slash/inside"), "customRoomId"),
        // Names lookups would read as something else, or no path can reach.
        (custom("abcd-efgh-ijkl"), "customRoomId"),
        (custom("623d49c760a18e699abcc8a4"), "customRoomId"),
        (custom("623D49C760A18E699ABCC8A4"), "customRoomId"),
        (custom("."), "customRoomId"),
        (custom(".."), "customRoomId"),
        (custom("deactivate"), "customRoomId"),
        (
            CreateRoomRequest {
                geo_fence: Some("mars001".into()),
                ..Default::default()
            },
            "geoFence",
        ),
        (
            CreateRoomRequest {
                webhook: Some(hook("", &[])),
                ..Default::default()
            },
            "webhook.endPoint",
        ),
        (
            CreateRoomRequest {
                webhook: Some(hook("not a url", &[])),
                ..Default::default()
            },
            "webhook.endPoint",
        ),
        (
            CreateRoomRequest {
                webhook: Some(hook("ftp://example.com/x", &[])),
                ..Default::default()
            },
            "webhook.endPoint",
        ),
        (
            CreateRoomRequest {
                webhook: Some(hook(
                    &format!("https://example.com/{}", "a".repeat(500)),
                    &[],
                )),
                ..Default::default()
            },
            "webhook.endPoint",
        ),
        (
            CreateRoomRequest {
                webhook: Some(hook(
                    "https://example.com/h",
                    &["session-started", "meeting-exploded"],
                )),
                ..Default::default()
            },
            "webhook.events[1]",
        ),
        (
            CreateRoomRequest {
                webhook: Some(hook("https://example.com/h", &["nope-*"])),
                ..Default::default()
            },
            "webhook.events[0]",
        ),
        (
            CreateRoomRequest {
                auto_close_config: Some(close("", Some(10))),
                ..Default::default()
            },
            "autoCloseConfig.type",
        ),
        (
            CreateRoomRequest {
                auto_close_config: Some(close("whenever", None)),
                ..Default::default()
            },
            "autoCloseConfig.type",
        ),
        (
            CreateRoomRequest {
                auto_close_config: Some(close("session-ends", Some(0))),
                ..Default::default()
            },
            "autoCloseConfig.duration",
        ),
        (
            CreateRoomRequest {
                auto_close_config: Some(close("session-ends", Some(-5))),
                ..Default::default()
            },
            "autoCloseConfig.duration",
        ),
        (
            CreateRoomRequest {
                auto_close_config: Some(close("session-ends", Some(43_201))),
                ..Default::default()
            },
            "autoCloseConfig.duration",
        ),
        (
            CreateRoomRequest {
                auto_start_config: Some(big_struct.clone()),
                ..Default::default()
            },
            "autoStartConfig",
        ),
        (
            CreateRoomRequest {
                multi_composition: Some(big_struct),
                ..Default::default()
            },
            "multiComposition",
        ),
        (
            CreateRoomRequest {
                allowed_participant_ids: vec!["ok".into(), "".into()],
                ..Default::default()
            },
            "allowedParticipantIds[1]",
        ),
        (
            participants((0..1001).map(|i| format!("p{i}")).collect()),
            "allowedParticipantIds",
        ),
        (
            CreateRoomRequest {
                webhook: Some(hook("https://example.com/h", &distinct_events)),
                ..Default::default()
            },
            "webhook.events",
        ),
    ];
    for end_point in [
        "https://example.com/a\r\nX-Injected: 1",
        "https://example.com/a\n",
        "https://example.com/\0",
        "https://exa\tmple.com/",
        "https://example.com/a b",
        " https://example.com/",
        "https://example.com/\u{85}",
        "https://user:pass@example.com/",
        "https://user@example.com/",
        "javascript:alert(1)",
        "ftp://example.com/x",
        "file:///etc/passwd",
    ] {
        cases.push((webhook_to(end_point), "webhook.endPoint"));
    }
    for id in [
        "nul\0",
        "line\nbreak",
        "tab\tin",
        "del\u{7f}",
        "c1\u{9b}",
        " lead",
        "trail ",
    ] {
        cases.push((
            participants(vec!["ok".into(), id.into()]),
            "allowedParticipantIds[1]",
        ));
    }
    for (request, field) in cases {
        let err = create(&server, &token, request.clone()).await.unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{field}: {err:?}");
        assert!(
            err.message().contains(field),
            "message {:?} should name {field}",
            err.message()
        );
        let violations = err
            .get_details_bad_request()
            .expect("BadRequest details")
            .field_violations;
        assert!(
            violations.iter().any(|v| v.field == field),
            "{field}: {violations:?}"
        );
    }
    let (_, total) = server
        .store
        .list_rooms(
            &roomservice::domain::UserId::parse(ACME_USER).unwrap(),
            0,
            10,
        )
        .await
        .unwrap();
    assert_eq!(total, 0, "no invalid request stored anything");
}

#[tokio::test]
async fn several_invalid_fields_are_reported_together() {
    let server = TestServer::start().await;
    let request = CreateRoomRequest {
        custom_room_id: Some("bad id".into()),
        geo_fence: Some("x".into()),
        ..Default::default()
    };
    let err = create(&server, &acme_token(), request).await.unwrap_err();
    let fields: Vec<_> = err
        .get_details_bad_request()
        .unwrap()
        .field_violations
        .into_iter()
        .map(|v| v.field)
        .collect();
    assert_eq!(fields, ["customRoomId", "geoFence"]);
}

#[tokio::test]
async fn room_scoped_token_works_for_its_room_only() {
    let server = TestServer::start().await;
    let other = create(&server, &acme_token(), custom("other-room"))
        .await
        .unwrap();
    let mut claims = sdk_claims(ACME_KEY);
    claims["roomId"] = "team-sync".into();
    let scoped = sign(&claims, ACME_SECRET);

    let own = create(&server, &scoped, custom("team-sync")).await.unwrap();
    assert_eq!(get(&server, &scoped, &own.room_id).await.unwrap(), own);
    assert_eq!(get(&server, &scoped, &own.id).await.unwrap(), own);

    let denied = get(&server, &scoped, &other.room_id).await.unwrap_err();
    assert_eq!(denied.code(), Code::PermissionDenied);
    assert!(
        denied.message().contains("team-sync"),
        "{}",
        denied.message()
    );
    let denied = create(&server, &scoped, custom("not-mine"))
        .await
        .unwrap_err();
    assert_eq!(denied.code(), Code::PermissionDenied);
    let denied = create(&server, &scoped, CreateRoomRequest::default())
        .await
        .unwrap_err();
    assert_eq!(denied.code(), Code::PermissionDenied);
}

#[tokio::test]
async fn oversized_request_is_refused() {
    let server = TestServer::start().await;
    let request = CreateRoomRequest {
        allowed_participant_ids: vec!["x".repeat(200); 2000],
        ..Default::default()
    };
    let err = create(&server, &acme_token(), request).await.unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted, "{err:?}");
}

/// However invalid a request is, the answer is the right error with a
/// bounded message, never INTERNAL from an oversized response header.
#[tokio::test]
async fn huge_invalid_input_gets_a_bounded_answer() {
    let server = TestServer::start().await;
    let token = acme_token();
    // Distinct values, since repeats are judged once; 40 KB, under the
    // request limit.
    let request = CreateRoomRequest {
        webhook: Some(Webhook {
            end_point: "https://example.com/h".into(),
            events: (0..100).map(|i| format!("{i:x>300}")).collect(),
        }),
        allowed_participant_ids: (0..1000).map(|i| format!(" p{i} ")).collect(),
        ..Default::default()
    };
    let err = create(&server, &token, request).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    assert!(
        err.message().len() < 4096,
        "message is {} bytes",
        err.message().len()
    );
    // 1 for too many events, 100 unknown events, 1000 padded ids.
    assert!(
        err.message().ends_with("and 1091 more"),
        "{}",
        err.message()
    );
    let violations = err.get_details_bad_request().unwrap().field_violations;
    assert_eq!(violations.len(), 10);
    assert_eq!(violations[0].field, "webhook.events");
    assert_eq!(violations[1].field, "webhook.events[0]");

    let long_key = "k".repeat(20_000);
    let err = get(&server, &token, &long_key).await.unwrap_err();
    assert_eq!(err.code(), Code::NotFound, "{err:?}");
    assert!(err.message().len() < 200, "{}", err.message());
}

/// The endpoint stored, echoed and later called is the one that was checked:
/// the URL parser's own serialization.
#[tokio::test]
async fn webhook_endpoints_are_stored_normalized() {
    let server = TestServer::start().await;
    let token = acme_token();
    for (i, (given, stored)) in [
        ("HTTPS://Example.COM:443/a/../b", "https://example.com/b"),
        ("https://example.com", "https://example.com/"),
        (
            "http://hooks.example.com:80/x?y=1",
            "http://hooks.example.com/x?y=1",
        ),
        ("https://exämple.com/ü", "https://xn--exmple-cua.com/%C3%BC"),
    ]
    .into_iter()
    .enumerate()
    {
        let name = format!("normalized-{i}");
        let request = CreateRoomRequest {
            custom_room_id: Some(name.clone()),
            webhook: Some(Webhook {
                end_point: given.into(),
                events: vec!["*".into()],
            }),
            ..Default::default()
        };
        let created = create(&server, &token, request).await.unwrap();
        assert_eq!(created.webhook.unwrap().end_point, stored, "{given}");
        let fetched = get(&server, &token, &name).await.unwrap();
        assert_eq!(fetched.webhook.unwrap().end_point, stored, "{given}");
    }
}

#[tokio::test]
async fn repeated_events_and_participant_ids_are_stored_once() {
    let server = TestServer::start().await;
    let token = acme_token();
    let request = CreateRoomRequest {
        custom_room_id: Some("deduped".into()),
        webhook: Some(Webhook {
            end_point: "https://example.com/h".into(),
            events: ["session-ended", "*", "session-ended", "hls-*", "*"]
                .map(String::from)
                .into(),
        }),
        allowed_participant_ids: ["bob", "alice", "bob", "carol", "alice"]
            .map(String::from)
            .into(),
        ..Default::default()
    };
    let created = create(&server, &token, request).await.unwrap();
    let fetched = get(&server, &token, "deduped").await.unwrap();
    assert_eq!(created, fetched);
    assert_eq!(
        fetched.webhook.unwrap().events,
        ["session-ended", "*", "hls-*"]
    );
    assert_eq!(fetched.allowed_participant_ids, ["bob", "alice", "carol"]);
}

/// Thousands of copies of one event subscribe once. 5,000 fit in a request;
/// 60,000 (180 KB) are refused by the request size limit before they are read.
#[tokio::test]
async fn thousands_of_repeated_events_are_stored_as_one() {
    let server = TestServer::start().await;
    let token = acme_token();
    let stars = |n: usize| CreateRoomRequest {
        webhook: Some(Webhook {
            end_point: "https://example.com/h".into(),
            events: vec!["*".into(); n],
        }),
        ..Default::default()
    };
    let room = create(&server, &token, stars(5_000)).await.unwrap();
    assert_eq!(room.webhook.unwrap().events, ["*"]);
    let fetched = get(&server, &token, &room.room_id).await.unwrap();
    assert_eq!(fetched.webhook.unwrap().events, ["*"]);

    match create(&server, &token, stars(60_000)).await {
        Err(err) => assert_eq!(err.code(), Code::ResourceExhausted, "{err:?}"),
        // Were the request limit ever raised past it, it must still dedup.
        Ok(room) => assert_eq!(room.webhook.unwrap().events, ["*"]),
    }
}

/// autoStartConfig, multiComposition and allowedParticipantIds share 16 KiB of
/// JSON: each below 8 KiB, together over it, is refused on the largest.
#[tokio::test]
async fn media_settings_over_16_kib_together_are_refused() {
    let server = TestServer::start().await;
    let token = acme_token();
    let blob = |chars: usize| prost_types::Struct {
        fields: [(
            "blob".to_string(),
            prost_types::Value {
                kind: Some(prost_types::value::Kind::StringValue("x".repeat(chars))),
            },
        )]
        .into(),
    };
    // 25 ids of 200 characters: 5,076 bytes of JSON.
    let ids: Vec<String> = (0..25).map(|i| format!("{i:p>200}")).collect();
    let request = CreateRoomRequest {
        auto_start_config: Some(blob(6_000)),
        multi_composition: Some(blob(7_000)),
        allowed_participant_ids: ids.clone(),
        ..Default::default()
    };
    let err = create(&server, &token, request).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    let violations = err.get_details_bad_request().unwrap().field_violations;
    assert_eq!(violations.len(), 1, "{violations:?}");
    assert_eq!(violations[0].field, "multiComposition");
    assert_eq!(
        violations[0].description,
        "autoStartConfig, multiComposition and allowedParticipantIds must be at most 16384 \
         bytes of JSON together, got 18098 (autoStartConfig 6011, multiComposition 7011, \
         allowedParticipantIds 5076)"
    );

    // Under the limit together, the same parts are stored.
    let request = CreateRoomRequest {
        auto_start_config: Some(blob(6_000)),
        multi_composition: Some(blob(5_000)),
        allowed_participant_ids: ids,
        ..Default::default()
    };
    let room = create(&server, &token, request).await.unwrap();
    assert_eq!(room.allowed_participant_ids.len(), 25);
}

/// The names that stay allowed are reachable by their REST path, including
/// ones close to the reserved ones.
#[tokio::test]
async fn accepted_custom_room_ids_are_reachable_by_path() {
    let server = TestServer::start().await;
    let token = acme_token();
    for name in [
        "validate",
        "...",
        "Deactivate",
        "ABCD-EFGH-IJKL",
        "623d49c760a18e699abcc8a",
    ] {
        let room = create(&server, &token, custom(name)).await.unwrap();
        let reply = server
            .http()
            .get(format!("{}/v2/rooms/{name}", server.url()))
            .header("authorization", &token)
            .send()
            .await
            .unwrap();
        assert_eq!(reply.status(), 200, "{name}");
        let body: serde_json::Value = reply.json().await.unwrap();
        assert_eq!(body["roomId"], room.room_id.as_str(), "{name}");
    }
}
