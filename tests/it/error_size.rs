//! An error every gRPC client can read: the whole refusal (status, message
//! percent-encoded, details base64-encoded), as it goes on the wire, fits in
//! the 8 KiB of headers the strictest common clients accept (gRPC C-core,
//! hence Python's grpcio, answers RESOURCE_EXHAUSTED beyond).

use std::time::Duration;

use prost::Message;
use roomservice::grpc::pb::{CreateRoomRequest, Webhook};
use tonic::Code;
use tonic_types::StatusExt;

use crate::harness::*;

/// The smallest header-list limit among common gRPC clients.
const CLIENT_HEADER_LIMIT: usize = 8 * 1024;

/// Distinct unknown webhook events of 64 emoji each: every one is refused,
/// and each refusal quotes 256 bytes that percent-encoding makes 768.
fn emoji_events(count: usize) -> Vec<String> {
    (0..count)
        .map(|i| {
            let emoji = char::from_u32(0x1F600 + i as u32).unwrap();
            std::iter::repeat_n(emoji, 64).collect()
        })
        .collect()
}

fn emoji_request(count: usize) -> CreateRoomRequest {
    CreateRoomRequest {
        webhook: Some(Webhook {
            end_point: "https://example.com/h".into(),
            events: emoji_events(count),
        }),
        ..Default::default()
    }
}

/// Sends one unary call as raw HTTP/2 and returns the response headers, where
/// a refusal travels (a trailers-only response).
async fn raw_call(server: &TestServer, method: &str, request: impl Message) -> http::HeaderMap {
    let body = request.encode_to_vec();
    let mut frame = vec![0u8];
    frame.extend_from_slice(&(body.len() as u32).to_be_bytes());
    frame.extend_from_slice(&body);
    let client = reqwest::Client::builder()
        .no_proxy()
        .http2_prior_knowledge()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let response = client
        .post(format!("{}/rooms.v1.RoomService/{method}", server.url()))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .header("authorization", acme_token())
        .body(frame)
        .send()
        .await
        .expect("raw gRPC call");
    assert_eq!(response.status(), 200);
    response.headers().clone()
}

/// The header list's size as HTTP/2 (and gRPC C-core) count it: name plus
/// value plus 32 bytes per field, `:status` included.
fn header_list_size(headers: &http::HeaderMap) -> usize {
    let pseudo = ":status".len() + 3 + 32;
    pseudo
        + headers
            .iter()
            .map(|(name, value)| name.as_str().len() + value.len() + 32)
            .sum::<usize>()
}

#[tokio::test]
async fn unknown_emoji_events_get_an_error_every_client_can_read() {
    let server = TestServer::start().await;
    for count in [1, 10, 12, 30] {
        let headers = raw_call(&server, "CreateRoom", emoji_request(count)).await;
        assert_eq!(
            headers.get("grpc-status").map(|v| v.as_bytes()),
            Some(b"3".as_slice()),
            "{count} events: {headers:?}"
        );
        let size = header_list_size(&headers);
        assert!(
            size <= CLIENT_HEADER_LIMIT,
            "{count} events: the error takes {size} bytes of headers"
        );

        // What a client makes of it: the code, the first fields named in the
        // details and in the message, and how many more there were.
        let mut client = server.rooms().await;
        let err = client
            .create_room(authed(emoji_request(count), &acme_token()))
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
        let violations = err.get_details_bad_request().unwrap().field_violations;
        assert!(!violations.is_empty());
        assert_eq!(violations[0].field, "webhook.events[0]");
        assert!(violations[0].description.contains("😀"), "{violations:?}");
        for violation in &violations {
            assert!(
                err.message().contains(&violation.field),
                "{}",
                err.message()
            );
        }
        if violations.len() < count {
            let more = count - violations.len();
            assert!(
                err.message().ends_with(&format!("; and {more} more")),
                "{count} events: {}",
                err.message()
            );
        }
    }
}
