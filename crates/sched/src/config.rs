//! The scheduler's knobs, each with a documented default.

use std::time::Duration;

use crate::placement::Strategy;

/// Scheduler configuration. Every limit has a safe default.
#[derive(Debug, Clone)]
pub struct Config {
    /// A peer silent this long is dead and its tasks are requeued. Default 15 s.
    pub heartbeat_timeout: Duration,
    /// Failed attempts that end a task, when the task does not say. Default 3.
    pub default_max_attempts: u32,
    /// The most a task waits in the queue, when the task does not say.
    /// Default 1 hour.
    pub default_queue_timeout: Duration,
    /// Extra time the coordinator allows past a task's run timeout before it
    /// declares the run timed out itself (the peer enforces the exact limit
    /// and normally reports first). Default 5 s.
    pub run_timeout_slack: Duration,
    /// How long finished tasks (and their results) are kept for retrieval.
    /// Default 1 hour.
    pub result_ttl: Duration,
    /// The most finished tasks kept; the oldest go first. Default 100 000.
    pub max_retained: usize,
    /// The most tasks waiting (queued or backing off) before submissions are
    /// refused as busy. Default 100 000.
    pub max_queued: usize,
    /// Back-off between attempts of a failed task.
    pub retry_backoff: Backoff,
    /// After a coordinator restart, how long a recovered assignment waits for
    /// its peer to reconnect and claim it before it is requeued. Default 30 s.
    pub recovery_grace: Duration,
    /// How long a cancelled or timed-out run keeps its peer's slot while the
    /// peer has not confirmed it stopped. Default 15 s.
    pub cancel_grace: Duration,
    /// How a task picks among the free peers able to run it.
    pub strategy: Strategy,
    /// Seed of the jitter added to back-offs (the core has no other randomness).
    pub seed: u64,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            heartbeat_timeout: Duration::from_secs(15),
            default_max_attempts: 3,
            default_queue_timeout: Duration::from_secs(3600),
            run_timeout_slack: Duration::from_secs(5),
            result_ttl: Duration::from_secs(3600),
            max_retained: 100_000,
            max_queued: 100_000,
            retry_backoff: Backoff::default(),
            recovery_grace: Duration::from_secs(30),
            cancel_grace: Duration::from_secs(15),
            strategy: Strategy::default(),
            seed: 0x5eed,
        }
    }
}

/// Exponential back-off with jitter: the n-th failure waits
/// `min(max, base × 2^(n-1))`, scaled by a random factor in [0.5, 1).
#[derive(Debug, Clone, Copy)]
pub struct Backoff {
    pub base: Duration,
    pub max: Duration,
}

impl Default for Backoff {
    fn default() -> Backoff {
        Backoff { base: Duration::from_millis(100), max: Duration::from_secs(30) }
    }
}

impl Backoff {
    /// The delay before the attempt that follows the `failures`-th failure,
    /// with `unit` a random number in [0, 1).
    pub fn delay(&self, failures: u32, unit: f64) -> Duration {
        let exp = failures.saturating_sub(1).min(30);
        let raw = self.base.saturating_mul(1u32 << exp).min(self.max);
        raw.mul_f64(0.5 + 0.5 * unit.clamp(0.0, 1.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_caps() {
        let b = Backoff { base: Duration::from_millis(100), max: Duration::from_secs(1) };
        // With unit = 1.0 the factor is 1: the raw delay.
        assert_eq!(b.delay(1, 1.0), Duration::from_millis(100));
        assert_eq!(b.delay(2, 1.0), Duration::from_millis(200));
        assert_eq!(b.delay(4, 1.0), Duration::from_millis(800));
        assert_eq!(b.delay(5, 1.0), Duration::from_secs(1));
        assert_eq!(b.delay(60, 1.0), Duration::from_secs(1));
        // Jitter halves at most.
        assert_eq!(b.delay(1, 0.0), Duration::from_millis(50));
    }
}
