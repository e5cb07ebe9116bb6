//! `rooms.v1.RoomService/GetRoom` on a route of its own, ahead of the
//! generated server's: the same call and the same limits, with a reply
//! encoded by [`RoomReply`] (GetRoom is the hot call: media servers and apps
//! look rooms up far more often than they change them).

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use tonic::server::{Grpc, UnaryService};
use tonic::{Request, Response, Status};
use tonic_prost::ProstCodec;

use super::pb;
use super::rooms::RoomsGrpc;
use super::wire::RoomReply;

/// The path the route answers; every other RoomService method stays with
/// the generated server.
pub const GET_ROOM_PATH: &str = "/rooms.v1.RoomService/GetRoom";

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

/// The tower service of the route. Mount it behind the same interceptor and
/// size limit as the generated server.
#[derive(Clone)]
pub struct GetRoomRoute {
    rooms: Arc<RoomsGrpc>,
    max_request_bytes: usize,
}

impl GetRoomRoute {
    pub fn new(rooms: Arc<RoomsGrpc>, max_request_bytes: usize) -> GetRoomRoute {
        GetRoomRoute {
            rooms,
            max_request_bytes,
        }
    }
}

impl<B> tower::Service<http::Request<B>> for GetRoomRoute
where
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>> + Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let method = Method(self.rooms.clone());
        let max_request_bytes = self.max_request_bytes;
        Box::pin(async move {
            // As the generated server does, with its settings: no
            // compression, the same request limit.
            let codec = ProstCodec::<RoomReply, pb::GetRoomRequest>::default();
            let mut grpc =
                Grpc::new(codec).apply_max_message_size_config(Some(max_request_bytes), None);
            Ok(grpc.unary(method, request).await)
        })
    }
}

struct Method(Arc<RoomsGrpc>);

impl UnaryService<pb::GetRoomRequest> for Method {
    type Response = RoomReply;
    type Future = BoxFuture<Result<Response<RoomReply>, Status>>;

    fn call(&mut self, request: Request<pb::GetRoomRequest>) -> Self::Future {
        let rooms = self.0.clone();
        Box::pin(async move { rooms.get_room_reply(request).await })
    }
}
