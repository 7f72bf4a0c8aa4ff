use base64::Engine;
use exec::{ExecError, Executor, RunContext};
use serde_json::{Value, json};

use super::fixture::{Picture, jpeg, picture, png, write_tiny_classifier};
use super::*;

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn models() -> (tempfile::TempDir, Inference) {
    let dir = tempfile::tempdir().unwrap();
    write_tiny_classifier(dir.path(), "tiny").unwrap();
    let inference = Inference::from_dir(dir.path()).unwrap();
    (dir, inference)
}

fn classify(
    inf: &Inference,
    model: &str,
    image: &[u8],
    top_k: Option<usize>,
) -> Result<Value, ExecError> {
    let mut input = json!({"model": model, "image": b64(image)});
    if let Some(k) = top_k {
        input["top_k"] = json!(k);
    }
    inf.run(&input.to_string(), &RunContext::unbounded())
        .map(|o| serde_json::from_str(o.get()).unwrap())
}

fn best(out: &Value) -> &str {
    out["top_k"][0]["label"].as_str().unwrap()
}

#[test]
fn the_tiny_classifier_tells_colours_apart() {
    let (_dir, inf) = models();
    assert_eq!(inf.model_names(), vec!["tiny".to_owned()]);
    let advertised = inf.advertise();
    assert_eq!(advertised.models, vec!["tiny".to_owned()]);
    let info = &advertised.model_info[0];
    assert_eq!((info.name.as_str(), info.task_type.as_str()), ("tiny", "inference"));
    assert_eq!(info.format, "onnx");
    let cases = [
        (png(&picture(32, 32, Picture::Solid([220, 20, 30]))), "red"),
        (jpeg(&picture(32, 32, Picture::Solid([10, 200, 40]))), "green"),
        // Other sizes are resized.
        (png(&picture(100, 60, Picture::Solid([30, 40, 230]))), "blue"),
        (jpeg(&picture(17, 45, Picture::Solid([250, 250, 250]))), "bright"),
        (png(&picture(64, 64, Picture::Solid([5, 5, 5]))), "dark"),
    ];
    for (image, want) in cases {
        let out = classify(&inf, "tiny", &image, None).unwrap();
        assert_eq!(best(&out), want, "{out}");
        assert_eq!(out["top_k"].as_array().unwrap().len(), 3, "config top_k");
        let sum: f64 =
            out["top_k"].as_array().unwrap().iter().map(|s| s["score"].as_f64().unwrap()).sum();
        assert!(sum > 0.0 && sum <= 1.0 + 1e-6);
        assert!(out["timing"]["inference_ms"].as_f64().unwrap() >= 0.0);
        assert_eq!(out["model"], "tiny");
    }
}

#[test]
fn top_k_is_bounded() {
    let (_dir, inf) = models();
    let image = png(&picture(8, 8, Picture::Solid([255, 0, 0])));
    assert_eq!(
        classify(&inf, "tiny", &image, Some(1)).unwrap()["top_k"].as_array().unwrap().len(),
        1
    );
    assert_eq!(
        classify(&inf, "tiny", &image, Some(99)).unwrap()["top_k"].as_array().unwrap().len(),
        5
    );
    assert_eq!(classify(&inf, "tiny", &image, Some(0)).unwrap_err().code(), "invalid_input");
}

#[test]
fn bad_images_and_inputs_are_clear_errors() {
    let (_dir, inf) = models();
    let run = |input: Value| inf.run(&input.to_string(), &RunContext::unbounded()).unwrap_err();
    let err = run(json!({"model": "tiny", "image": "!!! not base64"}));
    assert_eq!(err.code(), "invalid_input");
    assert!(err.to_string().contains("base64"), "{err}");
    let err = run(json!({"model": "tiny", "image": b64(b"definitely not an image")}));
    assert_eq!(err.code(), "invalid_input");
    // A truncated PNG: the header is fine, the data is not.
    let whole = png(&picture(32, 32, Picture::Solid([1, 2, 3])));
    let err = run(json!({"model": "tiny", "image": b64(&whole[..whole.len() / 2])}));
    assert_eq!(err.code(), "invalid_input");
    assert_eq!(run(json!({"model": "tiny"})).code(), "invalid_input");
    assert_eq!(run(json!({"model": 3, "image": ""})).code(), "invalid_input");
    assert_eq!(run(json!({"model": "tiny", "image": "", "colour": true})).code(), "invalid_input");
    // Too many pixels on a side, refused before decoding them.
    let wide = png(&picture(9000, 1, Picture::Solid([0, 0, 0])));
    assert_eq!(run(json!({"model": "tiny", "image": b64(&wide)})).code(), "limit_exceeded");
}

#[test]
fn an_unknown_model_names_the_directory() {
    let (dir, inf) = models();
    let err = classify(&inf, "resnet50", b"x", None).unwrap_err();
    assert_eq!(err.code(), "unavailable");
    let text = err.to_string();
    assert!(
        text.contains("resnet50")
            && text.contains(&dir.path().display().to_string())
            && text.contains("tiny"),
        "{text}"
    );
}

#[test]
fn a_broken_model_does_not_stop_the_others() {
    let dir = tempfile::tempdir().unwrap();
    write_tiny_classifier(dir.path(), "good").unwrap();
    // Corrupt bytes.
    let corrupt = dir.path().join("corrupt");
    std::fs::create_dir_all(&corrupt).unwrap();
    std::fs::write(corrupt.join("model.onnx"), (0..=255u8).cycle().take(4096).collect::<Vec<_>>())
        .unwrap();
    std::fs::write(corrupt.join("labels.txt"), "a\n").unwrap();
    // The right model with the wrong input size.
    let shape = write_tiny_classifier(dir.path(), "wrong_shape").unwrap();
    std::fs::write(
        shape.join("config.json"),
        r#"{"input_size": [64, 64], "mean": [0,0,0], "std": [1,1,1]}"#,
    )
    .unwrap();
    // The right model with the wrong number of labels.
    let labels = write_tiny_classifier(dir.path(), "wrong_labels").unwrap();
    std::fs::write(labels.join("labels.txt"), "one\ntwo\n").unwrap();
    // The right model read with the wrong layout: 32 "channels".
    let layout = write_tiny_classifier(dir.path(), "wrong_layout").unwrap();
    std::fs::write(layout.join("config.json"), r#"{"layout": "NHWC"}"#).unwrap();
    // A config that does not parse.
    let config = write_tiny_classifier(dir.path(), "bad_config").unwrap();
    std::fs::write(config.join("config.json"), r#"{"std": [0, 1, 1]}"#).unwrap();

    let inf = Inference::from_dir(dir.path()).unwrap();
    assert_eq!(inf.model_names(), vec!["good".to_owned()]);
    let failed: Vec<String> = inf.failed().into_iter().map(|(n, _)| n).collect();
    assert_eq!(failed, ["bad_config", "corrupt", "wrong_labels", "wrong_layout", "wrong_shape"]);
    let image = png(&picture(32, 32, Picture::Solid([255, 0, 0])));
    assert_eq!(best(&classify(&inf, "good", &image, None).unwrap()), "red");
    for (model, says) in [
        ("corrupt", "cannot parse model.onnx"),
        ("wrong_shape", "input_size 64×64 but the model's input is fixed at 32×32"),
        ("wrong_layout", "32 channels, not 3"),
        ("wrong_labels", "5 outputs but labels.txt has 2"),
        ("bad_config", "std"),
    ] {
        let err = classify(&inf, model, &image, None).unwrap_err();
        assert_eq!(err.code(), "unavailable", "{model}");
        assert!(err.to_string().contains(says), "{model}: {err}");
    }
}

#[test]
fn a_missing_models_directory_is_an_error_naming_it() {
    let err = Inference::from_dir(std::path::Path::new("/no/such/models")).unwrap_err();
    assert!(err.to_string().contains("/no/such/models"), "{err}");
}

#[test]
fn cancellation_stops_a_task() {
    let (_dir, inf) = models();
    let ctx = RunContext::unbounded();
    ctx.cancel();
    let input =
        json!({"model": "tiny", "image": b64(&png(&picture(8, 8, Picture::Solid([1, 1, 1]))))});
    assert_eq!(inf.run(&input.to_string(), &ctx).unwrap_err(), ExecError::Cancelled);
}
