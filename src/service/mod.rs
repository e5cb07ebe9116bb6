//! The rules: what each call does, over a [`crate::store::Store`]. Both
//! transports call into here, so gRPC and REST cannot drift apart.

mod clock;
mod error;
mod rooms;
mod sessions;

pub use clock::{Clock, ManualClock, SystemClock};
pub use error::{Error, MAX_REPORTED_VIOLATIONS};
pub use rooms::{Created, ListPage, PageRequest, RoomService};
pub use sessions::{SessionConfig, SessionListRequest, SessionPage, SessionService, SweepReport};
