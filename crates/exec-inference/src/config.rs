//! A model's optional `config.json`: how to turn an image into its input.
//! The defaults fit the ImageNet classifiers of the ONNX model zoo (ResNet-50
//! and friends): NCHW, scaled to [0, 1], ImageNet mean and standard deviation.

use serde::Deserialize;

/// How the input tensor is laid out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
pub enum Layout {
    /// [1, 3, height, width]
    #[default]
    #[serde(rename = "NCHW")]
    Nchw,
    /// [1, height, width, 3]
    #[serde(rename = "NHWC")]
    Nhwc,
}

/// A model's preprocessing and output settings.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ModelConfig {
    /// `[height, width]`; default: read from the model's fixed input shape.
    pub input_size: Option<[u32; 2]>,
    pub layout: Layout,
    /// Multiplies 0–255 pixel values first. Default 1/255.
    pub scale: f32,
    /// Subtracted per channel (R, G, B) after scaling.
    pub mean: [f32; 3],
    /// Divides per channel after subtracting the mean.
    pub std: [f32; 3],
    /// Whether the model outputs logits (then softmax gives the scores).
    pub apply_softmax: bool,
    /// Labels returned when a task does not say. Default 5.
    pub top_k: usize,
}

impl Default for ModelConfig {
    fn default() -> ModelConfig {
        ModelConfig {
            input_size: None,
            layout: Layout::Nchw,
            scale: 1.0 / 255.0,
            mean: [0.485, 0.456, 0.406],
            std: [0.229, 0.224, 0.225],
            apply_softmax: true,
            top_k: 5,
        }
    }
}

impl ModelConfig {
    /// Checks the numbers make sense.
    pub fn validate(&self) -> Result<(), String> {
        if !(self.scale.is_finite() && self.scale > 0.0) {
            return Err(format!("scale must be > 0, got {}", self.scale));
        }
        if self.mean.iter().any(|m| !m.is_finite())
            || self.std.iter().any(|s| !(s.is_finite() && *s > 0.0))
        {
            return Err("mean must be finite and std > 0".into());
        }
        if let Some([h, w]) = self.input_size
            && (h == 0 || w == 0 || h > 8192 || w > 8192)
        {
            return Err(format!("input_size {h}×{w} is out of range"));
        }
        if self.top_k == 0 {
            return Err("top_k must be at least 1".into());
        }
        Ok(())
    }
}
