use crate::auth::AuthError;
use crate::domain::FieldViolation;
use crate::error::{ErrorCode, PublicError, generic_message};
use crate::store::StoreError;

/// What a service call can fail with. Transports turn it into a gRPC status
/// (`grpc::to_status`) or an HTTP response (`gateway::error`), each in one
/// place, through [`PublicError`].
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid request: {}", describe(.0))]
    InvalidArgument(Vec<FieldViolation>),
    /// The call takes a real roomId and was given something else, most likely
    /// a customRoomId. gRPC INVALID_ARGUMENT; REST answers 402, as VideoSDK does.
    #[error("{field}: must be a roomId (xxxx-xxxx-xxxx), not a customRoomId or id: got {got}")]
    RoomIdRequired { field: &'static str, got: String },
    #[error(transparent)]
    Auth(#[from] AuthError),
    /// `what` names the missing thing as the caller named it, e.g. `room "abc"`.
    #[error("{what} not found")]
    NotFound { what: String },
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Every freshly drawn roomId was taken: the random source or the store is
    /// broken, since 62 random bits should never collide twice in a row.
    #[error("no free roomId after {0} attempts")]
    NoFreeRoomId(usize),
    /// The account already holds the most rooms it may (`--max-rooms-per-
    /// account`). gRPC RESOURCE_EXHAUSTED, HTTP 429.
    #[error("room limit reached: an account may hold at most {limit} rooms")]
    AccountFull { limit: u64 },
    /// The account already has the most event streams open on this server
    /// that it may (`--max-watchers-per-account`). gRPC RESOURCE_EXHAUSTED,
    /// HTTP 429.
    #[error(
        "too many event streams: an account may have at most {limit} WatchEvents streams open on one server; close one first"
    )]
    TooManyWatchers { limit: usize },
    /// A disabled room refuses new sessions and joins. FAILED_PRECONDITION,
    /// HTTP 409.
    #[error("room {room} is disabled: it accepts no sessions or joins")]
    RoomDisabled { room: String },
    /// A resume point older than the retained event log: events after it may
    /// be gone, so resuming there could miss some. OUT_OF_RANGE, HTTP 410.
    #[error(
        "event {id} is no longer retained: events after it may have been dropped; watch without afterEventId"
    )]
    EventNotRetained { id: String },
    /// A create's idempotency key was used before for different parameters.
    /// FAILED_PRECONDITION, HTTP 409.
    #[error("idempotency-key was used for a different request: use a new key for a new room")]
    IdempotencyKeyReused,
    /// The account made more calls than `--rate-limit` allows on this
    /// server. RESOURCE_EXHAUSTED with a google.rpc.RetryInfo detail; HTTP
    /// 429 with Retry-After.
    #[error("rate limit exceeded: this account may make {limit} calls on this server; retry in {} ms", .retry_after.as_millis().max(1))]
    RateLimited {
        limit: crate::ratelimit::RateLimit,
        retry_after: std::time::Duration,
    },
    /// The server is stopping: a watch ends so its client resumes elsewhere.
    #[error("server shutting down: resume the watch with afterEventId on another server")]
    ShuttingDown,
    /// Writers kept colliding on one session; the caller may retry.
    #[error("session {what} changed concurrently too often; retry")]
    Contended { what: String },
}

impl PublicError for Error {
    fn code(&self) -> ErrorCode {
        match self {
            Error::InvalidArgument(_) | Error::RoomIdRequired { .. } => ErrorCode::InvalidArgument,
            Error::Auth(e) => e.code(),
            Error::NotFound { .. } => ErrorCode::NotFound,
            Error::Store(e) => e.code(),
            Error::NoFreeRoomId(_) => ErrorCode::Internal,
            Error::AccountFull { .. }
            | Error::RateLimited { .. }
            | Error::TooManyWatchers { .. } => ErrorCode::ResourceExhausted,
            Error::RoomDisabled { .. } | Error::IdempotencyKeyReused => {
                ErrorCode::FailedPrecondition
            }
            Error::Contended { .. } | Error::ShuttingDown => ErrorCode::Unavailable,
            Error::EventNotRetained { .. } => ErrorCode::OutOfRange,
        }
    }

    fn public_message(&self) -> String {
        match self {
            Error::Auth(e) => e.public_message(),
            Error::Store(e) => e.public_message(),
            Error::NoFreeRoomId(_) => generic_message(ErrorCode::Internal).to_owned(),
            Error::Contended { .. } => "the session is busy, retry".to_owned(),
            other => other.to_string(),
        }
    }
}

impl Error {
    pub const ROOM_ID_RULE: &'static str =
        "must be a roomId (xxxx-xxxx-xxxx), not a customRoomId or id";

    pub fn not_found(what: impl Into<String>) -> Error {
        Error::NotFound { what: what.into() }
    }

    pub fn invalid(field: impl Into<String>, description: impl Into<String>) -> Error {
        Error::InvalidArgument(vec![FieldViolation::new(field, description)])
    }
}

/// How many field violations one error reports. A request can be invalid in
/// thousands of places; the whole error must still fit in the response
/// headers; `grpc::to_status` trims further to fit 8 KiB, the smallest
/// limit common gRPC clients apply.
pub const MAX_REPORTED_VIOLATIONS: usize = 10;

fn describe(violations: &[FieldViolation]) -> String {
    let mut text = violations
        .iter()
        .take(MAX_REPORTED_VIOLATIONS)
        .map(|v| format!("{}: {}", v.field, v.description))
        .collect::<Vec<_>>()
        .join("; ");
    if violations.len() > MAX_REPORTED_VIOLATIONS {
        let more = violations.len() - MAX_REPORTED_VIOLATIONS;
        text.push_str(&format!("; and {more} more"));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn storage_causes_stay_out_of_public_messages() {
        let err = Error::Store(StoreError::Unavailable(
            "redis: connection refused (10.0.0.7:6379)".into(),
        ));
        assert_eq!(err.public_message(), "storage unavailable, retry");
        assert!(
            err.to_string().contains("10.0.0.7"),
            "the log keeps the cause"
        );
        let err = Error::Store(StoreError::Corrupt("room x field \"s\": eof".into()));
        assert_eq!(err.public_message(), "internal error");
        assert_eq!(Error::NoFreeRoomId(5).public_message(), "internal error");
    }

    #[test]
    fn a_full_account_is_resource_exhausted_and_names_the_limit() {
        let err = Error::AccountFull { limit: 500 };
        assert_eq!(err.code(), ErrorCode::ResourceExhausted);
        assert_eq!(
            err.public_message(),
            "room limit reached: an account may hold at most 500 rooms"
        );
    }

    #[test]
    fn library_token_errors_stay_out_of_public_messages() {
        let err = Error::Auth(AuthError::InvalidToken {
            cause: "Base64(InvalidByte(3, 46))".into(),
        });
        assert_eq!(err.public_message(), "unauthenticated: invalid token");
        assert_eq!(err.code(), ErrorCode::Unauthenticated);
    }
}
