"""The Backend contract (DESIGN rule 2), run against every backend that can run here (see conftest.CASES).

Public methods check state and arguments, then call the subclass's ``_infer``: a request that does
not fit the declared specs is a RequestError before the backend runs anything.
"""

from __future__ import annotations

import importlib
from typing import Any, Dict, List, Mapping

import numpy as np
import pytest
from backend_cases import INPUTS, MAX_BATCH, OUTPUTS, BackendCase, reference

from edge_runtime.backends.base import Backend
from edge_runtime.backends.registry import _BACKENDS, available_backends
from edge_runtime.bundle.manifest import TensorSpec
from edge_runtime.errors import ModelNotReadyError, RequestError


def _x(batch: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).random((batch, 4), dtype=np.float32)


def _spy_on_infer(monkeypatch: pytest.MonkeyPatch, backend: Backend) -> List[Mapping[str, np.ndarray]]:
    """Record every call that reaches the subclass's ``_infer`` (the real one still runs)."""
    calls: List[Mapping[str, np.ndarray]] = []
    real = backend._infer

    def spy(inputs: Mapping[str, np.ndarray]) -> Dict[str, np.ndarray]:
        calls.append(inputs)
        return real(inputs)

    monkeypatch.setattr(backend, "_infer", spy)
    return calls


def _assert_fits(spec: TensorSpec, array: np.ndarray, batch: int) -> None:
    assert array.dtype == np.dtype(spec.dtype), spec.name
    assert array.ndim == len(spec.shape), spec.name
    assert array.shape[0] == batch, spec.name
    for want, got in zip(spec.shape, array.shape):
        assert want in (-1, got), (spec.name, array.shape, spec.shape)


def test_load_sets_specs_batch_limit_and_artifact(case: BackendCase) -> None:
    assert not case.backend.loaded
    backend = case.load()
    assert backend.loaded
    assert backend.inputs == INPUTS
    assert backend.outputs == OUTPUTS
    assert backend.max_batch_size == MAX_BATCH
    assert backend.artifact == case.artifact


@pytest.mark.parametrize("batch", range(1, MAX_BATCH + 1))
def test_outputs_match_the_declared_specs(loaded: Backend, batch: int) -> None:
    x = _x(batch, seed=batch)
    outputs = loaded.infer({"x": x})
    assert sorted(outputs) == sorted(spec.name for spec in loaded.outputs)
    for spec in loaded.outputs:
        _assert_fits(spec, outputs[spec.name], batch)
    np.testing.assert_allclose(outputs["y"], reference(x), rtol=1e-6)


def test_results_are_not_overwritten_by_the_next_request(loaded: Backend) -> None:
    first_x, second_x = _x(2, seed=1), _x(2, seed=2)
    first = loaded.infer({"x": first_x})["y"]
    loaded.infer({"x": second_x})
    np.testing.assert_allclose(first, reference(first_x), rtol=1e-6)


BAD_REQUESTS: Dict[str, Any] = {
    "unknown-name": ({"x": _x(1), "z": _x(1)}, "unknown input 'z'"),
    "missing-name": ({}, "missing input 'x'"),
    "wrong-dtype": ({"x": _x(1).astype(np.float64)}, "is float64; the model expects float32"),
    "int-dtype": ({"x": np.ones((1, 4), np.int32)}, "is int32"),
    "wrong-rank": ({"x": np.ones((4,), np.float32)}, "has shape"),
    "wrong-dim": ({"x": np.ones((1, 5), np.float32)}, "has shape"),
    "batch-over-limit": ({"x": _x(MAX_BATCH + 1)}, f"outside 1..{MAX_BATCH}"),
    "empty-batch": ({"x": np.ones((0, 4), np.float32)}, f"outside 1..{MAX_BATCH}"),
}


@pytest.mark.parametrize("inputs, message", list(BAD_REQUESTS.values()), ids=list(BAD_REQUESTS))
def test_infer_validates_before_the_backend_runs(
    loaded: Backend, monkeypatch: pytest.MonkeyPatch, inputs: Dict[str, np.ndarray], message: str
) -> None:
    calls = _spy_on_infer(monkeypatch, loaded)
    with pytest.raises(RequestError, match=message):
        loaded.infer(inputs)
    assert calls == []
    loaded.infer({"x": _x(1)})  # still serving, and a valid request does reach _infer
    assert len(calls) == 1


def test_infer_before_load_and_after_close_is_not_ready(case: BackendCase) -> None:
    with pytest.raises(ModelNotReadyError):
        case.backend.infer({"x": _x(1)})
    backend = case.load()
    backend.close()
    assert not backend.loaded
    with pytest.raises(ModelNotReadyError):
        backend.infer({"x": _x(1)})


def test_close_is_safe_twice_and_before_load(case: BackendCase) -> None:
    case.backend.close()  # never loaded
    backend = case.load()
    backend.close()
    backend.close()
    assert not backend.loaded


def test_load_twice_raises_and_keeps_serving(loaded: Backend, case: BackendCase) -> None:
    with pytest.raises(RuntimeError, match="already loaded"):
        case.load()
    np.testing.assert_allclose(loaded.infer({"x": _x(1)})["y"], reference(_x(1)), rtol=1e-6)


@pytest.mark.parametrize("name", available_backends())
def test_registry_names_the_backend_class_by_its_own_name(name: str) -> None:
    module_name, _, class_name = _BACKENDS[name].partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:  # the module itself must import without its extra (lazy heavy imports)
        pytest.fail(f"{module_name} does not import: {exc}")
    backend_class = getattr(module, class_name)
    assert issubclass(backend_class, Backend) and backend_class.name == name
