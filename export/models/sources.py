"""Resolve the ``--model`` argument of edge-export into something the pipeline can export.

Three forms are accepted:

* a reference model name (``digits-cnn``, ``resnet18``), built here, with data where it has some;
* ``package.module:factory`` (a callable returning an ``nn.Module``), plus optional weights and
  its inputs (:class:`export.io_spec.ModelIO`: ``--input``, ``--inputs`` or ``--input-shape``);
* a path to an existing ``.onnx`` file (the torch-only steps, pruning, are then unavailable); its
  inputs and outputs come from the graph.
"""

from __future__ import annotations

import hashlib
import importlib
import io
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, Optional, Tuple, Union

import torch
from torch import nn

from edge_runtime.bundle.verify import sha256_file
from export.errors import ModelSourceError
from export.io_spec import InputSpec, ModelIO
from export.models import digits_cnn, resnet
from export.models.digits_data import LabelledSplits, load_digits_splits
from export.models.training import train_classifier
from export.steps.onnx_export import external_data_files, resolve_outputs

DIGITS_TRAIN_EPOCHS = 15


@dataclass
class ModelSource:
    """A model ready for the pipeline: a torch module or an ONNX file, and what is known of it."""

    name: str
    io: ModelIO  # named inputs (batch axis first) and, for torch modules, the output names
    source_sha256: str
    module: Optional[nn.Module] = None
    onnx_path: Optional[Path] = None
    data: Optional[LabelledSplits] = None  # labelled train/test data, when the model has some

    @property
    def is_onnx(self) -> bool:
        return self.module is None


def _reference_io(shape: Tuple[int, ...]) -> ModelIO:
    return ModelIO(ModelIO.single(shape).inputs, ("output",), "--model")


def _module_sha256(module: nn.Module) -> str:
    buffer = io.BytesIO()
    torch.save(module.state_dict(), buffer)
    return hashlib.sha256(buffer.getvalue()).hexdigest()


def _digits_cnn(seed: int, progress: bool) -> ModelSource:
    data = load_digits_splits(seed=seed)
    torch.manual_seed(seed)
    model = train_classifier(
        digits_cnn.DigitsCNN(), data.train_x, data.train_y,
        epochs=DIGITS_TRAIN_EPOCHS, seed=seed, desc="train digits-cnn", progress=progress,
    )
    return ModelSource("digits-cnn", _reference_io(digits_cnn.INPUT_SHAPE), _module_sha256(model), model,
                       data=data)


def _resnet18(seed: int, progress: bool) -> ModelSource:
    torch.manual_seed(seed)
    model = resnet.ResNet18().eval()
    return ModelSource("resnet18", _reference_io(resnet.INPUT_SHAPE), _module_sha256(model), model)


REFERENCE_MODELS: Dict[str, Callable[[int, bool], ModelSource]] = {
    "digits-cnn": _digits_cnn,
    "resnet18": _resnet18,
}


def _load_onnx_source(path: Path) -> ModelSource:
    import onnx

    if not path.is_file():
        raise ModelSourceError(f"ONNX file not found: {path}")
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # onnx raises DecodeError, OSError, ... for bad files
        raise ModelSourceError(f"{path} is not a readable ONNX model: {exc}") from exc
    graph_inputs = [i for i in model.graph.input if i.name not in {t.name for t in model.graph.initializer}]
    if not graph_inputs:
        raise ModelSourceError(f"{path} has no graph inputs")
    external_data_files(path)  # a missing data file or a model over 2 GB is refused now, not mid-export
    specs = tuple(InputSpec(i.name, _graph_dims(i), _graph_dtype(i)) for i in graph_inputs)
    io = ModelIO(specs, tuple(o.name for o in model.graph.output), "--model")
    return ModelSource(path.stem, io, sha256_file(path), onnx_path=path)


def _graph_dims(value: Any) -> Tuple[Union[int, str], ...]:
    return tuple(d.dim_value if d.dim_value > 0 else (d.dim_param or "?") for d in value.type.tensor_type.shape.dim)


def _graph_dtype(value: Any) -> str:
    import onnx

    return str(onnx.helper.tensor_dtype_to_np_dtype(value.type.tensor_type.elem_type))


def _import_factory(spec: str) -> Callable[[], nn.Module]:
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise ModelSourceError(f"bad model import path '{spec}': expected 'package.module:factory'")
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.append(os.getcwd())  # as `python -m` does: a model package in the current directory imports
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ModelSourceError(f"cannot import module '{module_name}': {exc}") from exc
    factory = getattr(module, attr, None)
    if not callable(factory):
        raise ModelSourceError(f"'{attr}' is not a callable in module '{module_name}'")
    return factory


def _load_weights(model: nn.Module, weights: Path) -> None:
    if not weights.is_file():
        raise ModelSourceError(f"weights file not found: {weights}")
    try:
        state = torch.load(str(weights), map_location="cpu", weights_only=True)
        if isinstance(state, dict) and "state_dict" in state:
            state = state["state_dict"]
        model.load_state_dict(state)
    except Exception as exc:  # unpickling and shape-mismatch errors vary by torch version
        raise ModelSourceError(f"cannot load weights from {weights}: {exc}") from exc


def _import_source(spec: str, weights: Optional[Path], io: Optional[ModelIO]) -> ModelSource:
    if io is None:
        raise ModelSourceError(
            f"an import-path model needs its inputs: --input NAME:DIMS:DTYPE (repeatable), --inputs FILE, "
            f"or --input-shape (one float32 sample, e.g. 3,224,224): '{spec}'"
        )
    factory = _import_factory(spec)
    try:
        model = factory()
    except Exception as exc:  # user code may raise anything
        raise ModelSourceError(f"calling '{spec}' failed: {exc}") from exc
    if not isinstance(model, nn.Module):
        raise ModelSourceError(f"'{spec}' returned {type(model).__name__}, not a torch.nn.Module")
    if weights is not None:
        _load_weights(model, weights)
    name = spec.partition(":")[2].lower().replace("_", "-")
    return ModelSource(name, resolve_outputs(model.eval(), io), _module_sha256(model), model.eval())


def resolve_model(
    spec: str,
    *,
    weights: Optional[Path] = None,
    input_shape: Optional[Tuple[int, ...]] = None,
    io: Optional[ModelIO] = None,
    seed: int = 0,
    progress: bool = True,
) -> ModelSource:
    """Turn a ``--model`` value into a :class:`ModelSource` (see the module docstring).

    ``io`` gives an import-path model's inputs; ``input_shape`` is the one-float32-input shorthand.
    """
    if io is None and input_shape is not None:
        io = ModelIO.single(input_shape)
    if io is not None and (spec in REFERENCE_MODELS or spec.endswith(".onnx")):
        raise ModelSourceError(f"{io.flag} applies to an import-path model only: '{spec}' has its own inputs")
    if spec in REFERENCE_MODELS:
        if weights is not None:
            raise ModelSourceError(f"--weights does not apply to the reference model '{spec}'")
        return REFERENCE_MODELS[spec](seed, progress)
    if spec.endswith(".onnx"):
        if weights is not None:
            raise ModelSourceError("--weights does not apply to an .onnx model")
        return _load_onnx_source(Path(spec))
    if ":" in spec:
        return _import_source(spec, weights, io)
    known = ", ".join(sorted(REFERENCE_MODELS))
    raise ModelSourceError(
        f"unknown model '{spec}': give a reference model ({known}), "
        "'package.module:factory' or a path to an .onnx file"
    )
