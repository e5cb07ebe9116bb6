//! Operators use grpcurl with no .proto files: reflection (v1 and v1alpha)
//! and health must work without a token.

use roomservice::grpc::pb::CreateRoomRequest;
use tokio_stream::StreamExt;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_reflection::pb::{v1, v1alpha};

use crate::harness::*;

#[tokio::test]
async fn reflection_v1_lists_the_services() {
    let server = TestServer::start().await;
    let mut client =
        v1::server_reflection_client::ServerReflectionClient::new(server.channel().await);
    let request = v1::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(v1::server_reflection_request::MessageRequest::ListServices(
            String::new(),
        )),
    };
    let mut responses = client
        .server_reflection_info(tokio_stream::once(request))
        .await
        .expect("reflection needs no token")
        .into_inner();
    let response = responses.next().await.unwrap().unwrap();
    let Some(v1::server_reflection_response::MessageResponse::ListServicesResponse(list)) =
        response.message_response
    else {
        panic!("unexpected reflection answer: {response:?}");
    };
    let names: Vec<_> = list.service.into_iter().map(|s| s.name).collect();
    for expected in ["rooms.v1.RoomService", "grpc.health.v1.Health"] {
        assert!(
            names.iter().any(|n| n == expected),
            "{expected} missing from {names:?}"
        );
    }
}

/// grpcurl 1.8 speaks only v1alpha; it must find the service and the
/// comments (source info) that `describe` shows.
#[tokio::test]
async fn reflection_v1alpha_serves_descriptors_with_comments() {
    let server = TestServer::start().await;
    let mut client =
        v1alpha::server_reflection_client::ServerReflectionClient::new(server.channel().await);
    let request = v1alpha::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(
            v1alpha::server_reflection_request::MessageRequest::FileContainingSymbol(
                "rooms.v1.CreateRoomRequest".into(),
            ),
        ),
    };
    let mut responses = client
        .server_reflection_info(tokio_stream::once(request))
        .await
        .unwrap()
        .into_inner();
    let response = responses.next().await.unwrap().unwrap();
    let Some(v1alpha::server_reflection_response::MessageResponse::FileDescriptorResponse(files)) =
        response.message_response
    else {
        panic!("unexpected reflection answer: {response:?}");
    };
    use prost::Message;
    let file = files
        .file_descriptor_proto
        .iter()
        .map(|bytes| prost_types::FileDescriptorProto::decode(bytes.as_slice()).unwrap())
        .find(|f| f.package() == "rooms.v1")
        .expect("rooms.v1 file served");
    let comments: String = file
        .source_code_info
        .expect("source info kept for describe")
        .location
        .iter()
        .filter_map(|l| l.leading_comments.clone())
        .collect();
    assert!(
        comments.contains("unique within your account"),
        "comments missing: {comments:.200}"
    );
    let links = file
        .message_type
        .iter()
        .find(|m| m.name() == "Links")
        .unwrap();
    let json_names: Vec<_> = links
        .field
        .iter()
        .map(|f| f.json_name().to_owned())
        .collect();
    assert_eq!(json_names, ["get_room", "get_session"]);
}

#[tokio::test]
async fn health_needs_no_token_and_reports_serving() {
    let server = TestServer::start().await;
    let mut health = HealthClient::new(server.channel().await);
    for service in ["", "rooms.v1.RoomService"] {
        let status = health
            .check(HealthCheckRequest {
                service: service.into(),
            })
            .await
            .unwrap()
            .into_inner()
            .status();
        assert_eq!(status, ServingStatus::Serving, "{service:?}");
    }
}

#[tokio::test]
async fn graceful_shutdown_refuses_new_calls() {
    let server = TestServer::start().await;
    let mut client = server.rooms().await;
    client
        .create_room(authed(CreateRoomRequest::default(), &acme_token()))
        .await
        .unwrap();
    let url = server.url();
    server.stop().await;
    let refused = tonic::transport::Channel::from_shared(url)
        .unwrap()
        .connect()
        .await;
    assert!(
        refused.is_err(),
        "a stopped server accepts no new connection"
    );
}
