//! A load harness for generation benchmarks: `concurrency` clients, each
//! running `rounds` generations back to back, with time to first token
//! measured from the first streamed token and aggregate tokens per second
//! over the wall time.
//!
//! The generation itself is a closure, so the same harness measures
//! llama.cpp called in-process ([`crate::Llm::generate`]) and, given a
//! closure that submits through a cluster and feeds the streamed deltas into
//! the [`RunContext`] it is handed, generation through the cluster.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use exec::{ExecError, ProgressSink, RunContext};

use crate::{GenerateInput, Generation};

/// What to run.
#[derive(Debug, Clone)]
pub struct Load {
    /// Clients running at once.
    pub concurrency: usize,
    /// Generations each client runs, one after the other.
    pub rounds: usize,
    /// The input every generation gets (client `i` appends ` i` to a
    /// `prompt`, so that the sequences differ).
    pub input: GenerateInput,
}

/// What came out.
#[derive(Debug, Clone, PartialEq)]
pub struct Figures {
    pub concurrency: usize,
    pub generations: usize,
    pub completion_tokens: u64,
    pub wall: Duration,
    /// Completion tokens of all clients per second of wall time.
    pub aggregate_tokens_per_s: f64,
    /// Median and worst time from submitting to the first streamed token.
    pub ttft_p50: Duration,
    pub ttft_max: Duration,
    /// Median of the generations' own decode speed (`tokens_per_s`).
    pub sequence_tokens_per_s_p50: f64,
}

/// Records when the first token was streamed.
struct FirstToken(Mutex<Option<Instant>>);

impl ProgressSink for FirstToken {
    fn append(&self, _: &str, tokens: u32) {
        if tokens > 0 {
            let mut first = self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            first.get_or_insert_with(Instant::now);
        }
    }
}

/// Runs `load` through `generate`; the first error ends it.
pub fn run<F>(load: &Load, generate: F) -> Result<Figures, ExecError>
where
    F: Fn(GenerateInput, &RunContext) -> Result<Generation, ExecError> + Sync,
{
    let started = Instant::now();
    let samples: Vec<Result<Vec<(Duration, Generation)>, ExecError>> = std::thread::scope(|s| {
        let clients: Vec<_> = (0..load.concurrency)
            .map(|client| {
                let generate = &generate;
                s.spawn(move || {
                    (0..load.rounds)
                        .map(|_| one(load, client, generate))
                        .collect::<Result<Vec<_>, _>>()
                })
            })
            .collect();
        clients
            .into_iter()
            .map(|c| {
                c.join().unwrap_or_else(|_| Err(ExecError::Internal("a client panicked".into())))
            })
            .collect()
    });
    let wall = started.elapsed();
    let samples: Vec<(Duration, Generation)> =
        samples.into_iter().collect::<Result<Vec<_>, _>>()?.into_iter().flatten().collect();
    let completion_tokens: u64 = samples.iter().map(|(_, g)| u64::from(g.completion_tokens)).sum();
    let mut ttft: Vec<Duration> = samples.iter().map(|(t, _)| *t).collect();
    ttft.sort();
    let mut speeds: Vec<f64> = samples.iter().map(|(_, g)| g.tokens_per_s).collect();
    speeds.sort_by(f64::total_cmp);
    Ok(Figures {
        concurrency: load.concurrency,
        generations: samples.len(),
        completion_tokens,
        wall,
        aggregate_tokens_per_s: completion_tokens as f64 / wall.as_secs_f64().max(1e-9),
        ttft_p50: ttft.get(ttft.len() / 2).copied().unwrap_or_default(),
        ttft_max: ttft.last().copied().unwrap_or_default(),
        sequence_tokens_per_s_p50: speeds.get(speeds.len() / 2).copied().unwrap_or_default(),
    })
}

fn one<F>(load: &Load, client: usize, generate: &F) -> Result<(Duration, Generation), ExecError>
where
    F: Fn(GenerateInput, &RunContext) -> Result<Generation, ExecError>,
{
    let mut input = load.input.clone();
    if let Some(p) = &mut input.prompt {
        p.push_str(&format!(" {client}"));
    }
    let first = Arc::new(FirstToken(Mutex::new(None)));
    let ctx = RunContext::unbounded().with_progress(Arc::clone(&first) as Arc<dyn ProgressSink>);
    let submitted = Instant::now();
    let generation = generate(input, &ctx)?;
    let first = *first.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let ttft = first.map_or_else(|| submitted.elapsed(), |t| t.duration_since(submitted));
    Ok((ttft, generation))
}

/// The median of `values` with a distribution-free 95 % confidence
/// interval for it: the order statistics that the binomial distribution of
/// "how many values fall below the true median" puts at least 95 % of the
/// mass between. For paired differences (the same load through the cluster
/// and in-process, run back to back) drift of a busy machine cancels within
/// each pair, and the interval says whether an overhead is within a bound.
/// `None` with fewer than six values (no interval reaches 95 % then).
pub fn median_with_ci(values: &[f64]) -> Option<(f64, f64, f64)> {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
    let n = v.len();
    if n < 6 {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let median = if n % 2 == 1 { v[n / 2] } else { (v[n / 2 - 1] + v[n / 2]) / 2.0 };
    // The largest k with P(Binomial(n, 1/2) < k) <= 2.5 %: the interval
    // [x(k), x(n-k+1)] (1-based) covers the median with probability >= 95 %.
    let pmf =
        |i: usize| (0..i).fold(0.5f64.powi(n as i32), |p, j| p * (n - j) as f64 / (j + 1) as f64);
    let (mut k, mut below) = (0, 0.0);
    while below + pmf(k) <= 0.025 {
        below += pmf(k);
        k += 1;
    }
    let k = k.max(1);
    Some((median, v[k - 1], v[n - k]))
}

#[cfg(test)]
mod tests {
    use super::median_with_ci;

    #[test]
    fn the_median_interval_takes_the_binomial_order_statistics() {
        assert_eq!(median_with_ci(&[1.0, 2.0, 3.0, 4.0, 5.0]), None, "too few for 95 %");
        // n = 6: P(B < 1) = 1/64 <= 2.5 %, P(B < 2) = 7/64 > 2.5 %: the extremes.
        assert_eq!(median_with_ci(&[6.0, 1.0, 5.0, 2.0, 4.0, 3.0]), Some((3.5, 1.0, 6.0)));
        // n = 15: P(B < 4) = 1.76 %, P(B < 5) = 5.9 %: the 4th and 12th.
        let v: Vec<f64> = (1..=15).rev().map(f64::from).collect();
        assert_eq!(median_with_ci(&v), Some((8.0, 4.0, 12.0)));
        // Values that are not numbers are left out.
        let mut w = v.clone();
        w.push(f64::NAN);
        assert_eq!(median_with_ci(&w), Some((8.0, 4.0, 12.0)));
    }
}
