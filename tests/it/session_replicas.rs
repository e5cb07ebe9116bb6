//! Two `roomservice` processes on one Redis, as two replicas run: every due
//! session is closed once, by whichever replica gets there, counted from
//! the store.

use std::time::{Duration, Instant};

use futures::future::join_all;
use roomservice::grpc::pb::room_service_client::RoomServiceClient;
use roomservice::grpc::pb::session_service_client::SessionServiceClient;
use roomservice::grpc::pb::{
    AutoCloseConfig, CreateRoomRequest, GetSessionRequest, ParticipantJoinedRequest,
};
use serde_json::json;

use crate::harness::*;
use crate::redis_harness::*;

const SESSIONS: usize = 200;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_close_each_of_200_due_sessions_once() {
    let redis = RedisServer::start();
    let url = redis.url();
    let dir = TempDir::new();
    let keys = dir.write("keys.toml", KEYS_TOML);
    let (first, first_addr) = spawn_binary(&["--redis-url", &url, "--keys-file", &keys]);
    let (second, second_addr) = spawn_binary(&["--redis-url", &url, "--keys-file", &keys]);
    let mut rooms = RoomServiceClient::connect(format!("http://{first_addr}"))
        .await
        .unwrap();
    let replicas = [
        SessionServiceClient::connect(format!("http://{first_addr}"))
            .await
            .unwrap(),
        SessionServiceClient::connect(format!("http://{second_addr}"))
            .await
            .unwrap(),
    ];
    let acme = acme_token();
    let media = sign(&sdk_claims(MEDIA_KEY), MEDIA_SECRET);
    let mut claims = sdk_claims(ACME_KEY);
    claims["roles"] = json!(["rtc"]);
    claims["permissions"] = json!(["allow_join"]);
    let participant = sign(&claims, ACME_SECRET);

    let mut room_ids = Vec::new();
    for _ in 0..SESSIONS {
        let request = CreateRoomRequest {
            auto_close_config: Some(AutoCloseConfig {
                r#type: "session-ends".into(),
                duration: None,
                duration_seconds: Some(2),
            }),
            ..Default::default()
        };
        let room = rooms.create_room(authed(request, &acme)).await.unwrap();
        room_ids.push(room.into_inner().room_id);
    }
    // Every session starts within about a second, half through each
    // replica, so all 200 fall due within about a second of each other.
    let joins = room_ids.iter().enumerate().map(|(i, room_id)| {
        let mut client = replicas[i % 2].clone();
        let request = authed(
            ParticipantJoinedRequest {
                room_id: room_id.clone(),
                participant_id: format!("p{i}"),
                name: String::new(),
                participant_token: participant.clone(),
            },
            &media,
        );
        async move { client.participant_joined(request).await }
    });
    let sessions: Vec<_> = join_all(joins)
        .await
        .into_iter()
        .map(|answer| answer.expect("every join is accepted").into_inner())
        .collect();
    assert_eq!(sessions.len(), SESSIONS);

    // Counted from the store: a session's hash holds its version, one write
    // to start it and one to close it. A second close would be a third.
    let mut admin = redis::Client::open(url.as_str())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let mut stored = async |id: &str| -> Vec<Option<String>> {
        let key = format!("rs:{{{ACME_USER}}}:session:{id}");
        redis::cmd("HMGET")
            .arg(key)
            .arg("v")
            .arg("st")
            .query_async(&mut admin)
            .await
            .unwrap()
    };
    let closed_once = vec![Some("2".to_owned()), Some("e".to_owned())];
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let mut closed = 0;
        for session in &sessions {
            if stored(&session.id).await == closed_once {
                closed += 1;
            }
        }
        if closed == SESSIONS {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{closed} of {SESSIONS} sessions stored closed once"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Still exactly one close each, a moment later.
    tokio::time::sleep(Duration::from_millis(600)).await;
    for session in &sessions {
        assert_eq!(
            stored(&session.id).await,
            closed_once,
            "session {}",
            session.id
        );
    }

    // Each ended at its own deadline, read through either replica.
    let mut readers = replicas.clone();
    for (i, session) in sessions.iter().enumerate() {
        let read = readers[i % 2]
            .get_session(authed(
                GetSessionRequest {
                    session_id: session.id.clone(),
                },
                &acme,
            ))
            .await
            .unwrap()
            .into_inner();
        let start: jiff::Timestamp = read.start.parse().unwrap();
        let end: jiff::Timestamp = read.end.as_deref().expect("ended").parse().unwrap();
        assert_eq!(
            end.as_millisecond() - start.as_millisecond(),
            2000,
            "session {} ends 2 s after its start",
            read.id
        );
        assert_eq!(read.end_reason.as_deref(), Some("auto-close"));
    }
    assert!(first.stop().success());
    assert!(second.stop().success());
}
