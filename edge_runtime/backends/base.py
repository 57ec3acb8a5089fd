"""The Backend interface: load a verified bundle, describe its I/O, run inference, close.

Like Polygraphy's runners, the public methods check arguments and state and then call a
protected ``_*`` method that a subclass fills in: ``infer`` validates names, dtypes, shapes and
the batch limit once here, so no backend can forget to. A backend instance is used by one
thread at a time (the serving layer gives each instance its own worker thread, which is also
what TensorRT's CUDA context needs).
"""

from __future__ import annotations

import abc
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, ClassVar, Dict, Mapping, Optional, Sequence, Tuple

import numpy as np

from edge_runtime.bundle.manifest import TensorSpec
from edge_runtime.bundle.verify import VerifiedBundle
from edge_runtime.config import DeviceConfig
from edge_runtime.errors import ModelNotReadyError, RequestError


@dataclass(frozen=True)
class BackendOptions:
    """Knobs the serving layer passes to every backend."""

    max_batch_size: int = 8  # largest batch the serving layer will send (1: no batching)
    intra_op_threads: Optional[int] = None  # CPU backends; None: the library's default
    spinning: bool = False  # CPU thread pools busy-wait between runs (see RuntimeSettings.intra_op_spinning)
    # Device-local engine cache (RuntimeSettings.engine_cache_dir); None: engines built here are not kept.
    engine_cache_dir: Optional[Path] = None
    # Called by a backend that knows what a model needs (a TensorRT engine's device memory plus its
    # size, in MiB) before it takes that memory; raises MemoryBudgetError when it does not fit.
    memory_check: Optional[Callable[[float], None]] = None
    # Progress of long work (an engine build takes minutes on a Xavier): one line per call.
    progress: Optional[Callable[[str], None]] = None


class Backend(abc.ABC):
    """One loaded model on one execution engine."""

    name: ClassVar[str] = ""

    def __init__(self) -> None:
        self._inputs: Tuple[TensorSpec, ...] = ()
        self._outputs: Tuple[TensorSpec, ...] = ()
        self._max_batch_size = 0
        self._loaded = False
        self.artifact = ""  # the bundle file this backend runs, for metadata and logs
        # What this backend knows the model takes (MiB), where it knows it (TensorRT: engine device
        # memory + engine size); None: the serving layer measures the process instead.
        self.memory_mb: Optional[float] = None

    @property
    def inputs(self) -> Tuple[TensorSpec, ...]:
        """Input specs; -1 marks a dynamic dimension (the first one is the batch axis when batching)."""
        return self._inputs

    @property
    def outputs(self) -> Tuple[TensorSpec, ...]:
        """Output specs, as for inputs."""
        return self._outputs

    @property
    def max_batch_size(self) -> int:
        """Largest batch accepted; 0 means the model has no batch axis (shapes are taken as they are)."""
        return self._max_batch_size

    @property
    def loaded(self) -> bool:
        return self._loaded

    def load(self, bundle: Optional[VerifiedBundle], device: DeviceConfig, options: BackendOptions) -> None:
        """Load the model for ``device``; sets the I/O specs and the batch limit."""
        if self._loaded:
            raise RuntimeError(f"{type(self).__name__} is already loaded")
        self._load(bundle, device, options)
        self._loaded = True

    def infer(self, inputs: Mapping[str, np.ndarray]) -> Dict[str, np.ndarray]:
        """Validate ``inputs`` against the specs, then run the model."""
        if not self._loaded:
            raise ModelNotReadyError("the backend is not loaded")
        check_inputs(self._inputs, inputs, self._max_batch_size)
        return self._infer(inputs)

    def close(self) -> None:
        """Release the model's resources; safe to call twice."""
        if self._loaded:
            self._loaded = False
            self._close()

    @abc.abstractmethod
    def _load(self, bundle: Optional[VerifiedBundle], device: DeviceConfig, options: BackendOptions) -> None:
        """Load and set ``_inputs``, ``_outputs``, ``_max_batch_size`` and ``artifact``."""

    @abc.abstractmethod
    def _infer(self, inputs: Mapping[str, np.ndarray]) -> Dict[str, np.ndarray]:
        """Run validated inputs; return every output by name."""

    @abc.abstractmethod
    def _close(self) -> None:
        """Free what ``_load`` took."""


def batch_limit(specs: Sequence[TensorSpec], wanted: int) -> int:
    """``wanted`` when every input has a dynamic first axis (a batch axis), else 0."""
    return wanted if specs and all(spec.shape and spec.shape[0] == -1 for spec in specs) else 0


def check_inputs(specs: Sequence[TensorSpec], inputs: Mapping[str, np.ndarray], max_batch_size: int) -> None:
    """RequestError unless ``inputs`` match ``specs`` exactly (names, dtypes, shapes, batch)."""
    expected = {spec.name for spec in specs}
    for name in inputs:
        if name not in expected:
            raise RequestError(f"unknown input '{name}' (the model's inputs: {', '.join(sorted(expected))})")
    batch_sizes = set()
    for spec in specs:
        if spec.name not in inputs:
            raise RequestError(f"missing input '{spec.name}'")
        array = inputs[spec.name]
        if array.dtype != np.dtype(spec.dtype):
            raise RequestError(f"input '{spec.name}' is {array.dtype}; the model expects {spec.dtype}")
        _check_shape(spec, array.shape)
        if max_batch_size:
            batch_sizes.add(array.shape[0])
    if max_batch_size and batch_sizes:
        if len(batch_sizes) > 1:
            raise RequestError(f"inputs disagree on the batch size: {sorted(batch_sizes)}")
        batch = batch_sizes.pop()
        if not 1 <= batch <= max_batch_size:
            raise RequestError(f"batch size {batch} is outside 1..{max_batch_size}")


def _check_shape(spec: TensorSpec, shape: Tuple[int, ...]) -> None:
    if len(shape) != len(spec.shape) or any(want not in (-1, got) for want, got in zip(spec.shape, shape)):
        raise RequestError(f"input '{spec.name}' has shape {list(shape)}; the model expects {list(spec.shape)}")
