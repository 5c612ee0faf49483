//! Hybrid logical clock (Kulkarni et al.): timestamps that follow wall-clock
//! time closely, never go backwards, and order every write after everything
//! its writer had seen.
//!
//! The clock never reads the system time itself: callers pass the wall-clock
//! reading in milliseconds, which keeps this crate sans-IO and lets tests
//! drive time.

use std::fmt;

use serde::{Deserialize, Serialize};

/// A hybrid logical clock timestamp: 48 bits of wall-clock milliseconds since
/// the Unix epoch and a 16-bit logical counter, packed so that comparing the
/// `u64` compares timestamps.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize)]
pub struct Timestamp(pub u64);

const LOGICAL_BITS: u32 = 16;
const LOGICAL_MASK: u64 = (1 << LOGICAL_BITS) - 1;
const MAX_PHYSICAL: u64 = (1 << (64 - LOGICAL_BITS)) - 1;

impl Timestamp {
    /// A timestamp from its parts; `physical_ms` is truncated to 48 bits.
    pub fn new(physical_ms: u64, logical: u16) -> Self {
        Timestamp(((physical_ms & MAX_PHYSICAL) << LOGICAL_BITS) | u64::from(logical))
    }

    /// Wall-clock milliseconds since the Unix epoch.
    pub fn physical_ms(&self) -> u64 {
        self.0 >> LOGICAL_BITS
    }

    /// Logical counter within the millisecond.
    pub fn logical(&self) -> u16 {
        (self.0 & LOGICAL_MASK) as u16
    }

    /// The next timestamp after this one: same millisecond with the counter
    /// incremented, or the next millisecond when the counter is exhausted.
    fn successor(self) -> Timestamp {
        if self.logical() == u16::MAX {
            Timestamp::new(self.physical_ms() + 1, 0)
        } else {
            Timestamp(self.0 + 1)
        }
    }
}

impl fmt::Debug for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Timestamp({}.{})", self.physical_ms(), self.logical())
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{:05}", self.physical_ms(), self.logical())
    }
}

/// A remote timestamp was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClockError {
    /// The peer's clock is further ahead of ours than the configured bound;
    /// accepting it would drag every later local write into the future.
    #[error(
        "peer clock is {ahead_ms} ms ahead of ours (limit {max_drift_ms} ms): check the clocks (NTP) of both instances"
    )]
    DriftExceeded {
        /// How far the remote timestamp is ahead of the local wall clock.
        ahead_ms: u64,
        /// The configured limit.
        max_drift_ms: u64,
    },
}

/// A hybrid logical clock.
///
/// Guarantees: every timestamp returned by [`Clock::now`] or
/// [`Clock::observe`] is strictly greater than every timestamp this clock
/// returned or observed before, even if the wall clock steps backwards; a
/// remote timestamp more than `max_drift_ms` ahead of the wall clock is
/// refused and leaves the clock unchanged.
#[derive(Debug, Clone)]
pub struct Clock {
    last: Timestamp,
    max_drift_ms: u64,
}

/// Default limit on how far ahead a peer's clock may be: five minutes.
pub const DEFAULT_MAX_DRIFT_MS: u64 = 5 * 60 * 1000;

impl Clock {
    /// A clock that accepts peer timestamps up to `max_drift_ms` ahead of the
    /// local wall clock.
    pub fn new(max_drift_ms: u64) -> Self {
        Clock {
            last: Timestamp::default(),
            max_drift_ms,
        }
    }

    /// A clock resuming after `last`, e.g. the newest timestamp found in the
    /// store after a restart, so that timestamps stay monotonic across restarts.
    pub fn resume(last: Timestamp, max_drift_ms: u64) -> Self {
        Clock { last, max_drift_ms }
    }

    /// The newest timestamp issued or observed.
    pub fn last(&self) -> Timestamp {
        self.last
    }

    /// A timestamp for a local event at wall-clock time `wall_ms`.
    pub fn now(&mut self, wall_ms: u64) -> Timestamp {
        let wall = Timestamp::new(wall_ms, 0);
        self.last = if wall > self.last {
            wall
        } else {
            self.last.successor()
        };
        self.last
    }

    /// Merges a timestamp received from a peer at wall-clock time `wall_ms`
    /// and returns a local timestamp that is after both.
    pub fn observe(&mut self, remote: Timestamp, wall_ms: u64) -> Result<Timestamp, ClockError> {
        let wall_ms = wall_ms.min(MAX_PHYSICAL);
        if remote.physical_ms() > wall_ms.saturating_add(self.max_drift_ms) {
            return Err(ClockError::DriftExceeded {
                ahead_ms: remote.physical_ms() - wall_ms,
                max_drift_ms: self.max_drift_ms,
            });
        }
        let wall = Timestamp::new(wall_ms, 0);
        let newest = self.last.max(remote);
        self.last = if wall > newest {
            wall
        } else {
            newest.successor()
        };
        Ok(self.last)
    }

    /// Checks a remote timestamp against the drift bound without advancing
    /// the clock.
    pub fn check(&self, remote: Timestamp, wall_ms: u64) -> Result<(), ClockError> {
        if remote.physical_ms() > wall_ms.saturating_add(self.max_drift_ms) {
            return Err(ClockError::DriftExceeded {
                ahead_ms: remote.physical_ms() - wall_ms,
                max_drift_ms: self.max_drift_ms,
            });
        }
        Ok(())
    }
}

impl Default for Clock {
    fn default() -> Self {
        Clock::new(DEFAULT_MAX_DRIFT_MS)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn follows_wall_clock_and_survives_steps_backwards() {
        let mut c = Clock::default();
        let a = c.now(1_000);
        assert_eq!(a, Timestamp::new(1_000, 0));
        let b = c.now(1_000);
        assert_eq!(b, Timestamp::new(1_000, 1));
        let back = c.now(500);
        assert!(back > b);
        assert_eq!(back.physical_ms(), 1_000);
        let later = c.now(2_000);
        assert_eq!(later, Timestamp::new(2_000, 0));
    }

    #[test]
    fn counter_overflow_moves_to_next_millisecond() {
        let mut c = Clock::resume(Timestamp::new(10, u16::MAX), DEFAULT_MAX_DRIFT_MS);
        let t = c.now(10);
        assert_eq!(t, Timestamp::new(11, 0));
    }

    #[test]
    fn observe_orders_after_remote_and_bounds_drift() {
        let mut c = Clock::new(1_000);
        let remote = Timestamp::new(5_500, 3);
        let t = c.observe(remote, 5_000).unwrap();
        assert!(t > remote);
        let err = c.observe(Timestamp::new(7_000, 0), 5_000).unwrap_err();
        assert_eq!(
            err,
            ClockError::DriftExceeded {
                ahead_ms: 2_000,
                max_drift_ms: 1_000
            }
        );
        assert_eq!(
            c.last(),
            t,
            "a refused timestamp leaves the clock unchanged"
        );
        assert!(err.to_string().contains("2000 ms ahead"));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]
        #[test]
        fn strictly_monotonic(events in proptest::collection::vec((any::<bool>(), 0u64..10_000, 0u64..12_000, any::<u16>()), 1..200)) {
            let mut c = Clock::new(2_000);
            let mut prev = Timestamp::default();
            for (is_remote, wall, remote_ms, remote_l) in events {
                let t = if is_remote {
                    match c.observe(Timestamp::new(remote_ms, remote_l), wall) {
                        Ok(t) => { prop_assert!(t > Timestamp::new(remote_ms, remote_l)); t }
                        Err(_) => { prop_assert!(remote_ms > wall + 2_000); continue }
                    }
                } else {
                    c.now(wall)
                };
                prop_assert!(t > prev);
                prev = t;
            }
        }
    }
}
