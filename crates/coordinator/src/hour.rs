//! The overview's figures that a page shows but Prometheus does not serve
//! per request: finished tasks per minute over the last hour (a ring of 60
//! counts, advanced as tasks finish and as the snapshot is published, never
//! recomputed per request), latency percentiles, and counts per task type
//! and per model.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use hdrhistogram::Histogram;

/// Minutes the ring keeps.
pub(crate) const MINUTES: usize = 60;

/// Counts of one task type or model.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Tally {
    pub completed: u64,
    pub failed: u64,
}

/// What the overview shows, as published in the snapshot.
#[derive(Debug, Clone, Default)]
pub(crate) struct HourFigures {
    /// Tasks finished in each of the last 60 minutes, oldest first (the
    /// last is the current minute).
    pub per_minute: Vec<u64>,
    /// Submission-to-outcome latency percentiles (p50, p95, p99) over the
    /// tasks finished since start, in milliseconds.
    pub latency_ms: Option<[f64; 3]>,
    pub by_type: BTreeMap<Arc<str>, Tally>,
    pub by_model: BTreeMap<Arc<str>, Tally>,
}

/// The ring and tallies, kept by the telemetry on the core loop.
#[derive(Debug)]
pub(crate) struct Hour {
    ring: [u64; MINUTES],
    /// The minute (since start) the ring's last slot stands for.
    minute: u64,
    latency_us: Option<Histogram<u64>>,
    by_type: BTreeMap<Arc<str>, Tally>,
    by_model: BTreeMap<Arc<str>, Tally>,
}

impl Default for Hour {
    fn default() -> Hour {
        Hour {
            ring: [0; MINUTES],
            minute: 0,
            // 1 µs to an hour, 2 significant digits: a few KiB.
            latency_us: Histogram::new_with_bounds(1, 3_600_000_000, 2).ok(),
            by_type: BTreeMap::new(),
            by_model: BTreeMap::new(),
        }
    }
}

impl Hour {
    /// A task finished `since_start` after the coordinator started.
    pub fn finished(
        &mut self,
        since_start: Duration,
        task_type: &Arc<str>,
        model: Option<&Arc<str>>,
        completed: bool,
        latency: Duration,
    ) {
        self.advance(since_start);
        self.ring[(self.minute % MINUTES as u64) as usize] += 1;
        let bump = |t: &mut Tally| {
            if completed {
                t.completed += 1;
            } else {
                t.failed += 1;
            }
        };
        bump(self.by_type.entry(Arc::clone(task_type)).or_default());
        if let Some(m) = model {
            bump(self.by_model.entry(Arc::clone(m)).or_default());
        }
        if let Some(h) = self.latency_us.as_mut() {
            let us = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
            h.saturating_record(us.max(1));
        }
    }

    /// Moves the ring to the minute of `since_start`, zeroing the minutes
    /// that passed without a finished task.
    fn advance(&mut self, since_start: Duration) {
        let now = since_start.as_secs() / 60;
        if now <= self.minute {
            return;
        }
        let passed = (now - self.minute).min(MINUTES as u64);
        for m in 1..=passed {
            self.ring[((self.minute + m) % MINUTES as u64) as usize] = 0;
        }
        self.minute = now;
    }

    /// The figures as of `since_start`.
    pub fn figures(&mut self, since_start: Duration) -> HourFigures {
        self.advance(since_start);
        let per_minute = (1..=MINUTES as u64)
            .map(|i| self.ring[((self.minute + i) % MINUTES as u64) as usize])
            .collect();
        let latency_ms = self
            .latency_us
            .as_ref()
            .filter(|h| !h.is_empty())
            .map(|h| [0.5, 0.95, 0.99].map(|q| h.value_at_quantile(q) as f64 / 1e3));
        HourFigures {
            per_minute,
            latency_ms,
            by_type: self.by_type.clone(),
            by_model: self.by_model.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: Duration = Duration::from_secs(60);

    #[test]
    fn the_ring_counts_per_minute_and_forgets_after_an_hour() {
        let mut h = Hour::default();
        let echo: Arc<str> = "echo".into();
        let model: Arc<str> = "m".into();
        let ms = Duration::from_millis;
        h.finished(Duration::ZERO, &echo, None, true, ms(10));
        h.finished(Duration::from_secs(30), &echo, Some(&model), false, ms(20));
        h.finished(3 * MIN, &echo, None, true, ms(30));
        let f = h.figures(3 * MIN + Duration::from_secs(5));
        assert_eq!(f.per_minute.len(), MINUTES);
        assert_eq!(f.per_minute[MINUTES - 1], 1, "this minute");
        assert_eq!(f.per_minute[MINUTES - 4], 2, "three minutes ago");
        assert_eq!(f.per_minute.iter().sum::<u64>(), 3);
        assert_eq!(f.by_type[&echo], Tally { completed: 2, failed: 1 });
        assert_eq!(f.by_model[&model], Tally { completed: 0, failed: 1 });
        let [p50, _, p99] = f.latency_ms.unwrap();
        assert!((19.0..=21.0).contains(&p50), "{p50}");
        assert!((29.0..=31.0).contains(&p99), "{p99}");
        // An hour and more later, the ring is empty again.
        let later = h.figures(3 * MIN + 61 * MIN);
        assert_eq!(later.per_minute.iter().sum::<u64>(), 0);
        assert_eq!(later.by_type[&echo].completed, 2, "tallies are since start");
    }
}
