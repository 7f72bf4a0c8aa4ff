//! Protocol hot paths: decoding what gamers and peers send, encoding what
//! the coordinator sends. `cargo bench -p proto --bench codec`.

#![allow(clippy::unwrap_used)]

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use proto::{FromCoordinator, Json, TaskAssignment, ToCoordinator};
use std::hint::black_box;

const REQUEST: &str = r#"{"msg_type":"task_request","task_id":"12345","task_type":"noop","data":{"seed":42,"steps":100},"priority":"HIGH","idempotency_key":"k-12345"}"#;
const RESULT: &str = r#"{"msg_type":"task_result","task_id":"t-12345","result":{"seed":42,"steps":100},"attempt":1}"#;
const HEARTBEAT: &str = r#"{"msg_type":"heartbeat","peer_id":"peer-17"}"#;

fn codec(c: &mut Criterion) {
    let mut g = c.benchmark_group("decode");
    g.throughput(Throughput::Elements(1));
    g.bench_function("task_request", |b| {
        b.iter(|| ToCoordinator::decode(black_box(REQUEST)).unwrap())
    });
    g.bench_function("task_result", |b| {
        b.iter(|| ToCoordinator::decode(black_box(RESULT)).unwrap())
    });
    g.bench_function("heartbeat", |b| {
        b.iter(|| ToCoordinator::decode(black_box(HEARTBEAT)).unwrap())
    });
    g.finish();

    let data: Json =
        serde_json::from_str::<Box<serde_json::value::RawValue>>(r#"{"seed":42,"steps":100}"#)
            .unwrap()
            .into();
    let assignment = FromCoordinator::TaskAssignment(TaskAssignment {
        task_id: "t-12345".into(),
        task_data: data,
        id: Some("t-12345".into()),
        task_type: "noop".into(),
        attempt: 1,
        timeout_s: None,
    });
    let mut g = c.benchmark_group("encode");
    g.throughput(Throughput::Elements(1));
    g.bench_function("task_assignment", |b| b.iter(|| black_box(&assignment).encode()));
    g.finish();
}

criterion_group!(benches, codec);
criterion_main!(benches);
