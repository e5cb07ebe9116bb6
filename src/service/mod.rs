//! The rules: what each call does, over a [`crate::store::Store`]. Both
//! transports call into here, so gRPC and REST cannot drift apart.

mod clock;
mod delivery;
mod error;
mod events;
mod rooms;
mod sessions;
mod watchers;

pub use clock::{Clock, ManualClock, SystemClock};
pub use delivery::{DeliveryConfig, DeliveryWorker};
pub use error::{Error, MAX_REPORTED_VIOLATIONS};
pub use events::{EventService, MAX_EVENT_DATA_BYTES, WatchRequest, WebhookKeys};
pub use rooms::{Created, ListPage, PageRequest, RoomService};
pub use sessions::{SessionConfig, SessionListRequest, SessionPage, SessionService, SweepReport};
