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
