"""A public fake backend: deterministic arithmetic with the I/O of your choice, no model file.

For tests and for running the server with no model (``edge-runtime serve --fake NAME``), as
httpx ships a mock transport. Output *i* is ``input_i * scale + offset`` in the input's dtype
(inputs and outputs pair up by position). ``delay_s`` simulates compute time; ``fail`` makes
every call raise InferenceError, for testing error paths. ``calls`` counts ``_infer`` calls
(batches), which lets tests see dynamic batching happen.
"""

from __future__ import annotations

import time
from typing import Dict, Mapping, Optional, Sequence

import numpy as np

from edge_runtime.backends.base import Backend, BackendOptions, batch_limit
from edge_runtime.bundle.manifest import TensorSpec
from edge_runtime.bundle.verify import VerifiedBundle
from edge_runtime.config import DeviceConfig
from edge_runtime.errors import InferenceError

DEFAULT_INPUTS = (TensorSpec(name="INPUT0", dtype="float32", shape=(-1, 16)),)
DEFAULT_OUTPUTS = (TensorSpec(name="OUTPUT0", dtype="float32", shape=(-1, 16)),)


class FakeBackend(Backend):
    """Output i = input i * scale + offset."""

    name = "fake"

    def __init__(
        self,
        inputs: Sequence[TensorSpec] = DEFAULT_INPUTS,
        outputs: Sequence[TensorSpec] = DEFAULT_OUTPUTS,
        *,
        scale: float = 2.0,
        offset: float = 1.0,
        delay_s: float = 0.0,
        fail: bool = False,
    ) -> None:
        super().__init__()
        if len(inputs) != len(outputs):
            raise ValueError("the fake backend pairs inputs and outputs: give as many of each")
        self._spec_in, self._spec_out = tuple(inputs), tuple(outputs)
        self.scale, self.offset, self.delay_s, self.fail = scale, offset, delay_s, fail
        self.calls = 0
        self.batch_sizes: list = []

    def _load(self, bundle: Optional[VerifiedBundle], device: DeviceConfig, options: BackendOptions) -> None:
        self._inputs, self._outputs = self._spec_in, self._spec_out
        self._max_batch_size = batch_limit(self._inputs, options.max_batch_size)
        self.artifact = "(fake)"

    def _infer(self, inputs: Mapping[str, np.ndarray]) -> Dict[str, np.ndarray]:
        self.calls += 1
        first = next(iter(inputs.values()))
        self.batch_sizes.append(int(first.shape[0]) if first.ndim else 1)
        if self.delay_s:
            time.sleep(self.delay_s)
        if self.fail:
            raise InferenceError("the fake backend was told to fail")
        return {
            out.name: (inputs[inp.name] * self.scale + self.offset).astype(out.dtype)
            for inp, out in zip(self._inputs, self._outputs)
        }

    def _close(self) -> None:
        pass
