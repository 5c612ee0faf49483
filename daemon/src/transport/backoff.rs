//! Exponential reconnect backoff with jitter.

use std::time::Duration;

use rand::Rng;

/// Reconnect delays: doubling from `min` up to `max`, each randomised to
/// between half and all of the current step so that instances that lost
/// each other at the same moment do not redial in lockstep.
#[derive(Clone, Debug)]
pub struct Backoff {
    min: Duration,
    max: Duration,
    step: Duration,
}

impl Backoff {
    /// A backoff from `min` to `max` (`max` is raised to `min` if smaller).
    pub fn new(min: Duration, max: Duration) -> Backoff {
        let max = max.max(min);
        Backoff {
            min,
            max,
            step: min,
        }
    }

    /// The next delay to wait before dialing again.
    pub fn next_delay(&mut self) -> Duration {
        let step = self.step;
        self.step = (self.step * 2).min(self.max);
        let half = step / 2;
        let jitter_ns =
            rand::thread_rng().gen_range(0..=half.as_nanos().min(u64::MAX as u128) as u64);
        half + Duration::from_nanos(jitter_ns)
    }

    /// Back to the shortest delay (after a connection that worked).
    pub fn reset(&mut self) {
        self.step = self.min;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_to_the_cap_with_jitter_and_resets() {
        let min = Duration::from_millis(100);
        let max = Duration::from_millis(1000);
        let mut b = Backoff::new(min, max);
        let delays: Vec<Duration> = (0..8).map(|_| b.next_delay()).collect();
        assert!(delays[0] >= min / 2 && delays[0] <= min);
        assert!(delays[1] >= min && delays[1] <= min * 2);
        for d in &delays {
            assert!(*d <= max, "{d:?} above the cap");
        }
        assert!(delays[7] >= max / 2, "reaches the cap: {delays:?}");
        b.reset();
        assert!(b.next_delay() <= min);
    }
}
