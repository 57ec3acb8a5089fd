"""The Backend interface's own checks: state, batch limit and input validation (edge_runtime/backends/base.py)."""

from __future__ import annotations

from typing import Dict, List, Mapping, Optional, Sequence, cast

import numpy as np
import pytest

from edge_runtime.backends.base import Backend, BackendOptions, batch_limit, check_inputs
from edge_runtime.bundle.manifest import TensorSpec
from edge_runtime.bundle.verify import VerifiedBundle
from edge_runtime.config import DeviceConfig
from edge_runtime.errors import ModelNotReadyError, RequestError

_DEVICE = cast(DeviceConfig, None)  # the echo backend below reads no device


class _Echo(Backend):
    """Returns its input as output; counts how often it was closed."""

    name = "echo"

    def __init__(self) -> None:
        super().__init__()
        self.closed = 0

    def _load(self, bundle: Optional[VerifiedBundle], device: DeviceConfig, options: BackendOptions) -> None:
        self._inputs = (TensorSpec("x", "float32", (-1, 2)),)
        self._outputs = (TensorSpec("y", "float32", (-1, 2)),)
        self._max_batch_size = batch_limit(self._inputs, options.max_batch_size)

    def _infer(self, inputs: Mapping[str, np.ndarray]) -> Dict[str, np.ndarray]:
        return {"y": inputs["x"]}

    def _close(self) -> None:
        self.closed += 1


def test_a_new_backend_describes_nothing_until_loaded() -> None:
    backend = _Echo()
    assert (backend.inputs, backend.outputs, backend.max_batch_size) == ((), (), 0)
    assert backend.loaded is False
    assert backend.artifact == ""
    assert backend.memory_mb is None


def test_infer_before_load_is_model_not_ready() -> None:
    with pytest.raises(ModelNotReadyError) as info:
        _Echo().infer({"x": np.zeros((1, 2), np.float32)})
    assert str(info.value) == "the backend is not loaded"


def test_a_second_load_is_refused_naming_the_backend_class() -> None:
    backend = _Echo()
    backend.load(None, _DEVICE, BackendOptions())
    with pytest.raises(RuntimeError) as info:
        backend.load(None, _DEVICE, BackendOptions())
    assert str(info.value) == "_Echo is already loaded"


def test_close_unloads_once_and_a_second_close_does_nothing() -> None:
    backend = _Echo()
    backend.load(None, _DEVICE, BackendOptions(max_batch_size=4))
    assert backend.loaded is True and backend.max_batch_size == 4
    assert backend.infer({"x": np.ones((3, 2), np.float32)})["y"].shape == (3, 2)
    backend.close()
    backend.close()
    assert backend.loaded is False
    assert backend.closed == 1
    with pytest.raises(ModelNotReadyError):
        backend.infer({"x": np.ones((1, 2), np.float32)})


def _spec(name: str, shape: Sequence[int], dtype: str = "float32") -> TensorSpec:
    return TensorSpec(name, dtype, tuple(shape))


@pytest.mark.parametrize(
    "shapes, expected",
    [
        ([[-1, 3], [-1]], 8),  # every input has a batch axis
        ([[-1, 3], [4]], 0),  # one input has a fixed first axis
        ([[2, 3]], 0),
        ([[]], 0),  # a scalar input has no batch axis
        ([], 0),  # a model without inputs has nothing to batch
    ],
)
def test_batch_limit_is_the_wanted_size_only_when_every_input_has_a_batch_axis(
    shapes: List[List[int]], expected: int
) -> None:
    specs = [_spec(f"in{index}", shape) for index, shape in enumerate(shapes)]
    assert batch_limit(specs, 8) == expected


_SPECS = [_spec("b", [-1, 2]), _spec("a", [-1])]


def _arrays(**shapes: Sequence[int]) -> Dict[str, np.ndarray]:
    return {name: np.zeros(tuple(shape), np.float32) for name, shape in shapes.items()}


@pytest.mark.parametrize(
    "inputs, max_batch_size, message",
    [
        (_arrays(b=[1, 2], a=[1], c=[1]), 8, "unknown input 'c' (the model's inputs: a, b)"),
        (_arrays(b=[1, 2]), 8, "missing input 'a'"),
        (
            {"b": np.zeros((1, 2), np.float64), "a": np.zeros(1, np.float32)},
            8,
            "input 'b' is float64; the model expects float32",
        ),
        (_arrays(b=[1, 3], a=[1]), 8, "input 'b' has shape [1, 3]; the model expects [-1, 2]"),
        (_arrays(b=[1, 2, 1], a=[1]), 8, "input 'b' has shape [1, 2, 1]; the model expects [-1, 2]"),
        (_arrays(b=[1, 2], a=[2]), 8, "inputs disagree on the batch size: [1, 2]"),
        (_arrays(b=[9, 2], a=[9]), 8, "batch size 9 is outside 1..8"),
        (_arrays(b=[0, 2], a=[0]), 8, "batch size 0 is outside 1..8"),
    ],
)
def test_inputs_that_do_not_fit_the_model_are_refused_with_one_clear_line(
    inputs: Dict[str, np.ndarray], max_batch_size: int, message: str
) -> None:
    with pytest.raises(RequestError) as info:
        check_inputs(_SPECS, inputs, max_batch_size)
    assert str(info.value) == message


@pytest.mark.parametrize(
    "specs, inputs, max_batch_size",
    [
        (_SPECS, _arrays(b=[8, 2], a=[8]), 8),
        (_SPECS, _arrays(b=[1, 2], a=[1]), 8),
        (_SPECS, _arrays(b=[20, 2], a=[3]), 0),  # no batch axis: sizes are not compared or capped
        ([], {}, 8),  # a model without inputs takes an empty request
    ],
)
def test_inputs_that_fit_are_accepted(
    specs: List[TensorSpec], inputs: Dict[str, np.ndarray], max_batch_size: int
) -> None:
    check_inputs(specs, inputs, max_batch_size)
