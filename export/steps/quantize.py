"""Static INT8 quantization to a QDQ ONNX graph with ONNX Runtime's quantization tools, per target.

Two schemes, chosen by the device config's ``quantization.scheme``:

* ``u8s8-qdq`` (ONNX Runtime CPU): uint8 asymmetric activations, int8 per-channel weights.
  ORT's CPU kernels are fastest this way; int8 activations leave most convs in FP32 there.
* ``s8s8-qdq`` (TensorRT, explicit quantization): symmetric int8 activations and weights,
  zero points 0, weights kept as FP32 + Q/DQ pairs so TensorRT 8.5 through 10 can fold them.
  TensorRT's implicit-quantization calibrators are deprecated since 10.1; the QDQ graph
  carries the scales, so the engine build needs no calibrator.

``quant_pre_process`` runs first: it folds BatchNorm and infers shapes, which the quantizer
needs to place Q/DQ pairs well. Symbolic shape inference runs with ``auto_merge`` (dynamic
batch and sequence axes need it); when it still fails, plain ONNX shape inference is used and
a notice says so. ORT's tools write temporary files into the current directory (symbolic shape
inference leaves ``sym_shape_infer_temp.onnx`` and a ``<uuid>.data`` of the model's size there
when it fails), so they run with a temporary directory as the current one, always removed.
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, Optional, Sequence

from tqdm import tqdm

from edge_runtime.config import QuantizationSettings
from export.errors import ExportError
from export.samples import SampleSet

CALIBRATION_BATCH = 16
# Ops whose float inputs static INT8 speeds up; a graph without any has nothing to quantize.
QUANTIZABLE_OPS = frozenset({"MatMul", "Gemm", "Conv", "ConvTranspose"})

Notice = Callable[[str], None]


def one_line(exc: BaseException) -> str:
    """An exception as one line for the CLI: its first line, prefixed by its type unless a bare Exception."""
    lines = str(exc).strip().splitlines()
    text = lines[0] if lines else ""
    return text if type(exc) is Exception and text else f"{type(exc).__name__}: {text}".rstrip(": ")


def _float_tensors(graph: Any, known: Dict[str, bool]) -> None:
    """Record for each typed tensor of ``graph`` whether it is floating point."""
    from onnx import TensorProto

    floats = {TensorProto.FLOAT, TensorProto.FLOAT16, TensorProto.DOUBLE, TensorProto.BFLOAT16}
    for value in (*graph.input, *graph.output, *graph.value_info):
        if value.type.HasField("tensor_type"):
            known[value.name] = value.type.tensor_type.elem_type in floats
    for tensor in graph.initializer:
        known[tensor.name] = tensor.data_type in floats


def _has_quantizable_node(graph: Any, known: Dict[str, bool]) -> bool:
    """Whether ``graph`` (subgraphs included) has a node that INT8 would quantize."""
    import onnx

    _float_tensors(graph, known)
    for node in graph.node:
        # an input of unknown type counts as float: never keep FP32 by mistake
        if node.op_type in QUANTIZABLE_OPS and node.domain in ("", "ai.onnx") and any(
            known.get(name, True) for name in node.input if name
        ):
            return True
        subgraphs = [attribute.g for attribute in node.attribute if attribute.type == onnx.AttributeProto.GRAPH]
        subgraphs += [each for attribute in node.attribute if attribute.type == onnx.AttributeProto.GRAPHS
                      for each in attribute.graphs]
        if any(_has_quantizable_node(subgraph, known) for subgraph in subgraphs):
            return True
    return False


def has_quantizable_ops(onnx_path: Path) -> bool:
    """Whether the FP32 graph has MatMul/Gemm/Conv/ConvTranspose nodes on float tensors."""
    import onnx

    model = onnx.load(str(onnx_path), load_external_data=False)
    if not any(node.op_type in QUANTIZABLE_OPS for node in model.graph.node) and not any(
        attribute.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS)
        for node in model.graph.node for attribute in node.attribute
    ):
        return False
    # without inferred types, inputs of unknown type count as float (conservative)
    with contextlib.suppress(onnx.shape_inference.InferenceError, onnx.checker.ValidationError, ValueError):
        model = onnx.shape_inference.infer_shapes(model)
    return _has_quantizable_node(model.graph, {})


def fixed_batch(onnx_path: Path, wanted: int) -> int:
    """``wanted``, or less when an input of the graph fixes its batch axis (e.g. to 1)."""
    import onnx

    graph = onnx.load(str(onnx_path), load_external_data=False).graph
    initializers = {t.name for t in graph.initializer}
    fixed = [value.type.tensor_type.shape.dim[0].dim_value for value in graph.input
             if value.name not in initializers and value.type.tensor_type.shape.dim
             and value.type.tensor_type.shape.dim[0].dim_value > 0]
    return min([wanted, *fixed])


@contextlib.contextmanager
def _working_directory(path: Path) -> Iterator[None]:
    """Run a block with ``path`` as the current directory (contextlib.chdir needs Python 3.11)."""
    previous = os.getcwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(previous)


def preprocess(fp32_path: Path, out_path: Path, notice: Notice) -> None:
    """``quant_pre_process`` with auto-merged symbolic shapes, falling back to ONNX shape inference.

    Call it with a temporary directory as the current one (see the module docstring).
    """
    from onnxruntime.quantization import quant_pre_process

    options: Dict[str, Any] = {"save_as_external_data": True, "all_tensors_to_one_file": True,
                               "external_data_location": out_path.name + ".data"}
    try:
        quant_pre_process(str(fp32_path), str(out_path), auto_merge=True, **options)
        return
    except Exception as exc:  # ORT's tools raise bare Exception (e.g. "Incomplete symbolic shape inference")
        notice(f"symbolic shape inference failed ({one_line(exc)}); using ONNX shape inference instead")
    try:
        quant_pre_process(str(fp32_path), str(out_path), skip_symbolic_shape=True, **options)
    except Exception as exc:  # as above: one line for the CLI, the traceback chained
        raise ExportError(f"INT8 pre-processing failed: {one_line(exc)}") from exc


def calibration_reader(samples: SampleSet, max_batch: int, progress: bool, desc: str) -> Any:
    from onnxruntime.quantization import CalibrationDataReader

    class _Reader(CalibrationDataReader):
        """Feeds every input, batch by batch (one bucket per shape), with a progress bar."""

        def __init__(self) -> None:
            self._bar = tqdm(total=len(samples), desc=desc, unit="sample", disable=not progress, leave=False)
            self._it = samples.batches(max_batch)

        def get_next(self) -> Optional[Dict[str, Any]]:
            batch = next(self._it, None)
            if batch is None:
                self._bar.close()
                return None
            self._bar.update(len(next(iter(batch.values()))))
            return batch

    return _Reader()


def _scheme_options(settings: QuantizationSettings) -> Dict[str, Any]:
    from onnxruntime.quantization import QuantType

    if settings.scheme == "u8s8-qdq":
        return {"activation_type": QuantType.QUInt8, "weight_type": QuantType.QInt8, "extra_options": {}}
    if settings.scheme == "s8s8-qdq":
        return {
            "activation_type": QuantType.QInt8,
            "weight_type": QuantType.QInt8,
            "extra_options": {
                "ActivationSymmetric": True,
                "WeightSymmetric": True,
                "AddQDQPairToWeight": True,
            },
        }
    raise ExportError(f"unknown quantization scheme '{settings.scheme}'")


@contextlib.contextmanager
def _quiet_root_logger() -> Iterator[None]:
    """Silence ORT quantizer's root-logger warnings (e.g. per-channel axes of LayerNorm weights) for a block."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(max(level, logging.ERROR))
    try:
        yield
    finally:
        root.setLevel(level)


@contextlib.contextmanager
def workspace() -> Iterator[Path]:
    """A temporary directory, also the current one while open (ORT's tools write into the cwd); removed after."""
    with tempfile.TemporaryDirectory(prefix="edge-export-quant-") as tmp, _working_directory(Path(tmp)):
        yield Path(tmp)


def prepare(fp32_path: Path, directory: Path, notice: Notice) -> Path:
    """Pre-process ``fp32_path`` into ``directory`` (a :func:`workspace`) and name any unnamed node.

    Every candidate is quantized from this one file, and node names are what a plan excludes by.
    """
    import onnx

    prepared = directory / "prepared.onnx"
    preprocess(fp32_path.resolve(), prepared, notice)
    model = onnx.load(str(prepared))
    unnamed = [node for node in model.graph.node if not node.name]
    if unnamed:
        taken = {node.name for node in model.graph.node}
        for index, node in enumerate(unnamed):
            name = f"{node.op_type}_{index}"
            while name in taken:
                name += "_"
            node.name = name  # ends in its own index: no clash with another generated name
        prepared = directory / "prepared-named.onnx"
        onnx.save_model(model, str(prepared), save_as_external_data=True, all_tensors_to_one_file=True,
                        location=prepared.name + ".data")
    return prepared


def quantize_static_model(
    prepared: Path,
    out_path: Path,
    cache_path: Optional[Path],
    samples: SampleSet,
    settings: QuantizationSettings,
    *,
    op_types: Optional[Sequence[str]] = None,
    exclude: Sequence[str] = (),
    float_outputs: Sequence[str] = (),
    progress: bool = True,
    desc: str = "calibrate",
    max_batch: int = CALIBRATION_BATCH,
) -> None:
    """Static INT8 QDQ of a :func:`prepare`-d model: ``op_types`` (None: ORT's default, every op it can)
    except the nodes in ``exclude``; outputs of ``float_outputs`` op types stay float (inputs-only QDQ);
    calibration ranges to ``cache_path`` when given."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, quantize_static

    methods = {
        "minmax": CalibrationMethod.MinMax,
        "entropy": CalibrationMethod.Entropy,
        "percentile": CalibrationMethod.Percentile,
    }
    options = _scheme_options(settings)
    if float_outputs:
        options["extra_options"] = {**options["extra_options"],
                                    "OpTypesToExcludeOutputQuantization": list(float_outputs)}
    try:
        with _quiet_root_logger():
            quantize_static(
                str(prepared),
                str(out_path.resolve()),
                calibration_reader(samples, fixed_batch(prepared, max_batch), progress, desc),
                quant_format=QuantFormat.QDQ,
                op_types_to_quantize=list(op_types) if op_types is not None else None,
                nodes_to_exclude=list(exclude) or None,
                per_channel=settings.per_channel,
                calibrate_method=methods[settings.calibration_method],
                calibration_cache_path=str(cache_path.resolve()) if cache_path is not None else None,
                **options,
            )
    except Exception as exc:  # ORT's quantizer raises bare Exception too; one line, traceback chained
        raise ExportError(f"INT8 quantization failed: {one_line(exc)}") from exc


def quantize_dynamic_model(prepared: Path, out_path: Path, op_types: Sequence[str] = ("MatMul", "Gemm")) -> None:
    """Dynamic INT8 of a :func:`prepare`-d model: int8 weights of ``op_types``, activations quantized at run time."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    try:
        with _quiet_root_logger():
            quantize_dynamic(str(prepared), str(out_path.resolve()), op_types_to_quantize=list(op_types),
                             weight_type=QuantType.QInt8)
    except Exception as exc:  # as above
        raise ExportError(f"dynamic INT8 quantization failed: {one_line(exc)}") from exc


def _ignore(message: str) -> None:
    """Drop a progress note: quantize_int8 was called without a ``notice`` callback."""


def quantize_int8(
    fp32_path: Path,
    out_path: Path,
    cache_path: Path,
    samples: SampleSet,
    settings: QuantizationSettings,
    *,
    progress: bool = True,
    desc: str = "calibrate",
    notice: Optional[Notice] = None,
    max_batch: int = CALIBRATION_BATCH,
    op_types: Optional[Sequence[str]] = None,
    exclude: Sequence[str] = (),
) -> None:
    """Write a static INT8 QDQ model of ``fp32_path`` to ``out_path``; ranges to ``cache_path``.

    ``samples`` feed every input, at most ``max_batch`` of one shape at a time; ``notice`` receives
    progress notes (e.g. a shape-inference fallback). ``op_types`` None quantizes every op ORT can
    (naive); the accuracy-aware export goes through :mod:`export.steps.quant_search` instead.
    """
    paths = [p.resolve() for p in (fp32_path, out_path, cache_path)]  # the block below changes directory
    with workspace() as tmp:
        prepared = prepare(paths[0], tmp, notice or _ignore)
        quantize_static_model(prepared, paths[1], paths[2], samples, settings, op_types=op_types, exclude=exclude,
                              progress=progress, desc=desc, max_batch=max_batch)
