//! The one place a failure becomes an HTTP response:
//! `{"statusCode": .., "error": "<message>", "code": "<stable_code>"}`.
//! Statuses come from [`ErrorCode::http_status`], except the contract's
//! special cases, which are all here too.

use axum::Json;
use axum::response::{IntoResponse, Response};
use http::{HeaderValue, StatusCode, header};
use serde::Serialize;

use crate::domain::FieldViolation;
use crate::error::{ErrorCode, PublicError};
use crate::service::{Error, MAX_REPORTED_VIOLATIONS};

/// An error answer of the gateway.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
    fields: Vec<FieldViolation>,
    allow: Option<HeaderValue>,
    /// Seconds for `Retry-After`, on refusals a client should simply repeat.
    retry_after: Option<u32>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Body<'a> {
    status_code: u16,
    error: &'a str,
    code: &'a str,
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    fields: &'a [FieldJson<'a>],
}

#[derive(Serialize)]
struct FieldJson<'a> {
    field: &'a str,
    description: &'a str,
}

/// The largest request body the gateway reads. A room is a few KiB at most.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

impl ApiError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code,
            message: message.into(),
            fields: Vec::new(),
            allow: None,
            retry_after: None,
        }
    }

    /// A service error. Server-side failures are logged here with their
    /// internal cause; the caller only ever gets the public message.
    pub fn from_service(err: Error) -> ApiError {
        let code = err.code();
        if code.is_server_side() {
            tracing::error!(error = %err, code = code.as_str(), "request failed");
        }
        let (status, name) = match &err {
            // VideoSDK answers 402 to a deactivate by customRoomId.
            Error::RoomIdRequired { .. } => (StatusCode::PAYMENT_REQUIRED, "room_id_required"),
            _ => (status_of(code), code.as_str()),
        };
        let mut api = ApiError::new(status, name, err.public_message());
        match err {
            Error::InvalidArgument(violations) => {
                api.fields = violations
                    .into_iter()
                    .take(MAX_REPORTED_VIOLATIONS)
                    .collect();
            }
            Error::RoomIdRequired { field, .. } => {
                api.fields = vec![FieldViolation::new(field, Error::ROOM_ID_RULE)];
            }
            Error::RateLimited { retry_after, .. } => {
                api.retry_after = Some(retry_after_seconds(retry_after));
            }
            _ => {}
        }
        api
    }

    /// `GET /v2/rooms/validate/{roomId}`: VideoSDK answers an unknown room with
    /// 400 "Room not found", so that is what its clients check for.
    pub fn from_validate(err: Error) -> ApiError {
        match err {
            Error::NotFound { .. } => ApiError::new(
                StatusCode::BAD_REQUEST,
                ErrorCode::NotFound.as_str(),
                "Room not found",
            ),
            other => ApiError::from_service(other),
        }
    }

    /// A request the gateway could not read: `field` is the JSON path or
    /// parameter at fault (`body` when the body as a whole is wrong).
    pub fn invalid(field: impl Into<String>, description: impl Into<String>) -> ApiError {
        ApiError::from_service(Error::invalid(field, description))
    }

    pub fn route_not_found(method: &http::Method, path: &str) -> ApiError {
        let path = crate::domain::excerpt(path);
        ApiError::new(
            StatusCode::NOT_FOUND,
            ErrorCode::NotFound.as_str(),
            format!("no route for {method} {path}"),
        )
    }

    pub fn method_not_allowed(method: &http::Method, allow: Option<HeaderValue>) -> ApiError {
        let allowed = allow
            .as_ref()
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        let mut api = ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            format!("method {method} is not allowed here; allowed: {allowed}"),
        );
        api.allow = allow;
        api
    }

    pub fn payload_too_large() -> ApiError {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!("request body is larger than {MAX_BODY_BYTES} bytes"),
        )
    }

    /// The server is at its bound on calls in flight: 503, retry after
    /// `wait` (whole seconds, rounded up).
    pub fn overloaded(wait: std::time::Duration) -> ApiError {
        let mut api = ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            ErrorCode::ResourceExhausted.as_str(),
            "server overloaded: too many calls in flight, retry shortly",
        );
        api.retry_after = Some(retry_after_seconds(wait));
        api
    }

    /// The body did not arrive within the server's deadline.
    pub fn body_timeout() -> ApiError {
        ApiError::new(
            StatusCode::REQUEST_TIMEOUT,
            "request_timeout",
            "request body not received in time",
        )
    }

    /// 503 from `/readyz`.
    pub fn not_ready() -> ApiError {
        ApiError::new(
            status_of(ErrorCode::Unavailable),
            ErrorCode::Unavailable.as_str(),
            crate::error::generic_message(ErrorCode::Unavailable),
        )
    }
}

fn status_of(code: ErrorCode) -> StatusCode {
    StatusCode::from_u16(code.http_status()).expect("the table holds valid statuses")
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let fields: Vec<FieldJson> = self
            .fields
            .iter()
            .map(|v| FieldJson {
                field: &v.field,
                description: &v.description,
            })
            .collect();
        let body = Body {
            status_code: self.status.as_u16(),
            error: &self.message,
            code: self.code,
            fields: &fields,
        };
        let mut response = (self.status, Json(body)).into_response();
        if let Some(allow) = self.allow {
            response.headers_mut().insert(header::ALLOW, allow);
        }
        if let Some(seconds) = self.retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        response
    }
}

impl From<Error> for ApiError {
    fn from(err: Error) -> ApiError {
        ApiError::from_service(err)
    }
}

/// Whole seconds, rounded up and at least one: `Retry-After` takes no
/// fractions, and 0 would invite an immediate retry.
fn retry_after_seconds(wait: std::time::Duration) -> u32 {
    let seconds = wait.as_millis().div_ceil(1000).max(1);
    u32::try_from(seconds).unwrap_or(u32::MAX)
}
