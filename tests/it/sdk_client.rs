//! The official VideoSDK Rust server SDK (`videosdk-server-sdk`, lib `videosdk`)
//! pointed at the REST gateway by `base_url`, unchanged: what it sends is what
//! real users' code sends, and every response must decode into its types and
//! mean what videosdk-rest.md says.
//!
//! Facts about the SDK these tests lean on (0.1.0):
//! - it mints its own token, `{apikey, permissions:["allow_join","allow_mod"],
//!   version:2, roles:["crawler"], iat, exp=iat+24h}`, HS256, sent as a raw
//!   `Authorization: <jwt>` (no `Bearer`);
//! - `Room.id` is a required string; `links` must be string-valued; fields it
//!   does not model (`userId`, `user`, `meetingId`, ...) land in `Room.extra`;
//! - `validate` turns a 400, 402 or 404 into `valid: false`;
//! - errors read the message from `message`, else `error`, and `code`.

use std::collections::HashSet;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use futures::StreamExt;
use roomservice::auth::Verifier;
use serde_json::{Value, json};
use videosdk::{
    AutoCloseConfigInput, AutoCloseType, AutoStartConfig, Client, MultiComposition, RawRequest,
    Region, Room, RoomCreateParams, RoomListParams, RoomWebhookInput, TokenOptions,
};

use crate::harness::*;

/// The SDK as a user would build it, pointed at `server`: no retries (a
/// failure shows at once instead of after seconds of backoff) and a request
/// timeout well inside the test's patience.
fn sdk_for(server: &TestServer, api_key: &str, secret: &str) -> videosdk::ClientBuilder {
    Client::builder()
        .api_key(api_key)
        .secret(secret)
        .base_url(server.url())
        .max_retries(0)
        .request_timeout(Duration::from_secs(10))
        // The server is on loopback; a developer's HTTP(S)_PROXY must not
        // capture the requests.
        .http_client(
            reqwest::Client::builder()
                .no_proxy()
                .build()
                .expect("reqwest client"),
        )
}

fn acme_sdk(server: &TestServer) -> Client {
    sdk_for(server, ACME_KEY, ACME_SECRET)
        .build()
        .expect("the SDK builds a client")
}

fn custom(id: &str) -> RoomCreateParams {
    RoomCreateParams {
        custom_room_id: Some(id.into()),
        ..Default::default()
    }
}

fn per_page(page: u32, per_page: u32) -> RoomListParams {
    RoomListParams {
        page: Some(page),
        per_page: Some(per_page),
        ..Default::default()
    }
}

fn assert_room_id_shape(room_id: &str) {
    let groups: Vec<&str> = room_id.split('-').collect();
    assert!(
        groups.len() == 3
            && groups.iter().all(|g| g.len() == 4
                && g.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())),
        "roomId {room_id:?} is not xxxx-xxxx-xxxx"
    );
}

fn assert_object_id(id: &str) {
    assert!(
        id.len() == 24
            && id
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)),
        "id {id:?} is not 24 lowercase hex"
    );
}

/// RFC 3339 UTC with exactly three fractional digits and `Z`.
fn assert_timestamp(ts: Option<&str>) -> jiff::Timestamp {
    let ts = ts.expect("timestamp present");
    assert!(
        ts.len() == 24 && ts.as_bytes()[19] == b'.' && ts.ends_with('Z'),
        "timestamp {ts:?} is not like 2022-03-25T04:49:11.024Z"
    );
    ts.parse().unwrap_or_else(|e| panic!("{ts:?}: {e}"))
}

/// The `links` every create-shape and fetch-shape room carries.
fn assert_links(server: &TestServer, room: &Room) {
    assert_eq!(
        room.links.get("get_room").map(String::as_str),
        Some(format!("{}/v2/rooms/{}", server.url(), room.room_id).as_str()),
        "links: {:?}",
        room.links
    );
    assert_eq!(
        room.links.get("get_session").map(String::as_str),
        Some(format!("{}/v2/sessions/", server.url()).as_str()),
        "links: {:?}",
        room.links
    );
}

/// The create shape names the owner by `userId`.
fn assert_create_shape(room: &Room) {
    assert_eq!(
        room.extra.get("userId"),
        Some(&json!(ACME_USER)),
        "{room:?}"
    );
    assert!(!room.extra.contains_key("user"), "{room:?}");
}

/// The fetch shape (get, list items) names the owner by a `user` object instead.
fn assert_fetch_shape(room: &Room) {
    assert_eq!(
        room.extra.get("user"),
        Some(&json!({
            "id": ACME_USER,
            "name": "Acme",
            "email": "ops@acme.test",
            "discontinuedReason": null,
        })),
        "{room:?}"
    );
    assert!(!room.extra.contains_key("userId"), "{room:?}");
}

/// Room has no PartialEq; these are the fields a user compares.
fn assert_same_room(actual: &Room, expected: &Room, context: &str) {
    assert_eq!(actual.id, expected.id, "{context}");
    assert_eq!(actual.room_id, expected.room_id, "{context}");
    assert_eq!(actual.custom_room_id, expected.custom_room_id, "{context}");
    assert_eq!(actual.disabled, expected.disabled, "{context}");
    assert_eq!(actual.created_at, expected.created_at, "{context}");
    assert_eq!(actual.updated_at, expected.updated_at, "{context}");
    assert_eq!(actual.geo_fence, expected.geo_fence, "{context}");
}

/// Creates `n` rooms one after another, a few milliseconds apart so that
/// "newest first" has one right answer (createdAt has millisecond precision).
async fn create_rooms(client: &Client, n: usize) -> Vec<Room> {
    let mut rooms = Vec::with_capacity(n);
    for i in 0..n {
        if i > 0 {
            tokio::time::sleep(Duration::from_millis(3)).await;
        }
        let room = client
            .rooms()
            .create(RoomCreateParams::default())
            .await
            .unwrap_or_else(|e| panic!("create #{i}: {e}"));
        rooms.push(room);
    }
    rooms
}

fn room_ids(rooms: &[Room]) -> Vec<String> {
    rooms.iter().map(|r| r.room_id.clone()).collect()
}

fn newest_first(rooms: &[Room]) -> Vec<String> {
    rooms.iter().rev().map(|r| r.room_id.clone()).collect()
}

fn api_error(err: &videosdk::Error) -> &videosdk::ApiError {
    err.as_api()
        .unwrap_or_else(|| panic!("expected an HTTP error from the server, got {err:?}"))
}

/* ---------------------------------- tokens ---------------------------------- */

#[test]
fn sdk_tokens_carry_the_claims_our_verifier_requires() {
    let client = Client::builder()
        .api_key(ACME_KEY)
        .secret(ACME_SECRET)
        .base_url("http://127.0.0.1:9")
        .build()
        .unwrap();
    let token = client.generate_token().unwrap();

    let header: Value = serde_json::from_slice(
        &URL_SAFE_NO_PAD
            .decode(token.split('.').next().unwrap())
            .unwrap(),
    )
    .unwrap();
    assert_eq!(header, json!({"alg": "HS256", "typ": "JWT"}));

    let claims = videosdk::decode_token(&token).unwrap();
    let names: HashSet<&str> = claims.raw.keys().map(String::as_str).collect();
    assert_eq!(
        names,
        HashSet::from(["apikey", "permissions", "version", "roles", "iat", "exp"])
    );
    assert_eq!(claims.api_key.as_deref(), Some(ACME_KEY));
    assert_eq!(claims.permissions, ["allow_join", "allow_mod"]);
    assert_eq!(claims.roles, ["crawler"]);
    assert_eq!(claims.version, Some(2));
    let (iat, exp) = (claims.issued_at.unwrap(), claims.expires_at.unwrap());
    assert!((iat - now()).abs() <= 5, "iat {iat} is not now");
    assert_eq!(exp - iat, 24 * 60 * 60, "the SDK's tokens live 24 hours");

    let caller = Verifier::new(keyring(), false)
        .verify_management(Some(&token))
        .expect("our verifier accepts the SDK's own token for the management API");
    assert_eq!(caller.api_key, ACME_KEY);
    assert_eq!(caller.account.user_id.as_str(), ACME_USER);
}

/* ---------------------------------- create ---------------------------------- */

#[tokio::test]
async fn sdk_creates_a_room_without_custom_room_id() {
    let server = TestServer::start().await;
    let client = acme_sdk(&server);
    let room = client
        .rooms()
        .create(RoomCreateParams::default())
        .await
        .expect("create with an empty body");

    assert_room_id_shape(&room.room_id);
    assert_object_id(&room.id);
    assert_eq!(room.custom_room_id, None);
    assert!(!room.disabled);
    let created = assert_timestamp(room.created_at.as_deref());
    assert_timestamp(room.updated_at.as_deref());
    assert_eq!(room.created_at, room.updated_at);
    let age = jiff::Timestamp::now().duration_since(created);
    assert!(
        age.abs() < jiff::SignedDuration::from_secs(60),
        "createdAt {created} is not now"
    );
    assert_links(&server, &room);
    assert_create_shape(&room);
    // Nothing was set, so nothing optional is echoed.
    assert!(room.geo_fence.is_none(), "{room:?}");
    assert!(room.webhook.is_none(), "{room:?}");
    assert!(room.auto_close_config.is_none(), "{room:?}");
    assert!(room.auto_start_config.is_none(), "{room:?}");
    assert!(room.multi_composition.is_none(), "{room:?}");
    assert!(room.allowed_participant_ids.is_empty(), "{room:?}");

    let again = client
        .rooms()
        .create(RoomCreateParams::default())
        .await
        .unwrap();
    assert_ne!(
        again.room_id, room.room_id,
        "rooms without customRoomId are always new"
    );
    assert_ne!(again.id, room.id);
}

#[tokio::test]
async fn sdk_create_with_custom_room_id_is_idempotent() {
    let server = TestServer::start().await;
    let client = acme_sdk(&server);
    let first = client.rooms().create(custom("sdk-weekly")).await.unwrap();
    assert_eq!(first.custom_room_id.as_deref(), Some("sdk-weekly"));
    assert_room_id_shape(&first.room_id);
    assert_links(&server, &first);
    assert_create_shape(&first);

    let second = client.rooms().create(custom("sdk-weekly")).await.unwrap();
    assert_same_room(&second, &first, "the same customRoomId again");

    // Other settings on a repeated create change nothing.
    let third = client
        .rooms()
        .create(RoomCreateParams {
            geo_fence: Some(Region::US001),
            ..custom("sdk-weekly")
        })
        .await
        .unwrap();
    assert_same_room(&third, &first, "the same customRoomId with a geoFence");
    assert_eq!(third.geo_fence, None);

    let page = client
        .rooms()
        .list(RoomListParams::default())
        .await
        .unwrap();
    assert_eq!(page.total(), 1, "exactly one room exists");
}

#[tokio::test]
async fn sdk_create_with_settings_reads_them_back_typed() {
    let server = TestServer::start().await;
    let client = acme_sdk(&server);
    let recording = json!({"config": {"layout": {"type": "GRID"}}});
    let params = RoomCreateParams {
        custom_room_id: Some("sdk-settings".into()),
        geo_fence: Some(Region::EU001),
        webhook: Some(RoomWebhookInput {
            url: "https://hooks.example.com/rooms".into(),
            events: vec!["session-started".into(), "recording-*".into()],
        }),
        auto_close_config: Some(AutoCloseConfigInput {
            // The SDK names this seconds; on the wire it is `duration`, which
            // the contract reads as minutes. The value is echoed either way.
            after_inactive_seconds: Some(30),
            kind: Some(AutoCloseType::SESSION_END_AND_DEACTIVATE),
        }),
        auto_start_config: Some(AutoStartConfig {
            recording: Some(recording.clone()),
            ..Default::default()
        }),
        multi_composition: Some(MultiComposition {
            recording: Some(true),
            ..Default::default()
        }),
        allowed_participant_ids: Some(vec!["alice".into(), "bob".into()]),
    };
    let created = client
        .rooms()
        .create(params)
        .await
        .expect("create with settings");
    let fetched = client.rooms().get("sdk-settings").await.expect("get");

    for (what, room) in [("create", &created), ("get", &fetched)] {
        assert_eq!(room.geo_fence, Some(Region::EU001), "{what}");
        let webhook = room
            .webhook
            .as_ref()
            .unwrap_or_else(|| panic!("{what}: no webhook"));
        assert_eq!(
            webhook.end_point, "https://hooks.example.com/rooms",
            "{what}"
        );
        assert_eq!(webhook.events, ["session-started", "recording-*"], "{what}");
        let auto_close = room
            .auto_close_config
            .as_ref()
            .unwrap_or_else(|| panic!("{what}: no autoCloseConfig"));
        assert_eq!(
            auto_close.kind,
            Some(AutoCloseType::SESSION_END_AND_DEACTIVATE),
            "{what}"
        );
        assert_eq!(auto_close.duration, Some(30), "{what}");
        assert_eq!(
            room.auto_start_config,
            Some(json!({"recording": recording})),
            "{what}"
        );
        assert_eq!(
            room.multi_composition,
            Some(json!({"recording": true})),
            "{what}"
        );
        assert_eq!(room.allowed_participant_ids, ["alice", "bob"], "{what}");
    }
    assert_same_room(&fetched, &created, "get after create");
}

#[tokio::test]
async fn sdk_auto_close_without_a_duration_reads_back_the_default() {
    let server = TestServer::start().await;
    let client = acme_sdk(&server);
    // With neither field set the SDK still sends {"type":"session-ends"}.
    let room = client
        .rooms()
        .create(RoomCreateParams {
            auto_close_config: Some(AutoCloseConfigInput::default()),
            ..Default::default()
        })
        .await
        .unwrap();
    let auto_close = room.auto_close_config.expect("autoCloseConfig echoed");
    assert_eq!(auto_close.kind, Some(AutoCloseType::SESSION_ENDS));
    assert_eq!(
        auto_close.duration,
        Some(480),
        "duration defaults to 480 minutes"
    );
}

/* ------------------------------------ get ----------------------------------- */

#[tokio::test]
async fn sdk_gets_a_room_by_room_id_custom_room_id_and_id() {
    let server = TestServer::start().await;
    let client = acme_sdk(&server);
    // Dots and underscores pass the SDK's path escaping unchanged.
    let created = client.rooms().create(custom("sdk.stand_up")).await.unwrap();

    for key in [
        created.room_id.as_str(),
        "sdk.stand_up",
        created.id.as_str(),
    ] {
        let fetched = client
            .rooms()
            .get(key)
            .await
            .unwrap_or_else(|e| panic!("get by {key}: {e}"));
        assert_same_room(&fetched, &created, &format!("get by {key}"));
        assert_links(&server, &fetched);
        assert_fetch_shape(&fetched);
    }
}

#[tokio::test]
async fn sdk_get_of_an_unknown_room_is_not_found() {
    let server = TestServer::start().await;
    let client = acme_sdk(&server);
    // The SDK percent-encodes each key as one path segment ("has%20space",
    // "a%2Fb", "%C3%BCn%C3%AF"): the gateway must decode it and answer 404,
    // not a 400 or an unknown-path error of another shape.
    for key in [
        "zzzz-zzzz-zzzz",
        "no-such-room",
        "623d49c760a18e699abcc8a4",
        "has space",
        "a/b",
        "ünï",
    ] {
        let err = client.rooms().get(key).await.unwrap_err();
        assert!(err.is_not_found(), "{key}: {err}");
        let api = api_error(&err);
        assert_eq!(api.status, 404, "{key}: {err}");
        assert_eq!(api.code.as_deref(), Some("not_found"), "{key}: {err}");
        assert!(!api.message.is_empty(), "{key}: {err}");
        assert_eq!(
            api.details.as_ref().unwrap()["statusCode"],
            json!(404),
            "{key}"
        );
    }
}

#[tokio::test]
async fn sdk_cannot_see_another_accounts_room() {
    let server = TestServer::start().await;
    let acme = acme_sdk(&server);
    let globex = sdk_for(&server, GLOBEX_KEY, GLOBEX_SECRET).build().unwrap();
    let room = acme.rooms().create(custom("sdk-private")).await.unwrap();

    for key in [room.room_id.as_str(), "sdk-private", room.id.as_str()] {
        let err = globex.rooms().get(key).await.unwrap_err();
        assert_eq!(err.status(), Some(404), "{key}: {err}");
    }
    assert!(!globex.rooms().validate(&room.room_id).await.unwrap().valid);
    let page = globex
        .rooms()
        .list(RoomListParams::default())
        .await
        .unwrap();
    assert!(page.data.is_empty());
    assert_eq!(page.total(), 0);
}

/* ------------------------------------ list ---------------------------------- */

#[tokio::test]
async fn sdk_lists_rooms_page_by_page_newest_first() {
    let server = TestServer::start().await;
    let client = acme_sdk(&server);
    let created = create_rooms(&client, 7).await;

    let mut listed = Vec::new();
    for (page, expected_len) in [(1u32, 3usize), (2, 3), (3, 1)] {
        let result = client
            .rooms()
            .list(per_page(page, 3))
            .await
            .unwrap_or_else(|e| panic!("page {page}: {e}"));
        assert_eq!(result.data.len(), expected_len, "page {page}");
        let info = result.page_info();
        assert_eq!(
            (info.current_page, info.per_page, info.last_page, info.total),
            (page, 3, 3, 7),
            "page {page}: {info:?}"
        );
        assert_eq!(result.has_next_page(), page < 3, "page {page}");
        for room in &result.data {
            assert_fetch_shape(room);
            assert_links(&server, room);
        }
        listed.extend(result.data);
    }
    let ids = room_ids(&listed);
    assert_eq!(
        ids.iter().collect::<HashSet<_>>().len(),
        7,
        "no duplicates: {ids:?}"
    );
    assert_eq!(ids, newest_first(&created));

    // A page past the end is empty, not an error.
    let past = client.rooms().list(per_page(4, 3)).await.unwrap();
    assert!(past.data.is_empty(), "{past:?}");
    assert_eq!(past.total(), 7);
    assert!(!past.has_next_page());
}

#[tokio::test]
async fn sdk_list_stream_and_next_page_walk_every_page() {
    let server = TestServer::start().await;
    let client = acme_sdk(&server);
    let created = create_rooms(&client, 7).await;

    let streamed: Vec<Room> = client
        .rooms()
        .list_stream(per_page(1, 3))
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<Result<_, _>>()
        .expect("every page fetched");
    assert_eq!(room_ids(&streamed), newest_first(&created));

    // The same walk by hand: the SDK builds page 2's request from page 1's pageInfo.
    let mut page = client.rooms().list(per_page(1, 3)).await.unwrap();
    let mut walked = room_ids(&page.data);
    let mut pages = 1;
    while let Some(next) = page.next_page().await.expect("next page") {
        pages += 1;
        assert_eq!(next.page_info().current_page, pages);
        walked.extend(room_ids(&next.data));
        page = next;
    }
    assert_eq!(pages, 3);
    assert_eq!(walked, newest_first(&created));
}

#[tokio::test]
async fn sdk_list_without_params_uses_the_server_defaults() {
    let server = TestServer::start().await;
    let client = acme_sdk(&server);
    let created = create_rooms(&client, 7).await;

    // No page or perPage is sent at all.
    let page = client
        .rooms()
        .list(RoomListParams::default())
        .await
        .unwrap();
    let info = page.page_info();
    assert_eq!(
        (info.current_page, info.per_page, info.last_page, info.total),
        (1, 20, 1, 7),
        "{info:?}"
    );
    assert_eq!(room_ids(&page.data), newest_first(&created));
    assert!(!page.has_next_page());
}

#[tokio::test]
async fn sdk_list_query_matches_one_room_exactly() {
    let server = TestServer::start().await;
    let client = acme_sdk(&server);
    let others = create_rooms(&client, 2).await;
    let needle = client.rooms().create(custom("sdk-needle")).await.unwrap();

    let query = |q: &str| RoomListParams {
        query: Some(q.into()),
        ..Default::default()
    };
    for q in ["sdk-needle", needle.room_id.as_str()] {
        let page = client.rooms().list(query(q)).await.unwrap();
        assert_eq!(
            room_ids(&page.data),
            std::slice::from_ref(&needle.room_id),
            "query {q}"
        );
        assert_eq!(page.total(), 1, "query {q}");
    }
    let page = client
        .rooms()
        .list(query(&others[0].room_id))
        .await
        .unwrap();
    assert_eq!(room_ids(&page.data), [others[0].room_id.clone()]);

    // Exact matches only: a prefix finds nothing.
    let page = client.rooms().list(query("sdk-need")).await.unwrap();
    assert!(page.data.is_empty(), "{page:?}");
    assert_eq!(page.total(), 0);
    assert_eq!(page.page_info().last_page, 1);
}

/* ---------------------------------- validate -------------------------------- */

#[tokio::test]
async fn sdk_validates_an_existing_room() {
    let server = TestServer::start().await;
    let client = acme_sdk(&server);
    let created = client.rooms().create(custom("sdk-check")).await.unwrap();

    for key in [created.room_id.as_str(), "sdk-check"] {
        let validation = client.rooms().validate(key).await.unwrap();
        assert!(validation.valid, "validate {key}");
        assert_eq!(validation.room_id, created.room_id, "validate {key}");
        let room = validation.room.expect("the room rides along");
        assert_same_room(&room, &created, &format!("validate {key}"));
        assert_links(&server, &room);
        assert_create_shape(&room);
    }
}

#[tokio::test]
async fn sdk_validate_of_an_unknown_room_is_not_valid() {
    let server = TestServer::start().await;
    let client = acme_sdk(&server);
    let validation = client.rooms().validate("zzzz-zzzz-zzzz").await.unwrap();
    assert!(!validation.valid);
    assert_eq!(validation.room_id, "zzzz-zzzz-zzzz");
    assert!(validation.room.is_none());

    // What the server actually answered, through the SDK's raw escape hatch.
    let err = client
        .api()
        .get("/v2/rooms/validate/zzzz-zzzz-zzzz", RawRequest::new())
        .await
        .unwrap_err();
    let api = api_error(&err);
    assert_eq!(api.status, 400, "{err}");
    assert_eq!(api.message, "Room not found");
    assert_eq!(api.code.as_deref(), Some("not_found"));
}

/* --------------------------------- deactivate ------------------------------- */

#[tokio::test]
async fn sdk_end_deactivates_the_room() {
    let server = TestServer::start().await;
    let client = acme_sdk(&server);
    let created = client.rooms().create(custom("sdk-retro")).await.unwrap();

    let ended = client
        .rooms()
        .end(&created.room_id)
        .await
        .expect("deactivate");
    assert!(ended.disabled);
    assert_eq!(ended.id, created.id);
    assert_eq!(ended.room_id, created.room_id);
    assert_eq!(ended.custom_room_id.as_deref(), Some("sdk-retro"));
    assert_eq!(ended.created_at, created.created_at);
    assert_timestamp(ended.updated_at.as_deref());
    // The legacy names and both owner forms ride in `extra`; no links.
    assert_eq!(ended.extra.get("meetingId"), Some(&json!(created.room_id)));
    assert_eq!(ended.extra.get("userMeetingId"), Some(&json!("sdk-retro")));
    assert_eq!(ended.extra.get("userId"), Some(&json!(ACME_USER)));
    assert_eq!(ended.extra["user"]["id"], json!(ACME_USER));
    assert!(ended.links.is_empty(), "{:?}", ended.links);

    let fetched = client.rooms().get(&created.room_id).await.unwrap();
    assert!(fetched.disabled, "a later get shows the room disabled");
    let listed = client
        .rooms()
        .list(RoomListParams::default())
        .await
        .unwrap();
    assert!(listed.data[0].disabled);
}

#[tokio::test]
async fn sdk_end_of_a_room_without_custom_room_id_has_a_null_user_meeting_id() {
    let server = TestServer::start().await;
    let client = acme_sdk(&server);
    let created = client
        .rooms()
        .create(RoomCreateParams::default())
        .await
        .unwrap();
    let ended = client.rooms().end(&created.room_id).await.unwrap();
    assert!(ended.disabled);
    assert_eq!(ended.custom_room_id, None);
    assert_eq!(ended.extra.get("userMeetingId"), Some(&Value::Null));
}

#[tokio::test]
async fn sdk_end_by_custom_room_id_is_refused_with_402() {
    let server = TestServer::start().await;
    let client = acme_sdk(&server);
    client.rooms().create(custom("sdk-named")).await.unwrap();

    let err = client.rooms().end("sdk-named").await.unwrap_err();
    let api = api_error(&err);
    assert_eq!(api.status, 402, "{err}");
    assert_eq!(api.code.as_deref(), Some("room_id_required"));
    // The SDK files 402 under not-found, as the real API uses it.
    assert!(err.is_not_found());
    assert!(
        !client.rooms().get("sdk-named").await.unwrap().disabled,
        "nothing changed"
    );
}

#[tokio::test]
async fn sdk_end_of_an_unknown_room_is_not_found() {
    let server = TestServer::start().await;
    let client = acme_sdk(&server);
    let err = client.rooms().end("zzzz-zzzz-zzzz").await.unwrap_err();
    assert_eq!(err.status(), Some(404), "{err}");
    assert_eq!(err.code(), Some("not_found"));
}

/* ----------------------------------- errors --------------------------------- */

#[tokio::test]
async fn sdk_surfaces_a_bad_request_with_our_message() {
    let server = TestServer::start().await;
    let client = acme_sdk(&server);
    let err = client
        .rooms()
        .create(custom("has space"))
        .await
        .unwrap_err();

    assert!(err.is_validation(), "{err:?}");
    assert_eq!(err.status(), Some(400));
    assert_eq!(err.code(), Some("invalid_argument"));
    let api = api_error(&err);
    assert!(
        api.message.contains("customRoomId"),
        "the message names the field: {}",
        api.message
    );
    assert_eq!(api.method, "POST");
    assert_eq!(api.path, "/v2/rooms");
    let body = api.details.as_ref().expect("the parsed error body");
    assert_eq!(body["statusCode"], json!(400));
    assert_eq!(body["error"], json!(api.message));
    // What a user prints.
    assert!(err.to_string().contains("customRoomId"), "{err}");
    assert!(err.to_string().contains("status 400"), "{err}");

    let page = client
        .rooms()
        .list(RoomListParams::default())
        .await
        .unwrap();
    assert_eq!(page.total(), 0, "nothing was stored");
}

#[tokio::test]
async fn sdk_with_a_wrong_secret_is_unauthenticated() {
    let server = TestServer::start().await;
    let client = sdk_for(&server, ACME_KEY, "not-the-acme-secret")
        .build()
        .unwrap();

    let err = client
        .rooms()
        .create(RoomCreateParams::default())
        .await
        .unwrap_err();
    assert!(err.is_authentication(), "{err:?}");
    assert_eq!(err.status(), Some(401));
    assert_eq!(err.code(), Some("unauthenticated"));
    assert!(!api_error(&err).message.is_empty());

    let err = client
        .rooms()
        .list(RoomListParams::default())
        .await
        .unwrap_err();
    assert_eq!(err.status(), Some(401), "{err}");
}

#[tokio::test]
async fn sdk_with_an_unknown_api_key_is_unauthenticated() {
    let server = TestServer::start().await;
    let client = sdk_for(&server, "no-such-key", ACME_SECRET)
        .build()
        .unwrap();
    let err = client.rooms().get("zzzz-zzzz-zzzz").await.unwrap_err();
    assert_eq!(err.status(), Some(401), "{err}");
    assert_eq!(err.code(), Some("unauthenticated"));
}

#[tokio::test]
async fn sdk_with_a_join_only_token_is_denied() {
    let server = TestServer::start().await;
    let client = sdk_for(&server, ACME_KEY, ACME_SECRET)
        .token_options(TokenOptions {
            roles: Some(vec!["rtc".into()]),
            ..Default::default()
        })
        .build()
        .unwrap();
    let err = client
        .rooms()
        .list(RoomListParams::default())
        .await
        .unwrap_err();
    assert!(err.is_permission(), "{err:?}");
    assert_eq!(err.status(), Some(403));
    assert_eq!(err.code(), Some("permission_denied"));
}
