//! Protecting the authorization server and the app from each other when the AS fails:
//! the AS is a single point of failure for every route that exchanges.
//!
//! - [`Breaker`]: per authority. After `failures` consecutive transient failures it
//!   opens: exchanges fail fast with 503 `authority_unavailable` and a `Retry-After` of
//!   the time left, instead of queueing on a dead AS. When the time is up one probe goes
//!   through; success closes it, failure opens it again.
//! - [`RetryBudget`]: per authority. Retries may add at most 20 % to the calls the AS
//!   sees, plus a small floor per second, so retries cannot multiply load on an AS that
//!   is already struggling.
//!
//! Both take `now` (an instant of [`crate::clock`]) so their logic is tested without
//! sleeping.

use std::sync::Mutex;
use std::time::Duration;

use crate::clock::Instant;

use crate::config::model::BreakerSettings;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Closed {
        failures: u32,
    },
    Open {
        until: Instant,
    },
    /// One probe is in flight; everything else fails fast.
    Probing,
}

/// What the breaker allowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admit {
    Call,
    Probe,
}

/// A per-authority circuit breaker.
#[derive(Debug)]
pub struct Breaker {
    settings: BreakerSettings,
    state: Mutex<State>,
}

impl Breaker {
    pub fn new(settings: BreakerSettings) -> Self {
        Self {
            settings,
            state: Mutex::new(State::Closed { failures: 0 }),
        }
    }

    /// May a call go to the AS now? `Err` carries the seconds until it may.
    pub fn admit(&self, now: Instant) -> Result<Admit, u64> {
        if self.settings.failures == 0 {
            return Ok(Admit::Call);
        }
        let Ok(mut state) = self.state.lock() else {
            return Ok(Admit::Call);
        };
        match *state {
            State::Closed { .. } => Ok(Admit::Call),
            State::Open { until } if now < until => Err(ceil_secs(until - now)),
            State::Open { .. } => {
                *state = State::Probing;
                Ok(Admit::Probe)
            }
            State::Probing => Err(1),
        }
    }

    /// Records how a call went: `transient` failures count toward opening; any answer
    /// from the AS (including a refusal) shows it is up.
    pub fn record(&self, admitted: Admit, transient_failure: bool, now: Instant) {
        if self.settings.failures == 0 {
            return;
        }
        let Ok(mut state) = self.state.lock() else {
            return;
        };
        *state = match (*state, transient_failure) {
            (_, false) => State::Closed { failures: 0 },
            (State::Probing, true) if admitted == Admit::Probe => State::Open {
                until: now + self.settings.open_for,
            },
            (State::Closed { failures }, true) if failures + 1 >= self.settings.failures => {
                State::Open {
                    until: now + self.settings.open_for,
                }
            }
            (State::Closed { failures }, true) => State::Closed {
                failures: failures + 1,
            },
            (other, true) => other,
        };
    }

    /// Open or probing: what `tokex_circuit_breaker_open` shows. An open circuit
    /// stays so past `open_for` until the next call probes.
    pub fn tripped(&self) -> bool {
        self.state
            .lock()
            .map(|s| !matches!(*s, State::Closed { .. }))
            .unwrap_or(false)
    }

    pub fn is_open(&self, now: Instant) -> bool {
        self.state
            .lock()
            .map(|s| matches!(*s, State::Open { until } if now < until) || *s == State::Probing)
            .unwrap_or(false)
    }
}

fn ceil_secs(d: Duration) -> u64 {
    d.as_secs() + u64::from(d.subsec_nanos() > 0)
}

/// Retries allowed per first attempt.
const RETRY_RATIO: f64 = 0.2;
/// Retries allowed per second regardless of traffic, so a quiet authority can retry.
const RETRY_FLOOR_PER_SEC: f64 = 2.0;
/// Unused budget does not pile up beyond this.
const RETRY_CAP: f64 = 20.0;

/// A token bucket of retries: each first attempt deposits 0.2, time deposits the floor,
/// each retry withdraws one.
#[derive(Debug)]
pub struct RetryBudget {
    state: Mutex<(f64, Instant)>,
}

impl RetryBudget {
    pub fn new(now: Instant) -> Self {
        Self {
            state: Mutex::new((RETRY_FLOOR_PER_SEC, now)),
        }
    }

    /// Records a first attempt.
    pub fn deposit(&self, now: Instant) {
        if let Ok(mut s) = self.state.lock() {
            refill(&mut s, now);
            s.0 = (s.0 + RETRY_RATIO).min(RETRY_CAP);
        }
    }

    /// Takes one retry from the budget, if there is one.
    pub fn withdraw(&self, now: Instant) -> bool {
        let Ok(mut s) = self.state.lock() else {
            return false;
        };
        refill(&mut s, now);
        if s.0 >= 1.0 {
            s.0 -= 1.0;
            true
        } else {
            false
        }
    }
}

fn refill(s: &mut (f64, Instant), now: Instant) {
    let elapsed = now.saturating_duration_since(s.1).as_secs_f64();
    s.0 = (s.0 + elapsed * RETRY_FLOOR_PER_SEC).min(RETRY_CAP);
    s.1 = now;
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Closed -> open after N transient failures -> fail fast with the time left ->
    /// one probe -> closed on success, open again on failure.
    #[test]
    fn breaker_cycle() {
        let b = Breaker::new(BreakerSettings {
            failures: 3,
            open_for: Duration::from_secs(5),
        });
        let t0 = crate::clock::now();
        for _ in 0..2 {
            assert_eq!(b.admit(t0), Ok(Admit::Call));
            b.record(Admit::Call, true, t0);
        }
        assert_eq!(b.admit(t0), Ok(Admit::Call));
        b.record(Admit::Call, false, t0);
        for _ in 0..3 {
            b.record(Admit::Call, true, t0);
        }
        assert_eq!(b.admit(t0 + Duration::from_millis(1500)), Err(4));
        assert!(b.is_open(t0));
        let later = t0 + Duration::from_secs(5);
        assert_eq!(b.admit(later), Ok(Admit::Probe));
        assert_eq!(b.admit(later), Err(1), "one probe at a time");
        b.record(Admit::Probe, true, later);
        assert_eq!(
            b.admit(later + Duration::from_secs(1)),
            Err(4),
            "failed probe reopens"
        );
        let again = later + Duration::from_secs(5);
        assert_eq!(b.admit(again), Ok(Admit::Probe));
        b.record(Admit::Probe, false, again);
        assert_eq!(b.admit(again), Ok(Admit::Call), "a good probe closes");
        assert!(!b.is_open(again));
    }

    /// A refusal from the AS (it answered) resets the count; failures 0 disables.
    #[test]
    fn refusals_do_not_open_and_zero_disables() {
        let b = Breaker::new(BreakerSettings {
            failures: 2,
            open_for: Duration::from_secs(5),
        });
        let t = crate::clock::now();
        b.record(Admit::Call, true, t);
        b.record(Admit::Call, false, t);
        b.record(Admit::Call, true, t);
        assert_eq!(b.admit(t), Ok(Admit::Call));
        let off = Breaker::new(BreakerSettings {
            failures: 0,
            open_for: Duration::from_secs(5),
        });
        for _ in 0..100 {
            off.record(Admit::Call, true, t);
        }
        assert_eq!(off.admit(t), Ok(Admit::Call));
    }

    /// Retries stay within 20 % of first attempts plus the per-second floor.
    #[test]
    fn retry_budget_bounds_extra_calls() {
        let t0 = crate::clock::now();
        let budget = RetryBudget::new(t0);
        let mut retries = 0;
        for _ in 0..1000 {
            budget.deposit(t0);
            while budget.withdraw(t0) {
                retries += 1;
            }
        }
        assert!(
            retries <= 200 + RETRY_FLOOR_PER_SEC as usize,
            "{retries} retries for 1000 calls"
        );
        assert!(retries >= 190, "{retries}");
        assert!(!budget.withdraw(t0));
        assert!(
            budget.withdraw(t0 + Duration::from_secs(1)),
            "the floor refills over time"
        );
    }
}
