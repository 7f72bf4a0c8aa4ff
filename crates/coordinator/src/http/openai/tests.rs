//! The model list and the error shapes (the endpoints themselves are tested
//! against the real binary with the official `openai` package:
//! crates/cli/tests/it/openai.rs).

use std::sync::Arc;

use proto::ModelEntry;

use super::*;
use crate::snapshot::WorkerFacts;

fn worker(id: &str, task_types: Option<&[&str]>, models: Vec<ModelEntry>) -> Arc<WorkerFacts> {
    Arc::new(WorkerFacts {
        id: sched::PeerId::from(id),
        address: None,
        slots: 1,
        busy_slots: 0,
        task_types: task_types.map(|t| t.iter().map(|s| s.to_string()).collect()),
        models: models.iter().map(|m| m.name.clone()).collect(),
        model_info: Arc::from(models),
        capabilities: Arc::new(Value::Null),
        draining: false,
        paused: false,
        completed: 0,
        failed: 0,
        joined_at: sched::Time::ZERO,
        last_seen: sched::Time::ZERO,
        heartbeat: None,
        running: Vec::new(),
        run_time_ms: BTreeMap::new(),
        quarantined: false,
        reputation: None,
    })
}

fn entry(name: &str, task_type: Option<&str>, context: Option<u64>) -> ModelEntry {
    ModelEntry {
        name: name.into(),
        task_type: task_type.map(str::to_owned),
        context_length: context,
        ..ModelEntry::default()
    }
}

#[test]
fn the_pool_lists_generate_models_over_its_workers() {
    let snap = Snapshot {
        workers: vec![
            worker("a", Some(&["generate"]), vec![entry("llama", Some("generate"), Some(4096))]),
            worker(
                "b",
                Some(&["generate", "inference"]),
                vec![
                    entry("llama", Some("generate"), None),
                    entry("resnet", Some("inference"), None),
                ],
            ),
            // A plain name counts where the worker runs generate…
            worker("c", Some(&["generate"]), vec![entry("qwen", None, None)]),
            // …and not where it does not say so.
            worker("d", None, vec![entry("mystery", None, None)]),
        ],
        ..Snapshot::default()
    };
    let models = pool_models(&snap);
    assert_eq!(models.keys().collect::<Vec<_>>(), ["llama", "qwen"]);
    assert_eq!(models["llama"].workers, 2);
    assert_eq!(models["llama"].context_length, Some(4096));
    let json = model_json("llama", &models["llama"]);
    assert_eq!(json["object"], "model");
    assert_eq!(json["owned_by"], "legacygpu");
}

#[test]
fn errors_have_openai_shape_and_status() {
    let e = OpenAiError::model_not_found("nope");
    assert_eq!(e.status, StatusCode::NOT_FOUND);
    let body = e.body();
    assert_eq!(body["error"]["type"], "invalid_request_error");
    assert_eq!(body["error"]["code"], "model_not_found");
    assert_eq!(body["error"]["param"], "model");
    assert!(body["error"]["message"].as_str().unwrap().contains("nope"));

    let mut busy = ErrorMsg::new(ErrorCode::BUSY, "queue full");
    busy.retry_after_s = Some(2.0);
    let resp = OpenAiError::from_refusal(busy).into_response();
    assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(resp.headers()[header::RETRY_AFTER], "2");

    let auth = OpenAiError::from(ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", "no key"));
    assert_eq!(auth.body()["error"]["type"], "authentication_error");

    let failed = |code: FailureCode| {
        let outcome: sched::Outcome<()> = sched::Outcome::Failed(sched::Failure::new(code, "x"));
        OpenAiError::from_outcome(&outcome).status.as_u16()
    };
    assert_eq!(failed(FailureCode::INVALID_INPUT), 400);
    assert_eq!(failed(FailureCode::LIMIT_EXCEEDED), 400);
    assert_eq!(failed(FailureCode::STREAM_INTERRUPTED), 502);
    assert_eq!(failed(FailureCode::ATTEMPTS_EXHAUSTED), 500);
}
