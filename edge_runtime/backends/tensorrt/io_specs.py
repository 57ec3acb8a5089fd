"""The I/O of TensorRT engines, read through the name-based API (8.5 and 10.x), and the shapes buffers are sized for.

A model may run with several engines (DLA: one static-shape engine per batch size); they must
agree on names, modes and dtypes, and on every dimension but the batch axis, which the published
specs mark -1. Dynamic dimensions are -1 as in every backend's specs; the first one is the batch
axis when every input has it, the others (a sequence length) take ``tensorrt.dynamic_dim``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, List, Optional, Sequence, Tuple

from edge_runtime.backends.tensorrt import api
from edge_runtime.bundle.manifest import TensorSpec
from edge_runtime.errors import BundleError

if TYPE_CHECKING:
    import tensorrt

Range = Optional[Tuple[int, int]]  # (min, max) of a dynamic dimension; None: a fixed one


@dataclass(frozen=True)
class EngineTensor:
    """One I/O tensor of an engine, as the engine declares it."""

    name: str
    is_input: bool
    dtype: str  # numpy dtype name
    shape: Tuple[int, ...]  # -1 for dynamic

    @property
    def spec(self) -> TensorSpec:
        return TensorSpec(name=self.name, dtype=self.dtype, shape=self.shape)


def dims(shape: tensorrt.Dims) -> Tuple[int, ...]:
    """A TensorRT ``Dims`` as a tuple (-1 for dynamic)."""
    return tuple(int(shape[index]) for index in range(len(shape)))


def read_tensors(trt: api.TrtModule, engine: tensorrt.ICudaEngine) -> List[EngineTensor]:
    """The engine's I/O tensors in its own order."""
    tensors = []
    for index in range(engine.num_io_tensors):
        name = engine.get_tensor_name(index)
        mode = engine.get_tensor_mode(name)
        if mode not in (trt.TensorIOMode.INPUT, trt.TensorIOMode.OUTPUT):
            raise BundleError(f"engine tensor '{name}' is neither an input nor an output")
        tensors.append(EngineTensor(
            name=name, is_input=mode == trt.TensorIOMode.INPUT,
            dtype=api.numpy_dtype(engine.get_tensor_dtype(name), name),
            shape=dims(engine.get_tensor_shape(name)),
        ))
    return tensors


def agreed_tensors(trt: api.TrtModule, engines: Sequence[Any], static: bool) -> List[EngineTensor]:
    """The I/O every engine shares (static engines: the batch axis published as -1); BundleError if they differ."""
    agreed: Optional[List[EngineTensor]] = None
    for engine in engines:
        tensors = read_tensors(trt, engine)
        if static:
            tensors = [EngineTensor(t.name, t.is_input, t.dtype, (-1, *t.shape[1:]) if t.shape else ())
                       for t in tensors]
        if agreed is None:
            agreed = tensors
        elif tensors != agreed:
            raise BundleError(f"the model's TensorRT engines disagree on their inputs and outputs: "
                              f"{_describe(agreed)} vs {_describe(tensors)}")
    if not agreed or not any(t.is_input for t in agreed) or all(t.is_input for t in agreed):
        raise BundleError("the TensorRT engine has no inputs or no outputs")
    return agreed


def input_ranges(tensor: EngineTensor, batch: int, dynamic: Tuple[int, int]) -> List[Range]:
    """Per dimension of an input: None when fixed, else the range requests may use (batch axis first)."""
    ranges: List[Range] = []
    for axis, dim in enumerate(tensor.shape):
        if dim != -1:
            ranges.append(None)
        else:
            ranges.append((1, batch) if axis == 0 and batch else dynamic)
    return ranges


def max_shape(shape: Tuple[int, ...], ranges: Sequence[Range]) -> Tuple[int, ...]:
    """The largest shape an input takes: every dynamic dimension at its range's top."""
    return tuple(dim if span is None else span[1] for dim, span in zip(shape, ranges))


def outside(shape: Tuple[int, ...], ranges: Sequence[Range]) -> bool:
    """True when some dynamic dimension of ``shape`` is outside its range."""
    return any(span is not None and not span[0] <= dim <= span[1] for dim, span in zip(shape, ranges))


def describe_ranges(shape: Tuple[int, ...], ranges: Sequence[Range]) -> str:
    """``[1..8, 1..512, 4]``-style text for an error message."""
    parts = (str(dim) if span is None else f"{span[0]}..{span[1]}" for dim, span in zip(shape, ranges))
    return "[" + ", ".join(parts) + "]"


def _describe(tensors: Sequence[EngineTensor]) -> str:
    return ", ".join(f"{'in' if t.is_input else 'out'} {t.name} {t.dtype} {list(t.shape)}" for t in tensors)
