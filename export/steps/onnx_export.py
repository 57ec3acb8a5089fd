"""Export a torch module to ONNX (opset 17, dynamic batch axis), check it and prove parity.

The classic TorchScript-based exporter (``dynamo=False``) is used on purpose: the dynamo
exporter emits opset 18 and its down-conversion to 17 failed on these models (FIELD-NOTES),
while TensorRT 8.5 on JetPack 5 parses opset 17 at most.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Tuple

import numpy as np
import torch
from torch import nn

from edge_runtime.bundle.manifest import TensorSpec
from export.errors import ExportError

OPSET = 17
INPUT_NAME = "input"
OUTPUT_NAME = "output"

_ONNX_TO_NUMPY = {1: "float32", 10: "float16", 11: "float64", 6: "int32", 7: "int64", 2: "uint8", 3: "int8", 9: "bool"}


def export_onnx(model: nn.Module, input_shape: Tuple[int, ...], path: Path) -> None:
    """Write ``model`` as ONNX with a dynamic batch axis, then check and shape-infer it."""
    import onnx

    example = torch.zeros((1, *input_shape))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the classic exporter's deprecation notice
        try:
            torch.onnx.export(
                model.eval(), (example,), str(path),
                opset_version=OPSET,
                input_names=[INPUT_NAME],
                output_names=[OUTPUT_NAME],
                dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}},
                do_constant_folding=True,
                dynamo=False,
            )
        except Exception as exc:  # the exporter raises many unrelated types for unsupported ops
            raise ExportError(f"ONNX export failed: {exc}") from exc
    try:
        onnx.checker.check_model(str(path), full_check=True)
        onnx.shape_inference.infer_shapes_path(str(path), str(path), check_type=True, strict_mode=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as exc:
        raise ExportError(f"exported ONNX model does not pass onnx.checker: {exc}") from exc


def check_parity(model: nn.Module, path: Path, samples: np.ndarray, atol: float = 1e-4) -> float:
    """Run torch and ONNX Runtime on the same ``samples`` and return the max abs difference.

    Raises ExportError when they differ by more than ``atol`` relative to the output scale.
    """
    import onnxruntime as ort

    with torch.no_grad():
        expected = model.eval()(torch.from_numpy(samples)).numpy()
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (actual,) = session.run(None, {INPUT_NAME: samples})
    max_abs = float(np.max(np.abs(actual - expected)))
    scale = max(1.0, float(np.max(np.abs(expected))))
    if max_abs > atol * scale:
        raise ExportError(f"ONNX parity check failed: max abs difference {max_abs:.3g} vs torch")
    return max_abs


def onnx_io_specs(path: Path) -> Tuple[Tuple[TensorSpec, ...], Tuple[TensorSpec, ...]]:
    """Inputs and outputs of an ONNX file as TensorSpecs (-1 for symbolic dims)."""
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    initializers = {t.name for t in graph.initializer}

    def spec(value: onnx.ValueInfoProto) -> TensorSpec:
        tensor_type = value.type.tensor_type
        dims = tuple(d.dim_value if d.dim_value > 0 else -1 for d in tensor_type.shape.dim)
        dtype = _ONNX_TO_NUMPY.get(tensor_type.elem_type)
        if dtype is None:
            raise ExportError(f"unsupported ONNX element type {tensor_type.elem_type} on '{value.name}'")
        return TensorSpec(name=value.name, dtype=dtype, shape=dims)

    inputs = tuple(spec(v) for v in graph.input if v.name not in initializers)
    return inputs, tuple(spec(v) for v in graph.output)
