use super::*;

#[test]
fn gpu_layers_parse_from_flags() {
    assert_eq!("auto".parse(), Ok(GpuLayers::Auto));
    assert_eq!("all".parse(), Ok(GpuLayers::Count(u32::MAX)));
    assert_eq!("0".parse(), Ok(GpuLayers::Count(0)));
    assert_eq!("33".parse(), Ok(GpuLayers::Count(33)));
    assert!("-1".parse::<GpuLayers>().unwrap_err().contains("expected `auto`"));
    assert!("lots".parse::<GpuLayers>().is_err());
}

#[test]
fn llama_cpp_devices_are_advertised_with_their_memory() {
    use llama_cpp_2::{LlamaBackendDevice, LlamaBackendDeviceType};
    let device = |description: &str, device_type, memory_total| LlamaBackendDevice {
        index: 1,
        name: "Vulkan0".into(),
        description: description.into(),
        backend: "Vulkan".into(),
        memory_total,
        memory_free: memory_total / 2,
        device_type,
    };
    let rx580 = backend::adapter(&device(
        "AMD Radeon RX 580 Series (RADV POLARIS10)",
        LlamaBackendDeviceType::Gpu,
        8 << 30,
    ));
    assert_eq!(
        rx580,
        exec::GpuAdapter {
            name: "AMD Radeon RX 580 Series (RADV POLARIS10)".into(),
            vendor: "AMD".into(),
            device_type: "discrete".into(),
            backend: "vulkan".into(),
            vram_mb: Some(8192),
        }
    );
    let igpu = backend::adapter(&device(
        "Intel(R) UHD Graphics 620 (KBL GT2)",
        LlamaBackendDeviceType::IntegratedGpu,
        0,
    ));
    assert_eq!((igpu.vendor.as_str(), igpu.device_type.as_str()), ("Intel", "integrated"));
    assert_eq!(igpu.vram_mb, None, "no memory reported is unknown, not 0 MiB");
    let lavapipe = backend::adapter(&device(
        "llvmpipe (LLVM 15.0.6, 256 bits)",
        LlamaBackendDeviceType::Gpu,
        2 << 30,
    ));
    assert_eq!((lavapipe.vendor.as_str(), lavapipe.device_type.as_str()), ("Mesa", "cpu"));
    let unnamed = backend::adapter(&device("", LlamaBackendDeviceType::Accelerator, 1 << 30));
    assert_eq!((unnamed.name.as_str(), unnamed.vendor.as_str()), ("Vulkan0", "unknown"));
    assert_eq!(unnamed.device_type, "other");
}

#[test]
fn a_nan_temperature_from_code_is_refused() {
    // JSON cannot carry NaN; in-process callers can.
    let input = GenerateInput {
        model: "m".into(),
        prompt: Some("hi".into()),
        temperature: Some(f64::NAN),
        ..GenerateInput::default()
    };
    assert_eq!(input.check(10).unwrap_err().code(), "invalid_input");
}

#[test]
fn results_have_the_streaming_specs_shape() {
    let g = Generation {
        text: "Hi".into(),
        finish_reason: FinishReason::Length,
        prompt_tokens: 3,
        completion_tokens: 2,
        prompt_ms: 1.5,
        generation_ms: 2.0,
        tokens_per_s: 500.0,
        device: "cpu".into(),
    };
    let json = serde_json::to_value(&g).unwrap();
    assert_eq!(
        json,
        serde_json::json!({"text": "Hi", "finish_reason": "length", "prompt_tokens": 3,
            "completion_tokens": 2, "prompt_ms": 1.5, "generation_ms": 2.0,
            "tokens_per_s": 500.0, "device": "cpu"})
    );
}

#[test]
fn bad_configurations_are_refused_and_an_empty_directory_serves_nothing() {
    let dir = tempfile::tempdir().unwrap();
    for config in [
        LlmConfig { slots: 0, ..LlmConfig::default() },
        LlmConfig { slots: 65, ..LlmConfig::default() },
        LlmConfig { context: 8, ..LlmConfig::default() },
        LlmConfig { batch: 2, slots: 4, ..LlmConfig::default() },
    ] {
        let Err(e) = Llm::from_dir(dir.path(), config.clone()) else { panic!("{config:?}") };
        assert!(matches!(e, LlmError::Config(_)), "{e}");
    }
    // No GGUF file: nothing loads, and llama.cpp is not even started.
    let llm = Llm::from_dir(dir.path(), LlmConfig::default()).unwrap();
    assert!(llm.model_names().is_empty() && llm.failed().is_empty());
    assert_eq!(
        llm.generate(
            GenerateInput {
                model: "x".into(),
                prompt: Some("hi".into()),
                ..GenerateInput::default()
            },
            &RunContext::unbounded()
        )
        .unwrap_err()
        .code(),
        "unavailable"
    );
}
