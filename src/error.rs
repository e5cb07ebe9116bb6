//! The one error type the service layer returns, and its mapping to gRPC codes
//! and HTTP statuses. Transports translate an [`Error`] through [`ErrorCode`]
//! and nowhere else, so gRPC and REST cannot disagree about a failure.

use crate::auth::AuthError;
use crate::domain::FieldViolation;
use crate::store::StoreError;

/// A deliberately small set of outcomes a caller can act on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorCode {
    InvalidArgument,
    Unauthenticated,
    PermissionDenied,
    NotFound,
    FailedPrecondition,
    ResourceExhausted,
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
            ErrorCode::Unavailable => "unavailable",
            ErrorCode::Internal => "internal",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid request: {}", describe(.0))]
    InvalidArgument(Vec<FieldViolation>),
    #[error(transparent)]
    Auth(#[from] AuthError),
    #[error("{0} not found")]
    NotFound(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl Error {
    pub fn code(&self) -> ErrorCode {
        match self {
            Error::InvalidArgument(_) => ErrorCode::InvalidArgument,
            Error::Auth(e) => e.code(),
            Error::NotFound(_) => ErrorCode::NotFound,
            Error::Store(e) => e.code(),
        }
    }
}

/// How many field violations one error reports. A request can be invalid in
/// thousands of places; the whole error must still fit in the response
/// headers (gRPC clients refuse more than 16 KiB and report INTERNAL).
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
