//! The scheduler's knobs, each with a documented default.

use std::time::Duration;

use crate::placement::Strategy;
use crate::verify::Policy;

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
    /// How long a run taken from a peer without its word (its connection
    /// dropped, it did not claim the run on rejoining, or it never confirmed
    /// a cancel) keeps its task's peer id held, so that an answer by that id
    /// is not taken for a newer task reusing it. A peer that answers such a
    /// run later than this by its peer id alone may be taken to answer the
    /// task holding the id then. Default 10 minutes.
    pub lost_run_hold: Duration,
    /// How a task picks among the free peers able to run it.
    pub strategy: Strategy,
    /// Seed of the scheduler's randomness: back-off jitter, and (from a
    /// stream of its own) verification's draws.
    pub seed: u64,
    /// Replication, canaries, reputation and quarantine (see [`crate::verify`]).
    pub verify: VerifyConfig,
}

/// The knobs of verification, each with a documented default.
#[derive(Debug, Clone)]
pub struct VerifyConfig {
    /// The policy of tasks that do not give one. Default: none (a task is
    /// verified only when it asks).
    pub default_policy: Option<Policy>,
    /// Replicas beyond a policy's own that disagreements may add before a
    /// task fails with `no_quorum`. Default 2.
    pub max_extra_replicas: u32,
    /// Consecutive valid results after which adaptive replication trusts a
    /// worker (BOINC's 10). Default 10.
    pub trust_after: u32,
    /// The cap on the consecutive valid count, so that a trusted worker's
    /// work is still replicated with probability at least 1/cap. Default 100.
    pub max_consecutive: u32,
    /// Strikes (invalid results not yet forgiven) that quarantine a worker.
    /// Default 3.
    pub quarantine_after: u32,
    /// Consecutive valid results that forgive one strike. Default 100.
    pub forgive_after: u32,
    /// The chance, per assignment of real work to a worker, that a canary
    /// follows for it. Default 0 (off).
    pub canary_rate: f64,
    /// Known answers kept per task type for canaries. Default 64.
    pub canary_pool: usize,
    /// The most a canary waits for its worker. Default 60 s.
    pub canary_queue_timeout: Duration,
    /// Reputation records kept; past it, records with nothing against them
    /// are forgotten. Default 100 000.
    pub max_reputations: usize,
}

impl Default for VerifyConfig {
    fn default() -> VerifyConfig {
        VerifyConfig {
            default_policy: None,
            max_extra_replicas: 2,
            trust_after: 10,
            max_consecutive: 100,
            quarantine_after: 3,
            forgive_after: 100,
            canary_rate: 0.0,
            canary_pool: 64,
            canary_queue_timeout: Duration::from_secs(60),
            max_reputations: 100_000,
        }
    }
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
            lost_run_hold: Duration::from_secs(600),
            strategy: Strategy::default(),
            seed: 0x5eed,
            verify: VerifyConfig::default(),
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
