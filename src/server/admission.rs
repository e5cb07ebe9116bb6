//! How many calls may run at once: at most `--max-in-flight`, and fewer
//! while the server is saturated.
//!
//! A fixed bound is either too low for bursts (an idle server should take
//! a burst of a few hundred calls at once) or too high under sustained
//! overload: every admitted call shares the CPU with all the others, so the
//! admitted calls' latency grows with the bound (docs/overload.md: admitted
//! p99 of about 30 ms at 32 in flight, 60 ms at 64, 240 ms at 256, with
//! 5,000 callers on one core). So the bound adapts to how long admitted calls
//! wait for the CPU: the time from admission to the first time the call's
//! task runs, which grows with the runtime's queue and does not depend on
//! how far away Redis is (a slow Redis makes calls slow, not queued). While
//! that wait's p99 stays over [`TARGET_WAIT`] the limit shrinks; while it
//! stays well under, the limit grows back to the ceiling.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use crate::telemetry::metrics;

/// The p99 of the wait for the CPU that the limit aims to keep.
pub const TARGET_WAIT: Duration = Duration::from_millis(3);
/// The limit is never lowered below this (nor above the ceiling).
/// Even at the floor, calls that each wait a millisecond on Redis make
/// 16,000 calls a second per replica.
const FLOOR: usize = 16;
/// A decision needs this many samples, or [`LONGEST_WINDOW`].
const WINDOW_SAMPLES: usize = 256;
/// And at least this long, so one burst does not swing the limit.
const SHORTEST_WINDOW: Duration = Duration::from_millis(50);
/// A window this old is decided on whatever it holds: an idle server grows
/// back to its ceiling within seconds.
const LONGEST_WINDOW: Duration = Duration::from_secs(1);

/// The current bound on calls in flight, and what it is adjusted from.
pub struct AdaptiveLimit {
    ceiling: usize,
    floor: usize,
    limit: AtomicUsize,
    window: Mutex<Window>,
}

struct Window {
    started: Instant,
    /// Waits in microseconds; at most [`WINDOW_SAMPLES`].
    waits: Vec<u32>,
}

impl AdaptiveLimit {
    /// Starts at `ceiling`: a server that has not been overloaded takes
    /// every call up to its configured bound.
    pub fn new(ceiling: usize) -> AdaptiveLimit {
        metrics::in_flight_limit(ceiling);
        AdaptiveLimit {
            ceiling,
            floor: FLOOR.min(ceiling),
            limit: AtomicUsize::new(ceiling),
            window: Mutex::new(Window {
                started: Instant::now(),
                waits: Vec::with_capacity(WINDOW_SAMPLES),
            }),
        }
    }

    /// `--max-in-flight`.
    pub fn ceiling(&self) -> usize {
        self.ceiling
    }

    /// How many calls may be in flight now.
    pub fn current(&self) -> usize {
        self.limit.load(Ordering::Relaxed)
    }

    /// An admitted call waited `wait` for its first run; `now` is when it ran.
    pub fn record(&self, wait: Duration, now: Instant) {
        let mut window = self.window.lock().unwrap_or_else(PoisonError::into_inner);
        let micros = u32::try_from(wait.as_micros()).unwrap_or(u32::MAX);
        if window.waits.len() < WINDOW_SAMPLES {
            window.waits.push(micros);
        }
        let age = now.saturating_duration_since(window.started);
        let full = window.waits.len() >= WINDOW_SAMPLES && age >= SHORTEST_WINDOW;
        if !full && age < LONGEST_WINDOW {
            return;
        }
        let p99 = percentile_99(&mut window.waits);
        window.waits.clear();
        window.started = now;
        drop(window);
        self.adjust(Duration::from_micros(u64::from(p99)));
    }

    /// Multiplicative decrease, additive increase: the limit falls fast when
    /// calls queue, and climbs back a step per window.
    fn adjust(&self, p99: Duration) {
        let limit = self.current();
        let next = if p99 > TARGET_WAIT {
            (limit * 3 / 4).max(self.floor)
        } else if p99 < TARGET_WAIT / 2 {
            (limit + (limit / 16).max(1)).min(self.ceiling)
        } else {
            limit
        };
        if next != limit {
            self.limit.store(next, Ordering::Relaxed);
            metrics::in_flight_limit(next);
            tracing::debug!(
                limit = next,
                wait_p99_us = p99.as_micros() as u64,
                "in-flight limit adjusted"
            );
        }
    }
}

fn percentile_99(samples: &mut [u32]) -> u32 {
    if samples.is_empty() {
        return 0;
    }
    let rank = (samples.len() * 99).div_ceil(100).saturating_sub(1);
    *samples.select_nth_unstable(rank).1
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feed(limit: &AdaptiveLimit, wait: Duration, windows: usize, start: Instant) -> Instant {
        let mut now = start;
        for _ in 0..windows {
            for _ in 0..WINDOW_SAMPLES {
                now += SHORTEST_WINDOW / WINDOW_SAMPLES as u32 + Duration::from_micros(1);
                limit.record(wait, now);
            }
        }
        now
    }

    #[test]
    fn queued_calls_shrink_the_limit_to_its_floor_and_idle_time_restores_it() {
        let limit = AdaptiveLimit::new(256);
        assert_eq!(limit.current(), 256);
        let now = feed(&limit, TARGET_WAIT * 5, 3, Instant::now());
        assert_eq!(limit.current(), 256 * 3 / 4 * 3 / 4 * 3 / 4);
        let now = feed(&limit, TARGET_WAIT * 5, 20, now);
        assert_eq!(limit.current(), FLOOR);
        // Waits between half the target and the target hold it.
        let now = feed(&limit, TARGET_WAIT * 3 / 4, 5, now);
        assert_eq!(limit.current(), FLOOR);
        // Short waits bring it back, a step per window.
        let now = feed(&limit, Duration::from_micros(50), 1, now);
        assert_eq!(limit.current(), FLOOR + (FLOOR / 16).max(1));
        feed(&limit, Duration::from_micros(50), 200, now);
        assert_eq!(limit.current(), 256);
    }

    #[test]
    fn a_few_samples_decide_nothing_until_the_window_is_old() {
        let limit = AdaptiveLimit::new(64);
        let start = Instant::now();
        for i in 0..10 {
            limit.record(TARGET_WAIT * 10, start + Duration::from_millis(i * 10));
        }
        assert_eq!(limit.current(), 64);
        limit.record(TARGET_WAIT * 10, start + LONGEST_WINDOW);
        assert_eq!(limit.current(), 48);
    }

    #[test]
    fn one_slow_call_in_a_window_does_not_count_as_queueing() {
        let limit = AdaptiveLimit::new(64);
        let mut now = Instant::now();
        for i in 0..WINDOW_SAMPLES {
            now += Duration::from_millis(1);
            let wait = if i == 7 {
                TARGET_WAIT * 10
            } else {
                Duration::from_micros(100)
            };
            limit.record(wait, now);
        }
        assert_eq!(limit.current(), 64);
    }

    #[test]
    fn a_ceiling_below_the_floor_is_kept() {
        let limit = AdaptiveLimit::new(4);
        feed(&limit, TARGET_WAIT * 5, 5, Instant::now());
        assert_eq!(limit.current(), 4);
    }
}
