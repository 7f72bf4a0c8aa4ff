use std::sync::OnceLock;

use exec::{ExecError, Executor, RunContext};
use serde_json::{Value, json};

use super::*;

/// One device for all tests (opening one takes a while in debug builds).
fn shared() -> &'static Gpu {
    static GPU: OnceLock<Gpu> = OnceLock::new();
    GPU.get_or_init(|| Gpu::new(GpuOptions::default()))
}

/// The shared GPU, or `None` with a loud SKIP — unless CI requires one.
fn gpu_or_skip(test: &str) -> Option<&'static Gpu> {
    let gpu = shared();
    if gpu.has_adapter() {
        return Some(gpu);
    }
    if std::env::var("LEGACYGPU_REQUIRE_GPU").as_deref() == Ok("1") {
        panic!("{test}: no GPU adapter, and LEGACYGPU_REQUIRE_GPU=1 (install mesa-vulkan-drivers)");
    }
    eprintln!(
        "SKIP {test}: no GPU adapter on this machine (install mesa-vulkan-drivers for lavapipe)"
    );
    None
}

fn run(gpu: &Gpu, input: Value) -> Result<Value, ExecError> {
    gpu.run(&input.to_string(), &RunContext::unbounded())
        .map(|o| serde_json::from_str(o.get()).unwrap())
}

fn floats(v: &Value) -> Vec<f64> {
    v.as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect()
}

fn close(a: &[f64], b: &[f64], rel: f64) -> Result<(), String> {
    if a.len() != b.len() {
        return Err(format!("lengths {} and {}", a.len(), b.len()));
    }
    for (i, (x, y)) in a.iter().zip(b).enumerate() {
        if (x - y).abs() > rel * (1.0 + y.abs()) {
            return Err(format!("element {i}: {x} vs {y}"));
        }
    }
    Ok(())
}

#[test]
fn gpu_matmul_agrees_with_the_cpu() {
    let Some(gpu) = gpu_or_skip("gpu_matmul_agrees_with_the_cpu") else { return };
    // Sizes on, off and across the 16×16 tile.
    for (m, k, n) in [(1, 1, 1), (16, 16, 16), (17, 33, 5), (64, 64, 64), (100, 37, 129)] {
        let input =
            |device| json!({"op": "matmul", "m": m, "k": k, "n": n, "seed": 7, "device": device});
        let on_gpu = run(gpu, input("gpu")).unwrap();
        let on_cpu = run(gpu, input("cpu")).unwrap();
        assert_eq!(
            (on_gpu["device"].as_str(), on_cpu["device"].as_str()),
            (Some("gpu"), Some("cpu"))
        );
        close(&floats(&on_gpu["c"]), &floats(&on_cpu["c"]), 1e-4)
            .unwrap_or_else(|e| panic!("{m}×{k}×{n}: {e}"));
    }
}

#[test]
fn gpu_nbody_agrees_with_the_cpu() {
    let Some(gpu) = gpu_or_skip("gpu_nbody_agrees_with_the_cpu") else { return };
    for n in [1, 63, 200] {
        let input = |device| json!({"op": "nbody", "n": n, "seed": 3, "steps": 20, "dt": 0.001, "device": device});
        let (g, c) = (run(gpu, input("gpu")).unwrap(), run(gpu, input("cpu")).unwrap());
        let positions = |v: &Value| -> Vec<f64> {
            v["bodies"].as_array().unwrap().iter().flat_map(|b| floats(&b["pos"])).collect()
        };
        close(&positions(&g), &positions(&c), 1e-3).unwrap_or_else(|e| panic!("n = {n}: {e}"));
        // Momentum stays near zero (it starts at zero).
        for p in floats(&g["momentum"]) {
            assert!(p.abs() < 1e-3, "{g}");
        }
    }
}

#[test]
fn explicit_matrices_multiply_on_both_devices() {
    let gpu = gpu_or_skip("explicit_matrices_multiply_on_both_devices").unwrap_or_else(shared);
    for device in ["auto", "cpu"] {
        let out = run(
            gpu,
            json!({"op": "matmul", "m": 2, "k": 2, "n": 2,
            "a": [1.0, 2.0, 3.0, 4.0], "b": [5.0, 6.0, 7.0, 8.0], "device": device}),
        )
        .unwrap();
        assert_eq!(floats(&out["c"]), vec![19.0, 22.0, 43.0, 50.0]);
        assert_eq!(out["sum"], 134.0);
    }
}

#[test]
fn bad_inputs_and_limits() {
    let gpu = shared();
    let cases = [
        (json!({"op": "fft"}), "invalid_input"),
        (json!({"op": "matmul", "m": 2, "k": 2}), "invalid_input"),
        (json!({"op": "matmul", "m": 0, "k": 2, "n": 2, "seed": 1}), "invalid_input"),
        (
            json!({"op": "matmul", "m": 2, "k": 2, "n": 2, "a": [1, 2, 3], "b": [1, 2, 3, 4]}),
            "invalid_input",
        ),
        (
            json!({"op": "matmul", "m": 1, "k": 1, "n": 1, "a": [1], "b": [1], "seed": 1}),
            "invalid_input",
        ),
        (json!({"op": "matmul", "m": 1, "k": 1, "n": 1, "a": [1e39], "b": [1]}), "invalid_input"),
        (
            json!({"op": "matmul", "m": 1, "k": 1, "n": 1, "seed": 1, "extra": true}),
            "invalid_input",
        ),
        (
            json!({"op": "matmul", "m": 1, "k": 1, "n": 1, "seed": 1, "device": "tpu"}),
            "invalid_input",
        ),
        (json!({"op": "matmul", "m": 5000, "k": 1, "n": 1, "seed": 1}), "limit_exceeded"),
        (json!({"op": "nbody", "n": 4, "seed": 1}), "invalid_input"),
        (json!({"op": "nbody", "steps": 1}), "invalid_input"),
        (
            json!({"op": "nbody", "steps": 1, "bodies": [{"pos": [0, 0, 0], "mass": 0}]}),
            "invalid_input",
        ),
        (json!({"op": "nbody", "steps": 1, "bodies": []}), "invalid_input"),
        (json!({"op": "nbody", "steps": 1, "dt": 0, "n": 2, "seed": 1}), "invalid_input"),
        (json!({"op": "nbody", "steps": 1, "n": 100_000, "seed": 1}), "limit_exceeded"),
        (json!({"op": "nbody", "steps": 100_000, "n": 60_000, "seed": 1}), "limit_exceeded"),
        (
            json!({"op": "matmul", "m": 4096, "k": 4096, "n": 4096, "seed": 1, "device": "cpu"}),
            "limit_exceeded",
        ),
    ];
    for (input, want) in cases {
        assert_eq!(run(gpu, input.clone()).unwrap_err().code(), want, "{input}");
    }
}

#[test]
fn a_gpu_less_machine_advertises_nothing_and_refuses_gpu_requests() {
    let none = Gpu::new(GpuOptions { disabled: true, allow_software: true });
    assert!(!none.has_adapter());
    assert!(none.advertise().gpus.is_empty());
    let err =
        run(&none, json!({"op": "matmul", "m": 1, "k": 1, "n": 1, "seed": 1, "device": "gpu"}))
            .unwrap_err();
    assert_eq!(err.code(), "unavailable");
    // `auto` falls back to the CPU.
    let out = run(&none, json!({"op": "matmul", "m": 1, "k": 1, "n": 1, "seed": 1})).unwrap();
    assert_eq!(out["device"], "cpu");
}

#[test]
fn adapters_are_advertised_with_their_details() {
    let Some(gpu) = gpu_or_skip("adapters_are_advertised_with_their_details") else { return };
    let ad = gpu.advertise();
    assert!(!ad.gpus.is_empty());
    let first = &ad.gpus[0];
    assert!(!first.name.is_empty());
    assert!(
        ["discrete", "integrated", "virtual", "cpu", "other"].contains(&first.device_type.as_str())
    );
    assert!(["vulkan", "metal", "dx12", "gl"].contains(&first.backend.as_str()));
    assert_eq!(gpu.adapter().map(|a| &a.name), Some(&first.name));
}

#[test]
fn cancellation_stops_nbody_on_both_devices() {
    let gpu = shared();
    let ctx = RunContext::unbounded();
    ctx.cancel();
    for device in ["cpu", "auto"] {
        let input = json!({"op": "nbody", "n": 64, "seed": 1, "steps": 10_000, "device": device});
        assert_eq!(gpu.run(&input.to_string(), &ctx).unwrap_err(), ExecError::Cancelled);
    }
}
