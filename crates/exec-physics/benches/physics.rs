#![allow(clippy::unwrap_used)]

//! Physics throughput: steps per second for 1 000 bodies (and a small scene),
//! through the executor (parsing and output included) and through
//! `simulate` alone.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use exec::{Executor, RunContext};
use exec_physics::{Limits, Physics, Scene, example_scene, simulate};

const STEPS: u32 = 100;

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("physics");
    group.sample_size(10);
    group.throughput(Throughput::Elements(u64::from(STEPS)));
    for bodies in [1_000usize, 50] {
        let input = example_scene(bodies, STEPS).to_string();
        let scene = Scene::parse(&input, &Limits::default()).unwrap();
        let ctx = RunContext::unbounded();
        group.bench_function(format!("simulate/{bodies}_bodies/{STEPS}_steps"), |b| {
            b.iter(|| simulate(&scene, &ctx).unwrap())
        });
        group.bench_function(format!("executor/{bodies}_bodies/{STEPS}_steps"), |b| {
            b.iter(|| Physics::default().run(&input, &ctx).unwrap())
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
