//! The VideoSDK v2 REST gateway: axum routes that read VideoSDK's JSON shapes,
//! call the same service methods as gRPC behind the same token verification,
//! and answer in VideoSDK's shapes. It holds no business rule.

mod error;
mod extract;
mod json;
mod rooms;
mod sessions;
mod webhooks;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::extract::{Request, State};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use http::{HeaderValue, Method, StatusCode, header};
use tower_http::cors::{AllowOrigin, CorsLayer};

pub use error::{ApiError, MAX_BODY_BYTES};

use crate::auth::Verifier;
use crate::domain::PublicUrl;
use crate::service::{EventService, RoomService, SessionService};

/// The OpenAPI 3.1 document of this gateway, served at `/openapi.json`.
pub const OPENAPI_JSON: &str = include_str!("../../docs/openapi.json");

/// Every route the gateway serves, as (method, path template). The router is
/// built from handlers one by one, so a test checks this list against both
/// the live router and the OpenAPI document.
pub const ROUTES: [(&str, &str); 20] = [
    ("POST", "/v2/rooms"),
    ("GET", "/v2/rooms"),
    ("GET", "/v2/rooms/{roomId}"),
    ("POST", "/v2/rooms/{roomId}"),
    ("GET", "/v2/rooms/validate/{roomId}"),
    ("POST", "/v2/rooms/deactivate"),
    // The official npm SDK calls the first, VideoSDK's docs show the second.
    ("GET", "/v2/sessions"),
    ("GET", "/v2/sessions/"),
    ("GET", "/v2/sessions/{sessionId}"),
    ("GET", "/v2/sessions/{sessionId}/participants"),
    ("GET", "/v2/sessions/{sessionId}/participants/active"),
    ("POST", "/v2/sessions/end"),
    ("POST", "/v2/sessions/participants/remove"),
    ("GET", "/v2/public/rsa-public-key"),
    ("GET", "/v2/webhooks/deliveries"),
    ("GET", "/v2/webhooks/dead-letters"),
    ("POST", "/v2/webhooks/dead-letters/{eventId}/replay"),
    ("GET", "/healthz"),
    ("GET", "/readyz"),
    ("GET", "/openapi.json"),
];

/// Whether the store answered its last health probe; shared with the prober.
#[derive(Clone, Debug, Default)]
pub struct Readiness(Arc<AtomicBool>);

impl Readiness {
    pub fn set(&self, ready: bool) {
        self.0.store(ready, Ordering::Relaxed);
    }

    pub fn is_ready(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}

/// Which browser origins may call the REST API.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum CorsOrigins {
    /// No CORS headers at all: browsers keep pages of other origins out.
    #[default]
    None,
    /// `*`: any origin (tokens travel in a header, never in cookies).
    Any,
    /// Exactly these origins, e.g. `https://app.example.com`.
    List(Vec<HeaderValue>),
}

impl CorsOrigins {
    /// `*`, or a comma-separated list of `scheme://host[:port]` origins.
    pub fn parse(raw: &str) -> Result<CorsOrigins, String> {
        let raw = raw.trim();
        if raw.is_empty() {
            return Ok(CorsOrigins::None);
        }
        if raw == "*" {
            return Ok(CorsOrigins::Any);
        }
        raw.split(',')
            .map(str::trim)
            .map(|origin| {
                let url = url::Url::parse(origin)
                    .map_err(|e| format!("{origin:?} is not an origin: {e}"))?;
                let serialized = url.origin().ascii_serialization();
                if !matches!(url.scheme(), "http" | "https")
                    || serialized != origin.trim_end_matches('/')
                {
                    return Err(format!(
                        "{origin:?} is not an origin: use scheme://host[:port], e.g. https://app.example.com"
                    ));
                }
                HeaderValue::from_str(&serialized).map_err(|e| format!("{origin:?}: {e}"))
            })
            .collect::<Result<Vec<_>, _>>()
            .map(CorsOrigins::List)
    }

    fn layer(&self) -> Option<CorsLayer> {
        let allow_origin = match self {
            CorsOrigins::None => return None,
            CorsOrigins::Any => AllowOrigin::any(),
            CorsOrigins::List(origins) => AllowOrigin::list(origins.clone()),
        };
        Some(
            CorsLayer::new()
                .allow_origin(allow_origin)
                .allow_methods([Method::GET, Method::POST])
                .allow_headers([header::AUTHORIZATION, header::CONTENT_TYPE])
                .max_age(std::time::Duration::from_secs(3600)),
        )
    }
}

/// What the handlers share; cloned per request (all fields are cheap handles).
#[derive(Clone)]
pub struct GatewayState {
    pub rooms: RoomService,
    pub sessions: SessionService,
    pub events: EventService,
    pub verifier: Arc<Verifier>,
    pub limiter: Arc<crate::ratelimit::RateLimiter>,
    pub public_url: PublicUrl,
    pub readiness: Readiness,
}

pub fn router(state: GatewayState, cors: &CorsOrigins) -> Router {
    let router = Router::new()
        .route("/v2/rooms", post(rooms::create).get(rooms::list))
        .route(
            "/v2/rooms/{roomId}",
            get(rooms::fetch).post(rooms::update_status),
        )
        .route("/v2/rooms/validate/{roomId}", get(rooms::validate))
        .route("/v2/rooms/deactivate", post(rooms::deactivate))
        .route("/v2/sessions", get(sessions::list))
        .route("/v2/sessions/", get(sessions::list))
        .route("/v2/sessions/{sessionId}", get(sessions::fetch))
        .route(
            "/v2/sessions/{sessionId}/participants",
            get(sessions::participants),
        )
        .route(
            "/v2/sessions/{sessionId}/participants/active",
            get(sessions::active_participants),
        )
        .route("/v2/sessions/end", post(sessions::end))
        .route(
            "/v2/sessions/participants/remove",
            post(sessions::remove_participant),
        )
        .route("/v2/public/rsa-public-key", get(webhooks::public_key))
        .route("/v2/webhooks/deliveries", get(webhooks::deliveries))
        .route("/v2/webhooks/dead-letters", get(webhooks::dead_letters))
        .route(
            "/v2/webhooks/dead-letters/{eventId}/replay",
            post(webhooks::replay),
        )
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/openapi.json", get(openapi))
        .fallback(route_not_found)
        .with_state(state);
    // Outside the routes: axum adds `Allow` to a 405 after the routes' own
    // layers have run, so only a layer around the whole router sees it.
    let router = Router::new()
        .fallback_service(router)
        .layer(middleware::from_fn(json_method_not_allowed));
    match cors.layer() {
        Some(cors) => router.layer(cors),
        None => router,
    }
}

/// Process liveness: answers as long as the server does.
async fn healthz() -> Json<serde_json::Value> {
    Json(serde_json::json!({"status": "ok"}))
}

/// Readiness: the store answered its last probe (every 500 ms).
async fn readyz(State(state): State<GatewayState>) -> Response {
    if state.readiness.is_ready() {
        Json(serde_json::json!({"status": "ready"})).into_response()
    } else {
        ApiError::not_ready().into_response()
    }
}

async fn openapi() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], OPENAPI_JSON).into_response()
}

async fn route_not_found(method: Method, uri: http::Uri) -> ApiError {
    ApiError::route_not_found(&method, uri.path())
}

/// axum answers a known path with an unknown method by an empty 405 with
/// `Allow`; give it the JSON error body every other refusal has.
async fn json_method_not_allowed(request: Request, next: Next) -> Response {
    let method = request.method().clone();
    let response = next.run(request).await;
    if response.status() != StatusCode::METHOD_NOT_ALLOWED {
        return response;
    }
    let allow = response.headers().get(header::ALLOW).cloned();
    ApiError::method_not_allowed(&method, allow).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cors_origins() {
        assert_eq!(CorsOrigins::parse("").unwrap(), CorsOrigins::None);
        assert_eq!(CorsOrigins::parse("*").unwrap(), CorsOrigins::Any);
        let CorsOrigins::List(list) =
            CorsOrigins::parse("https://app.example.com, http://localhost:3000").unwrap()
        else {
            panic!("a list");
        };
        assert_eq!(list.len(), 2);
        assert!(CorsOrigins::parse("app.example.com").is_err());
        assert!(CorsOrigins::parse("https://app.example.com/path").is_err());
        assert!(CorsOrigins::parse("ftp://files.example.com").is_err());
    }
}
