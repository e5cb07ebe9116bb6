//! Who is calling: API keys and accounts ([`keys`]), token verification
//! ([`Verifier`]) and the verified [`Caller`] that handlers receive.
//!
//! Verification happens once per request, in the transport's auth layer; the
//! service layer only sees a [`Caller`] and asks it what it may do.

mod accepted;
pub mod claims;
pub mod keys;
mod verifier;

use std::sync::Arc;

pub use claims::{Claims, Permission, Role};
pub use keys::{Account, Keyring};
pub use verifier::Verifier;

use crate::error::{ErrorCode, PublicError};

/// Why a request was refused. Messages name the rule that failed and never
/// contain a secret or a whole token.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// No usable identity: missing, malformed or expired token, or claims
    /// that break a rule. The message is ours and safe to show.
    #[error("unauthenticated: {0}")]
    Unauthenticated(String),
    /// The token names an API key we do not know, or its signature does not
    /// match that key's secret. Callers get one message for both, so that API
    /// keys cannot be enumerated; `cause` says which it was, for the log.
    #[error("unauthenticated: {cause}")]
    BadCredentials { cause: String },
    /// A token the JWT library refused for a reason we do not name: the
    /// library's own text is for the log only.
    #[error("unauthenticated: invalid token ({cause})")]
    InvalidToken { cause: String },
    /// A valid identity without the right to do this.
    #[error("permission denied: {0}")]
    PermissionDenied(String),
}

impl AuthError {
    /// What a caller sees for [`AuthError::BadCredentials`], whichever of the
    /// two it was.
    pub const BAD_CREDENTIALS_MESSAGE: &'static str = concat!(
        "unauthenticated: unknown api key, ",
        "or the token signature does not match the api key's secret"
    );
}

impl PublicError for AuthError {
    fn code(&self) -> ErrorCode {
        match self {
            AuthError::Unauthenticated(_)
            | AuthError::BadCredentials { .. }
            | AuthError::InvalidToken { .. } => ErrorCode::Unauthenticated,
            AuthError::PermissionDenied(_) => ErrorCode::PermissionDenied,
        }
    }

    fn public_message(&self) -> String {
        match self {
            AuthError::BadCredentials { .. } => AuthError::BAD_CREDENTIALS_MESSAGE.to_owned(),
            AuthError::InvalidToken { .. } => "unauthenticated: invalid token".to_owned(),
            other => other.to_string(),
        }
    }
}

/// A verified caller: the account behind the token's API key and what the
/// token allows.
#[derive(Clone, Debug)]
pub struct Caller {
    pub account: Arc<Account>,
    pub api_key: String,
    pub permissions: Vec<Permission>,
    /// `None` when the token has no `roles` claim, which means every role.
    pub roles: Option<Vec<Role>>,
    /// The room the token is limited to, from its `roomId` claim.
    pub room_scope: Option<String>,
    /// The participant the token is for, from its `participantId` claim.
    pub participant_id: Option<String>,
}

impl Caller {
    /// The management API (rooms, sessions) needs the `crawler` role; `rtc`
    /// tokens are for joining meetings only.
    pub fn require_management(&self) -> Result<(), AuthError> {
        match &self.roles {
            Some(roles) if !roles.contains(&Role::Crawler) => Err(AuthError::PermissionDenied(
                "token roles do not include \"crawler\", which the management API requires".into(),
            )),
            _ => Ok(()),
        }
    }

    /// Joining a meeting needs the `rtc` role (or no roles claim) and a join
    /// permission.
    pub fn require_join(&self) -> Result<(), AuthError> {
        if let Some(roles) = &self.roles
            && !roles.contains(&Role::Rtc)
        {
            return Err(AuthError::PermissionDenied(
                "token roles do not include \"rtc\", which joining requires".into(),
            ));
        }
        if !self
            .permissions
            .iter()
            .any(|p| matches!(p, Permission::AllowJoin | Permission::AskJoin))
        {
            return Err(AuthError::PermissionDenied(
                "token permissions include neither allow_join nor ask_join".into(),
            ));
        }
        Ok(())
    }

    /// Media-plane calls (joins and leaves) come from media servers, whose
    /// tokens are signed by an API key marked `service = true`.
    pub fn require_service(&self) -> Result<(), AuthError> {
        if self.account.service {
            Ok(())
        } else {
            Err(AuthError::PermissionDenied(
                "media-plane calls need a token of a service key (service = true)".into(),
            ))
        }
    }

    /// Whether a room-scoped token may act on a room known by these names.
    pub fn may_access_room<'a>(&self, names: impl IntoIterator<Item = &'a str>) -> bool {
        match &self.room_scope {
            None => true,
            Some(scope) => names.into_iter().any(|name| name == scope),
        }
    }

    pub fn scope_error(&self) -> AuthError {
        let scope = self.room_scope.as_deref().unwrap_or_default();
        AuthError::PermissionDenied(format!("token is scoped to room {scope:?}"))
    }
}
