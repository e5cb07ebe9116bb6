//! The REST gateway as plain HTTP clients see it: raw requests (no body, odd
//! headers, chunked bodies), exact JSON shapes and error bodies, CORS, the
//! health and OpenAPI endpoints, and one port serving REST over HTTP/1.1 and
//! HTTP/2 beside gRPC. What the official SDK already exercises is in
//! `sdk_client.rs`; this file covers what an SDK cannot send or does not check.

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::time::Duration;

use http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, header};
use roomservice::gateway::{CorsOrigins, ROUTES};
use roomservice::grpc::pb::{self, CreateRoomRequest, GetRoomRequest};
use serde_json::{Value, json};

use crate::harness::*;

/* --------------------------------- helpers ---------------------------------- */

/// One HTTP answer, read whole.
struct Reply {
    status: StatusCode,
    headers: HeaderMap,
    text: String,
}

impl Reply {
    fn json(&self) -> Value {
        serde_json::from_str(&self.text).unwrap_or_else(|e| {
            panic!(
                "{} answered a body that is not JSON ({e}): {:?}",
                self.status, self.text
            )
        })
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .get(name)
            .map(|v| v.to_str().expect("ascii header"))
    }
}

async fn send(request: reqwest::RequestBuilder) -> Reply {
    let response = request.send().await.expect("the server answers");
    let status = response.status();
    let headers = response.headers().clone();
    let text = response.text().await.expect("a readable body");
    Reply {
        status,
        headers,
        text,
    }
}

/// Sends `head` (request line and headers, without the blank line) and then
/// `body` verbatim over a fresh TCP connection, with `Connection: close`, and
/// reads the whole answer. For what reqwest would normalise away: header-name
/// case, a POST with neither body nor Content-Length, a chunked body.
async fn raw_http(server: &TestServer, head: &str, body: Vec<u8>) -> Reply {
    let addr = server.addr;
    let head = format!(
        "{head}\r\nHost: {addr}\r\nConnection: close\r\n\r\n",
        head = head.trim_end()
    );
    let bytes = tokio::task::spawn_blocking(move || {
        let mut stream = std::net::TcpStream::connect(addr).expect("connect");
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        stream.write_all(head.as_bytes()).expect("write the head");
        // The server may answer (413) before reading all of a large body;
        // what it answered is what counts, so a failed write is not fatal.
        let _ = stream.write_all(&body);
        let mut answer = Vec::new();
        stream
            .read_to_end(&mut answer)
            .expect("read the whole answer");
        answer
    })
    .await
    .unwrap();
    parse_http1(&bytes)
}

fn parse_http1(bytes: &[u8]) -> Reply {
    let text = String::from_utf8_lossy(bytes);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("no end of headers in {text:?}"));
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap();
    let status: u16 = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("bad status line {status_line:?}"));
    let mut headers = HeaderMap::new();
    for line in lines {
        let (name, value) = line.split_once(':').expect("header line");
        headers.append(
            HeaderName::from_bytes(name.trim().as_bytes()).unwrap(),
            HeaderValue::from_str(value.trim()).unwrap(),
        );
    }
    let chunked = headers
        .get(header::TRANSFER_ENCODING)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"chunked"));
    let text = if chunked {
        dechunk(body)
    } else {
        body.to_owned()
    };
    Reply {
        status: StatusCode::from_u16(status).unwrap(),
        headers,
        text,
    }
}

fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    loop {
        let (size, rest) = body.split_once("\r\n").expect("chunk size line");
        let size = usize::from_str_radix(size.trim(), 16).expect("hex chunk size");
        if size == 0 {
            return out;
        }
        out.push_str(&rest[..size]);
        body = &rest[size + 2..];
    }
}

fn keys(value: &Value) -> BTreeSet<&str> {
    value
        .as_object()
        .unwrap_or_else(|| panic!("not an object: {value}"))
        .keys()
        .map(String::as_str)
        .collect()
}

fn set<'a>(names: &[&'a str]) -> BTreeSet<&'a str> {
    names.iter().copied().collect()
}

/// RFC 3339 UTC with exactly three fractional digits and `Z`.
fn assert_timestamp(value: &Value) -> jiff::Timestamp {
    let ts = value
        .as_str()
        .unwrap_or_else(|| panic!("timestamp {value} is not a string"));
    assert!(
        ts.len() == 24
            && ts.as_bytes()[19] == b'.'
            && ts[20..23].bytes().all(|b| b.is_ascii_digit())
            && ts.ends_with('Z'),
        "timestamp {ts:?} is not like 2022-03-25T04:49:11.024Z"
    );
    ts.parse().unwrap_or_else(|e| panic!("{ts:?}: {e}"))
}

fn assert_room_id_shape(room_id: &Value) {
    let room_id = room_id.as_str().expect("roomId is a string");
    assert!(
        roomservice::domain::RoomId::parse(room_id).is_some(),
        "roomId {room_id:?} is not xxxx-xxxx-xxxx"
    );
}

fn assert_hex24(value: &Value) {
    let id = value.as_str().expect("a string");
    assert!(
        id.len() == 24
            && id
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)),
        "{id:?} is not 24 lowercase hex"
    );
}

fn assert_links(server: &TestServer, room: &Value) {
    assert_eq!(
        room["links"],
        json!({
            "get_room": format!("{}/v2/rooms/{}", server.url(), room["roomId"].as_str().unwrap()),
            "get_session": format!("{}/v2/sessions/", server.url()),
        }),
        "{room}"
    );
}

const CREATE_KEYS: [&str; 8] = [
    "roomId",
    "customRoomId",
    "userId",
    "disabled",
    "createdAt",
    "updatedAt",
    "id",
    "links",
];
const FETCH_KEYS: [&str; 8] = [
    "roomId",
    "customRoomId",
    "user",
    "disabled",
    "createdAt",
    "updatedAt",
    "id",
    "links",
];

/// The create shape of a room made without settings: exactly these keys.
fn assert_create_shape(server: &TestServer, room: &Value, custom_room_id: Option<&str>) {
    assert_eq!(keys(room), set(&CREATE_KEYS), "{room}");
    assert_room_id_shape(&room["roomId"]);
    assert_eq!(room["customRoomId"], json!(custom_room_id), "{room}");
    assert_eq!(room["userId"], json!(ACME_USER), "{room}");
    assert!(room["disabled"].is_boolean(), "{room}");
    assert_timestamp(&room["createdAt"]);
    assert_timestamp(&room["updatedAt"]);
    assert_hex24(&room["id"]);
    assert_links(server, room);
}

fn acme_user() -> Value {
    json!({
        "id": ACME_USER,
        "name": "Acme",
        "email": "ops@acme.test",
        "discontinuedReason": null,
    })
}

/// An error answer: JSON, `statusCode`/`error`/`code` (and optionally
/// `fields`), nothing else, and no internals in the message. Returns the body.
fn assert_error(reply: &Reply, status: u16, code: &str) -> Value {
    assert_eq!(reply.status.as_u16(), status, "{}", reply.text);
    let content_type = reply.header("content-type").unwrap_or_default();
    assert!(
        content_type.starts_with("application/json"),
        "{status}: content-type {content_type:?}, body {}",
        reply.text
    );
    let body = reply.json();
    let names = keys(&body);
    assert!(
        set(&["statusCode", "error", "code"]).is_subset(&names)
            && names.is_subset(&set(&["statusCode", "error", "code", "fields"])),
        "error body keys {names:?}: {body}"
    );
    assert_eq!(body["statusCode"], json!(status), "{body}");
    assert_eq!(body["code"], json!(code), "{body}");
    let message = body["error"].as_str().expect("error is a string");
    assert!(!message.is_empty(), "{body}");
    assert_no_internals(message);
    if let Some(fields) = body.get("fields") {
        for field in fields.as_array().expect("fields is an array") {
            assert_eq!(keys(field), set(&["field", "description"]), "{body}");
            assert_no_internals(field["description"].as_str().unwrap());
        }
    }
    body
}

fn assert_no_internals(message: &str) {
    for needle in ["jsonwebtoken", "Error(", "redis"] {
        assert!(
            !message.contains(needle),
            "an error message shows an internal ({needle:?}): {message}"
        );
    }
}

/// A 400 that names `field` in its message (and in `fields`, when given).
fn assert_names_field(reply: &Reply, field: &str) -> Value {
    let body = assert_error(reply, 400, "invalid_argument");
    let message = body["error"].as_str().unwrap();
    assert!(
        message.contains(field),
        "the message does not name {field:?}: {message}"
    );
    if let Some(fields) = body.get("fields") {
        assert!(
            fields
                .as_array()
                .unwrap()
                .iter()
                .any(|f| f["field"] == json!(field)),
            "fields do not name {field:?}: {body}"
        );
    }
    body
}

fn token_with_roles(roles: Value) -> String {
    let mut claims = sdk_claims(ACME_KEY);
    claims["roles"] = roles;
    sign(&claims, ACME_SECRET)
}

/// The same request shape for every call: `Authorization: <token>`.
fn get(server: &TestServer, path: &str) -> reqwest::RequestBuilder {
    server
        .http()
        .get(format!("{}{path}", server.url()))
        .header(header::AUTHORIZATION, acme_token())
}

fn post(server: &TestServer, path: &str, body: Value) -> reqwest::RequestBuilder {
    server
        .http()
        .post(format!("{}{path}", server.url()))
        .header(header::AUTHORIZATION, acme_token())
        .json(&body)
}

async fn create(server: &TestServer, body: Value) -> Value {
    let reply = send(post(server, "/v2/rooms", body)).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    reply.json()
}

async fn create_custom(server: &TestServer, custom_room_id: &str) -> Value {
    create(server, json!({"customRoomId": custom_room_id})).await
}

async fn grpc_get(server: &TestServer, token: &str, key: &str) -> Result<pb::Room, tonic::Status> {
    server
        .rooms()
        .await
        .get_room(authed(
            GetRoomRequest {
                room_id: key.into(),
            },
            token,
        ))
        .await
        .map(tonic::Response::into_inner)
}

fn str_of(value: &Value) -> &str {
    value
        .as_str()
        .unwrap_or_else(|| panic!("{value} is not a string"))
}

/* ---------------------------------- create ---------------------------------- */

#[tokio::test]
async fn create_with_no_body_and_no_content_type_answers_the_create_shape() {
    let server = TestServer::start().await;
    // Neither a body nor Content-Length nor Content-Type: curl -X POST.
    let reply = raw_http(
        &server,
        &format!("POST /v2/rooms HTTP/1.1\r\nAuthorization: {}", acme_token()),
        Vec::new(),
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    assert!(
        reply
            .header("content-type")
            .is_some_and(|c| c.starts_with("application/json")),
        "{:?}",
        reply.headers
    );
    let room = reply.json();
    assert_create_shape(&server, &room, None);
    assert_eq!(room["disabled"], json!(false));
    assert_eq!(room["createdAt"], room["updatedAt"]);
}

#[tokio::test]
async fn create_with_an_empty_body_answers_the_create_shape() {
    let server = TestServer::start().await;
    for content_type in [None, Some("application/json")] {
        let mut request = server
            .http()
            .post(format!("{}/v2/rooms", server.url()))
            .header(header::AUTHORIZATION, acme_token())
            .body("");
        if let Some(content_type) = content_type {
            request = request.header(header::CONTENT_TYPE, content_type);
        }
        let reply = send(request).await;
        assert_eq!(
            reply.status,
            StatusCode::OK,
            "{content_type:?}: {}",
            reply.text
        );
        assert_create_shape(&server, &reply.json(), None);
    }
}

#[tokio::test]
async fn create_with_text_plain_content_type_reads_the_json_body() {
    let server = TestServer::start().await;
    for body in ["{}", r#"{"customRoomId": "plain-text"}"#] {
        let reply = send(
            server
                .http()
                .post(format!("{}/v2/rooms", server.url()))
                .header(header::AUTHORIZATION, acme_token())
                .header(header::CONTENT_TYPE, "text/plain")
                .body(body),
        )
        .await;
        assert_eq!(reply.status, StatusCode::OK, "{body}: {}", reply.text);
        let expected = (body != "{}").then_some("plain-text");
        assert_create_shape(&server, &reply.json(), expected);
    }
}

#[tokio::test]
async fn create_ignores_unknown_fields() {
    let server = TestServer::start().await;
    let room = create(
        &server,
        json!({
            "customRoomId": "with-extras",
            "somethingNew": {"nested": [1, 2]},
            "region": "sg001",
            "x": null,
        }),
    )
    .await;
    assert_create_shape(&server, &room, Some("with-extras"));
}

/* ------------------------------- authorization ------------------------------ */

#[tokio::test]
async fn raw_and_bearer_tokens_in_any_case_are_accepted() {
    let server = TestServer::start().await;
    let token = acme_token();
    for value in [
        token.clone(),
        format!("Bearer {token}"),
        format!("bearer {token}"),
        format!("BEARER {token}"),
    ] {
        let reply = send(
            server
                .http()
                .get(format!("{}/v2/rooms", server.url()))
                .header(header::AUTHORIZATION, &value),
        )
        .await;
        assert_eq!(
            reply.status,
            StatusCode::OK,
            "{}: {}",
            &value[..10],
            reply.text
        );
    }
}

#[tokio::test]
async fn the_authorization_header_name_is_case_insensitive() {
    let server = TestServer::start().await;
    // reqwest lowercases header names; a raw request keeps them as written.
    for name in ["AUTHORIZATION", "Authorization", "aUtHoRiZaTiOn"] {
        let reply = raw_http(
            &server,
            &format!("GET /v2/rooms HTTP/1.1\r\n{name}: Bearer {}", acme_token()),
            Vec::new(),
        )
        .await;
        assert_eq!(reply.status, StatusCode::OK, "{name}: {}", reply.text);
        assert_eq!(reply.json()["pageInfo"]["total"], json!(0));
    }
}

#[tokio::test]
async fn a_missing_token_is_a_json_401() {
    let server = TestServer::start().await;
    for request in [
        server.http().get(format!("{}/v2/rooms", server.url())),
        server.http().post(format!("{}/v2/rooms", server.url())),
        server
            .http()
            .get(format!("{}/v2/rooms/validate/zzzz-zzzz-zzzz", server.url())),
        server
            .http()
            .post(format!("{}/v2/rooms/deactivate", server.url()))
            .json(&json!({"roomId": "zzzz-zzzz-zzzz"})),
    ] {
        let reply = send(request).await;
        let body = assert_error(&reply, 401, "unauthenticated");
        assert!(!body.as_object().unwrap().contains_key("fields"), "{body}");
    }
    // Nothing was created by the refused POST.
    let list = send(get(&server, "/v2/rooms")).await.json();
    assert_eq!(list["pageInfo"]["total"], json!(0));
}

#[tokio::test]
async fn tokens_get_the_same_verdict_and_message_over_rest_and_grpc() {
    let server = TestServer::start().await;
    let mut expired = sdk_claims(ACME_KEY);
    expired["iat"] = json!(now() - 7200);
    expired["exp"] = json!(now() - 3600);
    let valid = acme_token();
    let (head_and_payload, _) = valid.rsplit_once('.').unwrap();
    let cases: Vec<(&str, Option<String>, u16, tonic::Code)> = vec![
        ("missing", None, 401, tonic::Code::Unauthenticated),
        (
            "not a jwt",
            Some("not-a-jwt".into()),
            401,
            tonic::Code::Unauthenticated,
        ),
        (
            "wrong secret",
            Some(sign(&sdk_claims(ACME_KEY), "not-the-secret")),
            401,
            tonic::Code::Unauthenticated,
        ),
        (
            "signature not base64url",
            Some(format!("{head_and_payload}.@@@@")),
            401,
            tonic::Code::Unauthenticated,
        ),
        (
            "expired",
            Some(sign(&expired, ACME_SECRET)),
            401,
            tonic::Code::Unauthenticated,
        ),
        (
            "rtc only",
            Some(token_with_roles(json!(["rtc"]))),
            403,
            tonic::Code::PermissionDenied,
        ),
        (
            "no roles listed",
            Some(token_with_roles(json!([]))),
            403,
            tonic::Code::PermissionDenied,
        ),
    ];
    for (what, token, http_status, grpc_code) in cases {
        let mut request = server
            .http()
            .get(format!("{}/v2/rooms/zzzz-zzzz-zzzz", server.url()));
        if let Some(token) = &token {
            request = request.header(header::AUTHORIZATION, token);
        }
        let reply = send(request).await;
        let code = if http_status == 401 {
            "unauthenticated"
        } else {
            "permission_denied"
        };
        let body = assert_error(&reply, http_status, code);

        let mut grpc_request = tonic::Request::new(GetRoomRequest {
            room_id: "zzzz-zzzz-zzzz".into(),
        });
        if let Some(token) = &token {
            grpc_request
                .metadata_mut()
                .insert("authorization", token.parse().unwrap());
        }
        let status = server
            .rooms()
            .await
            .get_room(grpc_request)
            .await
            .expect_err(what);
        assert_eq!(status.code(), grpc_code, "{what}: {status:?}");
        assert_eq!(
            body["error"].as_str().unwrap(),
            status.message(),
            "{what}: REST and gRPC word the refusal differently"
        );
        assert_no_internals(status.message());
    }
}

/* ----------------------------------- fetch ---------------------------------- */

#[tokio::test]
async fn fetch_names_the_owner_by_a_user_object() {
    let server = TestServer::start().await;
    let created = create_custom(&server, "fetch-me").await;
    let room_id = str_of(&created["roomId"]);
    let reply = send(get(&server, &format!("/v2/rooms/{room_id}"))).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    let room = reply.json();
    assert_eq!(keys(&room), set(&FETCH_KEYS), "{room}");
    assert_eq!(room["user"], acme_user());
    for key in [
        "roomId",
        "customRoomId",
        "disabled",
        "createdAt",
        "updatedAt",
        "id",
        "links",
    ] {
        assert_eq!(room[key], created[key], "{key}");
    }
    assert_links(&server, &room);
}

#[tokio::test]
async fn another_accounts_room_reads_exactly_as_a_missing_one() {
    let server = TestServer::start().await;
    let room = create_custom(&server, "acme-only").await;
    // The same keys on a server where they name nothing at all.
    let empty = TestServer::start().await;
    for key in [str_of(&room["roomId"]), "acme-only", str_of(&room["id"])] {
        let path = format!("/v2/rooms/{key}");
        let foreign = send(
            server
                .http()
                .get(format!("{}{path}", server.url()))
                .header(header::AUTHORIZATION, globex_token()),
        )
        .await;
        let foreign = assert_error(&foreign, 404, "not_found");
        let missing = send(get(&empty, &path)).await;
        let missing = assert_error(&missing, 404, "not_found");
        assert_eq!(
            foreign, missing,
            "{key}: another account's room is told apart"
        );
    }
}

/* ----------------------------------- list ----------------------------------- */

#[tokio::test]
async fn list_answers_the_envelope_with_the_defaults() {
    let server = TestServer::start().await;
    let first = create(&server, json!({})).await;
    tokio::time::sleep(Duration::from_millis(3)).await;
    let second = create_custom(&server, "listed").await;

    let reply = send(get(&server, "/v2/rooms")).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    let page = reply.json();
    assert_eq!(keys(&page), set(&["pageInfo", "data"]), "{page}");
    assert_eq!(
        page["pageInfo"],
        json!({"currentPage": 1, "perPage": 20, "lastPage": 1, "total": 2})
    );
    let data = page["data"].as_array().unwrap();
    assert_eq!(data.len(), 2);
    // Newest first, each in the fetch shape.
    assert_eq!(data[0]["roomId"], second["roomId"]);
    assert_eq!(data[1]["roomId"], first["roomId"]);
    for item in data {
        assert_eq!(keys(item), set(&FETCH_KEYS), "{item}");
        assert_eq!(item["user"], acme_user());
        assert_links(&server, item);
    }
}

#[tokio::test]
async fn list_with_no_rooms_has_last_page_one() {
    let server = TestServer::start().await;
    let page = send(get(&server, "/v2/rooms?perPage=5")).await.json();
    assert_eq!(
        page,
        json!({
            "pageInfo": {"currentPage": 1, "perPage": 5, "lastPage": 1, "total": 0},
            "data": [],
        })
    );
}

#[tokio::test]
async fn list_accepts_per_page_100() {
    let server = TestServer::start().await;
    create(&server, json!({})).await;
    let reply = send(get(&server, "/v2/rooms?perPage=100")).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    assert_eq!(
        reply.json()["pageInfo"],
        json!({"currentPage": 1, "perPage": 100, "lastPage": 1, "total": 1})
    );
}

#[tokio::test]
async fn list_refuses_bad_paging_naming_the_parameter() {
    let server = TestServer::start().await;
    for (query, field) in [
        ("perPage=101", "perPage"),
        ("perPage=0", "perPage"),
        ("perPage=-3", "perPage"),
        ("perPage=ten", "perPage"),
        ("page=0", "page"),
        ("page=-1", "page"),
        ("page=abc", "page"),
        ("page=1.5", "page"),
    ] {
        let reply = send(get(&server, &format!("/v2/rooms?{query}"))).await;
        assert_eq!(
            reply.status,
            StatusCode::BAD_REQUEST,
            "{query}: {}",
            reply.text
        );
        assert_names_field(&reply, field);
    }
}

#[tokio::test]
async fn a_page_past_the_end_is_empty_with_the_right_page_info() {
    let server = TestServer::start().await;
    for _ in 0..3 {
        create(&server, json!({})).await;
    }
    let page = send(get(&server, "/v2/rooms?page=3&perPage=2"))
        .await
        .json();
    assert_eq!(
        page,
        json!({
            "pageInfo": {"currentPage": 3, "perPage": 2, "lastPage": 2, "total": 3},
            "data": [],
        })
    );
    let last = send(get(&server, "/v2/rooms?page=2&perPage=2"))
        .await
        .json();
    assert_eq!(last["data"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn list_query_matches_a_room_id_or_custom_room_id_exactly() {
    let server = TestServer::start().await;
    let plain = create(&server, json!({})).await;
    let named = create_custom(&server, "needle").await;
    let named_id = str_of(&named["roomId"]);
    let plain_id = str_of(&plain["roomId"]);

    for (query, expected) in [
        ("needle", vec![named_id]),
        (named_id, vec![named_id]),
        (plain_id, vec![plain_id]),
        ("needl", vec![]),
        ("NEEDLE", vec![]),
        ("zzzz-zzzz-zzzz", vec![]),
    ] {
        let page = send(get(&server, &format!("/v2/rooms?query={query}")))
            .await
            .json();
        let ids: Vec<&str> = page["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| str_of(&r["roomId"]))
            .collect();
        assert_eq!(ids, expected, "query={query}");
        assert_eq!(
            page["pageInfo"]["total"],
            json!(expected.len()),
            "query={query}"
        );
        assert_eq!(page["pageInfo"]["lastPage"], json!(1), "query={query}");
    }
    // An empty query filters nothing.
    let page = send(get(&server, "/v2/rooms?query=")).await.json();
    assert_eq!(page["pageInfo"]["total"], json!(2));
}

/* --------------------------------- validate --------------------------------- */

#[tokio::test]
async fn validate_answers_the_create_shape() {
    let server = TestServer::start().await;
    let created = create_custom(&server, "valid-one").await;
    for key in [str_of(&created["roomId"]), "valid-one"] {
        let reply = send(get(&server, &format!("/v2/rooms/validate/{key}"))).await;
        assert_eq!(reply.status, StatusCode::OK, "{key}: {}", reply.text);
        let room = reply.json();
        assert_create_shape(&server, &room, Some("valid-one"));
        assert_eq!(room, created, "validate {key}");
    }
}

#[tokio::test]
async fn validate_of_an_unknown_room_is_exactly_room_not_found() {
    let server = TestServer::start().await;
    let acme_room = create_custom(&server, "acme-room").await;
    for (token, key) in [
        (acme_token(), "zzzz-zzzz-zzzz".to_owned()),
        (acme_token(), "no-such-room".to_owned()),
        // Another account's room is unknown too.
        (globex_token(), str_of(&acme_room["roomId"]).to_owned()),
    ] {
        let reply = send(
            server
                .http()
                .get(format!("{}/v2/rooms/validate/{key}", server.url()))
                .header(header::AUTHORIZATION, token),
        )
        .await;
        assert_error(&reply, 400, "not_found");
        assert_eq!(
            reply.json(),
            json!({"statusCode": 400, "error": "Room not found", "code": "not_found"}),
            "{key}"
        );
    }
}

/* -------------------------------- deactivate -------------------------------- */

const DEACTIVATE_KEYS: [&str; 10] = [
    "meetingId",
    "userMeetingId",
    "roomId",
    "customRoomId",
    "disabled",
    "userId",
    "user",
    "createdAt",
    "updatedAt",
    "id",
];

#[tokio::test]
async fn deactivate_answers_the_deactivate_shape() {
    let server = TestServer::start().await;
    let created = create_custom(&server, "to-end").await;
    let room_id = str_of(&created["roomId"]);
    let reply = send(post(
        &server,
        "/v2/rooms/deactivate",
        json!({"roomId": room_id}),
    ))
    .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    let room = reply.json();
    assert_eq!(keys(&room), set(&DEACTIVATE_KEYS), "{room}");
    assert_eq!(room["meetingId"], json!(room_id));
    assert_eq!(room["userMeetingId"], json!("to-end"));
    assert_eq!(room["roomId"], json!(room_id));
    assert_eq!(room["customRoomId"], json!("to-end"));
    assert_eq!(room["disabled"], json!(true));
    assert_eq!(room["userId"], json!(ACME_USER));
    assert_eq!(room["user"], acme_user());
    assert_eq!(room["id"], created["id"]);
    assert_eq!(room["createdAt"], created["createdAt"]);
    assert!(assert_timestamp(&room["updatedAt"]) >= assert_timestamp(&created["updatedAt"]));
}

#[tokio::test]
async fn deactivate_twice_changes_nothing_the_second_time() {
    let server = TestServer::start().await;
    let created = create(&server, json!({})).await;
    let body = json!({"roomId": created["roomId"]});
    let first = send(post(&server, "/v2/rooms/deactivate", body.clone())).await;
    assert_eq!(first.status, StatusCode::OK, "{}", first.text);
    tokio::time::sleep(Duration::from_millis(5)).await;
    let second = send(post(&server, "/v2/rooms/deactivate", body)).await;
    assert_eq!(second.status, StatusCode::OK, "{}", second.text);
    assert_eq!(
        second.json(),
        first.json(),
        "the second deactivate changed the room"
    );
    assert_eq!(second.json()["userMeetingId"], Value::Null);
}

#[tokio::test]
async fn deactivate_by_custom_room_id_is_402() {
    let server = TestServer::start().await;
    create_custom(&server, "by-name").await;
    let reply = send(post(
        &server,
        "/v2/rooms/deactivate",
        json!({"roomId": "by-name"}),
    ))
    .await;
    let body = assert_error(&reply, 402, "room_id_required");
    assert!(str_of(&body["error"]).contains("roomId"), "{body}");
    let room = send(get(&server, "/v2/rooms/by-name")).await.json();
    assert_eq!(room["disabled"], json!(false), "nothing changed");
}

#[tokio::test]
async fn deactivate_without_a_room_id_is_400_naming_it() {
    let server = TestServer::start().await;
    for body in [
        json!({}),
        json!({"roomId": ""}),
        json!({"meetingId": "abcd-efgh-ijkl"}),
    ] {
        let reply = send(post(&server, "/v2/rooms/deactivate", body.clone())).await;
        assert_eq!(
            reply.status,
            StatusCode::BAD_REQUEST,
            "{body}: {}",
            reply.text
        );
        assert_names_field(&reply, "roomId");
    }
    // No body at all.
    let reply = send(
        server
            .http()
            .post(format!("{}/v2/rooms/deactivate", server.url()))
            .header(header::AUTHORIZATION, acme_token()),
    )
    .await;
    assert_names_field(&reply, "roomId");
}

#[tokio::test]
async fn deactivate_of_an_unknown_room_id_is_404() {
    let server = TestServer::start().await;
    let acme_room = create(&server, json!({})).await;
    let reply = send(post(
        &server,
        "/v2/rooms/deactivate",
        json!({"roomId": "zzzz-zzzz-zzzz"}),
    ))
    .await;
    assert_error(&reply, 404, "not_found");
    // Another account's roomId is unknown, and stays enabled.
    let reply = send(
        server
            .http()
            .post(format!("{}/v2/rooms/deactivate", server.url()))
            .header(header::AUTHORIZATION, globex_token())
            .json(&json!({"roomId": acme_room["roomId"]})),
    )
    .await;
    assert_error(&reply, 404, "not_found");
    let room = send(get(
        &server,
        &format!("/v2/rooms/{}", str_of(&acme_room["roomId"])),
    ))
    .await;
    assert_eq!(room.json()["disabled"], json!(false));
}

#[tokio::test]
async fn a_deactivated_room_reads_disabled_over_rest_and_grpc() {
    let server = TestServer::start().await;
    let created = create_custom(&server, "both-ways").await;
    let room_id = str_of(&created["roomId"]);
    let ended = send(post(
        &server,
        "/v2/rooms/deactivate",
        json!({"roomId": room_id}),
    ))
    .await;
    assert_eq!(ended.status, StatusCode::OK, "{}", ended.text);
    let ended = ended.json();

    let rest = send(get(&server, &format!("/v2/rooms/{room_id}")))
        .await
        .json();
    assert_eq!(rest["disabled"], json!(true), "{rest}");
    assert_eq!(rest["updatedAt"], ended["updatedAt"]);
    let grpc = grpc_get(&server, &acme_token(), room_id).await.unwrap();
    assert!(grpc.disabled, "{grpc:?}");
    assert_eq!(grpc.updated_at, str_of(&ended["updatedAt"]));
    let validated = send(get(&server, "/v2/rooms/validate/both-ways"))
        .await
        .json();
    assert_eq!(validated["disabled"], json!(true), "{validated}");
}

#[tokio::test]
async fn status_enabled_re_enables_a_deactivated_room() {
    let server = TestServer::start().await;
    let created = create(&server, json!({})).await;
    let room_id = str_of(&created["roomId"]);
    let ended = send(post(
        &server,
        "/v2/rooms/deactivate",
        json!({"roomId": room_id}),
    ))
    .await
    .json();
    tokio::time::sleep(Duration::from_millis(5)).await;

    let reply = send(post(
        &server,
        &format!("/v2/rooms/{room_id}"),
        json!({"status": "enabled"}),
    ))
    .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    let room = reply.json();
    let mut expected_keys = set(&CREATE_KEYS);
    expected_keys.insert("status");
    assert_eq!(keys(&room), expected_keys, "{room}");
    assert_eq!(room["status"], json!("enabled"));
    assert_eq!(room["disabled"], json!(false));
    assert_eq!(room["roomId"], json!(room_id));
    assert_eq!(room["userId"], json!(ACME_USER));
    assert_links(&server, &room);
    assert!(
        assert_timestamp(&room["updatedAt"]) > assert_timestamp(&ended["updatedAt"]),
        "updatedAt did not move: {} then {}",
        ended["updatedAt"],
        room["updatedAt"]
    );
    let fetched = send(get(&server, &format!("/v2/rooms/{room_id}")))
        .await
        .json();
    assert_eq!(fetched["disabled"], json!(false));
}

#[tokio::test]
async fn status_can_be_set_by_custom_room_id_path() {
    let server = TestServer::start().await;
    let created = create_custom(&server, "status-by-name").await;
    let reply = send(post(
        &server,
        "/v2/rooms/status-by-name",
        json!({"status": "disabled"}),
    ))
    .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    let room = reply.json();
    assert_eq!(room["status"], json!("disabled"));
    assert_eq!(room["disabled"], json!(true));
    assert_eq!(room["roomId"], created["roomId"]);
    assert_eq!(room["customRoomId"], json!("status-by-name"));

    let reply = send(post(
        &server,
        "/v2/rooms/status-by-name",
        json!({"status": "enabled"}),
    ))
    .await;
    assert_eq!(reply.json()["disabled"], json!(false));
}

#[tokio::test]
async fn a_bad_or_missing_status_is_400_naming_status() {
    let server = TestServer::start().await;
    let created = create(&server, json!({})).await;
    let path = format!("/v2/rooms/{}", str_of(&created["roomId"]));
    for body in [
        json!({"status": "paused"}),
        json!({"status": "Enabled"}),
        json!({"status": ""}),
        json!({}),
    ] {
        let reply = send(post(&server, &path, body.clone())).await;
        assert_eq!(
            reply.status,
            StatusCode::BAD_REQUEST,
            "{body}: {}",
            reply.text
        );
        assert_names_field(&reply, "status");
    }
    let reply = send(post(&server, &path, json!({"status": true}))).await;
    assert_names_field(&reply, "status");
    // And an unknown room with a good status is 404.
    let reply = send(post(
        &server,
        "/v2/rooms/zzzz-zzzz-zzzz",
        json!({"status": "enabled"}),
    ))
    .await;
    assert_error(&reply, 404, "not_found");
}

/// A name the create accepts must name the room everywhere a room name goes:
/// either the gateway's own path words are refused as customRoomIds, or
/// `GET/POST /v2/rooms/{name}` reaches the room.
#[tokio::test]
async fn every_accepted_custom_room_id_is_reachable_by_path() {
    let server = TestServer::start().await;
    for name in ["deactivate", "validate"] {
        let reply = send(post(&server, "/v2/rooms", json!({"customRoomId": name}))).await;
        if reply.status == StatusCode::BAD_REQUEST {
            assert_names_field(&reply, "customRoomId");
            continue;
        }
        assert_eq!(reply.status, StatusCode::OK, "{name}: {}", reply.text);
        let created = reply.json();

        let fetched = send(get(&server, &format!("/v2/rooms/{name}"))).await;
        assert_eq!(
            fetched.status,
            StatusCode::OK,
            "GET /v2/rooms/{name}, a room created with customRoomId {name:?}: {}",
            fetched.text
        );
        assert_eq!(fetched.json()["roomId"], created["roomId"]);

        let updated = send(post(
            &server,
            &format!("/v2/rooms/{name}"),
            json!({"status": "disabled"}),
        ))
        .await;
        assert_eq!(
            updated.status,
            StatusCode::OK,
            "POST /v2/rooms/{name} {{\"status\":\"disabled\"}}: {}",
            updated.text
        );
        assert_eq!(updated.json()["roomId"], created["roomId"]);
    }
}

/* ---------------------------------- errors ---------------------------------- */

#[tokio::test]
async fn an_unknown_path_is_a_json_404() {
    let server = TestServer::start().await;
    for (method, path) in [
        (Method::GET, "/v2/nothing"),
        (Method::GET, "/v2/recordings"),
        (Method::POST, "/v1/rooms"),
        (Method::GET, "/"),
        (Method::GET, "/v2/rooms/a/b/c"),
    ] {
        let reply = send(
            server
                .http()
                .request(method.clone(), format!("{}{path}", server.url()))
                .header(header::AUTHORIZATION, acme_token()),
        )
        .await;
        let body = assert_error(&reply, 404, "not_found");
        assert!(
            str_of(&body["error"]).starts_with("no route"),
            "{method} {path}: {body}"
        );
    }
}

#[tokio::test]
async fn a_wrong_method_is_a_json_405_with_allow() {
    let server = TestServer::start().await;
    for (method, path, allowed) in [
        (Method::DELETE, "/v2/rooms", &["GET", "POST"][..]),
        (Method::PUT, "/v2/rooms", &["GET", "POST"][..]),
        (
            Method::DELETE,
            "/v2/rooms/zzzz-zzzz-zzzz",
            &["GET", "POST"][..],
        ),
        (
            Method::POST,
            "/v2/rooms/validate/zzzz-zzzz-zzzz",
            &["GET"][..],
        ),
        (Method::POST, "/healthz", &["GET"][..]),
    ] {
        let reply = send(
            server
                .http()
                .request(method.clone(), format!("{}{path}", server.url()))
                .header(header::AUTHORIZATION, acme_token()),
        )
        .await;
        assert_error(&reply, 405, "method_not_allowed");
        let allow: BTreeSet<String> = reply
            .header("allow")
            .unwrap_or_else(|| panic!("{method} {path}: no Allow header"))
            .split(',')
            .map(|m| m.trim().to_owned())
            .collect();
        for m in allowed {
            assert!(
                allow.contains(*m),
                "{method} {path}: Allow {allow:?} lacks {m}"
            );
        }
        assert!(
            !allow.contains(method.as_str()),
            "{method} {path}: Allow {allow:?}"
        );
    }
}

#[tokio::test]
async fn a_body_over_64_kib_with_content_length_is_413() {
    let server = TestServer::start().await;
    let padding = "x".repeat(64 * 1024);
    let body = format!(r#"{{"customRoomId": "big", "padding": "{padding}"}}"#);
    let reply = send(
        server
            .http()
            .post(format!("{}/v2/rooms", server.url()))
            .header(header::AUTHORIZATION, acme_token())
            .header(header::CONTENT_TYPE, "application/json")
            .body(body),
    )
    .await;
    assert_error(&reply, 413, "payload_too_large");
    let list = send(get(&server, "/v2/rooms")).await.json();
    assert_eq!(list["pageInfo"]["total"], json!(0), "nothing was created");
}

/// `parts` as a chunked request body, one chunk each, then the last chunk.
fn chunked(parts: &[&[u8]]) -> Vec<u8> {
    let mut body = Vec::new();
    for part in parts {
        body.extend_from_slice(format!("{:x}\r\n", part.len()).as_bytes());
        body.extend_from_slice(part);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(b"0\r\n\r\n");
    body
}

#[tokio::test]
async fn a_chunked_body_over_64_kib_is_413() {
    let server = TestServer::start().await;
    // No Content-Length: the limit must hold while reading. Valid JSON of
    // 72 KiB in 8 KiB chunks.
    let padding = vec![b'x'; 8 * 1024];
    let mut parts: Vec<&[u8]> = vec![br#"{"customRoomId": "big", "pad": ""#];
    parts.extend(std::iter::repeat_n(&padding[..], 9));
    parts.push(br#""}"#);
    let reply = raw_http(
        &server,
        &format!(
            "POST /v2/rooms HTTP/1.1\r\nAuthorization: {}\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked",
            acme_token()
        ),
        chunked(&parts),
    )
    .await;
    assert_error(&reply, 413, "payload_too_large");
    let list = send(get(&server, "/v2/rooms")).await.json();
    assert_eq!(list["pageInfo"]["total"], json!(0), "nothing was created");
}

#[tokio::test]
async fn a_chunked_body_under_the_limit_is_read() {
    let server = TestServer::start().await;
    let json = br#"{"customRoomId": "chunked-ok"}"#;
    let (a, b) = json.split_at(10);
    let body = chunked(&[a, b]);
    let reply = raw_http(
        &server,
        &format!(
            "POST /v2/rooms HTTP/1.1\r\nAuthorization: {}\r\nTransfer-Encoding: chunked",
            acme_token()
        ),
        body,
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    assert_create_shape(&server, &reply.json(), Some("chunked-ok"));
}

#[tokio::test]
async fn malformed_json_or_a_non_object_body_is_400_naming_the_body() {
    let server = TestServer::start().await;
    let mut wrong = Vec::new();
    for raw in [
        // Truncated inside a field's value: the document is at fault, not
        // the field.
        r#"{"customRoomId": "#,
        r#"{"webhook": {"endPoint": "https://x.test", "events": ["#,
        "{,}",
        "not json",
        r#"{"customRoomId": "a"} trailing"#,
        // Well-formed, but not an object: the body as a whole is wrong.
        "null",
        "[1, 2]",
    ] {
        let reply = send(
            server
                .http()
                .post(format!("{}/v2/rooms", server.url()))
                .header(header::AUTHORIZATION, acme_token())
                .header(header::CONTENT_TYPE, "application/json")
                .body(raw),
        )
        .await;
        let body = assert_error(&reply, 400, "invalid_argument");
        let message = str_of(&body["error"]);
        let fields: Vec<&Value> = body
            .get("fields")
            .map(|f| f.as_array().unwrap().iter().map(|f| &f["field"]).collect())
            .unwrap_or_default();
        if !message.contains("body") || fields.iter().any(|f| **f != json!("body")) {
            wrong.push(format!("{raw:?} -> {message:?}, fields {fields:?}"));
        }
    }
    assert!(
        wrong.is_empty(),
        "malformed bodies blamed on something other than \"body\":\n{}",
        wrong.join("\n")
    );
}

#[tokio::test]
async fn a_field_of_the_wrong_type_is_400_naming_it() {
    let server = TestServer::start().await;
    for (body, field) in [
        (json!({"customRoomId": 5}), "customRoomId"),
        (json!({"geoFence": ["us001"]}), "geoFence"),
        (
            json!({"allowedParticipantIds": "alice"}),
            "allowedParticipantIds",
        ),
        (json!({"autoStartConfig": "yes"}), "autoStartConfig"),
        (
            json!({"autoCloseConfig": {"type": "session-ends", "duration": "10"}}),
            "autoCloseConfig.duration",
        ),
        (
            json!({"webhook": {"endPoint": "https://x.test", "events": ["session-started", 7]}}),
            "webhook.events[1]",
        ),
    ] {
        let reply = send(post(&server, "/v2/rooms", body.clone())).await;
        assert_eq!(
            reply.status,
            StatusCode::BAD_REQUEST,
            "{body}: {}",
            reply.text
        );
        assert_names_field(&reply, field);
    }
    let list = send(get(&server, "/v2/rooms")).await.json();
    assert_eq!(list["pageInfo"]["total"], json!(0), "nothing was created");
}

#[tokio::test]
async fn custom_room_ids_that_would_shadow_other_names_are_refused() {
    let server = TestServer::start().await;
    for name in [
        "abcd-efgh-ijkl",
        "623d49c760a18e699abcc8a4",
        ".",
        "..",
        "",
        "has space",
        "a/b",
    ] {
        let reply = send(post(&server, "/v2/rooms", json!({"customRoomId": name}))).await;
        assert_eq!(
            reply.status,
            StatusCode::BAD_REQUEST,
            "{name:?}: {}",
            reply.text
        );
        assert_names_field(&reply, "customRoomId");
    }
    let list = send(get(&server, "/v2/rooms")).await.json();
    assert_eq!(list["pageInfo"]["total"], json!(0), "nothing was created");
}

#[tokio::test]
async fn token_library_failures_do_not_leak_into_messages() {
    let server = TestServer::start().await;
    let claims = sdk_claims(ACME_KEY);
    let valid = acme_token();
    let (head_and_payload, _) = valid.rsplit_once('.').unwrap();
    let signature = valid.rsplit('.').next().unwrap();
    let tokens = [
        // The library's base64 of the signature.
        format!("{head_and_payload}.@@@@"),
        // The library's parse of a header with a field of the wrong type.
        raw_token(
            &json!({"alg": "HS256", "typ": "JWT", "kid": 5}),
            &claims,
            signature,
        ),
        raw_token(&json!({"alg": "HS256", "typ": 7}), &claims, signature),
        // Claims of the wrong types.
        sign(
            &json!({"apikey": ACME_KEY, "exp": "soon", "permissions": ["allow_join"]}),
            ACME_SECRET,
        ),
        sign(
            &json!({"apikey": ACME_KEY, "exp": now() + 60, "nbf": [1]}),
            ACME_SECRET,
        ),
    ];
    for token in tokens {
        let reply = send(
            server
                .http()
                .get(format!("{}/v2/rooms", server.url()))
                .header(header::AUTHORIZATION, &token),
        )
        .await;
        // assert_error checks the message for internals.
        let body = assert_error(&reply, 401, "unauthenticated");
        let status = grpc_get(&server, &token, "zzzz-zzzz-zzzz")
            .await
            .expect_err("refused");
        assert_no_internals(status.message());
        assert_eq!(str_of(&body["error"]), status.message());
    }
}

/* ----------------------------------- CORS ----------------------------------- */

fn preflight(server: &TestServer, origin: &str) -> reqwest::RequestBuilder {
    server
        .http()
        .request(Method::OPTIONS, format!("{}/v2/rooms", server.url()))
        .header(header::ORIGIN, origin)
        .header(header::ACCESS_CONTROL_REQUEST_METHOD, "POST")
        .header(
            header::ACCESS_CONTROL_REQUEST_HEADERS,
            "authorization,content-type",
        )
}

fn cors_headers(reply: &Reply) -> Vec<&str> {
    reply
        .headers
        .keys()
        .map(HeaderName::as_str)
        .filter(|name| name.starts_with("access-control-"))
        .collect()
}

#[tokio::test]
async fn cors_any_answers_preflights_and_marks_responses() {
    let server = TestServer::start_with_cors(CorsOrigins::Any).await;
    let reply = send(preflight(&server, "https://app.example.com")).await;
    assert!(
        matches!(reply.status.as_u16(), 200 | 204),
        "preflight: {} {}",
        reply.status,
        reply.text
    );
    assert_eq!(reply.header("access-control-allow-origin"), Some("*"));
    let allow_headers = reply
        .header("access-control-allow-headers")
        .expect("access-control-allow-headers")
        .to_ascii_lowercase();
    for needed in ["authorization", "content-type"] {
        assert!(allow_headers.contains(needed), "{allow_headers}");
    }
    let allow_methods = reply
        .header("access-control-allow-methods")
        .expect("access-control-allow-methods");
    assert!(allow_methods.contains("POST"), "{allow_methods}");

    let real =
        send(get(&server, "/v2/rooms").header(header::ORIGIN, "https://app.example.com")).await;
    assert_eq!(real.status, StatusCode::OK, "{}", real.text);
    assert_eq!(real.header("access-control-allow-origin"), Some("*"));
    // Error answers carry it too, or the page cannot read them.
    let refused = send(
        server
            .http()
            .get(format!("{}/v2/rooms", server.url()))
            .header(header::ORIGIN, "https://app.example.com"),
    )
    .await;
    assert_error(&refused, 401, "unauthenticated");
    assert_eq!(refused.header("access-control-allow-origin"), Some("*"));
}

#[tokio::test]
async fn cors_list_allows_only_its_origins() {
    let allowed = "https://app.example.com";
    let server =
        TestServer::start_with_cors(CorsOrigins::List(vec![HeaderValue::from_static(allowed)]))
            .await;

    let reply = send(preflight(&server, allowed)).await;
    assert!(
        matches!(reply.status.as_u16(), 200 | 204),
        "{}",
        reply.status
    );
    assert_eq!(reply.header("access-control-allow-origin"), Some(allowed));
    let real = send(get(&server, "/v2/rooms").header(header::ORIGIN, allowed)).await;
    assert_eq!(real.header("access-control-allow-origin"), Some(allowed));

    let other = "https://evil.example.net";
    let reply = send(preflight(&server, other)).await;
    assert_eq!(
        reply.header("access-control-allow-origin"),
        None,
        "{:?}",
        reply.headers
    );
    let real = send(get(&server, "/v2/rooms").header(header::ORIGIN, other)).await;
    assert_eq!(
        real.header("access-control-allow-origin"),
        None,
        "{:?}",
        real.headers
    );
}

#[tokio::test]
async fn without_cors_configured_no_cors_headers_are_sent() {
    let server = TestServer::start().await;
    let reply = send(preflight(&server, "https://app.example.com")).await;
    assert!(
        cors_headers(&reply).is_empty(),
        "preflight: {:?}",
        reply.headers
    );
    assert!(
        !reply.status.is_success(),
        "a preflight is not approved: {}",
        reply.status
    );
    let real =
        send(get(&server, "/v2/rooms").header(header::ORIGIN, "https://app.example.com")).await;
    assert_eq!(real.status, StatusCode::OK);
    assert!(cors_headers(&real).is_empty(), "GET: {:?}", real.headers);
}

/* ---------------------------- health and the document ----------------------- */

#[tokio::test]
async fn health_endpoints_answer_without_a_token() {
    let server = TestServer::start().await;
    for (path, expected) in [
        ("/healthz", json!({"status": "ok"})),
        ("/readyz", json!({"status": "ready"})),
    ] {
        let reply = send(server.http().get(format!("{}{path}", server.url()))).await;
        assert_eq!(reply.status, StatusCode::OK, "{path}: {}", reply.text);
        assert!(
            reply
                .header("content-type")
                .is_some_and(|c| c.starts_with("application/json")),
            "{path}: {:?}",
            reply.headers
        );
        assert_eq!(reply.json(), expected, "{path}");
    }
}

/// The (METHOD, path) pairs of an OpenAPI document's `paths`.
fn documented_routes(document: &Value) -> BTreeSet<(String, String)> {
    const METHODS: [&str; 8] = [
        "get", "put", "post", "delete", "options", "head", "patch", "trace",
    ];
    let mut routes = BTreeSet::new();
    for (path, item) in document["paths"].as_object().expect("paths is an object") {
        for method in item.as_object().expect("a path item").keys() {
            if METHODS.contains(&method.as_str()) {
                routes.insert((method.to_ascii_uppercase(), path.clone()));
            }
        }
    }
    routes
}

#[tokio::test]
async fn the_openapi_document_lists_exactly_the_served_routes() {
    let server = TestServer::start().await;
    let reply = send(server.http().get(format!("{}/openapi.json", server.url()))).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    assert!(
        reply
            .header("content-type")
            .is_some_and(|c| c.starts_with("application/json")),
        "{:?}",
        reply.headers
    );
    let document = reply.json();
    let version = str_of(&document["openapi"]);
    assert!(version.starts_with("3.1."), "openapi {version}");

    let documented = documented_routes(&document);
    let served: BTreeSet<(String, String)> = ROUTES
        .iter()
        .map(|(m, p)| ((*m).to_owned(), (*p).to_owned()))
        .collect();
    assert_eq!(served.len(), ROUTES.len(), "ROUTES holds a duplicate");
    let undocumented: Vec<_> = served.difference(&documented).collect();
    let unserved: Vec<_> = documented.difference(&served).collect();
    assert!(
        undocumented.is_empty(),
        "served but not documented: {undocumented:?}"
    );
    assert!(
        unserved.is_empty(),
        "documented but not served: {unserved:?}"
    );
}

#[tokio::test]
async fn every_listed_route_is_served() {
    let server = TestServer::start().await;
    let room = create_custom(&server, "route-check").await;
    let room_id = str_of(&room["roomId"]);
    // Sessions live in a room of their own, which the rooms' routes leave
    // enabled; the participant is (re)joined before each session route, so
    // that ending or removing always finds someone.
    let session_room = create_custom(&server, "route-check-sessions").await;
    let session_room_id = str_of(&session_room["roomId"]);
    for (method, template) in ROUTES {
        // No dead letter exists: a replay's route answers "dead letter not
        // found", which is still the route answering.
        let mut path = template
            .replace("{roomId}", room_id)
            .replace("{eventId}", "1700000000000-0");
        if template.starts_with("/v2/sessions") {
            let session =
                crate::sessions_api::start_session(&server, session_room_id, "route-check").await;
            path = path.replace("{sessionId}", &session.id);
        }
        let method = Method::from_bytes(method.as_bytes()).unwrap();
        let mut request = server
            .http()
            .request(method.clone(), format!("{}{path}", server.url()))
            .header(header::AUTHORIZATION, acme_token());
        if method == Method::POST {
            let body = match template {
                "/v2/rooms/deactivate" => json!({"roomId": room_id}),
                "/v2/rooms/{roomId}" => json!({"status": "enabled"}),
                "/v2/sessions/end" => json!({"roomId": session_room_id}),
                "/v2/sessions/participants/remove" => {
                    json!({"roomId": session_room_id, "participantId": "route-check"})
                }
                _ => json!({}),
            };
            request = request.json(&body);
        }
        let reply = send(request).await;
        assert_ne!(
            reply.status,
            StatusCode::METHOD_NOT_ALLOWED,
            "{method} {template}"
        );
        if reply.status == StatusCode::NOT_FOUND {
            assert!(
                !reply.text.contains("no route"),
                "{method} {template}: {}",
                reply.text
            );
        }
        if template.contains("{eventId}") {
            assert_eq!(reply.status, StatusCode::NOT_FOUND, "{}", reply.text);
            assert!(reply.text.contains("dead letter"), "{}", reply.text);
            continue;
        }
        assert!(
            reply.status.is_success(),
            "{method} {template} ({path}): {} {}",
            reply.status,
            reply.text
        );
    }
}

/* ----------------------------- one port, both protocols --------------------- */

/// REST over HTTP/2 with prior knowledge (h2c), as gRPC clients connect.
fn h2c() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .http2_prior_knowledge()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("h2c client")
}

fn assert_same_as_grpc(rest: &Value, grpc: &pb::Room) {
    assert_eq!(str_of(&rest["roomId"]), grpc.room_id);
    assert_eq!(
        rest["customRoomId"].as_str(),
        grpc.custom_room_id.as_deref()
    );
    assert_eq!(rest["disabled"], json!(grpc.disabled));
    assert_eq!(str_of(&rest["createdAt"]), grpc.created_at);
    assert_eq!(str_of(&rest["updatedAt"]), grpc.updated_at);
    assert_eq!(str_of(&rest["id"]), grpc.id);
    if let Some(user_id) = rest.get("userId") {
        assert_eq!(str_of(user_id), grpc.user_id);
    } else {
        assert_eq!(str_of(&rest["user"]["id"]), grpc.user_id);
    }
    let links = grpc.links.as_ref().expect("gRPC links");
    assert_eq!(str_of(&rest["links"]["get_room"]), links.get_room);
    assert_eq!(str_of(&rest["links"]["get_session"]), links.get_session);
}

#[tokio::test]
async fn rest_over_http2_prior_knowledge_is_served() {
    let server = TestServer::start().await;
    let client = h2c();
    let response = client
        .post(format!("{}/v2/rooms", server.url()))
        .header(header::AUTHORIZATION, acme_token())
        .json(&json!({"customRoomId": "over-h2"}))
        .send()
        .await
        .expect("h2c request");
    assert_eq!(response.version(), reqwest::Version::HTTP_2);
    assert_eq!(response.status(), StatusCode::OK);
    let created: Value = response.json().await.unwrap();
    assert_create_shape(&server, &created, Some("over-h2"));

    let response = client
        .get(format!("{}/v2/rooms/over-h2", server.url()))
        .header(header::AUTHORIZATION, acme_token())
        .send()
        .await
        .unwrap();
    assert_eq!(response.version(), reqwest::Version::HTTP_2);
    let fetched: Value = response.json().await.unwrap();
    assert_eq!(fetched["roomId"], created["roomId"]);
    assert_eq!(keys(&fetched), set(&FETCH_KEYS));

    // Errors over HTTP/2 are the same JSON.
    let response = client
        .get(format!("{}/v2/nothing", server.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(response.version(), reqwest::Version::HTTP_2);
    let reply = Reply {
        status: response.status(),
        headers: response.headers().clone(),
        text: response.text().await.unwrap(),
    };
    assert_error(&reply, 404, "not_found");
}

#[tokio::test]
async fn a_room_created_over_rest_is_the_same_room_over_grpc() {
    let server = TestServer::start().await;
    let created = create_custom(&server, "rest-made").await;
    let room_id = str_of(&created["roomId"]);
    let token = acme_token();
    for key in [room_id, "rest-made", str_of(&created["id"])] {
        let grpc = grpc_get(&server, &token, key).await.expect("GetRoom");
        assert_same_as_grpc(&created, &grpc);
    }
    // And over HTTP/2 REST on the same port.
    let fetched: Value = h2c()
        .get(format!("{}/v2/rooms/{room_id}", server.url()))
        .header(header::AUTHORIZATION, &token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let grpc = grpc_get(&server, &token, room_id).await.unwrap();
    assert_same_as_grpc(&fetched, &grpc);
}

#[tokio::test]
async fn a_room_created_over_grpc_is_the_same_room_over_rest() {
    let server = TestServer::start().await;
    let token = acme_token();
    let grpc = server
        .rooms()
        .await
        .create_room(authed(
            CreateRoomRequest {
                custom_room_id: Some("grpc-made".into()),
                ..Default::default()
            },
            &token,
        ))
        .await
        .expect("CreateRoom")
        .into_inner();

    let http1 = send(get(&server, &format!("/v2/rooms/{}", grpc.room_id))).await;
    assert_eq!(http1.status, StatusCode::OK, "{}", http1.text);
    let http1 = http1.json();
    assert_same_as_grpc(&http1, &grpc);
    assert_eq!(http1["user"], acme_user());

    let http2: Value = h2c()
        .get(format!("{}/v2/rooms/grpc-made", server.url()))
        .header(header::AUTHORIZATION, &token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(http2, http1, "HTTP/2 and HTTP/1.1 answers differ");

    let validated = send(get(&server, "/v2/rooms/validate/grpc-made"))
        .await
        .json();
    assert_same_as_grpc(&validated, &grpc);

    // A write over REST is seen over gRPC, on the same connection pool.
    let ended = send(post(
        &server,
        "/v2/rooms/deactivate",
        json!({"roomId": grpc.room_id}),
    ))
    .await;
    assert_eq!(ended.status, StatusCode::OK, "{}", ended.text);
    let after = grpc_get(&server, &token, &grpc.room_id).await.unwrap();
    assert!(after.disabled);
    assert_eq!(after.updated_at, str_of(&ended.json()["updatedAt"]));
}

// TCP_NODELAY is not tested here: its only observable effect is latency, and
// this suite has no timed tests.
