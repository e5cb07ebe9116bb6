//! Metrics, request ids and the access log (issue 9, items 1 and 2): what an
//! operator scrapes and greps. The recorder is one per process and other
//! tests run beside these, so counts are compared before and after as lower
//! bounds, never as exact totals.

use std::sync::mpsc;
use std::time::{Duration, Instant};

use roomservice::grpc::pb::{CreateRoomRequest, GetRoomRequest, ListRoomsRequest};
use roomservice::server::Limits;
use serde_json::Value;
use tonic::Code;
use tonic::metadata::MetadataValue;

use crate::harness::*;

const PROMETHEUS_TEXT: &str = "text/plain; version=0.0.4";

/* ------------------------------------ helpers ------------------------------------ */

fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("http client")
}

/// `GET {base}/metrics`: the text, after checking status and content type.
async fn scrape(base: &str) -> String {
    let response = http().get(format!("{base}/metrics")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.headers()[http::header::CONTENT_TYPE],
        PROMETHEUS_TEXT
    );
    response.text().await.unwrap()
}

/// The sum of the samples of `name` whose labels include all of `labels`.
fn sample(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            let (series_name, series_labels) = match series.split_once('{') {
                Some((n, rest)) => (n, rest.trim_end_matches('}')),
                None => (series, ""),
            };
            if series_name != name {
                return None;
            }
            let all = labels.iter().all(|(k, v)| {
                series_labels
                    .split(',')
                    .any(|l| l == format!("{k}=\"{v}\""))
            });
            all.then(|| value.parse::<f64>().ok()).flatten()
        })
        .sum()
}

/// How much `name{labels}` grew from `before` to `after`.
fn grew(before: &str, after: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    sample(after, name, labels) - sample(before, name, labels)
}

fn with_id<T>(message: T, token: &str, id: &str) -> tonic::Request<T> {
    let mut request = authed(message, token);
    request
        .metadata_mut()
        .insert("x-request-id", id.parse().expect("an ascii id"));
    request
}

fn is_made_id(id: &str) -> bool {
    id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit())
}

/// A `roomservice serve` process with JSON logs and every stderr line kept.
struct Logged {
    service: Service,
    lines: mpsc::Receiver<Value>,
    seen: Vec<Value>,
    /// The fields of the "roomservice listening" line.
    listening: Value,
}

impl Logged {
    fn spawn(args: &[&str]) -> Logged {
        let (tx, lines) = mpsc::channel();
        let service = spawn_forwarding_logs(args, move |line| {
            let parsed = serde_json::from_str(&line)
                .unwrap_or_else(|_| panic!("a log line that is not JSON: {line}"));
            let _ = tx.send(parsed);
        });
        let mut logged = Logged {
            service,
            lines,
            seen: Vec::new(),
            listening: Value::Null,
        };
        logged.listening = logged.wait_for("the listening line", |l| {
            message(l) == "roomservice listening"
        })["fields"]
            .clone();
        logged
    }

    fn address(&self) -> String {
        self.listening["address"].as_str().unwrap().to_owned()
    }

    /// The first line (seen or to come, within 10 s) that `wanted` accepts.
    fn wait_for(&mut self, what: &str, wanted: impl Fn(&Value) -> bool) -> Value {
        if let Some(line) = self.seen.iter().find(|l| wanted(l)) {
            return line.clone();
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(
                !left.is_zero(),
                "{what} never logged; saw:\n{:#?}",
                self.seen
            );
            if let Ok(line) = self
                .lines
                .recv_timeout(left.min(Duration::from_millis(100)))
            {
                self.seen.push(line.clone());
                if wanted(&line) {
                    return line;
                }
            }
        }
    }

    /// Every line logged so far, after waiting `settle` for stragglers.
    fn all(&mut self, settle: Duration) -> &[Value] {
        std::thread::sleep(settle);
        while let Ok(line) = self.lines.try_recv() {
            self.seen.push(line);
        }
        &self.seen
    }
}

fn message(line: &Value) -> &str {
    line["fields"]["message"].as_str().unwrap_or_default()
}

fn request_id_of(line: &Value) -> &str {
    line["span"]["request_id"].as_str().unwrap_or_default()
}

/// An address on which nothing listens: port 1, which no test binds. (A
/// port freed by a probe could be taken by another test's Redis meanwhile.)
fn dead_address() -> String {
    "127.0.0.1:1".to_owned()
}

/* ------------------------------------- metrics ------------------------------------- */

/// gRPC calls and REST requests, answered and refused, show up by method,
/// route template and code; store operations by name; and the gauges are
/// there. Raw paths never become labels.
#[tokio::test]
async fn calls_are_counted_by_method_route_and_code() {
    let server = TestServer::start().await;
    let base = server.url();
    let token = acme_token();
    let before = scrape(&base).await;

    let mut rooms = server.rooms().await;
    let room = rooms
        .create_room(authed(CreateRoomRequest::default(), &token))
        .await
        .unwrap()
        .into_inner();
    let missing = rooms
        .get_room(authed(
            GetRoomRequest {
                room_id: "zzzz-zzzz-zzzz".into(),
            },
            &token,
        ))
        .await
        .unwrap_err();
    assert_eq!(missing.code(), Code::NotFound);
    let refused = rooms
        .list_rooms(tonic::Request::new(ListRoomsRequest::default()))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::Unauthenticated);

    let client = http();
    let fetched = client
        .get(format!("{base}/v2/rooms/{}", room.room_id))
        .header("authorization", &token)
        .send()
        .await
        .unwrap();
    assert_eq!(fetched.status(), 200);
    let unauthenticated = client.get(format!("{base}/v2/rooms")).send().await.unwrap();
    assert_eq!(unauthenticated.status(), 401);
    let nowhere = client
        .get(format!("{base}/no/such/{}", room.room_id))
        .send()
        .await
        .unwrap();
    assert_eq!(nowhere.status(), 404);

    let after = scrape(&base).await;
    let calls = "roomservice_grpc_calls_total";
    for (method, code) in [
        ("rooms.v1.RoomService/CreateRoom", "OK"),
        ("rooms.v1.RoomService/GetRoom", "NOT_FOUND"),
        ("rooms.v1.RoomService/ListRooms", "UNAUTHENTICATED"),
    ] {
        let labels = [("method", method), ("code", code)];
        assert!(
            grew(&before, &after, calls, &labels) >= 1.0,
            "{labels:?}\n{after}"
        );
    }
    assert!(
        grew(
            &before,
            &after,
            "roomservice_grpc_call_duration_seconds_count",
            &[("method", "rooms.v1.RoomService/CreateRoom")]
        ) >= 1.0
    );
    assert!(after.contains(
        "roomservice_grpc_call_duration_seconds_bucket{method=\"rooms.v1.RoomService/CreateRoom\",le=\"0.001\"}"
    ));

    let requests = "roomservice_http_requests_total";
    for (route, status) in [
        ("/v2/rooms/{roomId}", "200"),
        ("/v2/rooms", "401"),
        ("unmatched", "404"),
    ] {
        let labels = [("method", "GET"), ("route", route), ("status", status)];
        assert!(
            grew(&before, &after, requests, &labels) >= 1.0,
            "{labels:?}\n{after}"
        );
    }
    assert!(
        grew(
            &before,
            &after,
            "roomservice_http_request_duration_seconds_count",
            &[("method", "GET"), ("route", "/v2/rooms/{roomId}")]
        ) >= 1.0
    );
    // The scrape before counts itself as a REST request.
    assert!(
        sample(
            &after,
            requests,
            &[("route", "/metrics"), ("status", "200")]
        ) >= 1.0
    );

    let operations = "roomservice_store_operations_total";
    for operation in ["create_room", "get_room"] {
        let labels = [("operation", operation), ("result", "ok")];
        assert!(
            grew(&before, &after, operations, &labels) >= 1.0,
            "{labels:?}\n{after}"
        );
    }
    assert!(
        sample(
            &after,
            "roomservice_store_operation_duration_seconds_count",
            &[("operation", "ping")]
        ) >= 1.0
    );

    let version = env!("CARGO_PKG_VERSION");
    assert!(
        after.contains(&format!(
            "roomservice_build_info{{version=\"{version}\"}} 1"
        )),
        "{after}"
    );
    for gauge in ["roomservice_store_up", "roomservice_calls_in_flight"] {
        assert!(
            after.lines().any(|l| l.starts_with(&format!("{gauge} "))),
            "{gauge}\n{after}"
        );
    }
    // Bounded labels: no id or raw path of these calls is a label value.
    assert!(!after.contains(&room.room_id), "{after}");
    assert!(!after.contains("zzzz-zzzz-zzzz"), "{after}");
    assert!(!after.contains("/no/such"), "{after}");
}

/// Calls refused at full load are counted as shed, and answered with a
/// request id; `/metrics` itself still answers (scrapes are exempt).
#[tokio::test]
async fn shed_calls_are_counted() {
    let (server, mut holding) = TestServer::start_holding(Limits {
        max_in_flight: 1,
        ..Default::default()
    })
    .await;
    let base = server.url();
    let token = acme_token();
    let before = scrape(&base).await;

    holding.hold(&server, 1).await;
    let mut rooms = server.rooms().await;
    let give_up = Instant::now() + Duration::from_secs(5);
    let refusal = loop {
        match rooms
            .list_rooms(with_id(ListRoomsRequest::default(), &token, "shed-grpc-1"))
            .await
        {
            Err(status) if status.code() == Code::ResourceExhausted => break status,
            _ => {
                assert!(
                    Instant::now() < give_up,
                    "the held call never filled the server"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    };
    assert_eq!(
        refusal.metadata().get("x-request-id").unwrap(),
        "shed-grpc-1"
    );

    let response = http()
        .get(format!("{base}/v2/rooms"))
        .header("authorization", &token)
        .header("x-request-id", "shed-rest-1")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 503);
    assert_eq!(response.headers()["x-request-id"], "shed-rest-1");

    let after = scrape(&base).await;
    let shed = "roomservice_calls_shed_total";
    assert!(
        grew(&before, &after, shed, &[("transport", "grpc")]) >= 1.0,
        "{after}"
    );
    assert!(
        grew(&before, &after, shed, &[("transport", "rest")]) >= 1.0,
        "{after}"
    );
    assert!(
        grew(
            &before,
            &after,
            "roomservice_grpc_calls_total",
            &[
                ("method", "rooms.v1.RoomService/ListRooms"),
                ("code", "RESOURCE_EXHAUSTED")
            ]
        ) >= 1.0,
        "{after}"
    );
    assert!(
        grew(
            &before,
            &after,
            "roomservice_http_requests_total",
            &[("route", "/v2/rooms"), ("status", "503")]
        ) >= 1.0,
        "{after}"
    );
    // The stalled create holds its slot and is counted in flight.
    assert!(
        sample(&after, "roomservice_calls_in_flight", &[]) >= 1.0,
        "{after}"
    );
}

/// `--metrics-listen`: metrics on their own port, and not on the main one.
#[tokio::test]
async fn metrics_listen_moves_metrics_to_their_own_port() {
    let logged = Logged::spawn(&["--metrics-listen", "127.0.0.1:0"]);
    let main = format!("http://{}", logged.address());
    let metrics_address = logged.listening["metrics_address"].as_str().unwrap();
    assert_ne!(metrics_address, logged.address());
    let metrics = format!("http://{metrics_address}");

    let text = scrape(&metrics).await;
    assert!(text.contains("roomservice_build_info"), "{text}");

    let client = http();
    let on_main = client.get(format!("{main}/metrics")).send().await.unwrap();
    assert_eq!(on_main.status(), 404);
    let api_on_metrics = client
        .get(format!("{metrics}/v2/rooms"))
        .send()
        .await
        .unwrap();
    assert_eq!(api_on_metrics.status(), 404);
    let healthz = client.get(format!("{main}/healthz")).send().await.unwrap();
    assert_eq!(healthz.status(), 200);

    assert!(logged.service.stop().success());
}

/* ----------------------------------- request ids ----------------------------------- */

/// gRPC: an acceptable `x-request-id` comes back in the response headers, on
/// answers and errors alike; an unacceptable or missing one is replaced.
#[tokio::test]
async fn grpc_request_ids_are_echoed_or_replaced() {
    let server = TestServer::start().await;
    let token = acme_token();
    let mut rooms = server.rooms().await;

    let answered = rooms
        .list_rooms(with_id(ListRoomsRequest::default(), &token, "grpc-ok-1"))
        .await
        .unwrap();
    assert_eq!(
        answered.metadata().get("x-request-id").unwrap(),
        "grpc-ok-1"
    );

    let failed = rooms
        .get_room(with_id(
            GetRoomRequest {
                room_id: "zzzz-zzzz-zzzz".into(),
            },
            &token,
            "grpc-missing-1",
        ))
        .await
        .unwrap_err();
    assert_eq!(failed.code(), Code::NotFound);
    assert_eq!(
        failed.metadata().get("x-request-id").unwrap(),
        "grpc-missing-1"
    );

    let too_long = "x".repeat(129);
    let unprintable = "tab\there";
    for refused in [too_long.as_str(), unprintable] {
        let mut request = authed(ListRoomsRequest::default(), &token);
        request.metadata_mut().insert(
            "x-request-id",
            MetadataValue::try_from(refused).expect("a header value"),
        );
        let answered = rooms.list_rooms(request).await.unwrap();
        let id = answered
            .metadata()
            .get("x-request-id")
            .unwrap()
            .to_str()
            .unwrap();
        assert!(is_made_id(id), "{refused:?} became {id:?}");
    }
    let exactly_128 = "y".repeat(128);
    let answered = rooms
        .list_rooms(with_id(ListRoomsRequest::default(), &token, &exactly_128))
        .await
        .unwrap();
    assert_eq!(
        answered.metadata().get("x-request-id").unwrap(),
        exactly_128.as_str()
    );

    let unnamed = rooms
        .list_rooms(authed(ListRoomsRequest::default(), &token))
        .await
        .unwrap();
    let id = unnamed
        .metadata()
        .get("x-request-id")
        .unwrap()
        .to_str()
        .unwrap();
    assert!(is_made_id(id), "{id:?}");
}

/// REST: the same rules, on answers, errors and unknown routes.
#[tokio::test]
async fn rest_request_ids_are_echoed_or_replaced() {
    let server = TestServer::start().await;
    let base = server.url();
    let token = acme_token();
    let client = http();
    let get = |path: &str, id: Option<&[u8]>| {
        let mut request = client
            .get(format!("{base}{path}"))
            .header("authorization", &token);
        if let Some(id) = id {
            request = request.header(
                "x-request-id",
                http::HeaderValue::from_bytes(id).expect("a header value"),
            );
        }
        request.send()
    };

    for (path, status) in [
        ("/v2/rooms", 200),
        ("/v2/rooms/zzzz-zzzz-zzzz", 404),
        ("/no/such/route", 404),
    ] {
        let response = get(path, Some(b"rest-1")).await.unwrap();
        assert_eq!(response.status(), status, "{path}");
        assert_eq!(response.headers()["x-request-id"], "rest-1", "{path}");
    }

    let too_long = vec![b'x'; 129];
    let not_ascii = b"caf\xe9".to_vec();
    for refused in [too_long, not_ascii] {
        let response = get("/v2/rooms", Some(&refused)).await.unwrap();
        let id = response.headers()["x-request-id"]
            .to_str()
            .unwrap()
            .to_owned();
        assert!(is_made_id(&id), "{refused:?} became {id:?}");
    }
    let first = get("/v2/rooms", None).await.unwrap();
    let second = get("/v2/rooms", None).await.unwrap();
    let first = first.headers()["x-request-id"].to_str().unwrap().to_owned();
    let second = second.headers()["x-request-id"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        is_made_id(&first) && is_made_id(&second),
        "{first} {second}"
    );
    assert_ne!(first, second);
}

/* ------------------------------------ the logs ------------------------------------ */

/// The binary's JSON logs: one access line per call, carrying the request
/// id, method or route, account, status and latency; and a store failure deep
/// inside a call is logged with the same request id. Redis here is an
/// address nobody listens on, so every store operation fails.
#[tokio::test]
async fn json_logs_carry_the_request_id_on_access_and_store_error_lines() {
    let keys = TempDir::new();
    let keys_file = keys.write("keys.toml", KEYS_TOML);
    let redis_url = format!("redis://{}", dead_address());
    let mut logged = Logged::spawn(&["--keys-file", &keys_file, "--redis-url", &redis_url]);
    let main = format!("http://{}", logged.address());

    let mut rooms =
        roomservice::grpc::pb::room_service_client::RoomServiceClient::connect(main.clone())
            .await
            .unwrap();
    let failed = rooms
        .get_room(with_id(
            GetRoomRequest {
                room_id: "zzzz-zzzz-zzzz".into(),
            },
            &acme_token(),
            "logs-grpc-1",
        ))
        .await
        .unwrap_err();
    assert_eq!(failed.code(), Code::Unavailable);
    assert_eq!(
        failed.metadata().get("x-request-id").unwrap(),
        "logs-grpc-1"
    );

    let response = http()
        .get(format!("{main}/v2/rooms"))
        .header("authorization", acme_token())
        .header("x-request-id", "logs-rest-1")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 503);

    let access = logged.wait_for("the gRPC access line", |l| {
        message(l) == "access" && request_id_of(l) == "logs-grpc-1"
    });
    assert_eq!(access["level"], "INFO", "{access}");
    assert_eq!(access["target"], "roomservice::access", "{access}");
    assert_eq!(access["fields"]["grpc_code"], "UNAVAILABLE", "{access}");
    assert!(access["fields"]["latency_ms"].is_number(), "{access}");
    assert_eq!(
        access["span"]["method"], "rooms.v1.RoomService/GetRoom",
        "{access}"
    );
    assert_eq!(access["span"]["account"], ACME_USER, "{access}");

    let store_error = logged.wait_for("the gRPC call's store error", |l| {
        request_id_of(l) == "logs-grpc-1" && l["level"] == "ERROR"
    });
    assert!(
        store_error["fields"]["error"]
            .as_str()
            .unwrap_or_default()
            .contains("storage unavailable"),
        "{store_error}"
    );

    let access = logged.wait_for("the REST access line", |l| {
        message(l) == "access" && request_id_of(l) == "logs-rest-1"
    });
    assert_eq!(access["fields"]["http_status"], 503, "{access}");
    assert_eq!(access["span"]["method"], "GET", "{access}");
    assert_eq!(access["span"]["route"], "/v2/rooms", "{access}");
    assert_eq!(access["span"]["account"], ACME_USER, "{access}");
    let store_error = logged.wait_for("the REST request's store error", |l| {
        request_id_of(l) == "logs-rest-1" && l["level"] == "ERROR"
    });
    assert!(
        store_error["fields"]["error"]
            .as_str()
            .unwrap_or_default()
            .contains("storage unavailable"),
        "{store_error}"
    );
    drop(logged);
}

/// `--access-log-level off`: no access lines, while the call's other lines
/// (here, the refusal of a bad token) still carry its request id.
#[tokio::test]
async fn access_log_level_off_writes_no_access_lines() {
    let mut logged = Logged::spawn(&["--access-log-level", "off"]);
    let main = format!("http://{}", logged.address());
    let client = http();
    let response = client
        .get(format!("{main}/v2/rooms"))
        .header("authorization", "not-a-token")
        .header("x-request-id", "quiet-1")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    let answered = client
        .get(format!("{main}/healthz"))
        .header("x-request-id", "quiet-2")
        .send()
        .await
        .unwrap();
    assert_eq!(answered.status(), 200);

    logged.wait_for("the refusal's line", |l| request_id_of(l) == "quiet-1");
    let lines = logged.all(Duration::from_millis(500));
    let access: Vec<&Value> = lines.iter().filter(|l| message(l) == "access").collect();
    assert!(access.is_empty(), "{access:#?}");
}

/// The same server with the default level writes one access line per API
/// call, and none at info for probes.
#[tokio::test]
async fn the_default_access_log_writes_one_line_per_call() {
    let mut logged = Logged::spawn(&[]);
    let main = format!("http://{}", logged.address());
    for _ in 0..3 {
        let answered = http()
            .get(format!("{main}/v2/rooms"))
            .header("x-request-id", "loud-1")
            .send()
            .await
            .unwrap();
        assert_eq!(answered.status(), 401);
    }
    let probed = http()
        .get(format!("{main}/healthz"))
        .header("x-request-id", "probe-1")
        .send()
        .await
        .unwrap();
    assert_eq!(probed.status(), 200);
    logged.wait_for("an access line", |l| {
        message(l) == "access" && request_id_of(l) == "loud-1"
    });
    let lines = logged.all(Duration::from_millis(500));
    let access = lines
        .iter()
        .filter(|l| message(l) == "access" && request_id_of(l) == "loud-1")
        .count();
    assert_eq!(access, 3);
    assert!(
        !lines
            .iter()
            .any(|l| message(l) == "access" && request_id_of(l) == "probe-1"),
        "probes log at debug"
    );
}
