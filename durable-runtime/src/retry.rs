//! Retry policies: how many attempts a step gets and how long to wait between them.

use std::time::Duration;

/// How the wait between attempts grows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Backoff {
    /// The same wait every time: `initial`.
    Constant,
    /// `initial × n` before attempt `n + 1`.
    Linear,
    /// `initial × multiplier^(n-1)` before attempt `n + 1`.
    Exponential,
}

/// How a failing step is retried.
///
/// A step without a policy gets one attempt. The wait before attempt `n + 1` follows
/// [`Backoff`], is capped at `max_interval` and, with `jitter`, is drawn uniformly from
/// 50%..100% of that value so that many failing runs do not retry in lock-step.
///
/// ```
/// use std::time::Duration;
/// use durable::{Backoff, RetryPolicy};
///
/// let policy = RetryPolicy::new(4)
///     .backoff(Backoff::Exponential)
///     .initial(Duration::from_millis(100));
/// assert_eq!(policy.delay_after(1), Duration::from_millis(100));
/// assert_eq!(policy.delay_after(2), Duration::from_millis(200));
/// assert_eq!(policy.delay_after(3), Duration::from_millis(400));
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RetryPolicy {
    /// Attempts in all, the first included (at least 1).
    pub max_attempts: u32,
    /// How the wait grows.
    pub backoff: Backoff,
    /// The first wait.
    pub initial: Duration,
    /// The growth factor of [`Backoff::Exponential`].
    pub multiplier: f64,
    /// The longest wait.
    pub max_interval: Duration,
    /// Whether to randomise each wait (50%..100% of it).
    pub jitter: bool,
}

impl Default for RetryPolicy {
    /// One attempt, no retry.
    fn default() -> Self {
        Self {
            max_attempts: 1,
            backoff: Backoff::Exponential,
            initial: Duration::from_secs(1),
            multiplier: 2.0,
            max_interval: Duration::from_secs(60),
            jitter: false,
        }
    }
}

impl RetryPolicy {
    /// A policy of `max_attempts` attempts with exponential backoff from 1s, doubling, capped at 60s.
    pub fn new(max_attempts: u32) -> Self {
        Self {
            max_attempts: max_attempts.max(1),
            ..Self::default()
        }
    }

    /// Sets how the wait grows.
    pub fn backoff(mut self, backoff: Backoff) -> Self {
        self.backoff = backoff;
        self
    }

    /// Sets the first wait.
    pub fn initial(mut self, initial: Duration) -> Self {
        self.initial = initial;
        self
    }

    /// Sets the growth factor of exponential backoff.
    pub fn multiplier(mut self, multiplier: f64) -> Self {
        self.multiplier = multiplier;
        self
    }

    /// Sets the longest wait.
    pub fn max_interval(mut self, max_interval: Duration) -> Self {
        self.max_interval = max_interval;
        self
    }

    /// Turns jitter on or off.
    pub fn jitter(mut self, jitter: bool) -> Self {
        self.jitter = jitter;
        self
    }

    /// The wait after failed attempt number `attempt` (1-based), before jitter.
    pub fn delay_after(&self, attempt: u32) -> Duration {
        let n = attempt.max(1);
        let delay = match self.backoff {
            Backoff::Constant => self.initial,
            Backoff::Linear => self.initial.saturating_mul(n),
            Backoff::Exponential => {
                let factor = self.multiplier.max(1.0).powi((n - 1).min(1000) as i32);
                Duration::try_from_secs_f64(self.initial.as_secs_f64() * factor)
                    .unwrap_or(self.max_interval)
            }
        };
        delay.min(self.max_interval)
    }

    /// The wait after failed attempt `attempt`, with jitter applied when enabled.
    pub fn jittered_delay_after(&self, attempt: u32) -> Duration {
        let delay = self.delay_after(attempt);
        if !self.jitter {
            return delay;
        }
        delay.mul_f64(0.5 + 0.5 * fastrand::f64())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn linear_and_constant_grow_as_named() {
        let ms = Duration::from_millis;
        let linear = RetryPolicy::new(5).backoff(Backoff::Linear).initial(ms(10));
        assert_eq!(
            (1..=3).map(|n| linear.delay_after(n)).collect::<Vec<_>>(),
            [ms(10), ms(20), ms(30)]
        );
        let constant = RetryPolicy::new(5)
            .backoff(Backoff::Constant)
            .initial(ms(10));
        assert_eq!(constant.delay_after(7), ms(10));
    }

    #[test]
    fn exponential_multiplies_each_wait_by_the_multiplier() {
        let ms = Duration::from_millis;
        let doubling = RetryPolicy::new(5)
            .backoff(Backoff::Exponential)
            .initial(ms(10))
            .multiplier(2.0);
        assert_eq!(
            (1..=4).map(|n| doubling.delay_after(n)).collect::<Vec<_>>(),
            [ms(10), ms(20), ms(40), ms(80)]
        );
    }

    #[test]
    fn jitter_spreads_the_waits() {
        let policy = RetryPolicy::new(5)
            .initial(Duration::from_secs(10))
            .jitter(true);
        let waits: std::collections::HashSet<_> =
            (0..20).map(|_| policy.jittered_delay_after(1)).collect();
        assert!(waits.len() > 1, "20 jittered waits, all equal: {waits:?}");
    }

    #[test]
    fn waits_are_capped_and_jitter_stays_in_bounds() {
        let policy = RetryPolicy::new(50)
            .initial(Duration::from_secs(1))
            .max_interval(Duration::from_secs(5))
            .jitter(true);
        assert_eq!(policy.delay_after(40), Duration::from_secs(5));
        for n in 1..20 {
            let d = policy.jittered_delay_after(n);
            let full = policy.delay_after(n);
            assert!(
                d >= full / 2 && d <= full,
                "{d:?} outside 50%..100% of {full:?}"
            );
        }
    }
}
