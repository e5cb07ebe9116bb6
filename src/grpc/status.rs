use tonic::Status;
use tonic_types::{ErrorDetails, StatusExt};

use crate::error::PublicError;
use crate::service::{Error, MAX_REPORTED_VIOLATIONS};

/// The one place an [`Error`] becomes a gRPC status. The status carries the
/// public message only; server-side failures are logged here with their
/// internal cause. Invalid arguments carry a `google.rpc.BadRequest` detail
/// naming each field.
pub fn to_status(err: Error) -> Status {
    let code = err.code();
    if code.is_server_side() {
        tracing::error!(error = %err, code = code.as_str(), "call failed");
    }
    let message = err.public_message();
    match &err {
        Error::InvalidArgument(violations) => {
            let details = ErrorDetails::with_bad_request(
                violations
                    .iter()
                    .take(MAX_REPORTED_VIOLATIONS)
                    .map(|v| {
                        tonic_types::FieldViolation::new(v.field.clone(), v.description.clone())
                    })
                    .collect::<Vec<_>>(),
            );
            Status::with_error_details(code.grpc_code(), message, details)
        }
        Error::RoomIdRequired { field, .. } => {
            let details = ErrorDetails::with_bad_request_violation(*field, Error::ROOM_ID_RULE);
            Status::with_error_details(code.grpc_code(), message, details)
        }
        _ => Status::new(code.grpc_code(), message),
    }
}
