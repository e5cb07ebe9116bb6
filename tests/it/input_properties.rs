//! Arbitrary input from outside, end to end: whatever a caller sends, the
//! answer is a client error or a success, never a server error. The domain
//! parsers have their own properties beside them (`src/domain/*.rs`); these
//! check that the transports add no way to fail.
//!
//! Each property runs one server and a bounded number of cases. proptest's
//! runner is synchronous, so each test owns a tokio runtime and blocks on it
//! per case; the server's tasks run on the runtime's workers meanwhile.

use std::collections::BTreeMap;

use proptest::collection::{btree_map, vec};
use proptest::option;
use proptest::prelude::*;
use proptest::sample::select;
use proptest::test_runner::{Config, TestRunner};
use roomservice::grpc::pb::{
    AutoCloseConfig, CreateRoomRequest, Webhook, room_service_client::RoomServiceClient,
};
use serde_json::{Map, Value};
use tokio::runtime::Runtime;
use tonic::Code;
use tonic_types::StatusExt;

use crate::harness::*;

/// Few cases, since each is a real call; no regression files written into
/// the tree; a bounded shrink so that a failure reports in seconds.
fn runner(cases: u32) -> TestRunner {
    TestRunner::new(Config {
        cases,
        failure_persistence: None,
        max_shrink_iters: 512,
        ..Config::default()
    })
}

fn runtime() -> Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime")
}

/// Any string: control characters, unassigned code points and all.
fn any_text() -> impl Strategy<Value = String> {
    prop_oneof![
        vec(any::<char>(), 0..24).prop_map(String::from_iter),
        "\\PC{0,24}",
        "[A-Za-z0-9._-]{1,16}",
    ]
}

/// Mostly URLs the rules accept, so that calls get past validation and into
/// the store and back; the rest are near misses and anything at all.
fn endpoint() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => "(https?|HTTPS)://[a-z0-9-]{1,10}(\\.[a-z]{2,5}){0,2}(:[0-9]{1,4})?(/[A-Za-z0-9%._~-]{0,8}){0,3}",
        1 => "(https?|ftp|javascript)://([a-z]{1,8}(:[a-z]{0,4})?@)?[A-Za-z0-9.-]{1,12}/[\\x00-\\x7f]{0,6}",
        1 => any_text(),
    ]
}

fn event() -> impl Strategy<Value = String> {
    prop_oneof![
        12 => select(vec!["*", "session-started", "recording-*", "hls-*", "participant-left"])
            .prop_map(String::from),
        1 => any_text(),
    ]
}

fn number() -> impl Strategy<Value = Value> {
    prop_oneof![
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        (-5i64..50_000).prop_map(Value::from),
        any::<f64>()
            .prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
    ]
}

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        number(),
        any_text().prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 32, 5, |inner| {
        prop_oneof![
            vec(inner.clone(), 0..5).prop_map(Value::Array),
            btree_map(any_text(), inner, 0..5).prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// A value for one create-body field: mostly one the rules accept, then one
/// of the right JSON type with arbitrary contents, now and then any JSON.
fn field_value(field: &'static str) -> BoxedStrategy<Value> {
    let valid: BoxedStrategy<Value> = match field {
        "customRoomId" => "[A-Za-z0-9._-]{1,16}".prop_map(Value::from).boxed(),
        "geoFence" | "region" => select(vec!["us001", "eu001", "aus001"])
            .prop_map(Value::from)
            .boxed(),
        "webhook" => (endpoint(), vec(event(), 0..40))
            .prop_map(
                |(end_point, events)| serde_json::json!({"endPoint": end_point, "events": events}),
            )
            .boxed(),
        "autoCloseConfig" => (
            select(vec!["session-ends", "session-end-and-deactivate"]),
            option::of(1i64..=43_200),
        )
            .prop_map(|(kind, duration)| match duration {
                Some(duration) => serde_json::json!({"type": kind, "duration": duration}),
                None => serde_json::json!({"type": kind}),
            })
            .boxed(),
        "allowedParticipantIds" => vec("[a-z0-9]{1,10}", 0..12).prop_map(Value::from).boxed(),
        _ => btree_map(any_text(), json_value(), 0..5)
            .prop_map(|m| Value::Object(m.into_iter().collect()))
            .boxed(),
    };
    let typed: BoxedStrategy<Value> = match field {
        "webhook" => (option::of(json_value()), option::of(json_value()))
            .prop_map(|(end_point, events)| {
                let mut webhook = Map::new();
                if let Some(end_point) = end_point {
                    webhook.insert("endPoint".into(), end_point);
                }
                if let Some(events) = events {
                    webhook.insert("events".into(), events);
                }
                Value::Object(webhook)
            })
            .boxed(),
        "autoCloseConfig" => (
            option::of(prop_oneof![any_text().prop_map(Value::from), json_value()]),
            option::of(prop_oneof![number(), json_value()]),
        )
            .prop_map(|(kind, duration)| {
                let mut config = Map::new();
                if let Some(kind) = kind {
                    config.insert("type".into(), kind);
                }
                if let Some(duration) = duration {
                    config.insert("duration".into(), duration);
                }
                Value::Object(config)
            })
            .boxed(),
        "allowedParticipantIds" => vec(any_text().prop_map(Value::String), 0..12)
            .prop_map(Value::Array)
            .boxed(),
        _ => any_text().prop_map(Value::String).boxed(),
    };
    prop_oneof![12 => valid, 1 => typed, 1 => json_value()].boxed()
}

const CREATE_FIELDS: [&str; 8] = [
    "customRoomId",
    "region",
    "geoFence",
    "webhook",
    "autoCloseConfig",
    "autoStartConfig",
    "multiComposition",
    "allowedParticipantIds",
];

fn create_body() -> impl Strategy<Value = Value> {
    let fields: Vec<BoxedStrategy<(String, Value)>> = CREATE_FIELDS
        .iter()
        .map(|field| {
            option::of(field_value(field))
                .prop_map(|value| (field.to_string(), value.unwrap_or(Value::Null)))
                .boxed()
        })
        .collect();
    (fields, btree_map(any_text(), json_value(), 0..3)).prop_map(|(known, unknown)| {
        // Unset fields are left out, not sent as null (which is a case of its own).
        let mut body: Map<String, Value> = unknown.into_iter().collect();
        body.extend(known.into_iter().filter(|(_, v)| !v.is_null()));
        Value::Object(body)
    })
}

/// Bytes for a POST body: mostly JSON, some of it cut short, some not JSON.
fn body_bytes() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        6 => create_body().prop_map(|v| v.to_string().into_bytes()),
        1 => json_value().prop_map(|v| v.to_string().into_bytes()),
        1 => (create_body(), any::<prop::sample::Index>()).prop_map(|(v, cut)| {
            let mut bytes = v.to_string().into_bytes();
            bytes.truncate(cut.index(bytes.len() + 1));
            bytes
        }),
        1 => vec(any::<u8>(), 0..64),
    ]
}

#[test]
fn rest_post_bodies_never_yield_a_server_error() {
    let rt = runtime();
    let server = rt.block_on(TestServer::start());
    let http = server.http();
    let token = acme_token();
    let target = rt.block_on(async {
        let reply = http
            .post(format!("{}/v2/rooms", server.url()))
            .header("authorization", &token)
            .body(r#"{"customRoomId":"target"}"#)
            .send()
            .await
            .unwrap();
        assert_eq!(reply.status(), 200);
        let room: Value = reply.json().await.unwrap();
        room["roomId"].as_str().unwrap().to_owned()
    });
    // Bodies shaped for each route, so that calls reach its rules.
    let room_key = prop_oneof![
        select(vec![target.clone(), "target".to_string()]),
        any_text()
    ];
    let deactivate = (room_key.clone(), btree_map(any_text(), json_value(), 0..3)).prop_map(
        |(room_id, extra)| {
            let mut body: Map<String, Value> = extra.into_iter().collect();
            body.insert("roomId".into(), room_id.into());
            Value::Object(body)
        },
    );
    let status = prop_oneof![
        3 => select(vec!["enabled", "disabled"]).prop_map(Value::from),
        1 => json_value(),
    ]
    .prop_map(|status| serde_json::json!({ "status": status }));
    let strategy = prop_oneof![
        4 => body_bytes().prop_map(|body| ("/v2/rooms".to_string(), body)),
        1 => prop_oneof![deactivate.prop_map(|v| v.to_string().into_bytes()), body_bytes()]
            .prop_map(|body| ("/v2/rooms/deactivate".to_string(), body)),
        1 => (room_key, prop_oneof![status.prop_map(|v| v.to_string().into_bytes()), body_bytes()])
            .prop_map(|(key, body)| {
                let key = url::form_urlencoded::byte_serialize(key.as_bytes()).collect::<String>();
                (format!("/v2/rooms/{key}"), body)
            }),
    ];
    let result = runner(128).run(&strategy, |(path, body)| {
        let (status, text) = rt.block_on(async {
            let reply = http
                .post(format!("{}{path}", server.url()))
                .header("authorization", &token)
                .header("content-type", "application/json")
                .body(body.clone())
                .send()
                .await
                .unwrap();
            (reply.status(), reply.text().await.unwrap())
        });
        prop_assert!(
            !status.is_server_error(),
            "POST {} {:?} -> {} {}",
            path,
            String::from_utf8_lossy(&body),
            status,
            text
        );
        prop_assert!(
            serde_json::from_str::<Value>(&text).is_ok(),
            "not JSON: {}",
            text
        );
        Ok(())
    });
    if let Err(failure) = result {
        panic!("{failure}");
    }
}

/// Room keys and paging values straight from the URL.
#[test]
fn rest_paths_and_queries_never_yield_a_server_error() {
    let rt = runtime();
    let server = rt.block_on(TestServer::start());
    let http = server.http();
    let token = acme_token();
    let encode = |s: &str| url::form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
    let paging_value = prop_oneof![
        any::<i64>().prop_map(|n| n.to_string()),
        (-2i64..120).prop_map(|n| n.to_string()),
        "[0-9]{15,25}",
        "[0-9.eE+-]{1,6}",
        any_text(),
    ];
    let path = prop_oneof![
        any_text().prop_map(move |key| format!("/v2/rooms/{}", encode(&key))),
        any_text().prop_map(move |key| format!("/v2/rooms/validate/{}", encode(&key))),
        (
            option::of(paging_value.clone()),
            option::of(paging_value),
            option::of(any_text())
        )
            .prop_map(move |(page, per_page, query)| {
                let mut pairs = Vec::new();
                if let Some(page) = page {
                    pairs.push(format!("page={}", encode(&page)));
                }
                if let Some(per_page) = per_page {
                    pairs.push(format!("perPage={}", encode(&per_page)));
                }
                if let Some(query) = query {
                    pairs.push(format!("query={}", encode(&query)));
                }
                format!("/v2/rooms?{}", pairs.join("&"))
            }),
    ];
    let result = runner(128).run(&path, |path| {
        let (status, text) = rt.block_on(async {
            let reply = http
                .get(format!("{}{path}", server.url()))
                .header("authorization", &token)
                .send()
                .await
                .unwrap();
            (reply.status(), reply.text().await.unwrap())
        });
        prop_assert!(
            !status.is_server_error(),
            "GET {} -> {} {}",
            path,
            status,
            text
        );
        Ok(())
    });
    if let Err(failure) = result {
        panic!("{failure}");
    }
}

fn proto_value() -> impl Strategy<Value = prost_types::Value> {
    use prost_types::value::Kind;
    let leaf = prop_oneof![
        Just(None),
        Just(Some(Kind::NullValue(0))),
        any::<i32>().prop_map(|n| Some(Kind::NullValue(n))),
        any::<bool>().prop_map(|b| Some(Kind::BoolValue(b))),
        // NaN and the infinities included: JSON has no word for them.
        any::<f64>().prop_map(|n| Some(Kind::NumberValue(n))),
        any_text().prop_map(|s| Some(Kind::StringValue(s))),
    ]
    .prop_map(|kind| prost_types::Value { kind });
    leaf.prop_recursive(4, 32, 5, |inner| {
        prop_oneof![
            vec(inner.clone(), 0..5).prop_map(|values| prost_types::Value {
                kind: Some(Kind::ListValue(prost_types::ListValue { values })),
            }),
            btree_map(any_text(), inner, 0..5).prop_map(|fields| prost_types::Value {
                kind: Some(Kind::StructValue(prost_types::Struct { fields })),
            }),
        ]
    })
}

fn proto_struct() -> impl Strategy<Value = prost_types::Struct> {
    prop_oneof![
        4 => btree_map(any_text(), proto_value(), 0..5)
            .prop_map(|fields| prost_types::Struct { fields }),
        // Now and then big enough to meet the 16 KiB the settings share.
        1 => (0usize..20_000).prop_map(|n| prost_types::Struct {
            fields: BTreeMap::from([(
                "blob".to_string(),
                prost_types::Value {
                    kind: Some(prost_types::value::Kind::StringValue("x".repeat(n))),
                },
            )]),
        }),
    ]
}

fn create_request() -> impl Strategy<Value = CreateRoomRequest> {
    let custom_room_id = option::of(prop_oneof![
        12 => "[A-Za-z0-9._-]{1,16}",
        1 => "[a-z0-9]{4}-[a-z0-9]{4}-[a-z0-9]{4}",
        1 => "[0-9a-fA-F]{24}",
        1 => any_text(),
    ]);
    let geo_fence = option::of(prop_oneof![
        8 => select(vec!["us001", "eu001", "aus001"]).prop_map(String::from),
        1 => any_text(),
    ]);
    let webhook = option::of(
        (endpoint(), vec(event(), 0..40))
            .prop_map(|(end_point, events)| Webhook { end_point, events }),
    );
    let auto_close = option::of(
        (
            prop_oneof![
                8 => select(vec!["session-ends", "session-end-and-deactivate"])
                    .prop_map(String::from),
                1 => Just(String::new()),
                1 => any_text(),
            ],
            option::of(prop_oneof![8 => 1i32..=43_200, 1 => any::<i32>()]),
        )
            .prop_map(|(r#type, duration)| AutoCloseConfig {
                r#type,
                duration,
                duration_seconds: None,
            }),
    );
    (
        (custom_room_id, option::of(any_text()), geo_fence),
        (webhook, auto_close),
        (option::of(proto_struct()), option::of(proto_struct())),
        vec(prop_oneof![8 => "[a-z0-9]{1,10}", 1 => any_text()], 0..12),
    )
        .prop_map(
            |(
                (custom_room_id, region, geo_fence),
                (webhook, auto_close_config),
                (auto_start_config, multi_composition),
                allowed_participant_ids,
            )| CreateRoomRequest {
                custom_room_id,
                region,
                geo_fence,
                webhook,
                auto_close_config,
                auto_start_config,
                multi_composition,
                allowed_participant_ids,
            },
        )
}

#[test]
fn grpc_create_requests_never_yield_internal_or_unknown() {
    let rt = runtime();
    let server = rt.block_on(TestServer::start());
    let channel = rt.block_on(server.channel());
    let token = acme_token();
    let result = runner(128).run(&create_request(), |request| {
        let mut client = RoomServiceClient::new(channel.clone());
        let reply = rt.block_on(client.create_room(authed(request.clone(), &token)));
        match reply {
            Ok(room) => {
                // What was stored is what the rules allow.
                if let Some(webhook) = room.into_inner().webhook {
                    let end_point = webhook.end_point;
                    prop_assert!(
                        !end_point
                            .chars()
                            .any(|c| c.is_control() || c.is_whitespace()),
                        "{:?}",
                        end_point
                    );
                    let url = url::Url::parse(&end_point).unwrap();
                    prop_assert_eq!(url.as_str(), end_point.as_str());
                }
            }
            Err(status) => {
                prop_assert!(
                    !matches!(status.code(), Code::Internal | Code::Unknown),
                    "{:?} -> {:?}",
                    request,
                    status
                );
                if status.code() == Code::InvalidArgument {
                    prop_assert!(
                        status.get_details_bad_request().is_some(),
                        "no BadRequest details: {:?}",
                        status
                    );
                }
            }
        }
        Ok(())
    });
    if let Err(failure) = result {
        panic!("{failure}");
    }
}
