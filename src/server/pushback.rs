//! How long a refused call asks its client to wait before it tries again
//! (gRPC's `grpc-retry-pushback-ms`, REST's `Retry-After`).
//!
//! A refusal is not free: its headers are decoded, a stream opened, its
//! body drained and an answer sent, which on this server costs about as
//! much CPU as a GetRoom it serves (`docs/overload.md`). Callers that honour
//! the pushback come back once per pushback, so with a fixed pushback the
//! refusals, and the CPU they take from admitted calls, grow with the crowd
//! of waiting callers: 5,000 callers told "one second" are 5,000 refusals a
//! second.
//!
//! So each refused caller is given a return time of its own, and return
//! times are spread so that returning callers arrive at no more than an
//! eighth of the rate of admitted calls: refusals then cost a bounded share
//! of the CPU however many callers wait. (A sixteenth left the server more
//! CPU still, but refused callers then waited 4-7 s for their turn instead
//! of about 2 s: docs/overload.md.) While the refusals are few,
//! the return time is the plain jittered 0.5–1.5 s; as they grow, the queue
//! of promised return times grows ahead of now, to at most 10 s.

use std::ops::Range;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::time::Instant;

/// The pushback of a refusal while refusals are few: jittered so that
/// callers refused together do not come back together.
pub const BASE_MS: Range<u64> = 500..1500;
/// The longest pushback: past it, refused callers come back faster than the
/// budget, rather than being told to wait for ever.
pub const MAX: Duration = Duration::from_secs(10);
/// Returning callers per admitted call that the spacing aims at.
const RETURNS_PER_ADMITTED: f64 = 1.0 / 8.0;
/// Returns per second allowed whatever the admitted rate, so that a server
/// whose slots are all held by slow calls does not push everyone to `MAX`.
const MIN_RETURNS_PER_SECOND: f64 = 64.0;
/// How often the admitted rate is re-measured.
const RATE_WINDOW: Duration = Duration::from_secs(1);

/// Shared by every connection of a server.
#[derive(Debug)]
pub struct Pushback {
    /// Calls admitted since `State::window_start`: bumped on every admitted
    /// call, so kept out of the lock the refusals take.
    admitted: AtomicU64,
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    window_start: Instant,
    /// Admitted calls per second in the last whole window.
    admitted_per_second: f64,
    /// The latest return time promised to a refused caller.
    horizon: Instant,
}

impl Pushback {
    pub fn new(now: Instant) -> Pushback {
        Pushback {
            admitted: AtomicU64::new(0),
            state: Mutex::new(State {
                window_start: now,
                admitted_per_second: 0.0,
                horizon: now,
            }),
        }
    }

    /// Counts one admitted call.
    pub fn admitted(&self) {
        self.admitted.fetch_add(1, Ordering::Relaxed);
    }

    /// The wait to ask of a caller refused at `now`, `jitter` (0.0..1.0)
    /// picking its place in [`BASE_MS`].
    pub fn refused(&self, now: Instant, jitter: f64) -> Duration {
        let base = Duration::from_millis(
            BASE_MS.start + ((BASE_MS.end - BASE_MS.start) as f64 * jitter) as u64,
        );
        // A poisoned lock only means a panic elsewhere mid-update: the
        // state is still a valid schedule.
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let elapsed = now.saturating_duration_since(state.window_start);
        if elapsed >= RATE_WINDOW {
            let admitted = self.admitted.swap(0, Ordering::Relaxed);
            state.admitted_per_second = admitted as f64 / elapsed.as_secs_f64();
            state.window_start = now;
        }
        let returns_per_second =
            (state.admitted_per_second * RETURNS_PER_ADMITTED).max(MIN_RETURNS_PER_SECOND);
        let spacing = Duration::from_secs_f64(1.0 / returns_per_second);
        let at = (now + base).max(state.horizon + spacing).min(now + MAX);
        state.horizon = at;
        at - now
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A pushback's return time, in ms after `start`.
    fn returns_at(start: Instant, now: Instant, pushback: Duration) -> u128 {
        (now + pushback - start).as_millis()
    }

    #[test]
    fn few_refusals_get_the_jittered_base() {
        let start = Instant::now();
        let pushback = Pushback::new(start);
        for (i, jitter) in [0.0, 0.5, 0.999].into_iter().enumerate() {
            // Far enough apart that they do not queue.
            let now = start + Duration::from_secs(2 * i as u64);
            let wait = pushback.refused(now, jitter);
            assert!(
                BASE_MS.contains(&(wait.as_millis() as u64)),
                "{wait:?} for jitter {jitter}"
            );
        }
        assert_eq!(
            pushback.refused(start + Duration::from_secs(10), 0.5),
            Duration::from_millis(1000)
        );
    }

    /// 2,000 callers refused at once while 1,600 calls a second are
    /// admitted: their returns are spread at 200 a second (an eighth of the
    /// admitted rate), not all within the next second.
    #[test]
    fn a_crowd_is_spread_at_an_eighth_of_the_admitted_rate() {
        let start = Instant::now();
        let pushback = Pushback::new(start);
        for _ in 0..1_600 {
            pushback.admitted();
        }
        let now = start + RATE_WINDOW;
        let returns: Vec<u128> = (0..2_000)
            .map(|_| returns_at(start, now, pushback.refused(now, 0.0)))
            .collect();
        // In order, 5 ms apart, from the base on; capped at MAX.
        assert_eq!(returns[0], 1_500);
        for pair in returns.windows(2) {
            assert!(pair[1] >= pair[0], "{pair:?}");
        }
        let last = *returns.last().unwrap();
        assert_eq!(last, (RATE_WINDOW + MAX).as_millis());
        for second in 0..9 {
            let from = second * 1000;
            let in_second = returns
                .iter()
                .filter(|&&at| at >= from + 1_500 && at < from + 2_500)
                .count();
            assert!(
                (199..=201).contains(&in_second),
                "{in_second} returns in one second"
            );
        }
    }

    #[test]
    fn the_queue_drains_back_to_the_base() {
        let start = Instant::now();
        let pushback = Pushback::new(start);
        let now = start + RATE_WINDOW;
        let mut last = Duration::ZERO;
        for _ in 0..500 {
            last = pushback.refused(now, 0.0);
        }
        // No admitted calls: 64 returns a second, so 500 reach past 7 s.
        assert!(last > Duration::from_secs(7), "{last:?}");
        // Once the promised returns are past, a refusal gets the base again.
        let later = now + last + Duration::from_millis(1);
        assert_eq!(pushback.refused(later, 0.0), Duration::from_millis(500));
    }

    #[test]
    fn a_refusal_after_a_quiet_spell_measures_the_rate_over_it() {
        let start = Instant::now();
        let pushback = Pushback::new(start);
        for _ in 0..16_000 {
            pushback.admitted();
        }
        // 16,000 admitted over 10 s: 1,600 a second, so 200 returns a
        // second, 5 ms apart.
        let now = start + Duration::from_secs(10);
        let first = pushback.refused(now, 0.0);
        let second = pushback.refused(now, 0.0);
        assert_eq!(second - first, Duration::from_millis(5));
    }
}
