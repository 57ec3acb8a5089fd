"""On real hardware: build engines from the digits bundle, run them, agree with ONNX Runtime (top-1 ≥ 99 %).

Each precision is built on this device through the runtime's own path (loader → builder → engine
cache → runner), with pinned buffers and with zero-copy (mapped) buffers, and compared with ONNX
Runtime on the CPU running the bundle's model for that precision (FP32 ONNX for FP32/FP16, the
target's QDQ ONNX for INT8). Inputs: scikit-learn's digits where it is installed, else a fixed
random sample (the agreement, not the accuracy, is what is checked).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Tuple

import numpy as np
import pytest
from gpu_support import host_config_for_bundle, ort_outputs

from edge_runtime.backends.base import BackendOptions
from edge_runtime.bundle.signing import load_public_key
from edge_runtime.bundle.verify import VerifiedBundle, open_bundle

if not hasattr(pytest.importorskip("tensorrt", reason="needs TensorRT (JetPack's python3-libnvinfer)"), "Builder"):
    pytest.skip("needs TensorRT: 'tensorrt' here is only its type stubs", allow_module_level=True)
ort = pytest.importorskip("onnxruntime")

AGREEMENT = 0.99


def _images(count: int = 512) -> np.ndarray:
    try:
        from sklearn.datasets import load_digits
    except ImportError:
        return np.random.default_rng(0).random((count, 1, 8, 8), dtype=np.float32)
    data = load_digits().images[:count].astype(np.float32) / 16.0
    return data[:, None, :, :]


@pytest.fixture(scope="module")
def bundle(digits_bundle: Tuple[Path, Path]) -> VerifiedBundle:
    directory, key = digits_bundle
    return open_bundle(directory, [load_public_key(key)])


@pytest.mark.parametrize("zero_copy", [False, True], ids=["pinned", "zero-copy"])
@pytest.mark.parametrize("precision", ["fp32", "fp16", "int8"])
def test_engine_agrees_with_onnxruntime(bundle: VerifiedBundle, tmp_path: Path, precision: str,
                                        zero_copy: bool) -> None:
    from edge_runtime.backends.tensorrt.runner import TensorRTBackend

    device = host_config_for_bundle(bundle, tmp_path, precision, zero_copy)
    images = _images()
    expected = ort_outputs(bundle, device, images)
    backend = TensorRTBackend()
    options = BackendOptions(max_batch_size=32, engine_cache_dir=tmp_path / "engines", progress=print)
    try:
        backend.load(bundle, device, options)
        assert backend.memory_mb is not None and backend.memory_mb > 0
        name, output = backend.inputs[0].name, backend.outputs[0].name
        got = np.concatenate([backend.infer({name: images[i:i + 32]})[output] for i in range(0, len(images), 32)])
        single = backend.infer({name: images[:1]})[output]  # batch 1 after batch 32: shapes are set again
    finally:
        backend.close()
    agreement = float(np.mean(got.argmax(axis=1) == expected.argmax(axis=1)))
    print(f"{precision} {'zero-copy' if zero_copy else 'pinned'}: top-1 agreement {agreement:.4f}, "
          f"max abs diff {np.abs(got - expected).max():.3g}")
    assert agreement >= AGREEMENT
    np.testing.assert_allclose(single, got[:1], rtol=1e-2, atol=1e-2)


def test_engine_cache_is_reused_by_a_second_load(bundle: VerifiedBundle, tmp_path: Path) -> None:
    from edge_runtime.backends.tensorrt.runner import TensorRTBackend

    device = host_config_for_bundle(bundle, tmp_path, "fp16", zero_copy=False)
    options = BackendOptions(max_batch_size=8, engine_cache_dir=tmp_path / "engines")
    first = TensorRTBackend()
    first.load(bundle, device, options)
    first.close()
    plans = sorted((tmp_path / "engines").glob("*.plan"))
    assert len(plans) == 1
    mtime = plans[0].stat().st_mtime_ns
    second = TensorRTBackend()
    second.load(bundle, dataclasses.replace(device), options)
    try:
        assert "engine cache" in second.artifact
    finally:
        second.close()
    assert plans[0].stat().st_mtime_ns == mtime  # not rebuilt
