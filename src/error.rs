//! The small set of outcomes a caller can act on, and their gRPC codes, HTTP
//! statuses and stable names. This module depends on nothing else in the
//! crate: `auth`, `store` and `service` each implement [`PublicError`] for
//! their own error types, and the transports map through [`ErrorCode`] only.

/// A deliberately small set of outcomes a caller can act on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorCode {
    InvalidArgument,
    Unauthenticated,
    PermissionDenied,
    NotFound,
    FailedPrecondition,
    ResourceExhausted,
    /// A position (an event id) that is no longer retained.
    OutOfRange,
    Unavailable,
    Internal,
}

impl ErrorCode {
    pub fn grpc_code(self) -> tonic::Code {
        match self {
            ErrorCode::InvalidArgument => tonic::Code::InvalidArgument,
            ErrorCode::Unauthenticated => tonic::Code::Unauthenticated,
            ErrorCode::PermissionDenied => tonic::Code::PermissionDenied,
            ErrorCode::NotFound => tonic::Code::NotFound,
            ErrorCode::FailedPrecondition => tonic::Code::FailedPrecondition,
            ErrorCode::ResourceExhausted => tonic::Code::ResourceExhausted,
            ErrorCode::OutOfRange => tonic::Code::OutOfRange,
            ErrorCode::Unavailable => tonic::Code::Unavailable,
            ErrorCode::Internal => tonic::Code::Internal,
        }
    }

    pub fn http_status(self) -> u16 {
        match self {
            ErrorCode::InvalidArgument => 400,
            ErrorCode::Unauthenticated => 401,
            ErrorCode::PermissionDenied => 403,
            ErrorCode::NotFound => 404,
            ErrorCode::FailedPrecondition => 409,
            ErrorCode::ResourceExhausted => 429,
            ErrorCode::OutOfRange => 410,
            ErrorCode::Unavailable => 503,
            ErrorCode::Internal => 500,
        }
    }

    /// The stable machine-readable name REST bodies carry in `code`.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::InvalidArgument => "invalid_argument",
            ErrorCode::Unauthenticated => "unauthenticated",
            ErrorCode::PermissionDenied => "permission_denied",
            ErrorCode::NotFound => "not_found",
            ErrorCode::FailedPrecondition => "failed_precondition",
            ErrorCode::ResourceExhausted => "resource_exhausted",
            ErrorCode::OutOfRange => "out_of_range",
            ErrorCode::Unavailable => "unavailable",
            ErrorCode::Internal => "internal",
        }
    }

    /// Whether a failure with this code is our fault (or our storage's) rather
    /// than the caller's: such failures are logged with their internal cause.
    pub fn is_server_side(self) -> bool {
        matches!(self, ErrorCode::Unavailable | ErrorCode::Internal)
    }
}

/// An error a transport may answer with. Two texts, kept apart in the type so
/// that no transport can leak by accident:
/// - [`PublicError::public_message`] is what the caller sees: it names the rule
///   that failed, never a host, a library's debug text or a secret;
/// - `Display` is the internal cause, for the log line only.
pub trait PublicError: std::error::Error {
    fn code(&self) -> ErrorCode;
    fn public_message(&self) -> String;
}

/// The message every server-side failure of a kind shows, whatever its cause.
pub fn generic_message(code: ErrorCode) -> &'static str {
    match code {
        ErrorCode::Unavailable => "storage unavailable, retry",
        _ => "internal error",
    }
}
