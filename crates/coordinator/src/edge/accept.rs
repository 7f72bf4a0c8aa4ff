//! Accepting connections without spinning: errors back off (up to a second
//! while the fd table is full) and are logged at most once per interval
//! with a count; and the process's open-file limit, raised at start to its
//! hard limit, sizes how many connections each port may hold.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use metrics_exporter_prometheus::PrometheusRecorder;
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;
use tracing::{info, warn};

use super::limits::{IpLimits, IpPermit};

/// A listening port behind the per-address limits.
pub(crate) struct Listener {
    inner: TcpListener,
    /// `ws` or `http`, for logs and metrics.
    port: &'static str,
    limits: Arc<IpLimits>,
    backoff: Backoff,
    metrics: Arc<PrometheusRecorder>,
}

impl Listener {
    pub fn new(
        inner: TcpListener,
        port: &'static str,
        limits: Arc<IpLimits>,
        metrics: Arc<PrometheusRecorder>,
    ) -> Listener {
        Listener { inner, port, limits, backoff: Backoff::default(), metrics }
    }

    /// The next connection its address's limits admit. Refused ones are
    /// closed at once (and counted); accept errors wait before retrying.
    pub async fn accept(&mut self) -> (TcpStream, SocketAddr, IpPermit) {
        loop {
            match self.inner.accept().await {
                Ok((stream, remote)) => {
                    self.backoff.succeeded();
                    match self.limits.admit(remote.ip(), Instant::now()) {
                        Ok(permit) => return (stream, remote, permit),
                        Err(why) => self.count_refused(why.as_str()),
                    }
                }
                Err(e) => {
                    let (wait, report) = self.backoff.failed(&e, Instant::now());
                    if let Some(report) = report {
                        warn!(port = self.port, "{report}");
                    }
                    self.count_refused("accept_error");
                    tokio::time::sleep(wait).await;
                }
            }
        }
    }

    pub fn count_refused(&self, reason: &'static str) {
        crate::telemetry::connection_refused(&self.metrics, self.port, reason);
    }
}

/// How long to wait after an accept error, and when to say so.
#[derive(Debug, Default)]
pub(crate) struct Backoff {
    wait: Duration,
    last_report: Option<Instant>,
    unreported: u64,
}

/// One log line per this, at most.
const REPORT_EVERY: Duration = Duration::from_secs(10);
const MAX_WAIT: Duration = Duration::from_secs(1);

impl Backoff {
    pub fn succeeded(&mut self) {
        self.wait = Duration::ZERO;
    }

    /// The wait before the next accept, and a log line when one is due.
    pub fn failed(&mut self, e: &io::Error, now: Instant) -> (Duration, Option<String>) {
        // Out of descriptors or memory: nothing improves until connections
        // close, so wait longer each time. Anything else concerns one
        // connection (ECONNABORTED…): a short pause is enough.
        let resource = matches!(e.raw_os_error(), Some(23 | 24 | 12 | 105));
        self.wait = if resource {
            (self.wait * 2).clamp(Duration::from_millis(10), MAX_WAIT)
        } else {
            Duration::from_millis(1)
        };
        self.unreported += 1;
        let due = self.last_report.is_none_or(|t| now.duration_since(t) >= REPORT_EVERY);
        if !due {
            return (self.wait, None);
        }
        let more = self.unreported - 1;
        self.unreported = 0;
        self.last_report = Some(now);
        let hint = if e.raw_os_error() == Some(24) {
            " (the open-file limit is reached: raise it, e.g. LimitNOFILE= in the systemd unit)"
        } else {
            ""
        };
        let line = format!(
            "accept failed: {e}{hint}; {more} more since the last report; retrying in {:?}",
            self.wait
        );
        (self.wait, Some(line))
    }
}

/// How many connections each port may hold, from the open-file limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct FdBudget {
    pub ws: usize,
    pub http: usize,
}

/// Descriptors kept for everything else (the store, logs, the runtime).
const RESERVED_FDS: u64 = 64;

/// Raises the soft open-file limit to the hard one (saying so), then splits
/// what is left after `RESERVED_FDS` and the descriptors already open
/// between the ports: the HTTP API keeps its share (up to a quarter) even
/// when the protocol port is flooded.
pub(crate) fn fd_budget(want_ws: usize, want_http: usize) -> FdBudget {
    let limit = raise_nofile();
    let open = std::fs::read_dir("/proc/self/fd").map_or(32, |d| d.count() as u64);
    let usable = limit.saturating_sub(open + RESERVED_FDS).max(8);
    let usable = usize::try_from(usable).unwrap_or(usize::MAX);
    let http = want_http.min(usable / 4).max(1);
    let ws = want_ws.min(usable - http).max(1);
    if ws < want_ws {
        warn!(
            "the open-file limit ({limit}) allows {ws} connections on the protocol port \
             (of {want_ws} configured) and {http} on the HTTP port; raise it to allow more"
        );
    }
    FdBudget { ws, http }
}

/// The soft `RLIMIT_NOFILE` after raising it as far as allowed.
fn raise_nofile() -> u64 {
    let Ok((soft, hard)) = rlimit::Resource::NOFILE.get() else { return 1024 };
    if soft >= hard {
        return soft;
    }
    match rlimit::increase_nofile_limit(hard) {
        Ok(now) => {
            info!("raised the soft limit on open files from {soft} to {now} (the hard limit)");
            now
        }
        Err(e) => {
            warn!("cannot raise the soft limit on open files ({soft}): {e}");
            soft
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fd_exhaustion_backs_off_and_reports_rarely() {
        let mut b = Backoff::default();
        let emfile = io::Error::from_raw_os_error(24);
        let start = Instant::now();
        let mut now = start;
        let (mut waits, mut reports) = (Vec::new(), 0);
        // 10 000 failures in a row, as a full fd table would give.
        for _ in 0..10_000 {
            let (wait, report) = b.failed(&emfile, now);
            waits.push(wait);
            reports += usize::from(report.is_some());
            now += wait;
        }
        assert_eq!(waits[0], Duration::from_millis(10));
        assert!(waits.windows(2).all(|w| w[1] >= w[0]));
        assert_eq!(*waits.last().unwrap_or(&Duration::ZERO), MAX_WAIT);
        // One line per 10 s of (simulated) time, not one per failure.
        let minutes = now.duration_since(start).as_secs() / 10 + 1;
        assert!(reports as u64 <= minutes, "{reports} reports over {:?}", now - start);
        b.succeeded();
        let (wait, report) = b.failed(&emfile, now + REPORT_EVERY);
        assert_eq!(wait, Duration::from_millis(10));
        assert!(report.unwrap().contains("open-file limit"));
        let (wait, _) = b.failed(&io::Error::from_raw_os_error(103), now);
        assert_eq!(wait, Duration::from_millis(1));
    }

    #[test]
    fn the_http_port_keeps_a_share_of_descriptors() {
        let budget = fd_budget(1_000_000_000, 1024);
        assert!(budget.http >= 1 && budget.ws >= 1);
        assert!(budget.ws < 1_000_000_000);
    }
}
