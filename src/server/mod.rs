//! One listener for everything: gRPC (RoomService, SessionService and
//! EventService behind
//! the auth interceptor, health, reflection v1 and v1alpha since grpcurl 1.8
//! speaks only v1alpha) and the REST gateway, over HTTP/1.1 and HTTP/2 on one port.
//! This module is the composition root (it also starts the background work:
//! the session sweeper and the webhook delivery worker); `listener` holds the
//! accept loop and the connection limits, `dispatch` the per-request rules,
//! `tls` the listener's (reloadable) TLS configuration, `observe` the
//! request ids, access log and metrics of every call.

mod dispatch;
mod listener;
mod observe;
mod pushback;
mod tls;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tonic::service::Routes;
use tonic::service::interceptor::InterceptedService;
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;

pub use dispatch::BODY_TIMEOUT;
pub use listener::{FIRST_REQUEST_TIMEOUT, MAX_CONCURRENT_STREAMS};
pub use observe::REQUEST_ID;
pub use tls::{ServerTls, TlsError, TlsFiles};

use crate::auth::Verifier;
use crate::domain::PublicUrl;
use crate::gateway::{self, CorsOrigins, GatewayState, Readiness};
use crate::grpc::pb::event_service_server::EventServiceServer;
use crate::grpc::pb::room_service_server::RoomServiceServer;
use crate::grpc::pb::session_service_server::SessionServiceServer;
use crate::grpc::{
    AuthInterceptor, EventsGrpc, FILE_DESCRIPTOR_SET, OversizeAsResourceExhausted, RoomRoute,
    RoomsGrpc, SessionsGrpc,
};
use crate::ratelimit::{RateLimit, RateLimiter};
use crate::service::{
    Clock, DeliveryConfig, DeliveryWorker, EventService, RoomService, SessionConfig,
    SessionService, WebhookKeys,
};
use crate::store::{EventStore, Metered, SessionStore, Store};
use crate::telemetry::{AccessLogLevel, metrics};
use crate::webhook::{Sender, SenderConfig, SigningKey};

/// RoomService requests larger than this are refused with RESOURCE_EXHAUSTED,
/// as REST bodies over 64 KiB are refused with 413. A room's settings are at
/// most 16 KiB.
pub const MAX_REQUEST_BYTES: usize = 64 * 1024;
/// The services anyone may call without a token get far smaller limits: a
/// health check or a reflection request is a few hundred bytes.
const MAX_HEALTH_REQUEST_BYTES: usize = 1024;
const MAX_REFLECTION_REQUEST_BYTES: usize = 16 * 1024;

/// How often the health reporter asks the store whether it is reachable.
const HEALTH_PROBE_INTERVAL: Duration = Duration::from_millis(500);

/// Everything a server needs, built once at startup.
pub struct App {
    pub store: Arc<dyn Store>,
    pub verifier: Arc<Verifier>,
    pub public_url: PublicUrl,
    pub cors: CorsOrigins,
    pub limits: Limits,
    /// Sessions live in the same store as rooms.
    pub sessions: Arc<dyn SessionStore>,
    /// So do the event logs, written with the session changes.
    pub events: Arc<dyn EventStore>,
    pub session_config: SessionConfig,
    pub clock: Arc<dyn Clock>,
    /// Run the session sweeper (always, but for tests that count a call's
    /// own Redis commands).
    pub sweeper: bool,
    pub webhooks: WebhookSettings,
    /// After a shutdown signal, how long to report NOT_SERVING while still
    /// serving, before the listener closes (`--shutdown-delay`).
    pub shutdown_delay: Duration,
    /// `--tls-cert` and friends: when set, the port speaks TLS only. Shared
    /// with whoever reloads it (SIGHUP, in `run`).
    pub tls: Option<Arc<ServerTls>>,
    pub observability: Observability,
}

/// Where metrics are served and how calls are logged.
#[derive(Debug, Default)]
pub struct Observability {
    /// `--access-log-level`.
    pub access_log: AccessLogLevel,
    /// `--metrics-listen`: serve `/metrics` on this listener only. `None`:
    /// on the main port, beside the APIs.
    pub metrics_listener: Option<TcpListener>,
}

/// How webhooks are signed and delivered.
#[derive(Clone)]
pub struct WebhookSettings {
    /// `--webhook-signing-key`; `None`: one key made once and kept in the
    /// store.
    pub signing_key: Option<Arc<SigningKey>>,
    /// `--webhook-allow-private`.
    pub allow_private: bool,
    pub delivery: DeliveryConfig,
    /// Run the delivery worker (always, but for tests that count a call's
    /// own Redis commands).
    pub deliver: bool,
}

impl Default for WebhookSettings {
    fn default() -> WebhookSettings {
        WebhookSettings {
            signing_key: None,
            allow_private: false,
            delivery: DeliveryConfig::default(),
            deliver: true,
        }
    }
}

/// The default `--max-in-flight`. Admitted calls wait for one another on the
/// runtime's queue, so their latency grows with the bound (docs/overload.md):
/// 128 keeps admitted p99 near 10 ms at 5,000 callers on one core, and still
/// lets a Redis a millisecond away serve over 100,000 calls a second per
/// replica. Past 256 runnable tasks tokio's per-worker queue spills into its
/// shared queue, which a busy worker visits only every few dozen polls: at
/// 256, p99 was 65–71 ms.
pub const DEFAULT_MAX_IN_FLIGHT: u32 = 128;

/// Operator-set bounds on what one server takes on.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Limits {
    /// Calls (gRPC and REST) served at once; more are refused at once.
    pub max_in_flight: usize,
    /// Rooms one account may hold.
    pub max_rooms_per_account: u64,
    /// WatchEvents streams one account may have open on this server.
    pub max_watchers_per_account: usize,
    /// Calls one account may make on this server (`--rate-limit`); none
    /// by default.
    pub rate_limit: Option<RateLimit>,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_in_flight: DEFAULT_MAX_IN_FLIGHT as usize,
            max_rooms_per_account: 1_000_000,
            max_watchers_per_account: EventService::DEFAULT_MAX_WATCHERS_PER_ACCOUNT,
            rate_limit: None,
        }
    }
}

/// Serves until `shutdown` completes, then stops accepting connections and
/// returns once in-flight calls have finished.
pub async fn serve(
    listener: TcpListener,
    mut app: App,
    shutdown: impl Future<Output = ()> + Send,
) -> std::io::Result<()> {
    // Installed before anything is measured (once per process).
    metrics::handle();
    // Every operation of every caller (calls, sweeper, delivery worker,
    // health probe) is measured by one wrapper, whatever the backend.
    app.store = Arc::new(Metered::new(app.store));
    app.sessions = Arc::new(Metered::new(app.sessions));
    app.events = Arc::new(Metered::new(app.events));
    let sender = Sender::new(SenderConfig {
        allow_private: app.webhooks.allow_private,
        ..SenderConfig::default()
    })
    .map_err(|e| std::io::Error::other(format!("cannot set up webhook delivery: {e}")))?;
    let (health_reporter, health_service) = tonic_health::server::health_reporter();
    let readiness = Readiness::default();
    // Report before accepting connections, so a health check never meets an
    // unregistered service; then keep reporting for as long as this server
    // runs (the prober is aborted when `serve` returns).
    health_reporter
        .set_service_status(LIVENESS_SERVICE, ServingStatus::Serving)
        .await;
    let first = probe_once(app.store.as_ref(), &health_reporter, &readiness, None).await;
    let prober = tokio::spawn(probe_store(
        app.store.clone(),
        health_reporter.clone(),
        readiness.clone(),
        first,
    ));
    // On shutdown, readiness goes first: NOT_SERVING (and /readyz 503) for
    // `shutdown_delay` while calls are still taken, so that load balancers
    // stop sending before the listener closes.
    let shutdown = {
        let prober = prober.abort_handle();
        let readiness = readiness.clone();
        let delay = app.shutdown_delay;
        async move {
            shutdown.await;
            prober.abort();
            readiness.set(false);
            for service in HEALTH_SERVICES {
                health_reporter
                    .set_service_status(service, ServingStatus::NotServing)
                    .await;
            }
            if !delay.is_zero() {
                tracing::info!(
                    delay_ms = delay.as_millis() as u64,
                    "shutting down: reporting NOT_SERVING, still serving until the delay has passed"
                );
                tokio::time::sleep(delay).await;
            }
        }
    };

    // One rate limiter: an account's gRPC and REST calls share its bucket.
    let limiter = Arc::new(RateLimiter::new(app.limits.rate_limit));
    // One RoomService and one SessionService, handed to both transports.
    let sessions = SessionService::new(
        app.store.clone(),
        app.sessions.clone(),
        app.events.clone(),
        app.verifier.clone(),
        app.clock.clone(),
        app.session_config,
    );
    let rooms = RoomService::new(app.store.clone())
        .with_max_rooms_per_account(app.limits.max_rooms_per_account)
        .with_sessions(sessions.clone());
    let sweeper = app
        .sweeper
        .then(|| tokio::spawn(sweep_forever(sessions.clone())));
    let keys = match &app.webhooks.signing_key {
        Some(key) => WebhookKeys::configured(key.clone(), app.events.clone()),
        None => WebhookKeys::shared(app.events.clone()),
    };
    // Watch streams never end by themselves: they are told when the server
    // starts to stop, before it waits for calls in flight.
    let (stopping_tx, stopping) = tokio::sync::watch::channel(false);
    let metrics_here = app.observability.metrics_listener.is_none();
    let metrics_port = app
        .observability
        .metrics_listener
        .take()
        .map(|metrics_listener| {
            let mut stopping = stopping.clone();
            let stop = async move {
                // Err: the sender is gone, which also means stopping.
                let _ = stopping.wait_for(|stopping| *stopping).await;
            };
            // Plain HTTP: metrics are for the operator's network.
            tokio::spawn(listener::accept_loop(
                metrics_listener,
                None,
                observe::MetricsPort,
                stop,
            ))
        });
    let shutdown = async move {
        shutdown.await;
        let _ = stopping_tx.send(true);
    };
    let events = EventService::new(
        app.store.clone(),
        app.events.clone(),
        app.clock.clone(),
        keys.clone(),
    )
    .with_max_watchers_per_account(app.limits.max_watchers_per_account)
    .with_shutdown(stopping);
    let deliverer = if app.webhooks.deliver {
        let worker = DeliveryWorker::new(
            app.store.clone(),
            app.events.clone(),
            sender,
            keys,
            app.clock.clone(),
            app.webhooks.delivery,
        );
        Some(tokio::spawn(worker.run()))
    } else {
        None
    };
    let dispatch = dispatch::Dispatch {
        grpc: grpc_router(
            &app,
            &limiter,
            rooms.clone(),
            sessions.clone(),
            events.clone(),
            health_service,
        ),
        rest: gateway::router(
            GatewayState {
                rooms,
                sessions,
                events,
                verifier: app.verifier.clone(),
                limiter: limiter.clone(),
                public_url: app.public_url.clone(),
                readiness,
            },
            &app.cors,
        ),
        in_flight: Arc::new(Semaphore::new(app.limits.max_in_flight)),
        pushback: Arc::new(pushback::Pushback::new(tokio::time::Instant::now())),
        access_log: app.observability.access_log,
        metrics_here,
    };

    let result = listener::accept_loop(listener, app.tls.clone(), dispatch, shutdown).await;
    if let Some(metrics_port) = metrics_port {
        // Stopping was signalled before the main loop returned: the metrics
        // port closes its connections and ends too.
        match metrics_port.await {
            Ok(Ok(())) => {}
            Ok(Err(error)) => tracing::warn!(%error, "the metrics port failed"),
            Err(error) => tracing::warn!(%error, "the metrics port's task failed"),
        }
    }
    prober.abort();
    if let Some(sweeper) = sweeper {
        sweeper.abort();
    }
    if let Some(deliverer) = deliverer {
        // An attempt cut short is retried by whichever replica looks next:
        // nothing is recorded as delivered before the receiver's answer.
        deliverer.abort();
    }
    result
}

fn grpc_router(
    app: &App,
    limiter: &Arc<RateLimiter>,
    rooms: RoomService,
    sessions: SessionService,
    events: EventService,
    health_service: tonic_health::pb::health_server::HealthServer<
        impl tonic_health::pb::health_server::Health,
    >,
) -> Router {
    // The google.rpc types let grpcurl decode the BadRequest details of
    // INVALID_ARGUMENT errors.
    let descriptor_sets = [
        FILE_DESCRIPTOR_SET,
        tonic_health::pb::FILE_DESCRIPTOR_SET,
        tonic_types::pb::FILE_DESCRIPTOR_SET,
    ];
    let reflection = || {
        descriptor_sets.iter().fold(
            tonic_reflection::server::Builder::configure(),
            |builder, set| builder.register_encoded_file_descriptor_set(set),
        )
    };
    let reflection_v1 = reflection()
        .build_v1()
        .expect("the descriptor sets are built into the binary")
        .max_decoding_message_size(MAX_REFLECTION_REQUEST_BYTES);
    let reflection_v1alpha = reflection()
        .build_v1alpha()
        .expect("the descriptor sets are built into the binary")
        .max_decoding_message_size(MAX_REFLECTION_REQUEST_BYTES);
    let health_service = OversizeAsResourceExhausted::new(
        health_service.max_decoding_message_size(MAX_HEALTH_REQUEST_BYTES),
        MAX_HEALTH_REQUEST_BYTES,
    );
    let reflection_v1 =
        OversizeAsResourceExhausted::new(reflection_v1, MAX_REFLECTION_REQUEST_BYTES);
    let reflection_v1alpha =
        OversizeAsResourceExhausted::new(reflection_v1alpha, MAX_REFLECTION_REQUEST_BYTES);

    // Every management service (and route) sits behind the same token
    // check and request size limit.
    let auth = AuthInterceptor::new(app.verifier.clone(), limiter.clone());

    let rooms = Arc::new(RoomsGrpc::new(rooms, app.public_url.clone()));
    // GetRoom and CreateRoom have routes of their own (their replies are
    // encoded directly).
    let get_room = RoomRoute::get_room(rooms.clone(), MAX_REQUEST_BYTES);
    let create_room = RoomRoute::create_room(rooms.clone(), MAX_REQUEST_BYTES);
    let (get_room_path, create_room_path) = (get_room.path(), create_room.path());
    // Configure the server types before wrapping them: the interceptor
    // wrapper does not expose these settings.
    let rooms = RoomServiceServer::from_arc(rooms).max_decoding_message_size(MAX_REQUEST_BYTES);

    // SessionService: media-plane callers are service keys whose tokens
    // carry `crawler` (as `roomservice token` mints them); the service
    // itself checks `service = true`.
    let sessions = SessionsGrpc::new(sessions, app.public_url.clone());
    let sessions = SessionServiceServer::new(sessions).max_decoding_message_size(MAX_REQUEST_BYTES);

    // EventService: PublishRoomEvent's service-key rule is the service's.
    let events = EventServiceServer::new(EventsGrpc::new(events))
        .max_decoding_message_size(MAX_REQUEST_BYTES);

    Routes::new(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(guarded(rooms, &auth))
        .add_service(guarded(sessions, &auth))
        .add_service(guarded(events, &auth))
        .prepare()
        .into_axum_router()
        // A literal path wins over the services' `/{name}/{*rest}` routes.
        .route_service(get_room_path, guarded(get_room, &auth))
        .route_service(create_room_path, guarded(create_room, &auth))
}

/// A management service (or route) behind the token check and the request
/// size limit.
fn guarded<S>(
    service: S,
    auth: &AuthInterceptor,
) -> OversizeAsResourceExhausted<InterceptedService<S, AuthInterceptor>> {
    OversizeAsResourceExhausted::new(
        InterceptedService::new(service, auth.clone()),
        MAX_REQUEST_BYTES,
    )
}

/// How often the sweeper looks for sessions past their deadline. Reads are
/// right in between (an overdue session reads as ended at its deadline);
/// the sweep makes the close durable.
const SWEEP_INTERVAL: Duration = Duration::from_millis(250);

/// Closes due sessions for as long as the server runs. Every replica sweeps;
/// each close is a version-checked write, so exactly one replica stores it.
async fn sweep_forever(sessions: SessionService) {
    let mut failing = false;
    let mut backlog = false;
    loop {
        // A full batch means more may be due: sweep again at once.
        if !backlog {
            tokio::time::sleep(SWEEP_INTERVAL).await;
        }
        backlog = false;
        match sessions.sweep().await {
            Ok(report) => {
                if failing {
                    tracing::info!("sweeping sessions again");
                    failing = false;
                }
                backlog = report.examined >= SessionService::SWEEP_BATCH;
                if report.closed > 0 {
                    tracing::debug!(closed = report.closed, examined = report.examined, "swept");
                }
            }
            Err(error) => {
                if !failing {
                    tracing::warn!(%error, "cannot sweep sessions; retrying");
                    failing = true;
                }
            }
        }
    }
}

/// The services whose health follows the store's.
const HEALTH_SERVICES: [&str; 4] = [
    "",
    "rooms.v1.RoomService",
    "rooms.v1.SessionService",
    "rooms.v1.EventService",
];

/// A health service that is SERVING for as long as the process serves at
/// all, whatever the store: what a liveness probe should ask, so that an
/// outage of Redis does not make an orchestrator restart every replica.
pub const LIVENESS_SERVICE: &str = "liveness";

/// Keeps `grpc.health.v1` and `/readyz` in step with the store: not serving
/// while it cannot be reached, serving again as soon as it can.
async fn probe_store(
    store: Arc<dyn Store>,
    reporter: HealthReporter,
    readiness: Readiness,
    mut last: ServingStatus,
) {
    loop {
        tokio::time::sleep(HEALTH_PROBE_INTERVAL).await;
        last = probe_once(store.as_ref(), &reporter, &readiness, Some(last)).await;
    }
}

/// Pings the store once and reports the result if it changed from `last`
/// (`None`: nothing reported yet).
async fn probe_once(
    store: &dyn Store,
    reporter: &HealthReporter,
    readiness: &Readiness,
    last: Option<ServingStatus>,
) -> ServingStatus {
    let probe = store.ping().await;
    let status = match &probe {
        Ok(()) => ServingStatus::Serving,
        Err(_) => ServingStatus::NotServing,
    };
    readiness.set(status == ServingStatus::Serving);
    metrics::store_up(status == ServingStatus::Serving);
    if last == Some(status) {
        return status;
    }
    match (&probe, last) {
        (Err(e), None) => {
            tracing::info!(error = %e, "store cannot serve yet: reporting NOT_SERVING")
        }
        (Err(e), Some(_)) => {
            tracing::warn!(error = %e, "store cannot serve: reporting NOT_SERVING")
        }
        (Ok(()), Some(_)) => tracing::info!("store serving again: reporting SERVING"),
        (Ok(()), None) => {}
    }
    for service in HEALTH_SERVICES {
        reporter.set_service_status(service, status).await;
    }
    status
}
