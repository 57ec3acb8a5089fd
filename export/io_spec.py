"""A model's named inputs and outputs for the factory route: parsed from the CLI or a YAML file.

An input is ``NAME:DIMS:DTYPE`` (``--input``, repeatable, in the model's argument order): DIMS
are comma-separated, each a positive int or a name for a dynamic axis, and the first axis is
the batch (a name). ``--inputs FILE`` holds the same in YAML; ``--input-shape 3,224,224`` stays
the shorthand for one float32 input named ``input``. Every parse error is one line naming the flag.

The same specs build the example inputs that tracing, parity checks, MAC counting and pruning
feed the model, so each of those works for integer ids, masks and several inputs alike.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

DTYPES = ("float32", "float16", "int64", "int32", "bool")
DEFAULT_INPUT = "input"
MAX_EXAMPLE_ID = 100  # integer inputs get values in 0..min(this, smallest embedding table) - 1
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.\-]*$")
_SPEC_KEYS = {"inputs", "outputs"}
_INPUT_KEYS = {"name", "shape", "dtype"}

Dim = Union[int, str]


class IoSpecError(ValueError):
    """A malformed input/output spec; the message is one line that names the flag."""


@dataclass(frozen=True)
class InputSpec:
    """One model input: name, dims (ints, or names for dynamic axes; the first is the batch), dtype."""

    name: str
    dims: Tuple[Dim, ...]
    dtype: str

    def __str__(self) -> str:
        return f"{self.name}[{','.join(str(d) for d in self.dims)}] {self.dtype}"


@dataclass(frozen=True)
class ModelIO:
    """A model's inputs in argument order, its output names when given, and the flag they came from."""

    inputs: Tuple[InputSpec, ...]
    outputs: Optional[Tuple[str, ...]] = None
    flag: str = "--input"

    def __str__(self) -> str:
        return ", ".join(str(spec) for spec in self.inputs)

    @classmethod
    def single(cls, shape: Sequence[int], flag: str = "--input-shape") -> ModelIO:
        """One float32 input named ``input`` of one sample's ``shape`` (the --input-shape shorthand)."""
        return cls((InputSpec(DEFAULT_INPUT, ("batch", *shape), "float32"),), None, flag)

    def with_outputs(self, outputs: Optional[Sequence[str]]) -> ModelIO:
        """This spec with output names (``--output``); None keeps the ones it has."""
        if not outputs:
            return self
        names = tuple(outputs)
        _check_names(names, "--output")
        clash = set(names) & {spec.name for spec in self.inputs}
        if clash:
            raise IoSpecError(f"--output: '{sorted(clash)[0]}' is also an input name")
        return ModelIO(self.inputs, names, self.flag)

    def output_names(self, count: int) -> Tuple[str, ...]:
        """The names of ``count`` outputs: the given ones, else ``output`` or ``output_0``, ``output_1``, ..."""
        if self.outputs is not None:
            if len(self.outputs) != count:
                raise IoSpecError(f"--output: {len(self.outputs)} name(s) given, but the model returns {count} "
                                  "output(s)")
            return self.outputs
        return ("output",) if count == 1 else tuple(f"output_{i}" for i in range(count))

    def dynamic_axes(self, output_names: Sequence[str]) -> Dict[str, Dict[int, str]]:
        """torch.onnx.export's dynamic_axes: every named dim of every input; the batch on every output."""
        axes = {spec.name: {i: d for i, d in enumerate(spec.dims) if isinstance(d, str)} for spec in self.inputs}
        batch = self.inputs[0].dims[0]
        return {**axes, **{name: {0: str(batch)} for name in output_names}}


def as_model_io(value: Union[ModelIO, Sequence[int]]) -> ModelIO:
    """A ModelIO as is, or one sample's shape as the single-float32-input shorthand."""
    return value if isinstance(value, ModelIO) else ModelIO.single(tuple(value))


def parse_input(text: str, flag: str = "--input") -> InputSpec:
    """Parse ``NAME:DIMS:DTYPE``, e.g. ``input_ids:batch,seq:int64``."""
    parts = text.split(":")
    if len(parts) != 3:
        raise IoSpecError(f"{flag}: expected NAME:DIMS:DTYPE (e.g. input_ids:batch,seq:int64), got '{text}'")
    name, dims, dtype = (part.strip() for part in parts)
    return make_input(name, [d.strip() for d in dims.split(",")] if dims else [], dtype, flag)


def make_input(name: Any, dims: Sequence[Any], dtype: Any, flag: str) -> InputSpec:
    """Validate one input's fields (from the CLI or a spec file) and build its InputSpec."""
    _check_names([name], flag)
    if dtype not in DTYPES:
        raise IoSpecError(f"{flag}: input '{name}': dtype '{dtype}' is not one of {', '.join(DTYPES)}")
    if not dims:
        raise IoSpecError(f"{flag}: input '{name}' needs at least the batch axis")
    parsed = tuple(_dim(d, name, flag) for d in dims)
    if not isinstance(parsed[0], str):
        raise IoSpecError(f"{flag}: input '{name}': the first axis is the batch: give it a name (e.g. batch), "
                          f"not {parsed[0]}")
    return InputSpec(str(name), parsed, str(dtype))


def model_io(specs: Sequence[InputSpec], flag: str = "--input") -> ModelIO:
    """Check several inputs together (unique names, one batch axis name) and bundle them."""
    if not specs:
        raise IoSpecError(f"{flag}: no inputs given")
    _check_names([s.name for s in specs], flag)
    batches = {s.dims[0] for s in specs}
    if len(batches) > 1:
        raise IoSpecError(f"{flag}: every input's first axis is the same batch, got {sorted(map(str, batches))}")
    return ModelIO(tuple(specs), None, flag)


def load_spec_file(path: Path) -> ModelIO:
    """Read ``--inputs FILE``: ``inputs: [{name, shape, dtype}, ...]`` and optional ``outputs: [names]``."""
    import yaml

    flag = "--inputs"
    try:
        document = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise IoSpecError(f"{flag}: cannot read {path}: {exc.strerror or exc}") from exc
    except yaml.YAMLError as exc:
        raise IoSpecError(f"{flag}: {path} is not valid YAML: {' '.join(str(exc).split())}") from exc
    if not isinstance(document, dict) or "inputs" not in document:
        raise IoSpecError(f"{flag}: {path} must be a mapping with an 'inputs' list")
    _no_unknown_keys(document, _SPEC_KEYS, f"{flag}: {path}")
    entries = document["inputs"]
    if not isinstance(entries, list):
        raise IoSpecError(f"{flag}: {path}: 'inputs' must be a list")
    specs = [_spec_entry(entry, index, path) for index, entry in enumerate(entries)]
    io = model_io(specs, flag)
    outputs = document.get("outputs")
    if outputs is not None and (not isinstance(outputs, list) or not all(isinstance(o, str) for o in outputs)):
        raise IoSpecError(f"{flag}: {path}: 'outputs' must be a list of names")
    return io.with_outputs(outputs) if outputs else io


def _spec_entry(entry: Any, index: int, path: Path) -> InputSpec:
    where = f"--inputs: {path}: inputs[{index}]"
    if not isinstance(entry, dict):
        raise IoSpecError(f"{where} must be a mapping with name, shape and dtype")
    _no_unknown_keys(entry, _INPUT_KEYS, where)
    missing = sorted(_INPUT_KEYS - set(entry))
    if missing:
        raise IoSpecError(f"{where}: missing {', '.join(missing)}")
    shape = entry["shape"]
    if not isinstance(shape, list):
        raise IoSpecError(f"{where}: shape must be a list, e.g. [batch, seq]")
    return make_input(entry["name"], shape, entry["dtype"], "--inputs")


def example_inputs(io: ModelIO, sizes: Mapping[str, int], int_high: int = MAX_EXAMPLE_ID,
                   seed: int = 0) -> Dict[str, np.ndarray]:
    """Inputs for tracing and checks: named dims from ``sizes`` (default 1), floats normal, masks ones,
    other integers in 0..int_high-1, bools random."""
    rng = np.random.default_rng(seed)
    arrays: Dict[str, np.ndarray] = {}
    for spec in io.inputs:
        shape = tuple(d if isinstance(d, int) else sizes.get(d, 1) for d in spec.dims)
        if spec.dtype.startswith("float"):
            arrays[spec.name] = rng.standard_normal(shape).astype(spec.dtype)
        elif "mask" in spec.name.lower():
            arrays[spec.name] = np.ones(shape, spec.dtype)
        elif spec.dtype == "bool":
            arrays[spec.name] = rng.random(shape) < 0.5
        else:
            arrays[spec.name] = rng.integers(0, max(1, int_high), shape).astype(spec.dtype)
    return arrays


def _dim(value: Any, name: str, flag: str) -> Dim:
    if isinstance(value, bool):
        raise IoSpecError(f"{flag}: input '{name}': bad axis {value!r}")
    if isinstance(value, int) or (isinstance(value, str) and value.lstrip("-").isdigit()):
        size = int(value)
        if size <= 0:
            raise IoSpecError(f"{flag}: input '{name}': axis sizes must be positive, got {size}")
        return size
    if isinstance(value, str) and _NAME.match(value):
        return value
    raise IoSpecError(f"{flag}: input '{name}': axis '{value}' is neither a positive int nor a name")


def _check_names(names: Sequence[Any], flag: str) -> None:
    seen: List[str] = []
    for name in names:
        if not isinstance(name, str) or not _NAME.match(name):
            raise IoSpecError(f"{flag}: bad tensor name {name!r} (letters, digits, _ . -; not starting with a digit)")
        if name in seen:
            raise IoSpecError(f"{flag}: name '{name}' given twice")
        seen.append(name)


def _no_unknown_keys(mapping: Dict[Any, Any], allowed: set, where: str) -> None:
    unknown = sorted(str(k) for k in mapping if k not in allowed)
    if unknown:
        raise IoSpecError(f"{where}: unknown key(s) {', '.join(unknown)} (allowed: {', '.join(sorted(allowed))})")


def id_limit(model: Any) -> int:
    """The exclusive upper bound for example integer ids: min(MAX_EXAMPLE_ID, smallest embedding table)."""
    from torch import nn

    tables = [m.num_embeddings for m in model.modules() if isinstance(m, (nn.Embedding, nn.EmbeddingBag))]
    return min([MAX_EXAMPLE_ID, *tables])


def torch_example_inputs(model: Any, io: ModelIO, sizes: Mapping[str, int], seed: int = 0) -> Tuple[Any, ...]:
    """:func:`example_inputs` as torch tensors in argument order, with ids valid for ``model``'s embeddings."""
    import torch

    arrays = example_inputs(io, sizes, id_limit(model), seed)
    return tuple(torch.from_numpy(arrays[spec.name]) for spec in io.inputs)
