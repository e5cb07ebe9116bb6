//! The rules: what each call does, over a [`crate::store::Store`]. Both
//! transports call into here, so gRPC and REST cannot drift apart.

mod error;
mod rooms;

pub use error::{Error, MAX_REPORTED_VIOLATIONS};
pub use rooms::{Created, ListPage, PageRequest, RoomService};
