//! From image bytes to the model's input tensor: decode, resize, normalise.

use std::io::Cursor;

use exec::ExecError;
use image::imageops::FilterType;
use image::{DynamicImage, ImageReader};

use crate::config::{Layout, ModelConfig};

/// The most encoded bytes accepted (20 MiB).
pub const MAX_ENCODED_BYTES: usize = 20 * 1024 * 1024;
/// The most pixels on a side accepted when decoding.
pub const MAX_SIDE: u32 = 8192;

/// Decodes a JPEG or PNG (the format is guessed from the bytes), refusing
/// images whose header promises more than [`MAX_SIDE`] on a side before any
/// pixel is decoded.
pub fn decode(bytes: &[u8]) -> Result<DynamicImage, ExecError> {
    if bytes.len() > MAX_ENCODED_BYTES {
        return Err(ExecError::LimitExceeded(format!(
            "the image is {} bytes, over the limit of {MAX_ENCODED_BYTES}",
            bytes.len()
        )));
    }
    let reader = ImageReader::new(Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| ExecError::InvalidInput(format!("cannot read the image: {e}")))?;
    match reader.format() {
        Some(image::ImageFormat::Jpeg | image::ImageFormat::Png) => {}
        Some(other) => {
            return Err(ExecError::InvalidInput(format!(
                "{other:?} images are not supported; send JPEG or PNG"
            )));
        }
        None => return Err(ExecError::InvalidInput("the image is not a JPEG or PNG".into())),
    }
    let (w, h) = reader
        .into_dimensions()
        .map_err(|e| ExecError::InvalidInput(format!("cannot decode the image: {e}")))?;
    if w > MAX_SIDE || h > MAX_SIDE {
        return Err(ExecError::LimitExceeded(format!(
            "the image is {w}×{h}, over the limit of {MAX_SIDE} a side"
        )));
    }
    image::load_from_memory(bytes)
        .map_err(|e| ExecError::InvalidInput(format!("cannot decode the image: {e}")))
}

/// Resizes to the model's input size (bilinear, deterministic), scales and
/// normalises, and lays the pixels out as the model expects.
pub fn preprocess(image: &DynamicImage, config: &ModelConfig, height: u32, width: u32) -> Vec<f32> {
    let rgb = image.to_rgb8();
    let resized = if rgb.dimensions() == (width, height) {
        rgb
    } else {
        image::imageops::resize(&rgb, width, height, FilterType::Triangle)
    };
    let (w, h) = (width as usize, height as usize);
    let mut out = vec![0.0f32; 3 * w * h];
    for (x, y, pixel) in resized.enumerate_pixels() {
        let (x, y) = (x as usize, y as usize);
        for c in 0..3 {
            let v = (f32::from(pixel.0[c]) * config.scale - config.mean[c]) / config.std[c];
            let at = match config.layout {
                Layout::Nchw => c * h * w + y * w + x,
                Layout::Nhwc => (y * w + x) * 3 + c,
            };
            out[at] = v;
        }
    }
    out
}

/// Softmax, computed stably.
pub fn softmax(logits: &[f32]) -> Vec<f32> {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let exps: Vec<f32> = logits.iter().map(|x| (x - max).exp()).collect();
    let sum: f32 = exps.iter().sum();
    exps.iter().map(|e| e / sum).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn softmax_sums_to_one_and_keeps_order() {
        let p = softmax(&[1.0, 3.0, 2.0, 1000.0]);
        assert!((p.iter().sum::<f32>() - 1.0).abs() < 1e-6);
        assert!(p[3] > 0.99);
        let p = softmax(&[1.0, 3.0, 2.0]);
        assert!(p[1] > p[2] && p[2] > p[0]);
    }

    #[test]
    fn layouts_place_channels() {
        // A red pixel, then a green one.
        let mut img = image::RgbImage::new(2, 1);
        img.put_pixel(0, 0, image::Rgb([255, 0, 0]));
        img.put_pixel(1, 0, image::Rgb([0, 255, 0]));
        let img = DynamicImage::ImageRgb8(img);
        let plain = ModelConfig { mean: [0.0; 3], std: [1.0; 3], ..ModelConfig::default() };
        // NCHW: all R, then all G, then all B.
        assert_eq!(preprocess(&img, &plain, 1, 2), vec![1.0, 0.0, 0.0, 1.0, 0.0, 0.0]);
        // NHWC: pixel by pixel.
        let nhwc = ModelConfig { layout: Layout::Nhwc, ..plain };
        assert_eq!(preprocess(&img, &nhwc, 1, 2), vec![1.0, 0.0, 0.0, 0.0, 1.0, 0.0]);
    }

    #[test]
    fn normalisation_uses_scale_mean_and_std() {
        let img =
            DynamicImage::ImageRgb8(image::RgbImage::from_pixel(1, 1, image::Rgb([255, 0, 51])));
        let config =
            ModelConfig { mean: [0.5, 0.5, 0.0], std: [0.5, 0.25, 0.1], ..ModelConfig::default() };
        let v = preprocess(&img, &config, 1, 1);
        assert!(
            (v[0] - 1.0).abs() < 1e-6 && (v[1] + 2.0).abs() < 1e-6 && (v[2] - 2.0).abs() < 1e-5,
            "{v:?}"
        );
    }
}
