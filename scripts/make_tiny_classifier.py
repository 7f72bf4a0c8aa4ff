#!/usr/bin/env python3
"""Write a tiny ONNX image classifier for legacygpu's tests and demos.

    python3 scripts/make_tiny_classifier.py --out DIR [--name tiny]

writes DIR/NAME/model.onnx, labels.txt and config.json. The network tells an
image's dominant colour: a per-channel 3x3 box blur (Conv, zero-padded), ReLU,
global average pooling, and a linear layer over five labels (red, green, blue,
bright, dark). Input [1, 3, 32, 32] RGB scaled to [0, 1]; output five logits.

It is the same network as crates/exec-inference/src/fixture.rs builds in Rust,
made here with the reference tooling (onnx.helper) and checked with
onnx.checker, so that tract is tested on a model it did not write itself.
"""

import argparse
import json
import os

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

LABELS = ["red", "green", "blue", "bright", "dark"]
SIDE = 32


def build() -> onnx.ModelProto:
    conv_w = np.zeros((3, 3, 3, 3), dtype=np.float32)
    for c in range(3):
        conv_w[c, c, :, :] = 1.0 / 9.0
    third = 4.0 / 3.0
    gemm_w = np.array(
        [
            [4.0, -2.0, -2.0, third, -third],
            [-2.0, 4.0, -2.0, third, -third],
            [-2.0, -2.0, 4.0, third, -third],
        ],
        dtype=np.float32,
    )
    gemm_b = np.array([0.0, 0.0, 0.0, -2.0, 2.0], dtype=np.float32)
    nodes = [
        helper.make_node("Conv", ["input", "conv_w"], ["blur"], kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["blur"], ["relu"]),
        helper.make_node("GlobalAveragePool", ["relu"], ["pool"]),
        helper.make_node("Flatten", ["pool"], ["flat"], axis=1),
        helper.make_node("Gemm", ["flat", "gemm_w", "gemm_b"], ["logits"]),
    ]
    graph = helper.make_graph(
        nodes,
        "tiny_colour_classifier",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, SIDE, SIDE])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, len(LABELS)])],
        initializer=[
            numpy_helper.from_array(conv_w, "conv_w"),
            numpy_helper.from_array(gemm_w, "gemm_w"),
            numpy_helper.from_array(gemm_b, "gemm_b"),
        ],
    )
    model = helper.make_model(graph, producer_name="legacygpu-script", opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="the models directory to write into")
    parser.add_argument("--name", default="tiny", help="the model's name (its directory)")
    args = parser.parse_args()
    model_dir = os.path.join(args.out, args.name)
    os.makedirs(model_dir, exist_ok=True)
    onnx.save(build(), os.path.join(model_dir, "model.onnx"))
    with open(os.path.join(model_dir, "labels.txt"), "w") as f:
        f.write("\n".join(LABELS) + "\n")
    config = {"mean": [0.0, 0.0, 0.0], "std": [1.0, 1.0, 1.0], "scale": 1.0 / 255.0, "layout": "NCHW", "top_k": 3}
    with open(os.path.join(model_dir, "config.json"), "w") as f:
        json.dump(config, f)
    print(model_dir)


if __name__ == "__main__":
    main()
