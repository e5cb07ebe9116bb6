use tonic::Status;
use tonic_types::{ErrorDetails, StatusExt};

use crate::error::{Error, ErrorCode, MAX_REPORTED_VIOLATIONS};

/// The one place an [`Error`] becomes a gRPC status. Invalid arguments carry
/// a `google.rpc.BadRequest` detail naming each field; internal errors are
/// logged here and answered without their details.
pub fn to_status(err: Error) -> Status {
    let code = err.code();
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
            Status::with_error_details(code.grpc_code(), err.to_string(), details)
        }
        _ if code == ErrorCode::Internal => {
            tracing::error!(error = %err, "internal error");
            Status::new(code.grpc_code(), "internal error")
        }
        _ => Status::new(code.grpc_code(), err.to_string()),
    }
}
