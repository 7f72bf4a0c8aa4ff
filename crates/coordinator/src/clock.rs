//! The scheduler's clock: Unix time in microseconds, read once at start and
//! advanced by a monotonic clock, so that it never goes back and stored
//! timestamps (Unix milliseconds) map onto it exactly.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sched::Time;
use tokio::time::Instant;

#[derive(Debug, Clone, Copy)]
pub(crate) struct Clock {
    epoch: Instant,
    epoch_us: u64,
}

impl Clock {
    pub fn start() -> Clock {
        let since_unix = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
        Clock {
            epoch: Instant::now(),
            epoch_us: u64::try_from(since_unix.as_micros()).unwrap_or(0),
        }
    }

    pub fn now(&self) -> Time {
        let elapsed = u64::try_from(self.epoch.elapsed().as_micros()).unwrap_or(u64::MAX);
        Time::from_micros(self.epoch_us.saturating_add(elapsed))
    }

    /// The tokio instant of a scheduler time (for timers).
    pub fn instant(&self, t: Time) -> Instant {
        self.epoch + Duration::from_micros(t.as_micros().saturating_sub(self.epoch_us))
    }

    /// Unix milliseconds of a scheduler time.
    pub fn unix_ms(t: Time) -> i64 {
        persist::unix_ms(t)
    }
}
