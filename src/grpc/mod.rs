//! The gRPC transport: generated code, proto ⇄ domain conversion, the auth
//! interceptor, and the tonic service implementations. Adapters only unpack,
//! call the service layer, and convert.

mod auth;
mod convert;
mod events;
mod get_room;
mod limits;
mod rooms;
mod sessions;
mod status;
mod wire;

pub use auth::AuthInterceptor;
pub use events::EventsGrpc;
pub use get_room::{GET_ROOM_PATH, GetRoomRoute};
pub use limits::OversizeAsResourceExhausted;
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
