//! Extractors that turn a request into domain input, answering every
//! refusal in the gateway's JSON error shape.

use axum::extract::{FromRequest, FromRequestParts, Path, Request};
use http::request::Parts;
use http_body_util::{BodyExt, LengthLimitError, Limited};
use serde::de::DeserializeOwned;
use std::sync::Arc;

use super::GatewayState;
use super::error::{ApiError, MAX_BODY_BYTES};
use crate::auth::{AuthError, Caller};
use crate::service::Error;

/// The verified caller, from the `Authorization` header (raw JWT or
/// `Bearer <jwt>`), checked by the same [`crate::auth::Verifier`] as gRPC.
pub struct ApiCaller(pub Arc<Caller>);

impl FromRequestParts<GatewayState> for ApiCaller {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &GatewayState,
    ) -> Result<ApiCaller, ApiError> {
        let header = match parts.headers.get(http::header::AUTHORIZATION) {
            None => None,
            Some(value) => Some(value.to_str().map_err(|_| {
                Error::Auth(AuthError::Unauthenticated(
                    "authorization header is not ASCII".into(),
                ))
            })?),
        };
        match state.verifier.verify_management(header) {
            Ok(caller) => {
                // The rest of the request's log lines, and its access line,
                // name the account.
                tracing::Span::current()
                    .record("account", tracing::field::display(&caller.account.user_id));
                crate::ratelimit::admit(&state.limiter, &caller.account.user_id)?;
                Ok(ApiCaller(caller))
            }
            Err(refusal) => {
                tracing::info!(reason = %refusal, "request refused");
                Err(Error::Auth(refusal).into())
            }
        }
    }
}

/// The `{roomId}` path segment, percent-decoded.
pub struct RoomPath(pub String);

impl<S: Send + Sync> FromRequestParts<S> for RoomPath {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<RoomPath, ApiError> {
        match Path::<String>::from_request_parts(parts, state).await {
            Ok(Path(room)) => Ok(RoomPath(room)),
            Err(rejection) => Err(ApiError::invalid("roomId", rejection.body_text())),
        }
    }
}

/// The `{sessionId}` path segment, percent-decoded.
pub struct SessionPath(pub String);

impl<S: Send + Sync> FromRequestParts<S> for SessionPath {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<SessionPath, ApiError> {
        match Path::<String>::from_request_parts(parts, state).await {
            Ok(Path(session)) => Ok(SessionPath(session)),
            Err(rejection) => Err(ApiError::invalid("sessionId", rejection.body_text())),
        }
    }
}

/// A JSON body, read leniently: VideoSDK clients send `POST /v2/rooms` with no
/// body, an empty body, and with or without `Content-Type`, so the header is
/// not checked and an empty body means `{}`. At most [`MAX_BODY_BYTES`]
/// (413 beyond). A field of the wrong type is a 400 naming its JSON path.
pub struct JsonBody<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Default> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, _state: &S) -> Result<JsonBody<T>, ApiError> {
        let declared = request
            .headers()
            .get(http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|n| n > MAX_BODY_BYTES as u64) {
            return Err(ApiError::payload_too_large());
        }
        let bytes = match Limited::new(request.into_body(), MAX_BODY_BYTES)
            .collect()
            .await
        {
            Ok(collected) => collected.to_bytes(),
            Err(e) if e.is::<LengthLimitError>() => return Err(ApiError::payload_too_large()),
            Err(_) => return Err(ApiError::invalid("body", "could not read the request body")),
        };
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(JsonBody(T::default()));
        }
        // serde's derived structs also read JSON arrays; a body is an object.
        if bytes.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
            return Err(ApiError::invalid("body", "must be a JSON object"));
        }
        let mut deserializer = serde_json::Deserializer::from_slice(&bytes);
        let value: T = serde_path_to_error::deserialize(&mut deserializer).map_err(|e| {
            // A field is at fault only when its value has the wrong type or
            // range; broken syntax is the body's, wherever the parser stopped.
            let path = e.path().to_string();
            let field = match e.inner().classify() {
                serde_json::error::Category::Data if path != "." => path,
                _ => "body".to_owned(),
            };
            ApiError::invalid(field, json_problem(e.inner()))
        })?;
        // Trailing garbage after the document is malformed JSON too.
        deserializer
            .end()
            .map_err(|e| ApiError::invalid("body", json_problem(&e)))?;
        Ok(JsonBody(value))
    }
}

/// serde_json's message without its position suffix when the path already
/// says where, e.g. "invalid type: integer `5`, expected a string".
fn json_problem(error: &serde_json::Error) -> String {
    let text = error.to_string();
    match error.classify() {
        serde_json::error::Category::Data => match text.rfind(" at line ") {
            Some(at) => text[..at].to_owned(),
            None => text,
        },
        _ => format!("malformed JSON: {text}"),
    }
}
