//! The RoomService methods that return a room and are called most, GetRoom
//! (media servers and apps look rooms up far more often than they change
//! them) and CreateRoom, on routes of their own ahead of the generated
//! server's: the same calls and the same limits, with replies encoded by
//! [`RoomReply`] rather than through a `pb::Room`.

use std::convert::Infallible;
use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use tonic::server::{Grpc, UnaryService};
use tonic::{Request, Response, Status};
use tonic_prost::ProstCodec;

use super::pb;
use super::rooms::RoomsGrpc;
use super::wire::{CreateRoomInput, RoomReply};

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

/// What a route calls.
type Handler<Req> =
    fn(Arc<RoomsGrpc>, Request<Req>) -> BoxFuture<Result<Response<RoomReply>, Status>>;

/// The tower service of one route. Mount it at [`RoomRoute::path`], behind
/// the same interceptor and size limit as the generated server.
pub struct RoomRoute<Req> {
    path: &'static str,
    rooms: Arc<RoomsGrpc>,
    max_request_bytes: usize,
    handler: Handler<Req>,
    request: PhantomData<fn(Req)>,
}

impl<Req> Clone for RoomRoute<Req> {
    fn clone(&self) -> RoomRoute<Req> {
        RoomRoute {
            path: self.path,
            rooms: self.rooms.clone(),
            max_request_bytes: self.max_request_bytes,
            handler: self.handler,
            request: PhantomData,
        }
    }
}

impl RoomRoute<pb::GetRoomRequest> {
    pub fn get_room(rooms: Arc<RoomsGrpc>, max_request_bytes: usize) -> Self {
        RoomRoute {
            path: "/rooms.v1.RoomService/GetRoom",
            rooms,
            max_request_bytes,
            handler: |rooms, request| Box::pin(async move { rooms.get_room_reply(request).await }),
            request: PhantomData,
        }
    }
}

impl RoomRoute<CreateRoomInput> {
    pub fn create_room(rooms: Arc<RoomsGrpc>, max_request_bytes: usize) -> Self {
        RoomRoute {
            path: "/rooms.v1.RoomService/CreateRoom",
            rooms,
            max_request_bytes,
            handler: |rooms, request| {
                Box::pin(async move { rooms.create_room_reply(request).await })
            },
            request: PhantomData,
        }
    }
}

impl<Req> RoomRoute<Req> {
    /// The method's path; every other RoomService method stays with the
    /// generated server.
    pub fn path(&self) -> &'static str {
        self.path
    }
}

impl<Req, B> tower::Service<http::Request<B>> for RoomRoute<Req>
where
    Req: prost::Message + Default + Send + 'static,
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
        let method = Method {
            rooms: self.rooms.clone(),
            handler: self.handler,
        };
        let max_request_bytes = self.max_request_bytes;
        Box::pin(async move {
            // As the generated server does, with its settings: no
            // compression, the same request limit.
            let codec = ProstCodec::<RoomReply, Req>::default();
            let mut grpc =
                Grpc::new(codec).apply_max_message_size_config(Some(max_request_bytes), None);
            Ok(grpc.unary(method, request).await)
        })
    }
}

struct Method<Req> {
    rooms: Arc<RoomsGrpc>,
    handler: Handler<Req>,
}

impl<Req> UnaryService<Req> for Method<Req> {
    type Response = RoomReply;
    type Future = BoxFuture<Result<Response<RoomReply>, Status>>;

    fn call(&mut self, request: Request<Req>) -> Self::Future {
        (self.handler)(self.rooms.clone(), request)
    }
}
