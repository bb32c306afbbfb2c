//! A circuit breaker per upstream and the retry budget, both driven by the caller's clock
//! so their tests need no sleeping.
//!
//! Breaker: closed until `failures` consecutive failures; then open (refuses) for `open`;
//! then half-open: one trial request at a time, whose success closes it and whose failure
//! opens it again.

use std::time::{Duration, Instant};

/// The breaker's state, for metrics and the decision log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerState {
    /// Requests flow.
    Closed,
    /// Refusing until the given instant.
    Open,
    /// One trial in flight or allowed.
    HalfOpen,
}

/// One upstream's breaker.
#[derive(Debug)]
pub struct Breaker {
    failures: u32,
    threshold: u32,
    open_for: Duration,
    opened_at: Option<Instant>,
    trial_in_flight: bool,
}

impl Breaker {
    /// Opens after `threshold` consecutive failures, for `open_for`.
    pub fn new(threshold: u32, open_for: Duration) -> Self {
        Breaker {
            failures: 0,
            threshold: threshold.max(1),
            open_for,
            opened_at: None,
            trial_in_flight: false,
        }
    }

    /// Takes new thresholds (config reload) and keeps the state.
    pub fn retune(&mut self, threshold: u32, open_for: Duration) {
        self.threshold = threshold.max(1);
        self.open_for = open_for;
    }

    /// The state at `now`.
    pub fn state(&self, now: Instant) -> BreakerState {
        match self.opened_at {
            None => BreakerState::Closed,
            Some(t) if now.duration_since(t) < self.open_for => BreakerState::Open,
            Some(_) => BreakerState::HalfOpen,
        }
    }

    /// Whether a request may go now; a half-open breaker lets exactly one through.
    pub fn try_acquire(&mut self, now: Instant) -> bool {
        match self.state(now) {
            BreakerState::Closed => true,
            BreakerState::Open => false,
            BreakerState::HalfOpen if self.trial_in_flight => false,
            BreakerState::HalfOpen => {
                self.trial_in_flight = true;
                true
            }
        }
    }

    /// Whether a request could go now (no trial is taken).
    pub fn allows(&self, now: Instant) -> bool {
        match self.state(now) {
            BreakerState::Closed => true,
            BreakerState::Open => false,
            BreakerState::HalfOpen => !self.trial_in_flight,
        }
    }

    /// A request ended with neither verdict (cancelled): frees the half-open trial.
    pub fn release(&mut self) {
        self.trial_in_flight = false;
    }

    /// A request succeeded: closed again.
    pub fn success(&mut self) {
        self.failures = 0;
        self.opened_at = None;
        self.trial_in_flight = false;
    }

    /// A request failed at `now`.
    pub fn failure(&mut self, now: Instant) {
        self.failures = self.failures.saturating_add(1);
        if self.trial_in_flight || self.failures >= self.threshold {
            self.opened_at = Some(now);
        }
        self.trial_in_flight = false;
    }
}

/// Retries earned by requests (`ratio` each) plus a floor per second, spent one per retry;
/// the balance is capped at one second's floor plus ten requests' worth.
#[derive(Debug)]
pub struct RetryBudget {
    balance: f64,
    ratio: f64,
    per_s: f64,
    last: Instant,
}

impl RetryBudget {
    /// A full budget at `now`.
    pub fn new(ratio: f64, per_s: f64, now: Instant) -> Self {
        RetryBudget {
            balance: Self::cap_of(ratio, per_s),
            ratio,
            per_s,
            last: now,
        }
    }

    fn cap_of(ratio: f64, per_s: f64) -> f64 {
        per_s + 10.0 * ratio
    }

    /// Takes new parameters (config reload).
    pub fn retune(&mut self, ratio: f64, per_s: f64) {
        self.ratio = ratio;
        self.per_s = per_s;
    }

    fn refill(&mut self, now: Instant) {
        let dt = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.balance = (self.balance + dt * self.per_s).min(Self::cap_of(self.ratio, self.per_s));
    }

    /// A request arrived.
    pub fn deposit(&mut self, now: Instant) {
        self.refill(now);
        self.balance = (self.balance + self.ratio).min(Self::cap_of(self.ratio, self.per_s));
    }

    /// Takes one retry if the budget has it.
    pub fn withdraw(&mut self, now: Instant) -> bool {
        self.refill(now);
        if self.balance >= 1.0 {
            self.balance -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_after_threshold_then_one_trial() {
        let t0 = Instant::now();
        let mut b = Breaker::new(3, Duration::from_secs(5));
        b.failure(t0);
        b.failure(t0);
        assert!(b.try_acquire(t0));
        b.failure(t0);
        assert_eq!(b.state(t0), BreakerState::Open);
        assert!(!b.try_acquire(t0 + Duration::from_secs(4)));
        let t1 = t0 + Duration::from_secs(5);
        assert_eq!(b.state(t1), BreakerState::HalfOpen);
        assert!(b.try_acquire(t1));
        assert!(!b.try_acquire(t1), "only one trial at a time");
        b.failure(t1);
        assert_eq!(
            b.state(t1 + Duration::from_secs(1)),
            BreakerState::Open,
            "a failed trial reopens"
        );
        let t2 = t1 + Duration::from_secs(5);
        assert!(b.try_acquire(t2));
        b.success();
        assert_eq!(b.state(t2), BreakerState::Closed);
        b.failure(t2);
        assert_eq!(b.state(t2), BreakerState::Closed, "the count restarted");
    }

    #[test]
    fn a_success_resets_the_count() {
        let t0 = Instant::now();
        let mut b = Breaker::new(2, Duration::from_secs(1));
        b.failure(t0);
        b.success();
        b.failure(t0);
        assert_eq!(b.state(t0), BreakerState::Closed);
    }

    #[test]
    fn budget_is_earned_and_spent() {
        let t0 = Instant::now();
        // No floor: only what requests earn.
        let mut r = RetryBudget::new(0.5, 0.0, t0);
        for _ in 0..5 {
            assert!(r.withdraw(t0));
        }
        assert!(!r.withdraw(t0), "the initial balance is 10 * 0.5");
        r.deposit(t0);
        assert!(!r.withdraw(t0));
        r.deposit(t0);
        assert!(r.withdraw(t0));
        // A floor refills with time.
        let mut f = RetryBudget::new(0.0, 2.0, t0);
        assert!(f.withdraw(t0) && f.withdraw(t0) && !f.withdraw(t0));
        assert!(f.withdraw(t0 + Duration::from_millis(500)));
    }
}
