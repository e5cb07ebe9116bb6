//! One listener for everything: gRPC (RoomService behind the auth
//! interceptor, health, reflection v1 and v1alpha since grpcurl 1.8 speaks
//! only v1alpha) and the REST gateway, over HTTP/1.1 and HTTP/2 on one port.
//!
//! The accept loop is our own, over hyper-util's auto (HTTP/1.1 + HTTP/2)
//! connection builder, rather than tonic's `Server` or `axum::serve`: neither
//! sets `TCP_NODELAY` on sockets it did not accept itself, and neither exposes
//! the per-connection settings a public listener needs.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use http::{Request, Response};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tonic::service::Routes;
use tonic::service::interceptor::InterceptedService;
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;
use tower::ServiceExt;

use crate::auth::Verifier;
use crate::domain::PublicUrl;
use crate::gateway::{self, CorsOrigins, GatewayState, Readiness};
use crate::grpc::pb::room_service_server::RoomServiceServer;
use crate::grpc::{AuthInterceptor, FILE_DESCRIPTOR_SET, OversizeAsResourceExhausted, RoomsGrpc};
use crate::service::RoomService;
use crate::store::Store;

/// gRPC requests larger than this are refused with RESOURCE_EXHAUSTED. A room
/// is a few KiB at most (free-form settings are capped at 8 KiB each).
pub const MAX_REQUEST_BYTES: usize = 256 * 1024;

/// How often the health reporter asks the store whether it is reachable.
const HEALTH_PROBE_INTERVAL: Duration = Duration::from_millis(500);

/// After a failed `accept` (out of file descriptors, say), wait this long
/// before the next: retrying at once would spin a core and starve the
/// connections that are being served.
const ACCEPT_ERROR_BACKOFF: Duration = Duration::from_millis(100);

/// Everything a server needs, built once at startup.
pub struct App {
    pub store: Arc<dyn Store>,
    pub verifier: Arc<Verifier>,
    pub public_url: PublicUrl,
    pub cors: CorsOrigins,
    pub limits: Limits,
}

/// Operator-set bounds on what one server takes on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Calls (gRPC and REST) served at once; more are refused at once.
    pub max_in_flight: usize,
    /// Rooms one account may hold.
    pub max_rooms_per_account: u64,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_in_flight: 1024,
            max_rooms_per_account: 1_000_000,
        }
    }
}

/// Serves until `shutdown` completes, then stops accepting connections and
/// returns once in-flight calls have finished.
pub async fn serve(
    listener: TcpListener,
    app: App,
    shutdown: impl Future<Output = ()> + Send,
) -> std::io::Result<()> {
    let (health_reporter, health_service) = tonic_health::server::health_reporter();
    let readiness = Readiness::default();
    // Report before accepting connections, so a health check never meets an
    // unregistered service; then keep reporting for as long as this server
    // runs (the prober is aborted when `serve` returns).
    let first = probe_once(app.store.as_ref(), &health_reporter, &readiness, None).await;
    let prober = tokio::spawn(probe_store(
        app.store.clone(),
        health_reporter,
        readiness.clone(),
        first,
    ));

    // The composition root: one RoomService, handed to both transports.
    let rooms = RoomService::new(app.store.clone())
        .with_max_rooms_per_account(app.limits.max_rooms_per_account);
    let grpc = grpc_router(&app, rooms.clone(), health_service);
    let rest = gateway::router(
        GatewayState {
            rooms,
            verifier: app.verifier.clone(),
            public_url: app.public_url.clone(),
            readiness,
        },
        &app.cors,
    );
    let service = tower::service_fn(move |request: Request<Incoming>| {
        let target = if is_grpc(&request) {
            grpc.clone()
        } else {
            rest.clone()
        };
        async move { target.oneshot(request).await }
    });

    let result = accept_loop(listener, service, shutdown).await;
    prober.abort();
    result
}

/// gRPC requests are HTTP/2 with `content-type: application/grpc[+proto]`;
/// everything else is the REST gateway's.
fn is_grpc<B>(request: &Request<B>) -> bool {
    request.version() == http::Version::HTTP_2
        && request
            .headers()
            .get(http::header::CONTENT_TYPE)
            .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"))
}

fn grpc_router(
    app: &App,
    rooms: RoomService,
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
        .expect("the descriptor sets are built into the binary");
    let reflection_v1alpha = reflection()
        .build_v1alpha()
        .expect("the descriptor sets are built into the binary");

    let rooms = RoomsGrpc::new(rooms, app.public_url.clone());
    // Configure the server type before wrapping it: the interceptor wrapper
    // does not expose these settings.
    let rooms = RoomServiceServer::new(rooms).max_decoding_message_size(MAX_REQUEST_BYTES);
    let rooms = InterceptedService::new(rooms, AuthInterceptor::new(app.verifier.clone()));
    let rooms = OversizeAsResourceExhausted(rooms);

    Routes::new(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(rooms)
        .prepare()
        .into_axum_router()
}

/// Accepts connections until `shutdown` completes, serving each on its own
/// task; then closes the listener and waits for open connections to finish
/// their in-flight requests (HTTP/2 gets GOAWAY, idle HTTP/1.1 connections
/// close at once).
async fn accept_loop<S, F>(
    listener: TcpListener,
    service: S,
    shutdown: impl Future<Output = ()> + Send,
) -> std::io::Result<()>
where
    S: tower::Service<
            Request<Incoming>,
            Response = Response<axum::body::Body>,
            Error = Infallible,
            Future = F,
        > + Clone
        + Send
        + 'static,
    F: Future<Output = Result<Response<axum::body::Body>, Infallible>> + Send + 'static,
{
    let builder = auto::Builder::new(TokioExecutor::new());
    let graceful = GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    tracing::warn!(%error, "accept failed; pausing before the next");
                    tokio::time::sleep(ACCEPT_ERROR_BACKOFF).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        // Responses are written whole; Nagle's algorithm would hold back the
        // tail of every response over one segment for the peer's delayed ACK
        // (~40 ms per call).
        if let Err(error) = stream.set_nodelay(true) {
            tracing::debug!(%error, %peer, "cannot set TCP_NODELAY");
        }
        let connection = builder
            .serve_connection(
                TokioIo::new(stream),
                TowerToHyperService::new(service.clone()),
            )
            .into_owned();
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::debug!(%error, %peer, "connection ended with an error");
            }
        });
    }
    drop(listener);
    graceful.shutdown().await;
    Ok(())
}

/// The services whose health follows the store's.
const HEALTH_SERVICES: [&str; 2] = ["", "rooms.v1.RoomService"];

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
    if last == Some(status) {
        return status;
    }
    match (&probe, last) {
        (Err(e), None) => {
            tracing::info!(error = %e, "store not reachable yet: reporting NOT_SERVING")
        }
        (Err(e), Some(_)) => tracing::warn!(error = %e, "store unreachable: reporting NOT_SERVING"),
        (Ok(()), Some(_)) => tracing::info!("store reachable: reporting SERVING"),
        (Ok(()), None) => {}
    }
    for service in HEALTH_SERVICES {
        reporter.set_service_status(service, status).await;
    }
    status
}
