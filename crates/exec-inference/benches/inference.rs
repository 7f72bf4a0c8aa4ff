#![allow(clippy::unwrap_used)]

//! Inference throughput on the tiny test classifier: images per second end
//! to end (base64, decode, resize, normalise, run, top-k) and the model run
//! alone.

use base64::Engine;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use exec::{Executor, RunContext};
use exec_inference::fixture::{Picture, jpeg, picture, write_tiny_classifier};
use exec_inference::{Inference, decode, preprocess};
use serde_json::json;

fn bench(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    write_tiny_classifier(dir.path(), "tiny").unwrap();
    let inf = Inference::from_dir(dir.path()).unwrap();
    let image = jpeg(&picture(64, 64, Picture::Gradient([200, 80, 20])));
    let input =
        json!({"model": "tiny", "image": base64::engine::general_purpose::STANDARD.encode(&image)})
            .to_string();
    let model = inf.model("tiny").unwrap().clone();
    let tensor = preprocess(&decode(&image).unwrap(), &model.config, model.height, model.width);
    let ctx = RunContext::unbounded();
    let mut group = c.benchmark_group("inference");
    group.throughput(Throughput::Elements(1));
    group.bench_function("end_to_end/64x64_jpeg", |b| b.iter(|| inf.run(&input, &ctx).unwrap()));
    group.bench_function("model_run", |b| b.iter(|| model.run(&tensor).unwrap()));
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
