use std::sync::Arc;

use tonic::service::Interceptor;
use tonic::{Request, Status};

use super::to_status;
use crate::auth::{AuthError, Verifier};
use crate::ratelimit::{RateLimiter, admit};
use crate::service::Error;

/// Verifies the `authorization` metadata of every call to a management
/// service and hands the verified [`crate::auth::Caller`] to the handler as a
/// request extension. Refusals are logged with their reason (never the token).
/// Then takes the call from the account's rate-limit bucket.
#[derive(Clone)]
pub struct AuthInterceptor {
    verifier: Arc<Verifier>,
    limiter: Arc<RateLimiter>,
}

impl AuthInterceptor {
    pub fn new(verifier: Arc<Verifier>, limiter: Arc<RateLimiter>) -> AuthInterceptor {
        AuthInterceptor { verifier, limiter }
    }
}

impl Interceptor for AuthInterceptor {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        let header = match request.metadata().get("authorization") {
            None => None,
            Some(value) => Some(value.to_str().map_err(|_| {
                to_status(Error::Auth(AuthError::Unauthenticated(
                    "authorization metadata is not ASCII".into(),
                )))
            })?),
        };
        match self.verifier.verify_management(header) {
            Ok(caller) => {
                // The rest of the call's log lines, and its access line, name
                // the account.
                tracing::Span::current()
                    .record("account", tracing::field::display(&caller.account.user_id));
                admit(&self.limiter, &caller.account.user_id).map_err(to_status)?;
                request.extensions_mut().insert(caller);
                Ok(request)
            }
            Err(refusal) => {
                tracing::info!(reason = %refusal, "call refused");
                Err(to_status(Error::Auth(refusal)))
            }
        }
    }
}
