#!/usr/bin/env python3
"""Evaluate an ONNX model with onnx's reference evaluator, independently of tract.

    python3 scripts/onnx_reference.py MODEL.onnx INPUTS.json

INPUTS.json is a list of {"shape": [...], "data": [flat f32 values]}; the
output (stdout) is a JSON list with the model's first output, flattened, for
each input. legacygpu's tests compare tract's outputs with these.
"""

import json
import sys

import numpy as np
import onnx
from onnx.reference import ReferenceEvaluator


def main() -> None:
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    model = onnx.load(sys.argv[1])
    onnx.checker.check_model(model)
    evaluator = ReferenceEvaluator(model)
    input_name = model.graph.input[0].name
    with open(sys.argv[2]) as f:
        inputs = json.load(f)
    outputs = []
    for item in inputs:
        x = np.asarray(item["data"], dtype=np.float32).reshape(item["shape"])
        (y, *_) = evaluator.run(None, {input_name: x})
        outputs.append([float(v) for v in np.asarray(y, dtype=np.float32).ravel()])
    json.dump(outputs, sys.stdout)


if __name__ == "__main__":
    main()
