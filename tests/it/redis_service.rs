//! The service on Redis as operators run it: round trips per call, several
//! service processes on one Redis, restarts, and the documented key schema.

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use roomservice::grpc::pb::room_service_client::RoomServiceClient;
use roomservice::grpc::pb::{
    CreateRoomRequest, DeactivateRoomRequest, GetRoomRequest, ListRoomsRequest,
    UpdateRoomStatusRequest,
};

use crate::harness::*;
use crate::redis_harness::*;

/// `INFO commandstats` as command name → calls.
fn command_calls(redis: &RedisServer) -> BTreeMap<String, u64> {
    redis
        .info("commandstats")
        .lines()
        .filter_map(|line| {
            let rest = line.strip_prefix("cmdstat_")?;
            let (name, stats) = rest.split_once(':')?;
            let calls = stats
                .strip_prefix("calls=")?
                .split(',')
                .next()?
                .parse()
                .ok()?;
            Some((name.to_owned(), calls))
        })
        .collect()
}

/// The commands our Lua scripts run inside Redis; Redis counts those in
/// commandstats too, but they cost no round trip.
fn commands_inside_scripts() -> HashSet<String> {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/src/store/redis/scripts");
    let mut names = HashSet::new();
    for entry in std::fs::read_dir(dir).expect("scripts directory") {
        let source = std::fs::read_to_string(entry.unwrap().path()).unwrap();
        for piece in source
            .split("redis.call(")
            .skip(1)
            .chain(source.split("redis.pcall(").skip(1))
        {
            let name: String = piece
                .trim_start_matches(['\'', '"'])
                .chars()
                .take_while(|c| c.is_ascii_alphabetic())
                .collect();
            names.insert(name.to_ascii_lowercase());
        }
    }
    names
}

/// The client-issued commands between two snapshots: everything but the
/// script internals and the test's own INFO/CONFIG and the health probe's PING.
fn round_trips(
    before: &BTreeMap<String, u64>,
    after: &BTreeMap<String, u64>,
) -> BTreeMap<String, u64> {
    let internal = commands_inside_scripts();
    after
        .iter()
        .map(|(name, calls)| (name.clone(), calls - before.get(name).copied().unwrap_or(0)))
        .filter(|(name, delta)| {
            *delta > 0
                && !internal.contains(name)
                && !matches!(
                    name.as_str(),
                    "info" | "ping" | "config|resetstat" | "zrangebyscore"
                )
        })
        .collect()
}

#[tokio::test]
async fn get_is_one_command_and_create_is_one_round_trip() {
    let redis = RedisServer::start();
    let store = connected_store(vec![redis.url()], false, "rs:".into()).await;
    let server = TestServer::start_opts(ServerOptions::quiet(Arc::new(store))).await;
    let mut client = server.rooms().await;
    let token = acme_token();
    let create = |custom: &str| {
        authed(
            CreateRoomRequest {
                custom_room_id: Some(custom.into()),
                ..Default::default()
            },
            &token,
        )
    };
    // Warm up: scripts loaded, connection established.
    let room = client
        .create_room(create("warm-up"))
        .await
        .unwrap()
        .into_inner();
    for key in [&room.room_id, &room.id, "warm-up"] {
        client
            .get_room(authed(
                GetRoomRequest {
                    room_id: key.to_string(),
                },
                &token,
            ))
            .await
            .unwrap();
    }

    for key in [
        room.room_id.as_str(),
        room.id.as_str(),
        "warm-up",
        "no-such-room",
    ] {
        let monitor = Monitor::start(&redis);
        let before = command_calls(&redis);
        let _ = client
            .get_room(authed(
                GetRoomRequest {
                    room_id: key.into(),
                },
                &token,
            ))
            .await;
        let trips = round_trips(&before, &command_calls(&redis));
        if key == room.room_id {
            // By roomId the room is cached since the warm-up: one pipeline,
            // the cache's barrier (see src/store/redis/cache.rs).
            assert_eq!(
                trips,
                BTreeMap::from([("client|id".to_owned(), 1), ("unsubscribe".to_owned(), 1)]),
                "GetRoom by {key}"
            );
            assert_eq!(
                monitor.client_commands(2),
                ["client", "unsubscribe"],
                "GetRoom by {key}"
            );
            continue;
        }
        assert_eq!(
            trips,
            BTreeMap::from([("evalsha".to_owned(), 1)]),
            "GetRoom by {key}"
        );
        // commandstats cannot tell a client's HGETALL from a script's; MONITOR can.
        assert_eq!(monitor.client_commands(1), ["evalsha"], "GetRoom by {key}");
    }

    // A roomId not cached yet: the read and its tracking, one pipeline.
    let cold = client
        .create_room(create("cold"))
        .await
        .unwrap()
        .into_inner();
    let monitor = Monitor::start(&redis);
    let before = command_calls(&redis);
    client
        .get_room(authed(
            GetRoomRequest {
                room_id: cold.room_id.clone(),
            },
            &token,
        ))
        .await
        .unwrap();
    assert_eq!(
        round_trips(&before, &command_calls(&redis)),
        BTreeMap::from([
            ("client|caching".to_owned(), 1),
            ("client|id".to_owned(), 1),
            ("client|tracking".to_owned(), 1),
            ("evalsha".to_owned(), 1),
        ]),
        "GetRoom by an uncached roomId"
    );
    assert_eq!(
        monitor.client_commands(4),
        ["client", "client", "client", "evalsha"],
        "GetRoom by an uncached roomId"
    );

    for what in ["new room", "idempotent repeat"] {
        let monitor = Monitor::start(&redis);
        let before = command_calls(&redis);
        client.create_room(create("second")).await.unwrap();
        assert_eq!(
            round_trips(&before, &command_calls(&redis)),
            BTreeMap::from([("evalsha".to_owned(), 1)]),
            "{what}"
        );
        assert_eq!(monitor.client_commands(1), ["evalsha"], "{what}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_make_one_room_from_100_concurrent_creates() {
    let redis = RedisServer::start();
    let url = redis.url();
    let dir = TempDir::new();
    let keys = dir.write("keys.toml", KEYS_TOML);
    let (first, first_addr) = spawn_binary(&["--redis-url", &url, "--keys-file", &keys]);
    let (second, second_addr) = spawn_binary(&["--redis-url", &url, "--keys-file", &keys]);
    let clients = [
        RoomServiceClient::connect(format!("http://{first_addr}"))
            .await
            .unwrap(),
        RoomServiceClient::connect(format!("http://{second_addr}"))
            .await
            .unwrap(),
    ];
    let token = acme_token();
    let calls: Vec<_> = (0..100)
        .map(|i| {
            let mut client = clients[i % 2].clone();
            let request = authed(
                CreateRoomRequest {
                    custom_room_id: Some("all-hands".into()),
                    ..Default::default()
                },
                &token,
            );
            tokio::spawn(async move { client.create_room(request).await })
        })
        .collect();
    let mut room_ids = HashSet::new();
    for call in calls {
        room_ids.insert(
            call.await
                .unwrap()
                .expect("every create succeeds")
                .into_inner()
                .room_id,
        );
    }
    assert_eq!(room_ids.len(), 1, "{room_ids:?}");
    let room_keys = redis
        .scan_keys()
        .into_iter()
        .filter(|k| k.contains(":room:"))
        .count();
    assert_eq!(room_keys, 1, "exactly one room stored");
    drop(clients);
    assert!(first.stop().success());
    assert!(second.stop().success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_acknowledged_create_survives_a_service_restart_under_load() {
    let redis = RedisServer::start();
    let url = redis.url();
    let dir = TempDir::new();
    let keys = dir.write("keys.toml", KEYS_TOML);
    // One public URL for both runs, so that rooms read back compare equal.
    let args = [
        "--redis-url",
        &url,
        "--keys-file",
        &keys,
        "--public-url",
        "https://rooms.test",
    ];
    let (service, address) = spawn_binary(&args);
    let acknowledged = Arc::new(Mutex::new(Vec::new()));
    let token = acme_token();
    let workers: Vec<_> = (0..8)
        .map(|worker| {
            let acknowledged = acknowledged.clone();
            let token = token.clone();
            let address = address.clone();
            tokio::spawn(async move {
                let mut client = RoomServiceClient::connect(format!("http://{address}"))
                    .await
                    .unwrap();
                // Bounded: stops at the first refusal (the server going away) or after 5000 creates.
                for i in 0..5000 {
                    let request = authed(
                        CreateRoomRequest {
                            custom_room_id: Some(format!("load-{worker}-{i}")),
                            ..Default::default()
                        },
                        &token,
                    );
                    match client.create_room(request).await {
                        Ok(room) => acknowledged.lock().unwrap().push(room.into_inner()),
                        Err(_) => break,
                    }
                }
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(700)).await;
    let status = tokio::task::spawn_blocking(move || service.stop())
        .await
        .unwrap();
    assert!(status.success(), "graceful exit under load: {status:?}");
    for worker in workers {
        worker.await.unwrap();
    }
    let acknowledged = acknowledged.lock().unwrap().clone();
    assert!(
        !acknowledged.is_empty(),
        "the load made some rooms before the restart"
    );

    let (service, address) = spawn_binary(&args);
    let mut client = RoomServiceClient::connect(format!("http://{address}"))
        .await
        .unwrap();
    for room in &acknowledged {
        let request = authed(
            GetRoomRequest {
                room_id: room.room_id.clone(),
            },
            &token,
        );
        let fetched = client
            .get_room(request)
            .await
            .expect("acknowledged room readable")
            .into_inner();
        assert_eq!(&fetched, room);
    }
    drop(client);
    assert!(service.stop().success());
}

/// `redis-cli --scan` shows only the keys docs/redis-schema.md documents.
#[tokio::test]
async fn keys_follow_the_documented_schema() {
    let redis = RedisServer::start();
    let store = connected_store(vec![redis.url()], false, "rs:".into()).await;
    let server = TestServer::start_opts(ServerOptions::quiet(Arc::new(store))).await;
    let mut client = server.rooms().await;
    for (token, custom) in [
        (acme_token(), Some("named")),
        (acme_token(), None),
        (globex_token(), Some("named")),
    ] {
        let request = CreateRoomRequest {
            custom_room_id: custom.map(str::to_owned),
            ..Default::default()
        };
        client.create_room(authed(request, &token)).await.unwrap();
    }

    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/redis-schema.md"))
        .unwrap();
    let mut kinds = BTreeMap::new();
    for key in redis.scan_keys() {
        let rest = key
            .strip_prefix("rs:{")
            .unwrap_or_else(|| panic!("{key} lacks the prefix and hash tag"));
        let (user, suffix) = rest
            .split_once("}:")
            .unwrap_or_else(|| panic!("{key} has no hash tag"));
        assert!(
            user.len() == 24 && user.bytes().all(|b| b.is_ascii_hexdigit()),
            "{key}"
        );
        let kind = match suffix {
            "cid" | "rooms" => suffix.to_owned(),
            _ => {
                let room_id = suffix
                    .strip_prefix("room:")
                    .unwrap_or_else(|| panic!("undocumented key {key}"));
                assert!(
                    roomservice::domain::RoomId::parse(room_id).is_some(),
                    "{key}"
                );
                "room:<roomId>".to_owned()
            }
        };
        assert!(
            doc.contains(&format!("}}:{kind}")),
            "docs/redis-schema.md does not document {kind}"
        );
        *kinds.entry(kind).or_insert(0) += 1;
    }
    assert_eq!(
        kinds,
        BTreeMap::from([
            ("cid".to_owned(), 2),
            ("room:<roomId>".to_owned(), 3),
            ("rooms".to_owned(), 2)
        ])
    );
}

/// `rediss://` works against a TLS Redis whose CA the process trusts
/// (SSL_CERT_FILE), and fails clearly, without serving, when it does not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rediss_urls_connect_over_tls() {
    let (redis, tls_port) = RedisServer::start_tls();
    let url = format!("rediss://127.0.0.1:{tls_port}");
    let dir = TempDir::new();
    let keys = dir.write("keys.toml", KEYS_TOML);

    let mut trusting = roomservice();
    trusting.env("SSL_CERT_FILE", redis.ca_file());
    let (service, address) =
        spawn_binary_with(trusting, &["--redis-url", &url, "--keys-file", &keys], true);
    let mut client = RoomServiceClient::connect(format!("http://{address}"))
        .await
        .unwrap();
    let token = acme_token();
    let request = authed(
        CreateRoomRequest {
            custom_room_id: Some("over-tls".into()),
            ..Default::default()
        },
        &token,
    );
    let room = client
        .create_room(request)
        .await
        .expect("created over TLS")
        .into_inner();
    let request = authed(
        GetRoomRequest {
            room_id: "over-tls".into(),
        },
        &token,
    );
    assert_eq!(client.get_room(request).await.unwrap().into_inner(), room);
    assert!(
        redis
            .scan_keys()
            .iter()
            .any(|k| k.ends_with(&format!(":room:{}", room.room_id)))
    );
    drop(client);
    assert!(service.stop().success());

    // Without the CA the certificate is not trusted: nothing is served from that Redis.
    let mut untrusting = roomservice();
    untrusting.env("SSL_CERT_FILE", "/dev/null");
    let (service, address) = spawn_binary_with(
        untrusting,
        &["--redis-url", &url, "--keys-file", &keys],
        false,
    );
    let mut client = RoomServiceClient::connect(format!("http://{address}"))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let request = authed(
        GetRoomRequest {
            room_id: "over-tls".into(),
        },
        &token,
    );
    let refused = client.get_room(request).await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::Unavailable, "{refused:?}");
    drop(client);
    assert!(service.stop().success());
}

#[tokio::test]
async fn status_changes_and_listings_are_one_round_trip() {
    let redis = RedisServer::start();
    let store = connected_store(vec![redis.url()], false, "rs:".into()).await;
    let server = TestServer::start_opts(ServerOptions::quiet(Arc::new(store))).await;
    let mut client = server.rooms().await;
    let token = acme_token();
    let room = client
        .create_room(authed(
            CreateRoomRequest {
                custom_room_id: Some("one-trip".into()),
                ..Default::default()
            },
            &token,
        ))
        .await
        .unwrap()
        .into_inner();
    // Warm up the scripts, so NOSCRIPT reloads are not counted.
    let deactivate = || {
        authed(
            DeactivateRoomRequest {
                room_id: room.room_id.clone(),
            },
            &token,
        )
    };
    let enable = |key: &str| {
        authed(
            UpdateRoomStatusRequest {
                room_id: key.into(),
                status: "enabled".into(),
            },
            &token,
        )
    };
    let list = || authed(ListRoomsRequest::default(), &token);
    client.deactivate_room(deactivate()).await.unwrap();
    client
        .update_room_status(enable(&room.room_id))
        .await
        .unwrap();
    client.update_room_status(enable("one-trip")).await.unwrap();
    client.list_rooms(list()).await.unwrap();

    // A disable is one write, then one read: whether a session runs in the
    // room, to end it.
    for (what, trips) in [
        ("deactivate", 2),
        ("deactivate again", 2),
        ("enable by roomId", 1),
        ("list", 1),
    ] {
        let monitor = Monitor::start(&redis);
        let before = command_calls(&redis);
        match what {
            "list" => drop(client.list_rooms(list()).await.unwrap()),
            "enable by roomId" => drop(
                client
                    .update_room_status(enable(&room.room_id))
                    .await
                    .unwrap(),
            ),
            _ => drop(client.deactivate_room(deactivate()).await.unwrap()),
        }
        assert_eq!(
            round_trips(&before, &command_calls(&redis)),
            BTreeMap::from([("evalsha".to_owned(), trips)]),
            "{what}"
        );
        assert_eq!(
            monitor.client_commands(trips as usize),
            vec!["evalsha"; trips as usize],
            "{what}"
        );
    }
    // By customRoomId the room is looked up first: a read, then the write.
    let monitor = Monitor::start(&redis);
    client.update_room_status(enable("one-trip")).await.unwrap();
    assert_eq!(monitor.client_commands(2), ["evalsha", "evalsha"]);
}

/// Reads a growing log file until a line holds every needle.
fn wait_for_line(path: &std::path::Path, needles: &[&str]) -> String {
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        if let Some(line) = text
            .lines()
            .find(|line| needles.iter().all(|n| line.contains(n)))
        {
            return line.to_owned();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no log line with {needles:?} in:\n{text}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn storage_failures_are_logged_with_their_cause_and_never_shown() {
    let mut redis = RedisServer::start();
    let url = redis.url();
    let port = url
        .rsplit(':')
        .next()
        .unwrap()
        .trim_end_matches('/')
        .to_owned();
    let dir = TempDir::new();
    let keys = dir.write("keys.toml", KEYS_TOML);
    let log_path = dir.write("service.log", "");
    let log = std::fs::File::create(&log_path).unwrap();
    let child = roomservice()
        .args(["serve", "--listen", "127.0.0.1:0", "--log-format", "json"])
        .args(["--redis-url", &url, "--keys-file", &keys])
        .stdout(std::process::Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    let service = Service::adopt(child);
    let log_path = std::path::PathBuf::from(log_path);
    let listening = wait_for_line(&log_path, &["roomservice listening"]);
    wait_for_line(&log_path, &["\"connected to redis\""]);
    let address =
        serde_json::from_str::<serde_json::Value>(&listening).unwrap()["fields"]["address"]
            .as_str()
            .unwrap()
            .to_owned();
    redis.kill();

    let mut client = RoomServiceClient::connect(format!("http://{address}"))
        .await
        .unwrap();
    let status = client
        .get_room(authed(
            GetRoomRequest {
                room_id: "anything".into(),
            },
            &acme_token(),
        ))
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unavailable);
    assert_eq!(status.message(), "storage unavailable, retry");

    let response = reqwest::Client::builder()
        .no_proxy()
        .build()
        .unwrap()
        .get(format!("http://{address}/v2/rooms/anything"))
        .header("authorization", acme_token())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 503);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(
        body,
        serde_json::json!({"statusCode": 503, "error": "storage unavailable, retry", "code": "unavailable"})
    );

    // The operator's log has what the caller did not get: the cause.
    let grpc_line = wait_for_line(&log_path, &["call failed", "unavailable"]);
    let rest_line = wait_for_line(&log_path, &["request failed", "unavailable"]);
    for line in [&grpc_line, &rest_line] {
        assert!(
            line.contains("redis") || line.contains(&port),
            "the log line names the cause: {line}"
        );
        assert!(line.contains("\"level\":\"ERROR\""), "{line}");
    }
    assert!(service.stop().success());
}
