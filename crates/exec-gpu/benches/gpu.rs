#![allow(clippy::unwrap_used)]

//! GPU throughput: matmul GFLOP/s (GPU path and CPU path) and n-body
//! interactions per second, on whatever adapter this machine has (lavapipe in
//! CI). Each iteration is a whole task through the executor.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use exec::{Executor, RunContext};
use exec_gpu::{Gpu, GpuOptions};
use serde_json::json;

fn bench(c: &mut Criterion) {
    let gpu = Gpu::new(GpuOptions::default());
    let adapter = gpu.adapter().map_or_else(|| "none".to_owned(), |a| a.name.clone());
    eprintln!("adapter: {adapter}");
    let ctx = RunContext::unbounded();
    let mut group = c.benchmark_group("gpu");
    group.sample_size(10);
    for size in [256u64, 512, 1024] {
        group.throughput(Throughput::Elements(2 * size * size * size));
        for device in ["gpu", "cpu"] {
            if device == "gpu" && !gpu.has_adapter() {
                continue;
            }
            let input = json!({"op": "matmul", "m": size, "k": size, "n": size, "seed": 1, "device": device}).to_string();
            group.bench_function(format!("matmul/{device}/{size}"), |b| {
                b.iter(|| gpu.run(&input, &ctx).unwrap())
            });
        }
    }
    let (n, steps) = (2048u64, 10u64);
    group.throughput(Throughput::Elements(n * n * steps));
    for device in ["gpu", "cpu"] {
        if device == "gpu" && !gpu.has_adapter() {
            continue;
        }
        let input =
            json!({"op": "nbody", "n": n, "steps": steps, "seed": 1, "device": device}).to_string();
        group.bench_function(format!("nbody/{device}/{n}x{steps}"), |b| {
            b.iter(|| gpu.run(&input, &ctx).unwrap())
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
