//! `generate` on the real llama.cpp, with the tiny random-weight model that
//! `scripts/make_tiny_gguf.py` writes: greedy tokens on Vulkan (lavapipe in
//! CI) equal the CPU's, streaming is ordered and complete, concurrent
//! requests share one model and give what they give alone, sampling with a
//! seed repeats, and bad input gets clear errors without harm.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use common::{Deltas, MODEL, models};
use exec::{ExecError, Executor, ProgressSink, RunContext};
use exec_llm::{FinishReason, GenerateInput, GpuLayers, Message, Stop};
use serde_json::json;

fn prompt(text: &str, max_tokens: u32) -> GenerateInput {
    GenerateInput {
        model: MODEL.into(),
        prompt: Some(text.into()),
        max_tokens: Some(max_tokens),
        temperature: Some(0.0),
        ..GenerateInput::default()
    }
}

#[test]
fn greedy_tokens_on_vulkan_equal_the_cpus() {
    let _serial = common::serial();
    let Some(m) = models("greedy_tokens_on_vulkan_equal_the_cpus") else { return };
    let Some(gpu) = &m.gpu else {
        eprintln!("SKIP greedy_tokens_on_vulkan_equal_the_cpus: no Vulkan device");
        return;
    };
    let device = gpu.device(MODEL).unwrap();
    assert!(device.starts_with("Vulkan"), "{device}");
    assert!(!device.contains("layers"), "every layer is offloaded: {device}");
    assert_eq!(m.cpu.device(MODEL), Some("cpu"));
    // lavapipe makes a few tokens a second: a few tokens are enough.
    let on_gpu = gpu.generate(prompt("hello world", 6), &RunContext::unbounded()).unwrap();
    let on_cpu = m.cpu.generate(prompt("hello world", 6), &RunContext::unbounded()).unwrap();
    assert_eq!(on_gpu.device, device);
    assert_eq!(on_cpu.device, "cpu");
    assert_eq!(on_gpu.completion_tokens, 6);
    assert_eq!(
        (on_gpu.text.as_str(), on_gpu.prompt_tokens),
        (on_cpu.text.as_str(), on_cpu.prompt_tokens)
    );
}

#[test]
fn streamed_deltas_are_the_text_in_order_and_never_hold_a_stop_string() {
    let _serial = common::serial();
    let Some(m) = models("streamed_deltas") else { return };
    let sink = Arc::new(Deltas::default());
    let ctx = RunContext::unbounded().with_progress(sink.clone());
    let full = m.cpu.generate(prompt("the quick brown fox", 48), &ctx).unwrap();
    assert_eq!(full.finish_reason, FinishReason::Length);
    assert_eq!(full.completion_tokens, 48);
    assert_eq!(sink.text(), full.text);
    assert_eq!(sink.tokens(), 48, "every generated token is reported once");
    assert!(full.tokens_per_s > 0.0 && full.generation_ms > 0.0 && full.prompt_ms > 0.0);

    // Stop at a piece of that text: the same tokens up to it, not beyond.
    let chars: Vec<char> = full.text.chars().collect();
    assert!(chars.len() > 12, "{:?}", full.text);
    let stop: String = chars[8..10].iter().collect();
    let expected = &full.text[..full.text.find(&stop).unwrap()];
    let sink = Arc::new(Deltas::default());
    let ctx = RunContext::unbounded().with_progress(sink.clone());
    let mut input = prompt("the quick brown fox", 48);
    input.stop = Some(Stop::Many(vec!["never there".into(), stop.clone()]));
    let stopped = m.cpu.generate(input, &ctx).unwrap();
    assert_eq!(stopped.finish_reason, FinishReason::Stop);
    assert_eq!(stopped.text, expected);
    assert_eq!(sink.text(), expected);
    assert!(sink.0.lock().unwrap().iter().all(|(d, _)| !d.contains(&stop)));
}

#[test]
fn characters_spelled_in_byte_tokens_decode_whole() {
    let _serial = common::serial();
    let Some(m) = models("byte_tokens") else { return };
    // é, € and 😀 are not in the tiny vocabulary: the tokenizer spells them
    // in byte-fallback tokens, one byte each.
    let text = "café € 😀!";
    let tokens = m.cpu.tokenize(MODEL, text).unwrap();
    assert!(tokens.len() > text.chars().count(), "{tokens:?}");
    assert_eq!(m.cpu.detokenize(MODEL, &tokens).unwrap(), format!(" {text}"));
}

#[test]
fn concurrent_requests_share_one_model_and_match_sequential_runs() {
    let _serial = common::serial();
    let Some(m) = models("batching") else { return };
    // An engine of its own, so that other tests' requests do not mix in.
    let llm =
        exec_llm::Llm::from_file(MODEL, &m.path, common::config(GpuLayers::Count(0))).unwrap();
    let prompts = ["one fish", "two fish", "red fish, blue fish", "a"];
    let alone: Vec<String> = prompts
        .iter()
        .map(|p| llm.generate(prompt(p, 40), &RunContext::unbounded()).unwrap().text)
        .collect();
    let before = llm.stats(MODEL).unwrap();
    assert_eq!(before.peak_sequences, 1);
    let start = Arc::new(Barrier::new(prompts.len()));
    let together: Vec<String> = std::thread::scope(|s| {
        let handles: Vec<_> = prompts
            .iter()
            .map(|p| {
                let (start, llm) = (Arc::clone(&start), &llm);
                s.spawn(move || {
                    start.wait();
                    llm.generate(prompt(p, 40), &RunContext::unbounded()).unwrap().text
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert_eq!(together, alone);
    let after = llm.stats(MODEL).unwrap();
    // All four were decoded in the same steps of the one context (one copy
    // of the weights): fewer steps than running them one by one.
    assert_eq!(after.peak_sequences, 4);
    assert!(after.steps - before.steps < 4 * 40, "{before:?} {after:?}");
}

#[test]
fn a_seed_repeats_its_tokens() {
    let _serial = common::serial();
    let Some(m) = models("seeded") else { return };
    let sampled = |seed| {
        let input = GenerateInput {
            temperature: Some(0.9),
            top_p: Some(0.9),
            top_k: Some(20),
            seed: Some(seed),
            ..prompt("once upon a time", 24)
        };
        m.cpu.generate(input, &RunContext::unbounded()).unwrap().text
    };
    assert_eq!(sampled(42), sampled(42));
    assert_eq!(sampled(7), sampled(7));
}

#[test]
fn chat_messages_go_through_the_models_template() {
    let _serial = common::serial();
    let Some(m) = models("chat") else { return };
    let input = GenerateInput {
        model: MODEL.into(),
        messages: Some(vec![
            Message { role: "system".into(), content: "be brief".into() },
            Message { role: "user".into(), content: "hi".into() },
        ]),
        max_tokens: Some(4),
        temperature: Some(0.0),
        ..GenerateInput::default()
    };
    let out = m.cpu.generate(input, &RunContext::unbounded()).unwrap();
    let templated = "<|im_start|>system\nbe brief<|im_end|>\n<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n";
    let expected = m.cpu.tokenize(MODEL, templated).unwrap();
    assert_eq!(out.prompt_tokens as usize, expected.len());
    assert_eq!(out.completion_tokens, 4);
}

#[test]
fn the_executor_advertises_its_model_and_runs_json() {
    let _serial = common::serial();
    let Some(m) = models("executor") else { return };
    assert_eq!(m.cpu.task_type(), "generate");
    let ad = m.cpu.advertise();
    assert_eq!(ad.models, [MODEL]);
    let info = &ad.model_info[0];
    assert_eq!((info.task_type.as_str(), info.format.as_str()), ("generate", "gguf"));
    assert_eq!(info.size_bytes, Some(std::fs::metadata(&m.path).unwrap().len()));
    assert_eq!(info.context_length, Some(512));
    assert_eq!(info.quantization.as_deref(), Some("F32"));
    assert!(info.n_params.unwrap() > 10_000);
    // On the CPU it advertises no GPU; offloaded, the device with its memory.
    assert!(ad.gpus.is_empty(), "{:?}", ad.gpus);
    if let Some(gpu) = &m.gpu {
        let gpus = gpu.advertise().gpus;
        assert_eq!(gpus.len(), 1, "{gpus:?}");
        assert_eq!(gpus[0].backend, "vulkan");
        assert!(gpus[0].vram_mb.is_some_and(|mb| mb > 0), "{gpus:?}");
    }
    let input =
        json!({"model": MODEL, "prompt": "hi", "max_tokens": 3, "temperature": 0}).to_string();
    let out: serde_json::Value =
        serde_json::from_str(m.cpu.run(&input, &RunContext::unbounded()).unwrap().get()).unwrap();
    for key in ["text", "prompt_ms", "generation_ms", "tokens_per_s"] {
        assert!(out.get(key).is_some(), "{key} in {out}");
    }
    assert_eq!(
        (out["finish_reason"].as_str(), out["completion_tokens"].as_u64()),
        (Some("length"), Some(3))
    );
    assert_eq!(out["device"], "cpu");
}

#[test]
fn bad_inputs_get_clear_errors_and_the_model_keeps_serving() {
    let _serial = common::serial();
    let Some(m) = models("bad_inputs") else { return };
    let run = |v: serde_json::Value| m.cpu.run(&v.to_string(), &RunContext::unbounded());
    let code = |v: serde_json::Value| run(v).map_or_else(|e| e.code().to_string(), |_| "ok".into());
    let long = "a b ".repeat(400);
    let cases = [
        (json!({"model": "mistral", "prompt": "hi"}), "unavailable"),
        (json!({"model": MODEL, "prompt": long}), "limit_exceeded"),
        (json!({"model": MODEL, "prompt": "hi", "max_tokens": 5000}), "limit_exceeded"),
        (json!({"model": MODEL, "prompt": "hi", "max_tokens": 510}), "limit_exceeded"),
        (json!({"model": MODEL, "prompt": "hi", "temperature": -1}), "invalid_input"),
        (json!({"model": MODEL, "prompt": "hi", "temperature": "NaN"}), "invalid_input"),
        (json!({"model": MODEL, "prompt": "hi", "top_p": 0}), "invalid_input"),
        (json!({"model": MODEL, "messages": []}), "invalid_input"),
        (json!({"model": MODEL, "prompt": "a\u{0}b"}), "invalid_input"),
        (json!({"model": MODEL}), "invalid_input"),
        (json!([1, 2]), "invalid_input"),
    ];
    for (input, expected) in cases {
        assert_eq!(code(input.clone()), expected, "{input}");
    }
    let e = run(json!({"model": MODEL, "prompt": "a b ".repeat(400)})).unwrap_err();
    assert!(e.to_string().contains("holds 512 tokens"), "{e}");
    let e = run(json!({"model": "mistral", "prompt": "hi"})).unwrap_err();
    assert!(e.to_string().contains("it has: tiny"), "{e}");
    // After all that, the model still serves.
    assert_eq!(
        code(json!({"model": MODEL, "prompt": "hi", "max_tokens": 3, "temperature": 0})),
        "ok"
    );
}

#[test]
fn cancelled_and_late_tasks_stop_and_free_their_slot() {
    let _serial = common::serial();
    let Some(m) = models("cancel") else { return };
    // Past its deadline before it starts.
    let late = RunContext::new(Some(Instant::now()));
    assert_eq!(m.cpu.generate(prompt("hi", 50), &late).unwrap_err(), ExecError::TimedOut);

    // Cancelled from its own progress, after a few tokens.
    struct CancelAfter(RunContext, std::sync::atomic::AtomicU32);
    impl ProgressSink for CancelAfter {
        fn append(&self, _: &str, tokens: u32) {
            if self.1.fetch_add(tokens, std::sync::atomic::Ordering::Relaxed) >= 3 {
                self.0.cancel();
            }
        }
    }
    let ctx = RunContext::unbounded();
    let ctx = ctx.clone().with_progress(Arc::new(CancelAfter(ctx, 0.into())));
    assert_eq!(m.cpu.generate(prompt("hi", 400), &ctx).unwrap_err(), ExecError::Cancelled);

    // A deadline that passes mid-generation.
    let soon = RunContext::new(Some(Instant::now() + Duration::from_millis(30)));
    let slow = m.gpu.as_ref().unwrap_or(&m.cpu);
    match slow.generate(prompt("hi", 500), &soon) {
        Err(e) => assert_eq!(e, ExecError::TimedOut),
        // A machine fast enough to make 500 tokens in 30 ms: nothing to check.
        Ok(out) => assert_eq!(out.completion_tokens, 500),
    }
    // Every slot is free again: four at once still run.
    let ok = std::thread::scope(|s| {
        let runs: Vec<_> = (0..4)
            .map(|_| s.spawn(|| m.cpu.generate(prompt("hi", 2), &RunContext::unbounded()).is_ok()))
            .collect();
        runs.into_iter().all(|h| h.join().unwrap())
    });
    assert!(ok);
}
