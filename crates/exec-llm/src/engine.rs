//! One model's generation engine: a thread that owns the model's llama.cpp
//! context and serves every request for the model through it, with
//! continuous batching.
//!
//! The context holds `slots` sequences (`n_seq_max`), each with its own part
//! of the KV cache. Between two decode steps the engine admits queued
//! requests into free slots; each step then puts into one batch the next
//! token of every generating sequence and as much of the admitted prompts as
//! the batch has room for (long prompts are fed over several steps), decodes
//! the batch once, and samples a token for every sequence that has logits,
//! streaming its text. A sequence that ends (stop, length, an error, its
//! task cancelled or past its deadline) has its KV cache cleared and its
//! slot freed at once, so the next queued request starts in the next step.
//! There is one copy of the weights whatever the number of slots.

use std::collections::VecDeque;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::time::Instant;

use exec::{ExecError, RunContext};
use llama_cpp_2::context::LlamaContext;
use llama_cpp_2::context::params::LlamaContextParams;
use llama_cpp_2::llama_backend::LlamaBackend;
use llama_cpp_2::llama_batch::LlamaBatch;
use llama_cpp_2::sampling::LlamaSampler;
use llama_cpp_2::token::LlamaToken;
use tracing::{debug, warn};

use crate::input::Sampling;
use crate::model::Loaded;
use crate::text::Output;
use crate::{FinishReason, Generation};

/// The sizes of an engine's context.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Sizes {
    /// Sequences decoded together.
    pub slots: u32,
    /// Tokens each sequence may hold (prompt and completion).
    pub context: u32,
    /// The most tokens in one decode step.
    pub batch: u32,
    /// CPU threads for llama.cpp.
    pub threads: i32,
}

/// One generation to run.
pub(crate) struct Request {
    pub tokens: Vec<LlamaToken>,
    pub max_tokens: u32,
    pub sampling: Sampling,
    pub stop: Vec<String>,
    pub ctx: RunContext,
    pub reply: mpsc::SyncSender<Result<Generation, ExecError>>,
}

/// What an engine did since it started, for tests and benchmarks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EngineStats {
    /// Decode steps (calls to llama.cpp's `llama_decode`).
    pub steps: u64,
    /// Tokens decoded, prompts included.
    pub tokens: u64,
    /// The most sequences one step decoded together.
    pub peak_sequences: u64,
}

#[derive(Default)]
struct Counters {
    steps: AtomicU64,
    tokens: AtomicU64,
    peak_sequences: AtomicU64,
}

impl Counters {
    fn record(&self, tokens: i32, sequences: usize) {
        self.steps.fetch_add(1, Ordering::Relaxed);
        self.tokens.fetch_add(u64::try_from(tokens).unwrap_or(0), Ordering::Relaxed);
        self.peak_sequences.fetch_max(sequences as u64, Ordering::Relaxed);
    }
}

/// The handle to a model's engine thread.
pub(crate) struct Engine {
    tx: mpsc::Sender<Request>,
    counters: Arc<Counters>,
}

impl Engine {
    /// Starts the engine of `model`; fails when llama.cpp cannot make its
    /// context (not enough memory for the KV cache, most likely).
    pub fn start(
        backend: &'static LlamaBackend,
        model: Arc<Loaded>,
        sizes: Sizes,
    ) -> Result<Engine, String> {
        let (tx, rx) = mpsc::channel::<Request>();
        let (ready_tx, ready_rx) = mpsc::sync_channel::<Result<(), String>>(1);
        let counters = Arc::new(Counters::default());
        let engine_counters = Arc::clone(&counters);
        let thread = format!("llm-{}", model.name);
        std::thread::Builder::new()
            .name(thread)
            .spawn(move || {
                let ctx = match context(backend, &model, sizes) {
                    Ok(ctx) => ctx,
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                        return;
                    }
                };
                let _ = ready_tx.send(Ok(()));
                run(&model, ctx, &rx, sizes, &engine_counters);
            })
            .map_err(|e| format!("cannot start the engine thread: {e}"))?;
        match ready_rx.recv() {
            Ok(Ok(())) => Ok(Engine { tx, counters }),
            Ok(Err(e)) => Err(e),
            Err(_) => Err("the engine thread stopped while starting".to_owned()),
        }
    }

    pub fn stats(&self) -> EngineStats {
        EngineStats {
            steps: self.counters.steps.load(Ordering::Relaxed),
            tokens: self.counters.tokens.load(Ordering::Relaxed),
            peak_sequences: self.counters.peak_sequences.load(Ordering::Relaxed),
        }
    }

    /// Queues a request; its answer comes on `request.reply`.
    pub fn submit(&self, request: Request) -> Result<(), ExecError> {
        self.tx
            .send(request)
            .map_err(|_| ExecError::Internal("this model's generation engine stopped".into()))
    }
}

fn context<'m>(
    backend: &LlamaBackend,
    model: &'m Loaded,
    sizes: Sizes,
) -> Result<LlamaContext<'m>, String> {
    let total = sizes.context.saturating_mul(sizes.slots);
    let params = LlamaContextParams::default()
        .with_n_ctx(NonZeroU32::new(total))
        .with_n_batch(sizes.batch)
        .with_n_ubatch(sizes.batch)
        .with_n_seq_max(sizes.slots)
        .with_n_threads(sizes.threads)
        .with_n_threads_batch(sizes.threads);
    let ctx = model.model.new_context(backend, params).map_err(|e| {
        format!("llama.cpp cannot make a context of {total} tokens for it ({e}); try fewer --llm-slots or a smaller --llm-context")
    })?;
    if ctx.n_ctx() < total {
        return Err(format!("llama.cpp gave a context of {} tokens, not {total}", ctx.n_ctx()));
    }
    Ok(ctx)
}

/// One sequence in a slot.
struct Seq {
    slot: i32,
    req: Request,
    /// Prompt tokens fed so far.
    fed: usize,
    /// The position of the next token fed.
    pos: i32,
    /// The sampled token to feed in the next step.
    next: Option<LlamaToken>,
    sampler: LlamaSampler,
    out: Output,
    completion: u32,
    admitted: Instant,
    first_token: Option<Instant>,
    /// This step's batch index of the token whose logits sample the next one.
    logits_at: Option<i32>,
    in_batch: bool,
    done: Option<Result<FinishReason, ExecError>>,
}

impl Seq {
    fn new(slot: i32, req: Request) -> Seq {
        let sampler = sampler(req.sampling);
        let out = Output::new(req.stop.clone());
        Seq {
            slot,
            req,
            fed: 0,
            pos: 0,
            next: None,
            sampler,
            out,
            completion: 0,
            admitted: Instant::now(),
            first_token: None,
            logits_at: None,
            in_batch: false,
            done: None,
        }
    }

    /// Takes a sampled token: streams its text, decides whether it ends.
    fn on_token(&mut self, model: &Loaded, token: LlamaToken) {
        self.completion += 1;
        self.first_token.get_or_insert_with(Instant::now);
        if model.model.is_eog_token(token) {
            self.req.ctx.progress("", 1);
            self.done = Some(Ok(FinishReason::Stop));
            return;
        }
        let mut bytes = Vec::with_capacity(16);
        model.vocab.piece(token, &mut bytes);
        let delta = self.out.push(&bytes);
        self.req.ctx.progress(delta, 1);
        if self.out.stopped() {
            self.done = Some(Ok(FinishReason::Stop));
        } else if self.completion >= self.req.max_tokens {
            self.done = Some(Ok(FinishReason::Length));
        } else {
            self.next = Some(token);
        }
    }

    fn result(mut self, model: &Loaded) -> (i32, Request, Result<Generation, ExecError>) {
        let outcome = match self.done.take() {
            Some(Ok(reason)) => {
                let rest = self.out.finish();
                self.req.ctx.progress(rest, 0);
                Ok(self.generation(model, reason))
            }
            Some(Err(e)) => Err(e),
            None => Err(ExecError::Internal("a sequence ended without an outcome".into())),
        };
        (self.slot, self.req, outcome)
    }

    fn generation(&self, model: &Loaded, finish_reason: FinishReason) -> Generation {
        let end = Instant::now();
        let first = self.first_token.unwrap_or(end);
        let prompt_ms = first.duration_since(self.admitted).as_secs_f64() * 1e3;
        let generation_ms = end.duration_since(first).as_secs_f64() * 1e3;
        // Decode speed: every token after the first needed one decode step.
        let decoded = f64::from(self.completion.saturating_sub(1));
        let tokens_per_s = if generation_ms > 0.0 { decoded / (generation_ms / 1e3) } else { 0.0 };
        Generation {
            text: self.out.text().to_owned(),
            finish_reason,
            prompt_tokens: self.req.tokens.len() as u32,
            completion_tokens: self.completion,
            prompt_ms,
            generation_ms,
            tokens_per_s,
            device: model.device.clone(),
        }
    }
}

fn sampler(sampling: Sampling) -> LlamaSampler {
    match sampling {
        Sampling::Greedy => LlamaSampler::greedy(),
        Sampling::Random { temperature, top_p, top_k, seed } => {
            let mut chain = Vec::with_capacity(4);
            if top_k > 0 {
                chain.push(LlamaSampler::top_k(i32::try_from(top_k).unwrap_or(i32::MAX)));
            }
            if top_p < 1.0 {
                chain.push(LlamaSampler::top_p(top_p, 1));
            }
            chain.push(LlamaSampler::temp(temperature));
            chain.push(LlamaSampler::dist(seed));
            LlamaSampler::chain_simple(chain)
        }
    }
}

/// Requests waiting for a slot, and the sequences in slots.
struct Slots {
    free: Vec<i32>,
    queued: VecDeque<Request>,
    active: Vec<Seq>,
}

impl Slots {
    fn new(slots: u32) -> Slots {
        let n = i32::try_from(slots).unwrap_or(i32::MAX);
        Slots { free: (0..n).rev().collect(), queued: VecDeque::new(), active: Vec::new() }
    }

    fn idle(&self) -> bool {
        self.queued.is_empty() && self.active.is_empty()
    }

    /// Ends what was cancelled or ran out of time, then fills free slots.
    fn admit(&mut self) {
        self.queued.retain(|r| match r.ctx.check() {
            Ok(()) => true,
            Err(e) => {
                let _ = r.reply.send(Err(e));
                false
            }
        });
        for seq in &mut self.active {
            if let (None, Err(e)) = (&seq.done, seq.req.ctx.check()) {
                seq.done = Some(Err(e));
            }
        }
        while !self.free.is_empty() && !self.queued.is_empty() {
            if let (Some(slot), Some(req)) = (self.free.pop(), self.queued.pop_front()) {
                self.active.push(Seq::new(slot, req));
            }
        }
    }

    /// Answers the sequences that ended and frees their slots.
    fn retire(&mut self, model: &Loaded, ctx: &mut LlamaContext<'_>) {
        if self.active.iter().all(|s| s.done.is_none()) {
            return;
        }
        let (ended, running): (Vec<Seq>, Vec<Seq>) =
            self.active.drain(..).partition(|s| s.done.is_some());
        self.active = running;
        for seq in ended {
            let (slot, req, outcome) = seq.result(model);
            let slot_id = u32::try_from(slot).ok();
            if !matches!(ctx.clear_kv_cache_seq(slot_id, None, None), Ok(true)) {
                warn!(model = %model.name, slot, "could not clear a sequence's KV cache");
            }
            self.free.push(slot);
            let _ = req.reply.send(outcome);
        }
    }
}

/// The engine loop; returns when every handle to the engine is gone.
fn run(
    model: &Loaded,
    mut ctx: LlamaContext<'_>,
    rx: &mpsc::Receiver<Request>,
    sizes: Sizes,
    counters: &Counters,
) {
    let mut slots = Slots::new(sizes.slots);
    let mut batch = LlamaBatch::new(sizes.batch as usize, 1);
    loop {
        if slots.idle() {
            match rx.recv() {
                Ok(req) => slots.queued.push_back(req),
                Err(_) => return,
            }
        }
        while let Ok(req) = rx.try_recv() {
            slots.queued.push_back(req);
        }
        slots.admit();
        step(model, &mut ctx, &mut batch, &mut slots.active, sizes.batch, counters);
        slots.retire(model, &mut ctx);
    }
}

/// One decode step over every running sequence.
fn step(
    model: &Loaded,
    ctx: &mut LlamaContext<'_>,
    batch: &mut LlamaBatch<'_>,
    active: &mut [Seq],
    capacity: u32,
    counters: &Counters,
) {
    batch.clear();
    let mut room = capacity as usize;
    let live = || active.iter().filter(|s| s.done.is_none()).count();
    if live() == 0 {
        return;
    }
    // The generating sequences first: one token each.
    for seq in active.iter_mut().filter(|s| s.done.is_none()) {
        seq.in_batch = false;
        if let Some(token) = seq.next.take() {
            if batch.add(token, seq.pos, &[seq.slot], true).is_err() {
                seq.next = Some(token);
                continue;
            }
            seq.pos += 1;
            seq.logits_at = Some(batch.n_tokens() - 1);
            seq.in_batch = true;
            room -= 1;
        }
    }
    // Then prompts, as far as the batch has room.
    for seq in active.iter_mut().filter(|s| s.done.is_none() && s.fed < s.req.tokens.len()) {
        if room == 0 {
            break;
        }
        let take = room.min(seq.req.tokens.len() - seq.fed);
        for i in seq.fed..seq.fed + take {
            let last = i + 1 == seq.req.tokens.len();
            if batch.add(seq.req.tokens[i], seq.pos, &[seq.slot], last).is_err() {
                break;
            }
            seq.pos += 1;
            seq.fed += 1;
            room -= 1;
            seq.in_batch = true;
            if last {
                seq.logits_at = Some(batch.n_tokens() - 1);
            }
        }
    }
    if batch.n_tokens() == 0 {
        return;
    }
    if let Err(e) = ctx.decode(batch) {
        warn!(model = %model.name, "decode failed: {e}");
        for seq in active.iter_mut().filter(|s| s.in_batch) {
            seq.logits_at = None;
            seq.done = Some(Err(ExecError::Internal(format!("llama.cpp decode failed: {e}"))));
        }
        return;
    }
    let sequences = active.iter().filter(|s| s.in_batch).count();
    counters.record(batch.n_tokens(), sequences);
    debug!(model = %model.name, tokens = batch.n_tokens(), sequences, "decoded");
    for seq in active.iter_mut() {
        if let Some(at) = seq.logits_at.take() {
            let token = seq.sampler.sample(ctx, at);
            seq.on_token(model, token);
        }
    }
}
