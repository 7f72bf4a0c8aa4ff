#!/usr/bin/env python3
"""A small ResNet-like classifier with random weights (seeded), for tests.

The ResNet v1 layout at a small size: a 3x3 stem, max pooling, two stages of
two basic residual blocks (3x3 Conv, ReLU, 3x3 Conv, Add with a shortcut that
is a strided 1x1 Conv when the shape changes, ReLU), global average pooling
and a linear layer (Gemm with transB=1, as PyTorch exports Linear). Batch
norm is folded into the conv biases. Opset 13, input `data: [N, 3, 64, 64]`
(symbolic batch, as the ONNX model zoo's ResNet-50), 10 logits.

Writes OUT/NAME/{model.onnx, labels.txt}; no config.json: the ImageNet
defaults apply. Usage: make_small_resnet.py --out DIR [--name small_resnet]
"""
import argparse
import os

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

CLASSES = 10
SIDE = 64


class Builder:
    def __init__(self, seed):
        self.rng = np.random.default_rng(seed)
        self.nodes, self.inits, self.count = [], [], 0

    def name(self, prefix):
        self.count += 1
        return f"{prefix}{self.count}"

    def const(self, array):
        n = self.name("w")
        self.inits.append(numpy_helper.from_array(array.astype(np.float32), n))
        return n

    def op(self, kind, inputs, **attrs):
        out = self.name(kind.lower())
        self.nodes.append(helper.make_node(kind, inputs, [out], name=out, **attrs))
        return out

    def conv(self, x, cin, cout, k, stride, relu=True):
        # He initialisation keeps activations in range through the blocks.
        w = self.rng.standard_normal((cout, cin, k, k)) * np.sqrt(2.0 / (cin * k * k))
        b = self.rng.standard_normal(cout) * 0.01
        p = k // 2
        y = self.op("Conv", [x, self.const(w), self.const(b)], kernel_shape=[k, k],
                    strides=[stride, stride], pads=[p, p, p, p])
        return self.op("Relu", [y]) if relu else y

    def block(self, x, cin, cout, stride):
        y = self.conv(x, cin, cout, 3, stride)
        y = self.conv(y, cout, cout, 3, 1, relu=False)
        shortcut = x if stride == 1 and cin == cout else self.conv(x, cin, cout, 1, stride, relu=False)
        return self.op("Relu", [self.op("Add", [y, shortcut])])


def build():
    b = Builder(seed=7)
    x = b.conv("data", 3, 16, 3, 1)
    x = b.op("MaxPool", [x], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])
    channels = 16
    for cout, stride in [(16, 1), (16, 1), (32, 2), (32, 1)]:
        x = b.block(x, channels, cout, stride)
        channels = cout
    x = b.op("Flatten", [b.op("GlobalAveragePool", [x])], axis=1)
    fc_w = b.const(b.rng.standard_normal((CLASSES, channels)) * 0.5)
    fc_b = b.const(b.rng.standard_normal(CLASSES) * 0.1)
    logits = b.op("Gemm", [x, fc_w, fc_b], transB=1)
    graph = helper.make_graph(
        b.nodes, "small_resnet",
        [helper.make_tensor_value_info("data", TensorProto.FLOAT, ["N", 3, SIDE, SIDE])],
        [helper.make_tensor_value_info(logits, TensorProto.FLOAT, ["N", CLASSES])],
        initializer=b.inits)
    model = helper.make_model(graph, producer_name="legacygpu",
                              opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True)
    parser.add_argument("--name", default="small_resnet")
    args = parser.parse_args()
    model_dir = os.path.join(args.out, args.name)
    os.makedirs(model_dir, exist_ok=True)
    onnx.save(build(), os.path.join(model_dir, "model.onnx"))
    with open(os.path.join(model_dir, "labels.txt"), "w") as f:
        f.write("".join(f"class_{i}\n" for i in range(CLASSES)))
    print(model_dir)


if __name__ == "__main__":
    main()
