//! A circuit breaker per upstream: after N consecutive failures, stop sending requests for a
//! cool-down, then let one trial through; its outcome closes or re-opens the circuit.
//!
//! Keeps a dead upstream from being hammered by every cache miss and lets the shield answer at
//! once (stale content or a 502) instead of piling up timeouts.

use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Closed { failures: u32 },
    Open { until: Instant },
    HalfOpen { trial_in_flight: bool },
}

/// The circuit is open: the upstream is considered down until the instant given.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("circuit open: upstream failed repeatedly")]
pub struct CircuitOpen;

/// Consecutive-failure circuit breaker.
#[derive(Debug)]
pub struct Breaker {
    threshold: u32,
    cooldown: Duration,
    state: Mutex<State>,
}

impl Breaker {
    /// Opens after `threshold` consecutive failures, for `cooldown`.
    pub fn new(threshold: u32, cooldown: Duration) -> Self {
        Self {
            threshold: threshold.max(1),
            cooldown,
            state: Mutex::new(State::Closed { failures: 0 }),
        }
    }

    /// Asks to send a request now.
    pub fn allow(&self) -> Result<(), CircuitOpen> {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        match *state {
            State::Closed { .. } => Ok(()),
            State::Open { until } if Instant::now() >= until => {
                *state = State::HalfOpen {
                    trial_in_flight: true,
                };
                Ok(())
            }
            State::Open { .. }
            | State::HalfOpen {
                trial_in_flight: true,
            } => Err(CircuitOpen),
            State::HalfOpen {
                trial_in_flight: false,
            } => {
                *state = State::HalfOpen {
                    trial_in_flight: true,
                };
                Ok(())
            }
        }
    }

    /// Reports the outcome of an allowed request.
    pub fn record(&self, success: bool) {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        *state = match (*state, success) {
            (_, true) => State::Closed { failures: 0 },
            (State::Closed { failures }, false) if failures + 1 < self.threshold => State::Closed {
                failures: failures + 1,
            },
            (_, false) => State::Open {
                until: Instant::now() + self.cooldown,
            },
        };
    }

    /// True while requests are being refused.
    pub fn is_open(&self) -> bool {
        matches!(*self.state.lock().unwrap_or_else(PoisonError::into_inner), State::Open { until } if Instant::now() < until)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_after_threshold_and_recovers_through_one_trial() {
        let breaker = Breaker::new(3, Duration::from_millis(30));
        for _ in 0..2 {
            breaker.allow().expect("closed");
            breaker.record(false);
        }
        breaker.allow().expect("still closed after 2 failures");
        breaker.record(false);
        assert_eq!(breaker.allow(), Err(CircuitOpen));
        assert!(breaker.is_open());
        std::thread::sleep(Duration::from_millis(40));
        breaker.allow().expect("one trial after the cool-down");
        assert_eq!(
            breaker.allow(),
            Err(CircuitOpen),
            "only one trial at a time"
        );
        breaker.record(true);
        breaker.allow().expect("closed again");
    }

    #[test]
    fn a_failed_trial_reopens() {
        let breaker = Breaker::new(1, Duration::from_millis(20));
        breaker.record(false);
        assert!(breaker.allow().is_err());
        std::thread::sleep(Duration::from_millis(25));
        breaker.allow().expect("trial");
        breaker.record(false);
        assert!(breaker.allow().is_err());
    }

    #[test]
    fn success_resets_the_count() {
        let breaker = Breaker::new(2, Duration::from_secs(10));
        breaker.record(false);
        breaker.record(true);
        breaker.record(false);
        assert!(breaker.allow().is_ok());
    }
}
