//! A tiny but real image classifier, written without Python, and example
//! images — for the demo and the tests. `scripts/make_tiny_classifier.py`
//! builds the same network with Python's `onnx` package.
//!
//! The network tells an image's dominant colour: a per-channel 3×3 box blur
//! (Conv, zero-padded), ReLU, global average pooling to one mean per channel,
//! and a linear layer (Gemm) over five labels — red, green, blue, bright and
//! dark. Input `[1, 3, 32, 32]` RGB scaled to [0, 1]; output five logits.

use std::io::Cursor;
use std::path::{Path, PathBuf};

use image::{ImageFormat, Rgb, RgbImage};
use prost::Message;
use tract_onnx::pb::tensor_proto::DataType;
use tract_onnx::pb::tensor_shape_proto::{Dimension, dimension};
use tract_onnx::pb::{
    AttributeProto, GraphProto, ModelProto, NodeProto, OperatorSetIdProto, TensorProto,
    TensorShapeProto, TypeProto, ValueInfoProto, attribute_proto, type_proto,
};

/// The labels, in output order.
pub const LABELS: [&str; 5] = ["red", "green", "blue", "bright", "dark"];
/// The input's side, in pixels.
pub const SIDE: i64 = 32;

/// The Gemm weights `[3, 5]` (rows R, G, B; a column per label) and bias.
fn gemm() -> (Vec<f32>, Vec<f32>) {
    let third = 4.0 / 3.0;
    let w = vec![
        4.0, -2.0, -2.0, third, -third, //
        -2.0, 4.0, -2.0, third, -third, //
        -2.0, -2.0, 4.0, third, -third,
    ];
    (w, vec![0.0, 0.0, 0.0, -2.0, 2.0])
}

/// The Conv weights `[3, 3, 3, 3]`: each output channel a box blur of its own input channel.
fn conv() -> Vec<f32> {
    let mut w = vec![0.0f32; 81];
    for c in 0..3 {
        for k in 0..9 {
            w[c * 27 + c * 9 + k] = 1.0 / 9.0;
        }
    }
    w
}

/// The classifier as ONNX protobuf bytes.
pub fn tiny_classifier_onnx() -> Vec<u8> {
    let (gemm_w, gemm_b) = gemm();
    let graph = GraphProto {
        name: "tiny_colour_classifier".into(),
        node: vec![
            node(
                "Conv",
                &["input", "conv_w"],
                "blur",
                vec![ints("kernel_shape", &[3, 3]), ints("pads", &[1, 1, 1, 1])],
            ),
            node("Relu", &["blur"], "relu", vec![]),
            node("GlobalAveragePool", &["relu"], "pool", vec![]),
            node("Flatten", &["pool"], "flat", vec![int("axis", 1)]),
            node("Gemm", &["flat", "gemm_w", "gemm_b"], "logits", vec![]),
        ],
        initializer: vec![
            tensor("conv_w", &[3, 3, 3, 3], conv()),
            tensor("gemm_w", &[3, 5], gemm_w),
            tensor("gemm_b", &[5], gemm_b),
        ],
        input: vec![value("input", &[1, 3, SIDE, SIDE])],
        output: vec![value("logits", &[1, LABELS.len() as i64])],
        ..GraphProto::default()
    };
    let model = ModelProto {
        ir_version: 8,
        producer_name: "legacygpu".into(),
        opset_import: vec![OperatorSetIdProto { domain: String::new(), version: 13 }],
        graph: Some(graph),
        ..ModelProto::default()
    };
    model.encode_to_vec()
}

/// Writes `dir/name/{model.onnx, labels.txt, config.json}`; returns the model's directory.
pub fn write_tiny_classifier(dir: &Path, name: &str) -> std::io::Result<PathBuf> {
    let model_dir = dir.join(name);
    std::fs::create_dir_all(&model_dir)?;
    std::fs::write(model_dir.join("model.onnx"), tiny_classifier_onnx())?;
    std::fs::write(model_dir.join("labels.txt"), LABELS.join("\n") + "\n")?;
    let config = r#"{"mean": [0.0, 0.0, 0.0], "std": [1.0, 1.0, 1.0], "scale": 0.00392156862745098, "layout": "NCHW", "top_k": 3}"#;
    std::fs::write(model_dir.join("config.json"), config)?;
    Ok(model_dir)
}

fn node(op: &str, inputs: &[&str], output: &str, attribute: Vec<AttributeProto>) -> NodeProto {
    NodeProto {
        op_type: op.into(),
        name: output.into(),
        input: inputs.iter().map(|s| (*s).to_owned()).collect(),
        output: vec![output.into()],
        attribute,
        ..NodeProto::default()
    }
}

fn ints(name: &str, values: &[i64]) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        r#type: attribute_proto::AttributeType::Ints as i32,
        ints: values.to_vec(),
        ..AttributeProto::default()
    }
}

fn int(name: &str, value: i64) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        r#type: attribute_proto::AttributeType::Int as i32,
        i: value,
        ..AttributeProto::default()
    }
}

fn tensor(name: &str, dims: &[i64], data: Vec<f32>) -> TensorProto {
    TensorProto {
        name: name.into(),
        dims: dims.to_vec(),
        data_type: DataType::Float as i32,
        float_data: data,
        ..TensorProto::default()
    }
}

fn value(name: &str, dims: &[i64]) -> ValueInfoProto {
    let dim = dims
        .iter()
        .map(|d| Dimension { value: Some(dimension::Value::DimValue(*d)), ..Dimension::default() })
        .collect();
    let tensor = type_proto::Tensor {
        elem_type: DataType::Float as i32,
        shape: Some(TensorShapeProto { dim }),
    };
    ValueInfoProto {
        name: name.into(),
        r#type: Some(TypeProto {
            value: Some(type_proto::Value::TensorType(tensor)),
            ..TypeProto::default()
        }),
        ..ValueInfoProto::default()
    }
}

/// Example images.
#[derive(Debug, Clone, Copy)]
pub enum Picture {
    /// One colour everywhere.
    Solid([u8; 3]),
    /// From black on the left to `colour` on the right.
    Gradient([u8; 3]),
    /// Squares of `a` and `b`, `cell` pixels wide.
    Checker { a: [u8; 3], b: [u8; 3], cell: u32 },
}

/// Draws a picture.
pub fn picture(width: u32, height: u32, kind: Picture) -> RgbImage {
    RgbImage::from_fn(width, height, |x, y| match kind {
        Picture::Solid(c) => Rgb(c),
        Picture::Gradient(c) => {
            let t = x as f32 / (width.max(2) - 1) as f32;
            Rgb(c.map(|v| (f32::from(v) * t).round() as u8))
        }
        Picture::Checker { a, b, cell } => {
            Rgb(if ((x / cell) + (y / cell)) % 2 == 0 { a } else { b })
        }
    })
}

/// PNG bytes of an image.
pub fn png(image: &RgbImage) -> Vec<u8> {
    encode(image, ImageFormat::Png)
}

/// JPEG bytes of an image.
pub fn jpeg(image: &RgbImage) -> Vec<u8> {
    encode(image, ImageFormat::Jpeg)
}

fn encode(image: &RgbImage, format: ImageFormat) -> Vec<u8> {
    let mut out = Cursor::new(Vec::new());
    // Encoding an in-memory RGB8 image to PNG or JPEG does not fail (both
    // encoders accept RGB8 of any size we draw); an empty buffer would make
    // the caller's decode fail loudly.
    let _ = image.write_to(&mut out, format);
    out.into_inner()
}
