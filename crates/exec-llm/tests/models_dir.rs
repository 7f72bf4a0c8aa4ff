//! A models directory with good, damaged and foreign files: the good GGUF
//! models load (both layouts), the others are skipped with a reason that
//! names the problem, tasks for them get `unavailable`, and nothing crashes.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use exec::{Executor, RunContext};
use exec_llm::{GpuLayers, Llm, fixture};
use serde_json::json;

#[test]
fn damaged_files_are_skipped_with_their_reason_and_good_ones_serve() {
    let _serial = common::serial();
    let dir = common::scratch("models_dir");
    let Some(good) = fixture::tiny_or_skip(&dir, "tiny", "models_dir") else { return };
    let bytes = std::fs::read(&good).unwrap();
    std::fs::create_dir(dir.join("nested")).unwrap();
    std::fs::copy(&good, dir.join("nested/model.gguf")).unwrap();
    std::fs::write(dir.join("truncated.gguf"), &bytes[..bytes.len() / 2]).unwrap();
    let mut garbage = b"GGUF\x03\x00\x00\x00".to_vec();
    garbage.extend((0..4096u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8));
    std::fs::write(dir.join("garbage.gguf"), garbage).unwrap();
    std::fs::write(dir.join("text.gguf"), "not a model\n").unwrap();
    std::fs::write(dir.join("empty.gguf"), "").unwrap();
    // An ONNX model of the inference executor lives in the same directory.
    std::fs::create_dir(dir.join("resnet")).unwrap();
    std::fs::write(dir.join("resnet/model.onnx"), b"onnx").unwrap();

    let llm = Llm::from_dir(&dir, common::config(GpuLayers::Count(0))).unwrap();
    assert_eq!(llm.model_names(), ["nested", "tiny"]);
    let failed: Vec<(String, String)> = llm.failed();
    let names: Vec<&str> = failed.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["empty", "garbage", "text", "truncated"]);
    let reason = |name: &str| failed.iter().find(|(n, _)| n == name).unwrap().1.clone();
    assert!(reason("empty").contains("only 0 bytes"), "{}", reason("empty"));
    assert!(reason("text").contains("does not start with `GGUF`"), "{}", reason("text"));
    for broken in ["garbage", "truncated"] {
        let why = reason(broken);
        assert!(why.contains("llama.cpp cannot") && why.contains("damaged or truncated"), "{why}");
    }

    let run = |model: &str| {
        let input = json!({"model": model, "prompt": "hi", "max_tokens": 2, "temperature": 0});
        llm.run(&input.to_string(), &RunContext::unbounded())
    };
    let e = run("truncated").unwrap_err();
    assert_eq!(e.code(), "unavailable");
    assert!(e.to_string().contains("failed to load"), "{e}");
    assert_eq!(run("resnet").unwrap_err().code(), "unavailable");
    assert!(run("tiny").is_ok());
    assert!(run("nested").is_ok());
    assert_eq!(llm.advertise().models, ["nested", "tiny"]);
}

#[test]
fn an_unreadable_directory_is_an_error_and_an_empty_one_serves_nothing() {
    let _serial = common::serial();
    let missing = common::scratch("missing").join("nope");
    let Err(e) = Llm::from_dir(&missing, common::config(GpuLayers::Count(0))) else { panic!() };
    assert!(e.to_string().contains("cannot read the models directory"), "{e}");
    let empty = common::scratch("empty");
    let llm = Llm::from_dir(&empty, common::config(GpuLayers::Count(0))).unwrap();
    assert!(llm.model_names().is_empty() && llm.failed().is_empty());
}
