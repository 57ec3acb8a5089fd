"""The unit tests' tiny model: ``y = x * 2 + 1`` on float32 ``x [batch, 4]``, built with onnx.helper (no torch).

One builder for the backend contract cases and the repository's signed test bundles, so both serve the same
numbers. (The integration tests' model is another one: ``runtime_support.affine_onnx``, input @ W + bias.)
"""

from __future__ import annotations

from typing import Any

import numpy as np


def x2_plus_1_model() -> Any:
    """The ModelProto; the caller skips without onnx (``pytest.importorskip("onnx")``)."""
    from onnx import TensorProto, helper, numpy_helper

    graph = helper.make_graph(
        [helper.make_node("Mul", ["x", "two"], ["x2"]), helper.make_node("Add", ["x2", "one"], ["y"])],
        "affine",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4])],
        [numpy_helper.from_array(np.array(value, np.float32), name) for name, value in (("two", 2), ("one", 1))],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8  # readable by onnxruntime 1.19 (the last with Python 3.8 wheels)
    return model
