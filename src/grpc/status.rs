use http::HeaderMap;
use tonic::Status;
use tonic_types::{ErrorDetails, StatusExt};

use crate::domain::FieldViolation;
use crate::error::{ErrorCode, PublicError};
use crate::service::{Error, MAX_REPORTED_VIOLATIONS};

/// The most a whole error may take in the response headers: its
/// `grpc-status`, `grpc-message` (percent-encoded, so a non-ASCII byte takes
/// three) and `grpc-status-details-bin` (base64 of a `google.rpc.Status` that
/// repeats the message) fields, counted as HTTP/2 counts a header list: name
/// plus value plus 32 bytes each. 8 KiB is the smallest limit common gRPC
/// clients apply (gRPC C-core, hence grpcio, refuses larger metadata as
/// RESOURCE_EXHAUSTED); 1 KiB of it is left for the rest of a trailers-only
/// answer (`:status`, `content-type`, other metadata).
pub const MAX_ENCODED_ERROR_BYTES: usize = 7 * 1024;

/// The one place an [`Error`] becomes a gRPC status. The status carries the
/// public message only; server-side failures are logged here with their
/// internal cause. Invalid arguments carry a `google.rpc.BadRequest` detail
/// naming each field. The whole status fits in [`MAX_ENCODED_ERROR_BYTES`].
pub fn to_status(err: Error) -> Status {
    let code = err.code();
    if code.is_server_side() {
        tracing::error!(error = %err, code = code.as_str(), "call failed");
    }
    match &err {
        Error::InvalidArgument(violations) => bad_request(code, violations),
        Error::RoomIdRequired { field, .. } => {
            let violation = FieldViolation::new(*field, Error::ROOM_ID_RULE);
            fit(
                code,
                &err.public_message(),
                std::slice::from_ref(&violation),
            )
        }
        Error::RateLimited { retry_after, .. } => Status::with_error_details(
            code.grpc_code(),
            err.public_message(),
            ErrorDetails::with_retry_info(Some(*retry_after)),
        ),
        _ => fit(code, &err.public_message(), &[]),
    }
}

/// Reports as many of the first violations as fit, in the message and in the
/// details alike, and says how many more there were.
fn bad_request(code: ErrorCode, violations: &[FieldViolation]) -> Status {
    let most = violations.len().min(MAX_REPORTED_VIOLATIONS);
    // Fewer violations first, then shorter texts: a single violation's
    // texts are excerpts already, so truncating is the rare last resort.
    for shown in (1..=most).rev() {
        let status = render(code, violations, shown, usize::MAX);
        if encoded_size(&status) <= MAX_ENCODED_ERROR_BYTES {
            return status;
        }
    }
    shrink(|cap| render(code, violations, most.min(1), cap))
}

/// A status with the first `shown` violations, each text cut to `cap` bytes.
fn render(code: ErrorCode, violations: &[FieldViolation], shown: usize, cap: usize) -> Status {
    let reported: Vec<FieldViolation> = violations[..shown]
        .iter()
        .map(|v| FieldViolation::new(truncate(&v.field, cap), truncate(&v.description, cap)))
        .collect();
    let mut message = Error::InvalidArgument(reported.clone()).public_message();
    if violations.len() > shown {
        let more = violations.len() - shown;
        message.push_str(&format!("; and {more} more"));
    }
    build(code, &message, &reported)
}

/// The status as it is, or with its texts cut until it fits.
fn fit(code: ErrorCode, message: &str, violations: &[FieldViolation]) -> Status {
    let status = build(code, message, violations);
    if encoded_size(&status) <= MAX_ENCODED_ERROR_BYTES {
        return status;
    }
    shrink(|cap| {
        let cut: Vec<FieldViolation> = violations
            .iter()
            .map(|v| FieldViolation::new(truncate(&v.field, cap), truncate(&v.description, cap)))
            .collect();
        build(code, &truncate(message, cap), &cut)
    })
}

/// Halves the byte cap on every text until the status fits; a cap of zero
/// leaves only the fixed parts, which always fit.
fn shrink(with_cap: impl Fn(usize) -> Status) -> Status {
    let mut cap = MAX_ENCODED_ERROR_BYTES;
    loop {
        let status = with_cap(cap);
        if cap == 0 || encoded_size(&status) <= MAX_ENCODED_ERROR_BYTES {
            return status;
        }
        cap /= 2;
    }
}

fn build(code: ErrorCode, message: &str, violations: &[FieldViolation]) -> Status {
    if violations.is_empty() {
        return Status::new(code.grpc_code(), message);
    }
    let details = ErrorDetails::with_bad_request(
        violations
            .iter()
            .map(|v| tonic_types::FieldViolation::new(v.field.clone(), v.description.clone()))
            .collect::<Vec<_>>(),
    );
    Status::with_error_details(code.grpc_code(), message, details)
}

/// At most `cap` bytes of `text`, cut at a character boundary and marked
/// with "..." when cut.
fn truncate(text: &str, cap: usize) -> String {
    if text.len() <= cap {
        return text.to_owned();
    }
    let mut end = cap;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &text[..end])
}

/// What `status` takes in the response headers, encoded exactly as tonic
/// sends it, counted as HTTP/2 counts a header list (name + value + 32).
pub fn encoded_size(status: &Status) -> usize {
    let mut headers = HeaderMap::new();
    if status.add_header(&mut headers).is_err() {
        // Only a message that cannot be a header value fails, and tonic
        // percent-encodes every such byte: treat it as too big.
        return usize::MAX;
    }
    headers
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len() + 32)
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::AuthError;

    fn emoji_events(count: usize) -> Vec<FieldViolation> {
        (0..count)
            .map(|i| {
                let emoji = char::from_u32(0x1F600 + i as u32).unwrap();
                let event: String = std::iter::repeat_n(emoji, 64).collect();
                FieldViolation::new(
                    format!("webhook.events[{i}]"),
                    format!("unknown event {}", crate::domain::excerpt(&event)),
                )
            })
            .collect()
    }

    #[test]
    fn many_long_non_ascii_violations_fit_and_say_how_many_more() {
        let violations = emoji_events(12);
        let status = to_status(Error::InvalidArgument(violations));
        assert_eq!(status.code(), tonic::Code::InvalidArgument);
        assert!(encoded_size(&status) <= MAX_ENCODED_ERROR_BYTES);
        let reported = status.get_details_bad_request().unwrap().field_violations;
        assert!(!reported.is_empty() && reported.len() < 10, "{reported:?}");
        assert_eq!(reported[0].field, "webhook.events[0]");
        let more = 12 - reported.len();
        assert!(
            status.message().ends_with(&format!("; and {more} more")),
            "{}",
            status.message()
        );
        // The message and the details name the same violations.
        let last = &reported[reported.len() - 1].field;
        assert!(status.message().contains(last.as_str()));
        let next = format!("webhook.events[{}]", reported.len());
        assert!(!status.message().contains(&next));
    }

    #[test]
    fn small_errors_are_untouched() {
        let violations = vec![
            FieldViolation::new("webhook.endPoint", "must be an absolute http or https URL"),
            FieldViolation::new("customRoomId", "must be at most 256 characters"),
        ];
        let status = to_status(Error::InvalidArgument(violations.clone()));
        assert_eq!(
            status.message(),
            Error::InvalidArgument(violations).public_message()
        );
        assert_eq!(
            status
                .get_details_bad_request()
                .unwrap()
                .field_violations
                .len(),
            2
        );
    }

    #[test]
    fn one_enormous_violation_is_cut_at_a_character_boundary() {
        let huge = "é😀\u{0}%".repeat(10_000);
        let status = to_status(Error::InvalidArgument(vec![FieldViolation::new(
            huge.clone(),
            huge,
        )]));
        assert!(encoded_size(&status) <= MAX_ENCODED_ERROR_BYTES);
        assert!(status.message().ends_with("..."), "{}", status.message());
        let reported = status.get_details_bad_request().unwrap().field_violations;
        assert_eq!(reported.len(), 1);
        assert!(reported[0].description.ends_with("..."));
        assert!(
            reported[0].description.len() > 100,
            "cut no further than needed"
        );

        let status = to_status(Error::NotFound {
            what: format!("room {}", "😀".repeat(5_000)),
        });
        assert_eq!(status.code(), tonic::Code::NotFound);
        assert!(encoded_size(&status) <= MAX_ENCODED_ERROR_BYTES);
        assert!(status.message().starts_with("room 😀"));
    }

    #[test]
    fn the_measure_counts_what_tonic_sends() {
        // "é" is two bytes, each sent as %XX; the details are base64.
        let status = Status::new(tonic::Code::NotFound, "é");
        let expected = ("grpc-status".len() + 1 + 32) + ("grpc-message".len() + 6 + 32);
        assert_eq!(encoded_size(&status), expected);
        let status = to_status(Error::Auth(AuthError::BadCredentials {
            cause: "unknown api key \"k\"".into(),
        }));
        assert_eq!(status.message(), AuthError::BAD_CREDENTIALS_MESSAGE);
    }
}
