"""Export a torch module to ONNX (opset 17, named dynamic axes), check it and prove parity.

The classic TorchScript-based exporter (``dynamo=False``) is used on purpose: the dynamo
exporter emits opset 18 and its down-conversion to 17 failed on these models (FIELD-NOTES),
while TensorRT 8.5 on JetPack 5 parses opset 17 at most.

Inputs and outputs come from :class:`export.io_spec.ModelIO`: any number, any of its dtypes,
the batch and every named axis dynamic. A user's own ``.onnx`` is carried over by
:func:`copy_onnx`, with any external data folded back into the one model file.
"""

from __future__ import annotations

import os
import shutil
import warnings
from pathlib import Path
from typing import Any, Dict, Iterator, Mapping, Sequence, Tuple, Union

import numpy as np
import torch
from torch import nn

from edge_runtime.bundle.manifest import TensorSpec
from export.errors import ExportError, ModelSourceError
from export.io_spec import ModelIO, as_model_io, torch_example_inputs

OPSET = 17
INPUT_NAME = "input"
OUTPUT_NAME = "output"
# Named axes get these sizes while tracing, and others in the parity check: distinct values, so
# that a size the tracer baked in as a constant shows up as a parity failure, not a silent bug.
EXPORT_SIZES = {"batch": 2, "*": 7}
CHECK_SIZES = {"batch": 3, "*": 5}
MAX_INLINE_BYTES = 2**31 - 1  # protobuf's limit on one serialized model

_ONNX_TO_NUMPY = {1: "float32", 10: "float16", 11: "float64", 6: "int32", 7: "int64", 2: "uint8", 3: "int8", 9: "bool"}

Shape = Union[ModelIO, Tuple[int, ...]]


def axis_sizes(io: ModelIO, sizes: Mapping[str, int]) -> Dict[str, int]:
    """A size for every named axis of ``io``: the batch axis from ``sizes['batch']``, others ``sizes['*']``."""
    batch = str(io.inputs[0].dims[0])
    names = {d for spec in io.inputs for d in spec.dims if isinstance(d, str)}
    return {name: sizes["batch"] if name == batch else sizes["*"] for name in names}


def _as_outputs(result: Any) -> Tuple[torch.Tensor, ...]:
    items = tuple(result) if isinstance(result, (tuple, list)) else (result,)
    if not items or not all(isinstance(item, torch.Tensor) for item in items):
        raise ExportError(f"the model returns {type(result).__name__}: expected a tensor or a tuple of tensors")
    return items


def run_torch(model: nn.Module, io: Shape, inputs: Sequence[torch.Tensor]) -> Tuple[torch.Tensor, ...]:
    """Run ``model`` on ``inputs``; a failure (usually a wrong shape or dtype) is one line naming the flag."""
    spec = as_model_io(io)
    try:
        with torch.no_grad():
            result = model.eval()(*inputs)
    except Exception as exc:  # user code raises anything; torch's shape errors are RuntimeError
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise ModelSourceError(f"{spec.flag}: the model does not run on inputs {spec}: {first}") from exc
    return _as_outputs(result)


def resolve_outputs(model: nn.Module, io: ModelIO) -> ModelIO:
    """``io`` with its output names settled: run the model once to count its outputs."""
    outputs = run_torch(model, io, torch_example_inputs(model, io, axis_sizes(io, EXPORT_SIZES)))
    try:
        return ModelIO(io.inputs, io.output_names(len(outputs)), io.flag)
    except ValueError as exc:
        raise ModelSourceError(str(exc)) from exc


def export_onnx(model: nn.Module, io: Shape, path: Path) -> None:
    """Write ``model`` as ONNX with named dynamic axes, then check and shape-infer it."""
    import onnx

    spec = as_model_io(io)
    if spec.outputs is None:
        spec = resolve_outputs(model, spec)
    assert spec.outputs is not None
    example = torch_example_inputs(model, spec, axis_sizes(spec, EXPORT_SIZES))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the classic exporter's deprecation notice
        try:
            torch.onnx.export(
                model.eval(), example, str(path),
                opset_version=OPSET,
                input_names=[s.name for s in spec.inputs],
                output_names=list(spec.outputs),
                dynamic_axes=spec.dynamic_axes(spec.outputs),
                do_constant_folding=True,
                dynamo=False,
            )
        except Exception as exc:  # the exporter raises many unrelated types for unsupported ops
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise ExportError(f"ONNX export failed (inputs from {spec.flag}: {spec}): {first}") from exc
    try:
        onnx.checker.check_model(str(path), full_check=True)
        onnx.shape_inference.infer_shapes_path(str(path), str(path), check_type=True, strict_mode=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as exc:
        raise ExportError(f"exported ONNX model does not pass onnx.checker: {exc}") from exc


def parity_samples(model: nn.Module, io: ModelIO, seed: int) -> Dict[str, np.ndarray]:
    """Example inputs for :func:`check_parity`, at axis sizes other than the traced ones."""
    tensors = torch_example_inputs(model, io, axis_sizes(io, CHECK_SIZES), seed)
    return {spec.name: tensor.numpy() for spec, tensor in zip(io.inputs, tensors)}


def check_parity(model: nn.Module, path: Path, samples: Union[np.ndarray, Mapping[str, np.ndarray]],
                 atol: float = 1e-4) -> float:
    """Run torch and ONNX Runtime on the same ``samples`` and return the max abs difference over every output.

    ``samples`` is one array (a single-input model) or one array per input name, in argument order.
    Raises ExportError when they differ by more than ``atol`` relative to the output scale.
    """
    import onnxruntime as ort

    feeds = {INPUT_NAME: samples} if isinstance(samples, np.ndarray) else dict(samples)
    with torch.no_grad():
        expected = _as_outputs(model.eval()(*(torch.from_numpy(a) for a in feeds.values())))
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    wanted = [i.name for i in session.get_inputs()]
    if isinstance(samples, np.ndarray):
        feeds = {wanted[0]: samples}
    actual = session.run(None, {name: feeds[name] for name in wanted if name in feeds})
    worst = 0.0
    for got, want in zip(actual, expected):
        want_np = want.numpy()
        max_abs = float(np.max(np.abs(got.astype(np.float64) - want_np))) if want_np.size else 0.0
        scale = max(1.0, float(np.max(np.abs(want_np)))) if want_np.size else 1.0
        if max_abs > atol * scale:
            raise ExportError(f"ONNX parity check failed: max abs difference {max_abs:.3g} vs torch")
        worst = max(worst, max_abs)
    return worst


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


def _tensors(graph: Any) -> Iterator[Any]:
    """Every TensorProto of ``graph``: initializers, node attributes and subgraphs."""
    yield from graph.initializer
    for node in graph.node:
        for attribute in node.attribute:
            if attribute.HasField("t"):
                yield attribute.t
            yield from attribute.tensors
            if attribute.HasField("g"):
                yield from _tensors(attribute.g)
            for subgraph in attribute.graphs:
                yield from _tensors(subgraph)


def external_data_files(path: Path) -> Tuple[Path, ...]:
    """The external data files an ONNX model refers to; ModelSourceError if one is missing or too big.

    The model and its data must fit one protobuf (2 GB) once inlined: see :func:`copy_onnx`.
    """
    import onnx
    from onnx.external_data_helper import ExternalDataInfo, uses_external_data

    model = onnx.load(str(path), load_external_data=False)
    files = sorted({path.parent / ExternalDataInfo(t).location for t in _tensors(model.graph)
                    if uses_external_data(t)})
    for data_file in files:
        if not data_file.is_file():
            raise ModelSourceError(f"{path}: its external data file {data_file} is missing")
    total = path.stat().st_size + sum(f.stat().st_size for f in files)
    if files and total > MAX_INLINE_BYTES:
        raise ModelSourceError(f"{path}: model and external data are {total / 2**30:.1f} GiB; models over 2 GB "
                               "are not supported")
    return tuple(files)


def copy_onnx(source: Path, dest: Path) -> None:
    """Write a user's ONNX model to ``dest``: a plain copy, or with its external data inlined (one file)."""
    import onnx

    if not external_data_files(source):
        shutil.copyfile(source, dest)
        return
    try:
        model = onnx.load(str(source), load_external_data=True)
    except (OSError, ValueError) as exc:
        raise ModelSourceError(f"{source}: cannot read its external data: {exc}") from exc
    tmp = dest.with_name(f".{dest.name}.tmp")
    try:
        onnx.save(model, str(tmp))  # no external data: every tensor goes into the one file
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)
