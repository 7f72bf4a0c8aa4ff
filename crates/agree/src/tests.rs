//! The rules against real results: the gpu executor's own output (its CPU
//! path; CI has no GPU guaranteed), and results as the docs describe them.

use exec::{Executor, RunContext};
use serde_json::{Value, json};

use super::*;
use crate::matmul::{freivalds, generate};

/// The gpu executor on the CPU, as a GPU-less worker runs it.
fn run_gpu(input: &Value) -> String {
    let gpu = exec_gpu::Gpu::new(exec_gpu::GpuOptions { disabled: true, ..Default::default() });
    gpu.run(&input.to_string(), &RunContext::unbounded()).unwrap().get().to_owned()
}

fn rules() -> Rules {
    Rules::builtin(42)
}

fn json(v: &Value) -> Json {
    proto::json(&v.to_string()).unwrap()
}

#[test]
fn seeded_inputs_are_rebuilt_exactly_as_the_executor_makes_them() {
    let input = r#"{"op": "matmul", "m": 3, "k": 5, "n": 4, "seed": 9}"#;
    let Ok(exec_gpu::Request::Matmul(m)) = exec_gpu::Request::parse(input, &Default::default())
    else {
        panic!("not a matmul");
    };
    assert_eq!(m.a, generate(9, 15));
    assert_eq!(m.b, generate(10, 20));
}

#[test]
fn freivalds_passes_every_true_product_the_executor_computes() {
    let r = rules();
    for (i, (m, k, n)) in
        [(1, 1, 1), (7, 13, 5), (64, 64, 64), (32, 512, 16), (200, 8, 300)].into_iter().enumerate()
    {
        let payload =
            json!({"op": "matmul", "m": m, "k": k, "n": n, "seed": 100 + i, "device": "cpu"});
        let result = run_gpu(&payload);
        assert_eq!(r.rule("gpu", &json(&payload)), Rule::SelfCheck);
        for _ in 0..20 {
            assert!(r.check("gpu", &json(&payload), &proto::json(&result).unwrap()), "{m}×{k}×{n}");
        }
    }
    // Inputs given in full, too.
    let payload =
        json!({"op": "matmul", "m": 2, "k": 2, "n": 2, "a": [1, 2, 3, 4], "b": [5, 6, 7, 8]});
    let result = run_gpu(&payload);
    assert!(r.check("gpu", &json(&payload), &proto::json(&result).unwrap()));
}

#[test]
fn freivalds_catches_a_single_wrong_element_wherever_it_is() {
    let (m, k, n) = (64usize, 64usize, 64usize);
    let payload = json!({"op": "matmul", "m": m, "k": k, "n": n, "seed": 5, "device": "cpu"});
    let honest: Value = serde_json::from_str(&run_gpu(&payload)).unwrap();
    let c: Vec<f32> = serde_json::from_value(honest["c"].clone()).unwrap();
    let (a, b) = (generate(5, m * k), generate(6, k * n));
    let mut rng = fastrand::Rng::with_seed(1);
    for trial in 0..500u64 {
        let mut wrong = c.clone();
        let at = rng.usize(..wrong.len());
        // Off by 0.05 to 10, either way: a flipped bit, a broken driver.
        let delta = (0.05 + rng.f32() * 10.0) * if rng.bool() { 1.0 } else { -1.0 };
        wrong[at] += delta;
        assert!(!freivalds(&a, &b, &wrong, (m, k, n), trial), "missed c[{at}] off by {delta}");
        assert!(freivalds(&a, &b, &c, (m, k, n), trial));
    }
    // Through the rules, as a peer's JSON.
    let mut lie = honest.clone();
    lie["c"][100] = json!(c[100] + 1.0);
    assert!(!rules().check("gpu", &json(&payload), &json(&lie)));
    // A result of the wrong shape, or not a result at all, fails too.
    lie["c"] = json!([1.0, 2.0]);
    assert!(!rules().check("gpu", &json(&payload), &json(&lie)));
    assert!(!rules().check("gpu", &json(&payload), &json(&json!({"error": "no"}))));
}

/// A true `c` with a false summary or shape around it is a lie too: the
/// whole result reaches the submitter, not only `c`.
#[test]
fn a_true_product_with_a_false_sum_l2_or_shape_fails_the_check_and_disagrees() {
    let payload = json!({"op": "matmul", "m": 24, "k": 40, "n": 16, "seed": 9, "device": "cpu"});
    let honest: Value = serde_json::from_str(&run_gpu(&payload)).unwrap();
    let r = rules();
    assert!(r.check("gpu", &json(&payload), &json(&honest)));
    for (field, value) in [
        // Past the 10⁻³ two devices may differ by, so that replicas disagree too.
        ("sum", json!(honest["sum"].as_f64().unwrap() * 1.01 + 1.0)),
        ("l2", json!(honest["l2"].as_f64().unwrap() * 1.01 + 1.0)),
        ("k", json!(41)),
        ("op", json!("nbody")),
    ] {
        let mut lie = honest.clone();
        lie[field] = value;
        assert!(!r.check("gpu", &json(&payload), &json(&lie)), "a false `{field}` passed");
        assert!(!r.agree("gpu", &json(&payload), &json(&honest), &json(&lie)), "{field}");
    }
}

#[test]
fn large_or_unreturned_products_are_replicated_and_compared_by_summary() {
    let r = rules();
    let big = json!({"op": "matmul", "m": 512, "k": 64, "n": 512, "seed": 1});
    assert_eq!(r.rule("gpu", &json(&big)), Rule::Replicate, "c is not returned past 65 536");
    let huge_inputs = json!({"op": "matmul", "m": 16, "k": 4096, "n": 4096, "seed": 1});
    assert_eq!(r.rule("gpu", &json(&huge_inputs)), Rule::Replicate, "over the check budget");
    let nbody = json!({"op": "nbody", "n": 64, "steps": 5, "seed": 2});
    assert_eq!(r.rule("gpu", &json(&nbody)), Rule::Replicate);
    let out = |sum: f64, l2: f64| json!({"op": "matmul", "m": 512, "k": 64, "n": 512, "sum": sum, "l2": l2, "elapsed_ms": sum});
    assert!(r.agree(
        "gpu",
        &json(&big),
        &json(&out(100.0, 50.0)),
        &json(&out(100.00001, 50.00001))
    ));
    assert!(!r.agree("gpu", &json(&big), &json(&out(100.0, 50.0)), &json(&out(101.0, 50.0))));
    let body = |ke: f64, p: f64| json!({"op": "nbody", "n": 64, "steps": 5, "kinetic_energy": ke, "momentum": [p, 0.0, 0.0]});
    assert!(r.agree("gpu", &json(&nbody), &json(&body(3.0, 0.1)), &json(&body(3.0000001, 0.1))));
    assert!(!r.agree("gpu", &json(&nbody), &json(&body(3.0, 0.1)), &json(&body(3.5, 0.1))));
    assert!(!r.agree("gpu", &json(&nbody), &json(&body(3.0, 0.1)), &json(&body(3.0, 0.9))));
    // Real n-body output agrees with itself run again.
    let once = proto::json(&run_gpu(
        &json!({"op": "nbody", "n": 16, "steps": 3, "seed": 2, "device": "cpu"}),
    ))
    .unwrap();
    let again = proto::json(&run_gpu(
        &json!({"op": "nbody", "n": 16, "steps": 3, "seed": 2, "device": "cpu"}),
    ))
    .unwrap();
    assert!(r.agree("gpu", &json(&nbody), &once, &again));
}

/// A canary's answer is what the executor computes, and a wrong element
/// fails it.
fn assert_answer_is_the_executors(r: &Rules, canary: &Canary<Json>) {
    let mut on_cpu: Value = serde_json::from_str(canary.payload.get()).unwrap();
    on_cpu["device"] = json!("cpu");
    let actual = proto::json(&run_gpu(&on_cpu)).unwrap();
    assert!(r.agree("gpu", &canary.payload, &canary.expected, &actual));
    assert!(r.check("gpu", &canary.payload, &actual));
    let mut wrong: Value = serde_json::from_str(actual.get()).unwrap();
    wrong["c"][0] = json!(wrong["c"][0].as_f64().unwrap() + 0.5);
    assert!(!r.agree("gpu", &canary.payload, &canary.expected, &json(&wrong)));
}

#[test]
fn a_gpu_canary_is_the_real_task_it_follows_with_another_seed() {
    let r = rules();
    // As the Python client writes it: its spacing, its key order, `device`.
    let like = r#"{"op": "matmul", "m": 64, "k": 32, "n": 48, "device": "auto", "seed": 7}"#;
    let mut seeds = std::collections::BTreeSet::new();
    for seed in 0..5 {
        let canary = r.canary("gpu", &proto::json(like).unwrap(), seed).unwrap();
        let payload: Value = serde_json::from_str(canary.payload.get()).unwrap();
        let new_seed = payload["seed"].as_u64().unwrap();
        assert_ne!(new_seed, 7);
        let same_but_seed = like.replace(r#""seed": 7"#, &format!(r#""seed": {new_seed}"#));
        assert_eq!(canary.payload.get(), same_but_seed);
        seeds.insert(new_seed);
        assert_answer_is_the_executors(&r, &canary);
    }
    assert_eq!(seeds.len(), 5, "a fresh seed each time");
}

#[test]
fn a_gpu_canary_after_other_work_has_our_clients_shape() {
    let r = rules();
    let big = r#"{"op":"matmul","m":256,"k":256,"n":256,"seed":3}"#;
    let given = r#"{"op":"matmul","m":8,"k":8,"n":8,"a":[1],"b":[1]}"#;
    let nbody = r#"{"op":"nbody","n":64,"steps":10,"seed":1}"#;
    for (seed, like) in [big, given, nbody, "{}", "[1]"].into_iter().enumerate() {
        let canary = r.canary("gpu", &proto::json(like).unwrap(), seed as u64).unwrap();
        let text = canary.payload.get();
        assert!(text.starts_with(r#"{"op":"matmul","m":"#), "{like}: {text}");
        let payload: Value = serde_json::from_str(text).unwrap();
        for dim in ["m", "k", "n"] {
            assert!((16..=96).contains(&payload[dim].as_u64().unwrap()), "{text}");
        }
        assert_answer_is_the_executors(&r, &canary);
    }
    let like = proto::json("{}").unwrap();
    assert!(r.canary("physics", &like, 1).is_none() && r.canary("echo", &like, 1).is_none());
}

#[test]
fn odd_work_still_makes_a_right_canary() {
    // A client's text, whatever it holds: a float seed, an escaped key, the
    // largest seed, another order and spacing; none breaks the rules.
    let r = rules();
    for like in [
        r#"{"op":"matmul","m":8,"k":8,"n":8,"seed":1e3}"#,
        r#"{"op":"matmul","m":8,"k":8,"n":8,"se\u0065d":5}"#,
        r#"{"op":"matmul","m":8,"k":8,"n":8,"seed":18446744073709551615}"#,
        r#"{ "seed" : 3 , "n":8,"k":8,"m":8,"op":"matmul"}"#,
    ] {
        let canary = r.canary("gpu", &proto::json(like).unwrap(), 9).unwrap();
        assert_answer_is_the_executors(&r, &canary);
    }
}

#[test]
fn physics_results_agree_exactly_when_their_states_do() {
    let r = rules();
    let p = json(&json!({"steps": 10, "bodies": []}));
    let out = |sum: &str, x: f64, elapsed: f64| {
        json(
            &json!({"bodies": [{"id": 1, "position": [x, 0, 0]}], "steps": 10, "checksum": sum, "elapsed_ms": elapsed}),
        )
    };
    let sum = "5f1d0c3a9b2e8f47";
    assert!(r.agree("physics", &p, &out(sum, 1.0, 3.0), &out(sum, 1.0, 9.0)), "timing differs");
    assert!(!r.agree("physics", &p, &out(sum, 1.0, 3.0), &out("5f1d0c3a9b2e8f48", 1.0, 3.0)));
    assert!(
        !r.agree("physics", &p, &out(sum, 1.0, 3.0), &out(sum, 1.5, 3.0)),
        "made-up bodies beside an honest checksum"
    );
    assert!(
        !r.agree("physics", &p, &out("", 1.0, 3.0), &out("", 1.0, 3.0)),
        "an empty checksum proves nothing"
    );
    assert!(!r.agree("physics", &p, &json(&json!({"bodies": []})), &json(&json!({"bodies": []}))));
    assert_eq!(r.rule("physics", &p), Rule::Replicate);
}

#[test]
fn inference_results_agree_on_the_same_labels_with_close_scores_in_any_order() {
    let r = rules();
    let p = json(&json!({"model": "tiny", "image": "…"}));
    let out = |a: f64, b: f64| {
        json(&json!({"model": "tiny", "top_k": [
        {"label": "red", "index": 0, "score": a}, {"label": "blue", "index": 2, "score": b}],
        "timing": {"inference_ms": a}}))
    };
    assert!(r.agree("inference", &p, &out(0.6, 0.4), &out(0.6004, 0.3996)));
    // Near-equal scores may come in another order on another machine.
    let swapped = json(&json!({"model": "tiny", "top_k": [
        {"label": "blue", "index": 2, "score": 0.5001}, {"label": "red", "index": 0, "score": 0.5}]}));
    assert!(r.agree("inference", &p, &out(0.5, 0.5001), &swapped));
    assert!(!r.agree("inference", &p, &out(0.6, 0.4), &out(0.7, 0.3)));
    let other_label = json(&json!({"model": "tiny", "top_k": [
        {"label": "red", "index": 0, "score": 0.6}, {"label": "green", "index": 1, "score": 0.4}]}));
    assert!(!r.agree("inference", &p, &out(0.6, 0.4), &other_label));
    let fewer =
        json(&json!({"model": "tiny", "top_k": [{"label": "red", "index": 0, "score": 0.6}]}));
    assert!(!r.agree("inference", &p, &out(0.6, 0.4), &fewer));
}

#[test]
fn generated_text_is_verified_only_at_temperature_zero() {
    let r = rules();
    let greedy = json(&json!({"model": "m", "prompt": "The RX 580 is", "temperature": 0}));
    let sampled =
        json(&json!({"model": "m", "prompt": "The RX 580 is", "temperature": 0.7, "seed": 1}));
    let default = json(&json!({"model": "m", "prompt": "The RX 580 is"}));
    assert_eq!(r.rule("generate", &greedy), Rule::Replicate);
    assert_eq!(r.rule("generate", &sampled), Rule::Unverifiable);
    assert_eq!(r.rule("generate", &default), Rule::Unverifiable, "the default temperature samples");
    let out = |text: &str, tokens: u64, ms: f64| {
        json(&json!({"text": text, "finish_reason": "length",
        "prompt_tokens": 6, "completion_tokens": tokens, "generation_ms": ms}))
    };
    assert!(r.agree("generate", &greedy, &out(" a card", 3, 10.0), &out(" a card", 3, 99.0)));
    assert!(!r.agree("generate", &greedy, &out(" a card", 3, 10.0), &out(" a cart", 3, 10.0)));
    assert!(!r.agree("generate", &greedy, &out(" a card", 3, 10.0), &out(" a card", 4, 10.0)));
}

#[test]
fn other_types_agree_on_canonical_json_and_garbage_agrees_with_nothing() {
    let r = rules();
    let p = json(&json!({}));
    for task_type in ["echo", "sleep", "someone-elses-type"] {
        let a = proto::json(r#"{"a": [1, 2], "b": {"c": null}}"#).unwrap();
        let b = proto::json(r#"{"b":{"c":null},"a":[1,2]}"#).unwrap();
        let c = proto::json(r#"{"a": [2, 1], "b": {"c": null}}"#).unwrap();
        assert!(r.agree(task_type, &p, &a, &b), "{task_type}");
        assert!(!r.agree(task_type, &p, &a, &c), "{task_type}");
        assert_eq!(r.rule(task_type, &p), Rule::Replicate);
    }
    assert!(canonical_eq("1", "1") && !canonical_eq("1", "1.0") && !canonical_eq("{", "{ "));
    assert!(!r.agree("physics", &p, &proto::json("null").unwrap(), &proto::json("null").unwrap()));
}

#[test]
fn check_draws_differ_between_calls_and_between_coordinators() {
    let a = Rules::builtin(1);
    let b = Rules::builtin(2);
    let firsts = (a.draw(), a.draw(), b.draw());
    assert!(firsts.0 != firsts.1 && firsts.0 != firsts.2);
    assert_eq!(Rules::builtin(1).draw(), firsts.0, "a base gives the same sequence");
    assert!(format!("{a:?}").contains("physics"));
}
