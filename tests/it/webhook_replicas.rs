//! Webhook delivery across replicas and restarts, on a single Redis and on a
//! Redis Cluster: nothing is lost when the server stops while a receiver is
//! failing, and two replicas deliver each event once when nothing fails.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU16, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use roomservice::grpc::pb::event_service_client::EventServiceClient;
use roomservice::grpc::pb::{
    CreateRoomRequest, PublishRoomEventRequest, WatchEventsRequest, Webhook,
};
use roomservice::service::DeliveryConfig;
use roomservice::store::RedisStore;
use serde_json::Value;
use tokio::net::TcpListener;

use crate::harness::*;
use crate::redis_harness::*;

/// What the receiver got: (webhook-id, body as JSON), in arrival order.
type Received = Arc<Mutex<Vec<(String, Value)>>>;

/// An HTTP receiver on 127.0.0.1 that answers every POST with `status`.
struct Receiver {
    addr: SocketAddr,
    status: Arc<AtomicU16>,
    /// Milliseconds to wait before answering.
    delay: Arc<AtomicU64>,
    /// Requests seen, answered or not.
    attempts: Arc<AtomicU64>,
    received: Received,
    task: tokio::task::JoinHandle<()>,
}

impl Receiver {
    async fn start(status: u16) -> Receiver {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let status = Arc::new(AtomicU16::new(status));
        let received: Received = Arc::default();
        let delay = Arc::new(AtomicU64::new(0));
        let attempts = Arc::new(AtomicU64::new(0));
        let (answer, log) = (status.clone(), received.clone());
        let (wait, seen) = (delay.clone(), attempts.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((socket, _)) = listener.accept().await else {
                    return;
                };
                let (answer, log) = (answer.clone(), log.clone());
                let (wait, seen) = (wait.clone(), seen.clone());
                tokio::spawn(async move {
                    let service =
                        service_fn(move |request: hyper::Request<hyper::body::Incoming>| {
                            let (answer, log) = (answer.clone(), log.clone());
                            let (wait, seen) = (wait.clone(), seen.clone());
                            async move {
                                seen.fetch_add(1, Ordering::SeqCst);
                                let pause = wait.load(Ordering::SeqCst);
                                tokio::time::sleep(Duration::from_millis(pause)).await;
                                let id = request
                                    .headers()
                                    .get("webhook-id")
                                    .and_then(|v| v.to_str().ok())
                                    .unwrap_or_default()
                                    .to_owned();
                                let body = request.into_body().collect().await?.to_bytes();
                                let status = answer.load(Ordering::SeqCst);
                                if status == 200 {
                                    let json = serde_json::from_slice(&body).unwrap_or(Value::Null);
                                    log.lock().unwrap().push((id, json));
                                }
                                Ok::<_, hyper::Error>(
                                    hyper::Response::builder()
                                        .status(status)
                                        .body(Full::new(Bytes::new()))
                                        .unwrap(),
                                )
                            }
                        });
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(socket), service)
                        .await;
                });
            }
        });
        Receiver {
            addr,
            status,
            delay,
            attempts,
            received,
            task,
        }
    }

    fn end_point(&self) -> String {
        format!("http://{}/hook", self.addr)
    }

    fn delivered(&self) -> Vec<(String, Value)> {
        self.received.lock().unwrap().clone()
    }

    /// Waits until `count` deliveries were accepted.
    async fn wait_for(&self, count: usize, within: Duration) -> Vec<(String, Value)> {
        let deadline = Instant::now() + within;
        loop {
            let got = self.delivered();
            if got.len() >= count {
                return got;
            }
            assert!(
                Instant::now() < deadline,
                "{} of {count} deliveries within {within:?}",
                got.len()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

struct Backend {
    urls: Vec<String>,
    cluster: bool,
    prefix: String,
}

impl Backend {
    fn single() -> Backend {
        Backend {
            urls: vec![shared_redis().url()],
            cluster: false,
            prefix: unique_prefix(),
        }
    }

    fn cluster() -> Backend {
        Backend {
            urls: shared_cluster().seed_urls(),
            cluster: true,
            prefix: unique_prefix(),
        }
    }

    /// A server ("replica") with a store connection of its own.
    async fn replica(&self) -> TestServer {
        self.replica_with_lease(DeliveryConfig::default().lease)
            .await
    }

    async fn replica_with_lease(&self, lease: Duration) -> TestServer {
        let store: Arc<RedisStore> =
            Arc::new(connected_store(self.urls.clone(), self.cluster, self.prefix.clone()).await);
        let mut options = ServerOptions::with_store(store);
        options.webhooks.delivery.lease = lease;
        TestServer::start_opts(options).await
    }
}

async fn room_with_webhook(server: &TestServer, end_point: &str) -> String {
    let request = CreateRoomRequest {
        webhook: Some(Webhook {
            end_point: end_point.to_owned(),
            events: vec!["recording-*".into()],
        }),
        ..Default::default()
    };
    server
        .rooms()
        .await
        .create_room(authed(request, &acme_token()))
        .await
        .unwrap()
        .into_inner()
        .room_id
}

/// Publishes `recording-started` with `{"n": n}` for the room.
async fn publish(server: &TestServer, room_id: &str, n: usize) {
    let media = sign(&sdk_claims(MEDIA_KEY), MEDIA_SECRET);
    let data = prost_types::Struct {
        fields: [(
            "n".to_owned(),
            prost_types::Value {
                kind: Some(prost_types::value::Kind::NumberValue(n as f64)),
            },
        )]
        .into(),
    };
    let request = PublishRoomEventRequest {
        room_id: room_id.to_owned(),
        webhook_type: "recording-started".into(),
        data: Some(data),
        user_id: ACME_USER.into(),
    };
    EventServiceClient::new(server.channel().await)
        .publish_room_event(authed(request, &media))
        .await
        .expect("published");
}

/// Per room, the `n`s in the order they arrived.
fn by_room(delivered: &[(String, Value)]) -> BTreeMap<String, Vec<u64>> {
    let mut rooms: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for (_, body) in delivered {
        rooms
            .entry(body["data"]["meetingId"].as_str().unwrap().to_owned())
            .or_default()
            .push(body["data"]["n"].as_u64().unwrap());
    }
    rooms
}

async fn deliveries_show_retrying(server: &TestServer) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let listing: Value = server
            .http()
            .get(format!("{}/v2/webhooks/deliveries", server.url()))
            .header("authorization", acme_token())
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let retrying = listing["data"]
            .as_array()
            .unwrap()
            .iter()
            .any(|d| d["outcome"] == "retrying" && d["status"] == 503);
        if retrying {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "no failed attempt recorded: {listing}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The receiver fails while the only replica stops; a new replica on the
/// same store delivers every event, in order per room, once the receiver
/// is back.
async fn a_restart_while_the_receiver_fails_loses_nothing(backend: Backend) {
    let receiver = Receiver::start(503).await;
    let first = backend.replica().await;
    let rooms = [
        room_with_webhook(&first, &receiver.end_point()).await,
        room_with_webhook(&first, &receiver.end_point()).await,
    ];
    for n in 0..5 {
        for room in &rooms {
            publish(&first, room, n).await;
        }
    }
    deliveries_show_retrying(&first).await;
    first.stop().await;
    assert!(receiver.delivered().is_empty());

    receiver.status.store(200, Ordering::SeqCst);
    let second = backend.replica().await;
    let delivered = receiver.wait_for(10, Duration::from_secs(20)).await;
    let rooms_seen = by_room(&delivered);
    for room in &rooms {
        assert_eq!(
            rooms_seen[room],
            vec![0, 1, 2, 3, 4],
            "order of room {room}"
        );
    }
    // Accepted once each: a 2xx is never retried.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(receiver.delivered().len(), 10);
    second.stop().await;
}

/// Two replicas on one store, a receiver that never fails: every event
/// published through either replica is delivered exactly once.
async fn two_replicas_deliver_each_event_once(backend: Backend) {
    let receiver = Receiver::start(200).await;
    let replicas = [backend.replica().await, backend.replica().await];
    let mut rooms = Vec::new();
    for i in 0..6 {
        rooms.push(room_with_webhook(&replicas[i % 2], &receiver.end_point()).await);
    }
    for n in 0..5 {
        for (i, room) in rooms.iter().enumerate() {
            publish(&replicas[(i + n) % 2], room, n).await;
        }
    }
    let expected = rooms.len() * 5;
    let delivered = receiver.wait_for(expected, Duration::from_secs(20)).await;
    // Both replicas look every 50 ms; give a duplicate time to show up.
    tokio::time::sleep(Duration::from_millis(750)).await;
    let delivered_now = receiver.delivered();
    assert_eq!(delivered_now.len(), expected, "{delivered_now:?}");
    let mut per_id: HashMap<&str, usize> = HashMap::new();
    for (id, _) in &delivered_now {
        *per_id.entry(id.as_str()).or_default() += 1;
    }
    assert!(per_id.values().all(|n| *n == 1), "duplicates: {per_id:?}");
    for (room, ns) in by_room(&delivered) {
        assert_eq!(ns, vec![0, 1, 2, 3, 4], "order of room {room}");
    }
    for replica in replicas {
        replica.stop().await;
    }
}

/// A replica stops in the middle of an attempt (its lease still held, as
/// if it had died): another replica takes the account over once the lease
/// has run out, and the event is delivered.
async fn a_replica_that_dies_mid_delivery_is_taken_over(backend: Backend) {
    let receiver = Receiver::start(200).await;
    receiver.delay.store(60_000, Ordering::SeqCst);
    let lease = Duration::from_secs(2);
    let first = backend.replica_with_lease(lease).await;
    let room = room_with_webhook(&first, &receiver.end_point()).await;
    publish(&first, &room, 0).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while receiver.attempts.load(Ordering::SeqCst) == 0 {
        assert!(Instant::now() < deadline, "no attempt reached the receiver");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The attempt is in flight; the replica goes away without recording it.
    let stopped = Instant::now();
    first.stop().await;
    receiver.delay.store(0, Ordering::SeqCst);
    let second = backend.replica_with_lease(lease).await;
    let delivered = receiver.wait_for(1, Duration::from_secs(15)).await;
    // The lease is renewed every third of it, so about two thirds of it
    // were left at the stop. A takeover that ignored the lease would come
    // within one 50 ms poll; a quarter leaves room for a loaded machine.
    assert!(
        stopped.elapsed() >= lease / 4,
        "taken over after {:?}, before the lease could have run out",
        stopped.elapsed()
    );
    assert_eq!(by_room(&delivered)[&room], vec![0]);
    second.stop().await;
}

/// A watch through one replica breaks; resumed through another with the
/// last event id received, it gets exactly the events it missed.
async fn a_watch_resumes_on_another_replica(backend: Backend) {
    let receiver = Receiver::start(200).await;
    let replicas = [backend.replica().await, backend.replica().await];
    let room = room_with_webhook(&replicas[0], &receiver.end_point()).await;
    let watch = |url: String, after: Option<String>| async move {
        EventServiceClient::connect(url)
            .await
            .expect("connected")
            .watch_events(authed(
                WatchEventsRequest {
                    room_id: None,
                    webhook_types: vec![],
                    after_event_id: after,
                },
                &acme_token(),
            ))
            .await
            .expect("watching")
            .into_inner()
    };
    let next_n = |event: &roomservice::grpc::pb::RoomEvent| {
        let data = event.data.clone().unwrap_or_default();
        match data.fields["n"].kind {
            Some(prost_types::value::Kind::NumberValue(n)) => n as u64,
            ref other => panic!("n is {other:?}"),
        }
    };
    let mut first = watch(replicas[0].url(), None).await;
    for n in 0..3 {
        publish(&replicas[0], &room, n).await;
    }
    let mut last = String::new();
    for n in 0..3u64 {
        let event = tokio::time::timeout(Duration::from_secs(5), first.message())
            .await
            .expect("an event within 5 s")
            .unwrap()
            .expect("the stream is open");
        assert_eq!(next_n(&event), n);
        last = event.event_id;
    }
    drop(first);
    for n in 3..6 {
        publish(&replicas[1], &room, n).await;
    }
    let mut resumed = watch(replicas[1].url(), Some(last)).await;
    for n in 3..6u64 {
        let event = tokio::time::timeout(Duration::from_secs(5), resumed.message())
            .await
            .expect("an event within 5 s")
            .unwrap()
            .expect("the stream is open");
        assert_eq!(next_n(&event), n, "resumed in order, nothing repeated");
    }
    let more = tokio::time::timeout(Duration::from_millis(500), resumed.message()).await;
    assert!(more.is_err(), "nothing beyond the missed events: {more:?}");
    for replica in replicas {
        replica.stop().await;
    }
}

mod single_redis {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_restart_while_the_receiver_fails_loses_nothing() {
        super::a_restart_while_the_receiver_fails_loses_nothing(Backend::single()).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn two_replicas_deliver_each_event_once() {
        super::two_replicas_deliver_each_event_once(Backend::single()).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_replica_that_dies_mid_delivery_is_taken_over() {
        super::a_replica_that_dies_mid_delivery_is_taken_over(Backend::single()).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_watch_resumes_on_another_replica() {
        super::a_watch_resumes_on_another_replica(Backend::single()).await;
    }
}

mod redis_cluster {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_restart_while_the_receiver_fails_loses_nothing() {
        super::a_restart_while_the_receiver_fails_loses_nothing(Backend::cluster()).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn two_replicas_deliver_each_event_once() {
        super::two_replicas_deliver_each_event_once(Backend::cluster()).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_replica_that_dies_mid_delivery_is_taken_over() {
        super::a_replica_that_dies_mid_delivery_is_taken_over(Backend::cluster()).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_watch_resumes_on_another_replica() {
        super::a_watch_resumes_on_another_replica(Backend::cluster()).await;
    }
}
