"""The ONNX Runtime backend on a real signed bundle: artifact choice, IOBinding hot path, validation."""

from __future__ import annotations

from pathlib import Path
from typing import Tuple

import numpy as np
import pytest
from runtime_support import affine, write_tiny_bundle

from edge_runtime.backends.base import BackendOptions
from edge_runtime.backends.onnxruntime import OnnxRuntimeBackend
from edge_runtime.bundle.signing import load_public_key
from edge_runtime.bundle.verify import open_bundle
from edge_runtime.config import load_device_config
from edge_runtime.errors import RequestError


@pytest.fixture()
def backend(tmp_path: Path, keypair: Tuple[Path, Path], device_configs_dir: Path):  # type: ignore[no-untyped-def]
    write_tiny_bundle(tmp_path / "b", keypair[0], "1")
    bundle = open_bundle(tmp_path / "b", [load_public_key(keypair[1])])
    loaded = OnnxRuntimeBackend()
    loaded.load(bundle, load_device_config(device_configs_dir / "x86-cpu.yaml"), BackendOptions(max_batch_size=4))
    yield loaded
    loaded.close()


def test_specs_batch_limit_and_artifact(backend: OnnxRuntimeBackend) -> None:
    assert [(s.name, s.dtype, s.shape) for s in backend.inputs] == [("input", "float32", (-1, 4))]
    assert [(s.name, s.shape) for s in backend.outputs] == [("output", (-1, 3))]
    assert backend.max_batch_size == 4
    assert backend.artifact == "model.onnx"


def test_iobinding_buffers_are_reused_and_results_are_not_aliased(backend: OnnxRuntimeBackend) -> None:
    x1 = np.random.default_rng(1).random((2, 4), dtype=np.float32)
    x2 = np.random.default_rng(2).random((2, 4), dtype=np.float32)
    first = backend.infer({"input": x1})["output"]
    bound = backend._bound[2]
    second = backend.infer({"input": x2})["output"]
    assert backend._bound[2] is bound  # the same preallocated arrays, no new binding
    np.testing.assert_allclose(first, affine(x1), rtol=1e-6)  # not overwritten by the second run
    np.testing.assert_allclose(second, affine(x2), rtol=1e-6)
    backend.infer({"input": x1[:1]})
    assert sorted(backend._bound) == [1, 2]  # one binding per batch size seen


def test_every_batch_size_binds_rows_of_one_max_batch_buffer(backend: OnnxRuntimeBackend) -> None:
    rng = np.random.default_rng(3)
    for batch in (4, 1, 3, 2, 4, 1):  # sizes interleaved, so a stale row or a wrong view shows
        x = rng.random((batch, 4), dtype=np.float32)
        np.testing.assert_allclose(backend.infer({"input": x})["output"], affine(x), rtol=1e-5, atol=1e-6)
    (buffer,) = backend._buffers["inputs"].values()
    assert buffer.shape == (4, 4)  # allocated once, at the largest batch
    for batch, bound in backend._bound.items():
        assert bound.inputs["input"].shape == (batch, 4)
        assert np.shares_memory(bound.inputs["input"], buffer)


@pytest.mark.parametrize(
    "inputs, message",
    [({"input": np.zeros((5, 4), np.float32)}, "outside 1..4"),
     ({"input": np.zeros((1, 4), np.float16)}, "is float16"),
     ({"input": np.zeros((1, 5), np.float32)}, "has shape")],
    ids=["batch", "dtype", "shape"],
)
def test_base_class_validates_before_the_session_runs(backend: OnnxRuntimeBackend, inputs: dict, message: str) -> None:
    with pytest.raises(RequestError, match=message):
        backend.infer(inputs)
