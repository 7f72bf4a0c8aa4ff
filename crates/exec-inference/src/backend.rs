//! Which engine runs the models, chosen once when the worker starts: tract
//! on the CPU (the default and the reference), ONNX Runtime on a WebGPU
//! device, or `auto` — the GPU when its libraries load and an adapter
//! runs, else tract with a warning saying why.

use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;

use crate::ort_webgpu::{OrtError, OrtLibs, Runtime};

/// The environment variable naming `libonnxruntime.so`.
pub const ONNXRUNTIME_LIB_ENV: &str = "LEGACYGPU_ONNXRUNTIME_LIB";
/// The environment variable naming the WebGPU plugin EP's library.
pub const WEBGPU_EP_ENV: &str = "LEGACYGPU_ORT_WEBGPU_EP";

/// The backend asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BackendKind {
    /// tract, on the CPU.
    #[default]
    Tract,
    /// ONNX Runtime's WebGPU EP; failing to set it up stops the worker.
    OrtWebGpu,
    /// ONNX Runtime's WebGPU EP when it works, else tract.
    Auto,
}

impl FromStr for BackendKind {
    type Err = String;

    fn from_str(s: &str) -> Result<BackendKind, String> {
        match s {
            "tract" => Ok(BackendKind::Tract),
            "ort-webgpu" => Ok(BackendKind::OrtWebGpu),
            "auto" => Ok(BackendKind::Auto),
            other => Err(format!("`{other}` is not a backend: tract, ort-webgpu or auto")),
        }
    }
}

/// The backend and where ONNX Runtime's libraries are.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BackendOptions {
    pub kind: BackendKind,
    pub onnxruntime_lib: Option<PathBuf>,
    pub webgpu_ep: Option<PathBuf>,
}

/// What [`BackendOptions`] came to.
#[derive(Debug, Default)]
pub(crate) struct Resolved {
    /// The GPU runtime, when the models run there.
    pub runtime: Option<Arc<Runtime>>,
    /// Whether a model that does not load on the GPU is a failed model
    /// (`ort-webgpu`) rather than one left on tract (`auto`).
    pub strict: bool,
    /// Why `auto` fell back to tract.
    pub fallback: Option<String>,
}

impl BackendOptions {
    /// Loads ONNX Runtime when asked. `ort-webgpu` fails with the reason;
    /// `auto` falls back to tract and says why.
    pub(crate) fn resolve(&self) -> Result<Resolved, OrtError> {
        let tract = Resolved { runtime: None, strict: false, fallback: None };
        let strict = match self.kind {
            BackendKind::Tract => return Ok(tract),
            BackendKind::OrtWebGpu => true,
            BackendKind::Auto => false,
        };
        match self.libs().and_then(|libs| Runtime::open(&libs)) {
            Ok(runtime) => Ok(Resolved { runtime: Some(runtime), strict, fallback: None }),
            Err(e) if strict => Err(e),
            Err(e) => Ok(Resolved { fallback: Some(e.to_string()), ..tract }),
        }
    }

    fn libs(&self) -> Result<OrtLibs, OrtError> {
        let onnxruntime = self.onnxruntime_lib.clone().ok_or(OrtError::NotGiven {
            what: "libonnxruntime.so",
            flag: "--onnxruntime-lib",
            env: ONNXRUNTIME_LIB_ENV,
        })?;
        let webgpu_ep = self.webgpu_ep.clone().ok_or(OrtError::NotGiven {
            what: "the WebGPU EP library (libonnxruntime_providers_webgpu.so)",
            flag: "--ort-webgpu-ep",
            env: WEBGPU_EP_ENV,
        })?;
        Ok(OrtLibs { onnxruntime, webgpu_ep })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backend_names_parse() {
        assert_eq!("tract".parse(), Ok(BackendKind::Tract));
        assert_eq!("ort-webgpu".parse(), Ok(BackendKind::OrtWebGpu));
        assert_eq!("auto".parse(), Ok(BackendKind::Auto));
        let err = "cuda".parse::<BackendKind>().unwrap_err();
        assert!(err.contains("tract, ort-webgpu or auto"), "{err}");
    }

    #[test]
    fn missing_libraries_are_errors_for_ort_and_a_fallback_for_auto() {
        let missing = BackendOptions {
            kind: BackendKind::OrtWebGpu,
            onnxruntime_lib: Some("/no/such/libonnxruntime.so".into()),
            webgpu_ep: Some("/no/such/libonnxruntime_providers_webgpu.so".into()),
        };
        let err = missing.resolve().unwrap_err();
        assert_eq!(
            err,
            OrtError::Missing {
                what: "libonnxruntime.so",
                path: "/no/such/libonnxruntime.so".into()
            }
        );
        assert!(err.to_string().contains("/no/such/libonnxruntime.so"), "{err}");
        let unnamed = BackendOptions { kind: BackendKind::OrtWebGpu, ..BackendOptions::default() };
        let err = unnamed.resolve().unwrap_err().to_string();
        assert!(err.contains("--onnxruntime-lib") && err.contains(ONNXRUNTIME_LIB_ENV), "{err}");

        let auto = BackendOptions { kind: BackendKind::Auto, ..missing };
        let resolved = auto.resolve().unwrap();
        assert!(resolved.runtime.is_none() && !resolved.strict);
        assert!(resolved.fallback.unwrap().contains("/no/such/libonnxruntime.so"));
        let tract = BackendOptions::default().resolve().unwrap();
        assert!(tract.runtime.is_none() && tract.fallback.is_none());
    }
}
