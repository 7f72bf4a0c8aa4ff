//! `legacygpu bench`: load a coordinator and measure it.
//!
//! Three modes, all bounded in task count and time:
//! - **throughput** (default): G gamers keep a fixed number of no-op tasks in
//!   flight through P no-op peers (closed loop), as fast as the cluster goes;
//! - **latency** (`--rate R`): gamers offer R tasks/s on a fixed schedule
//!   (open loop); latency counts from when each task was *due*, so a stall
//!   shows in the figures instead of hiding (no coordinated omission);
//! - **scale** (`--idle-peers K`): K peers connect from several loopback
//!   addresses and only heartbeat; reported: coordinator memory, CPU, and how
//!   long the core takes to answer a probe meanwhile.
//!
//! By default the coordinator is this binary started as a child process
//! (store on, in a temporary directory), so that its CPU time and peak RSS
//! are its own; `--coordinator URL` loads a running one instead.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use serde::Serialize;

use crate::args::Bench;

mod load;
mod local;
mod scale;

/// Latencies in microseconds.
type Histogram = hdrhistogram::Histogram<u64>;

fn histogram() -> Histogram {
    // 1 µs to 10 minutes, 3 significant figures.
    Histogram::new_with_bounds(1, 600_000_000, 3)
        .expect("1 µs to 10 min at 3 figures is a valid range")
}

/// What a run found.
#[derive(Debug, Serialize)]
pub struct Report {
    pub mode: &'static str,
    pub peers: usize,
    pub gamers: usize,
    /// `sqlite (sync=full)`, `memory`, or `remote`.
    pub store: String,
    pub offered_rate: Option<f64>,
    pub in_flight: Option<usize>,
    pub completed: u64,
    pub errors: u64,
    /// Of the errors, `busy` refusals (backpressure).
    pub busy: u64,
    pub seconds: f64,
    pub tasks_per_second: f64,
    pub latency_ms: Option<Latency>,
    pub coordinator: Option<local::Usage>,
    /// Scale mode: idle peers registered.
    pub idle_peers: Option<usize>,
}

#[derive(Debug, Serialize)]
pub struct Latency {
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub p999: f64,
    pub max: f64,
    pub mean: f64,
    pub samples: u64,
}

impl Latency {
    fn of(h: &Histogram) -> Option<Latency> {
        if h.is_empty() {
            return None;
        }
        let ms = |us: u64| us as f64 / 1e3;
        Some(Latency {
            p50: ms(h.value_at_quantile(0.5)),
            p90: ms(h.value_at_quantile(0.9)),
            p99: ms(h.value_at_quantile(0.99)),
            p999: ms(h.value_at_quantile(0.999)),
            max: ms(h.max()),
            mean: h.mean() / 1e3,
            samples: h.len(),
        })
    }
}

pub async fn run(args: Bench) -> anyhow::Result<ExitCode> {
    if args.peer_agent {
        let url = args.coordinator.clone().context("--peer-agent needs --coordinator")?;
        load::set_tls(args.ca_hash.as_deref())?;
        load::peer_agent(&url, args.token.as_deref(), args.slots).await?;
        return Ok(ExitCode::SUCCESS);
    }
    raise_fd_limit();
    let local = match &args.coordinator {
        Some(_) => None,
        None => Some(local::Local::start(&args).context("cannot start the local coordinator")?),
    };
    let url = match (&args.coordinator, &local) {
        (Some(url), _) => url.clone(),
        (None, Some(l)) if args.tls => l.ws_url.replacen("ws://", "wss://", 1),
        (None, Some(l)) => l.ws_url.clone(),
        (None, None) => unreachable!("a coordinator is either given or started"),
    };
    // Over wss:// every connection trusts exactly the coordinator's CA.
    let pin = args.ca_hash.clone().or_else(|| local.as_ref().and_then(|l| l.ca_hash.clone()));
    if url.starts_with("wss://") {
        load::set_tls(pin.as_deref())?;
    }
    let url = load::leader(&url, args.token.as_deref()).await?;
    let store = match (&local, args.no_store) {
        (None, _) => "remote".to_owned(),
        (Some(_), true) => "memory".to_owned(),
        (Some(_), false) => format!("sqlite (sync={})", args.sync),
    };
    let report = match args.idle_peers {
        Some(k) => scale::run(&args, &url, k, local.as_ref(), store).await?,
        None => load::run(&args, &url, store, local.as_ref()).await?,
    };
    drop(local);
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_report(&report);
    }
    Ok(if report.errors > 0 && report.completed == 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

fn print_report(r: &Report) {
    println!("mode:        {}", r.mode);
    if let Some(k) = r.idle_peers {
        println!("idle peers:  {k}");
    } else {
        println!("peers:       {}   gamers: {}   store: {}", r.peers, r.gamers, r.store);
        if let Some(rate) = r.offered_rate {
            println!("offered:     {rate:.0} tasks/s (open loop)");
        }
        if let Some(n) = r.in_flight {
            println!("in flight:   {n}");
        }
        println!(
            "completed:   {} tasks in {:.2} s = {:.0} tasks/s   errors: {} (busy: {})",
            r.completed, r.seconds, r.tasks_per_second, r.errors, r.busy
        );
    }
    if let Some(l) = &r.latency_ms {
        let label = if r.idle_peers.is_some() { "probe rtt" } else { "latency" };
        println!(
            "{label:<12} p50 {:.3} ms  p90 {:.3}  p99 {:.3}  p99.9 {:.3}  max {:.3}  (n={})",
            l.p50, l.p90, l.p99, l.p999, l.max, l.samples
        );
    }
    if let Some(c) = &r.coordinator {
        println!(
            "coordinator: cpu {:.0}% of one core   rss {:.1} MB (peak {:.1} MB)",
            c.cpu_percent, c.rss_mb, c.peak_rss_mb
        );
    }
}

/// Raises this process's open-file limit to its hard limit (children, the
/// local coordinator included, inherit it): thousands of sockets need it.
#[allow(unsafe_code)]
fn raise_fd_limit() {
    let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit/setrlimit only read and write the struct we pass.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < lim.rlim_max {
            lim.rlim_cur = lim.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
}

/// How long to wait for connections and registrations.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
