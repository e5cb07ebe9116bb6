//! The rules: what each call does, over a [`crate::store::Store`]. Both
//! transports call into here, so gRPC and REST cannot drift apart.

mod rooms;

pub use rooms::{Created, RoomService};
