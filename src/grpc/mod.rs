//! The gRPC transport: generated code, proto ⇄ domain conversion, the auth
//! interceptor, and the tonic service implementations. Adapters only unpack,
//! call the service layer, and convert.

mod auth;
mod convert;
mod events;
mod limits;
mod room_routes;
mod rooms;
mod sessions;
mod status;
mod wire;

pub use auth::AuthInterceptor;
pub use events::EventsGrpc;
pub use limits::OversizeAsResourceExhausted;
pub use room_routes::RoomRoute;
pub use rooms::RoomsGrpc;
pub use sessions::SessionsGrpc;
pub use status::to_status;

/// Generated messages and the RoomService and SessionService clients and
/// servers.
pub mod pb {
    #![allow(clippy::all, clippy::pedantic)]
    tonic::include_proto!("rooms.v1");
}

/// The encoded descriptor set of `proto/`, for server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/rooms_descriptor.bin"));
