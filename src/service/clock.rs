use std::sync::Mutex;
use std::time::Duration;

use jiff::Timestamp;

/// Where the service and the sweeper read the time, so tests can drive it
/// (the server maximum of 480 minutes is not something to wait for).
pub trait Clock: Send + Sync + 'static {
    fn now(&self) -> Timestamp;
}

/// The system clock, to the millisecond the API shows.
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        crate::domain::now()
    }
}

/// A clock that moves only when told to.
pub struct ManualClock(Mutex<Timestamp>);

impl ManualClock {
    pub fn new(start: Timestamp) -> ManualClock {
        ManualClock(Mutex::new(start))
    }

    pub fn advance(&self, by: Duration) {
        let mut now = self.0.lock().expect("clock lock poisoned");
        let millis = i64::try_from(by.as_millis()).unwrap_or(i64::MAX);
        *now = Timestamp::from_millisecond(now.as_millisecond().saturating_add(millis))
            .unwrap_or(Timestamp::MAX);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Timestamp {
        *self.0.lock().expect("clock lock poisoned")
    }
}
