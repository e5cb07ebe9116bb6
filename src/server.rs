//! One listener serving the gRPC services: RoomService behind the auth
//! interceptor, plus health and reflection (v1 and v1alpha, since grpcurl 1.8
//! speaks only v1alpha) which need no token.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Server;
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;

use crate::auth::Verifier;
use crate::domain::PublicUrl;
use crate::grpc::pb::room_service_server::RoomServiceServer;
use crate::grpc::{AuthInterceptor, FILE_DESCRIPTOR_SET, OversizeAsResourceExhausted, RoomsGrpc};
use crate::service::RoomService;
use crate::store::Store;

/// Requests larger than this are refused with RESOURCE_EXHAUSTED. A room is a
/// few KiB at most (free-form settings are capped at 8 KiB each).
pub const MAX_REQUEST_BYTES: usize = 256 * 1024;

/// How often the health reporter asks the store whether it is reachable.
const HEALTH_PROBE_INTERVAL: Duration = Duration::from_millis(500);

/// Everything a server needs, built once at startup.
pub struct App {
    pub store: Arc<dyn Store>,
    pub verifier: Arc<Verifier>,
    pub public_url: PublicUrl,
}

/// Serves until `shutdown` completes, then stops accepting connections and
/// returns once in-flight calls have finished.
pub async fn serve(
    listener: TcpListener,
    app: App,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), tonic::transport::Error> {
    let (health_reporter, health_service) = tonic_health::server::health_reporter();
    // Report before accepting connections, so a health check never meets an
    // unregistered service; then keep reporting for as long as this server
    // runs (the prober is aborted when `serve` returns).
    let first = probe_once(app.store.as_ref(), &health_reporter, None).await;
    let prober = tokio::spawn(probe_store(app.store.clone(), health_reporter, first));

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

    let rooms = RoomsGrpc::new(RoomService::new(app.store.clone()), app.public_url.clone());
    // Configure the server type before wrapping it: the interceptor wrapper
    // does not expose these settings.
    let rooms = RoomServiceServer::new(rooms).max_decoding_message_size(MAX_REQUEST_BYTES);
    let rooms = InterceptedService::new(rooms, AuthInterceptor::new(app.verifier.clone()));
    let rooms = OversizeAsResourceExhausted(rooms);

    let result = Server::builder()
        .add_service(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(rooms)
        .serve_with_incoming_shutdown(TcpListenerStream::new(listener), shutdown)
        .await;
    prober.abort();
    result
}

/// The services whose health follows the store's.
const HEALTH_SERVICES: [&str; 2] = ["", "rooms.v1.RoomService"];

/// Keeps `grpc.health.v1` in step with the store: NOT_SERVING while it cannot
/// be reached, SERVING again as soon as it can.
async fn probe_store(store: Arc<dyn Store>, reporter: HealthReporter, mut last: ServingStatus) {
    loop {
        tokio::time::sleep(HEALTH_PROBE_INTERVAL).await;
        last = probe_once(store.as_ref(), &reporter, Some(last)).await;
    }
}

/// Pings the store once and reports the result if it changed from `last`
/// (`None`: nothing reported yet).
async fn probe_once(
    store: &dyn Store,
    reporter: &HealthReporter,
    last: Option<ServingStatus>,
) -> ServingStatus {
    let probe = store.ping().await;
    let status = match &probe {
        Ok(()) => ServingStatus::Serving,
        Err(_) => ServingStatus::NotServing,
    };
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
