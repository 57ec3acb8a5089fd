"""The GPU conformance suite (`pytest -m gpu`): runs only where pycuda sees a CUDA device (and TensorRT, for most).

Everything under tests/gpu/ carries the ``gpu`` marker. Without pycuda or a usable CUDA device
every test here is skipped with the reason; modules that also need TensorRT skip on their own
(``pytest.importorskip("tensorrt")``), so the pycuda buffer tests still run on a GPU machine that
has pycuda but no TensorRT (as the lent GPU machines of this project: TensorRT's libraries cannot
be installed there).

The digits bundle: ``EDGE_GPU_BUNDLE`` (a bundle directory exported on a workstation, e.g. with
``edge-export --model digits-cnn --config <device>.yaml --skip-engine``) and ``EDGE_GPU_KEY`` (its
public key) on a Jetson whose Python cannot run the export (JetPack 5: Python 3.8); where torch
is importable the fixture exports one itself.
"""

from __future__ import annotations

import functools
import importlib.util
import os
from pathlib import Path
from typing import Optional, Tuple

import pytest

GPU_DIR = Path(__file__).resolve().parent


@functools.lru_cache(maxsize=None)
def cuda_unavailable() -> Optional[str]:
    """Why CUDA cannot be used here (one line), or None."""
    if importlib.util.find_spec("pycuda") is None:
        return "needs pycuda and a CUDA device (no GPU stack here)"
    import pycuda.driver as cuda

    try:
        cuda.init()
        if cuda.Device.count() < 1:
            return "pycuda sees no CUDA device"
    except cuda.Error as exc:
        return f"CUDA is not usable here: {exc}"
    return None


def pytest_collection_modifyitems(items: list) -> None:
    for item in items:
        if GPU_DIR not in Path(str(item.fspath)).resolve().parents:
            continue
        item.add_marker(pytest.mark.gpu)
        reason = cuda_unavailable()
        if reason:
            item.add_marker(pytest.mark.skip(reason=reason))


@pytest.fixture(scope="session")
def digits_bundle(tmp_path_factory: pytest.TempPathFactory) -> Tuple[Path, Path]:
    """(bundle directory, public key) of a digits-cnn bundle: from EDGE_GPU_BUNDLE, else exported here."""
    given = os.environ.get("EDGE_GPU_BUNDLE")
    if given:
        key = os.environ.get("EDGE_GPU_KEY")
        if not key:
            pytest.fail("EDGE_GPU_BUNDLE is set: set EDGE_GPU_KEY to its public key file too")
        return Path(given), Path(key)
    if importlib.util.find_spec("torch") is None:
        pytest.skip("no digits bundle: set EDGE_GPU_BUNDLE/EDGE_GPU_KEY (export one on a workstation)")
    from edge_runtime.bundle.signing import generate_keypair
    from edge_runtime.config import device_config_from_mapping
    from edge_runtime.host_info import host_fingerprint
    from export.pipeline import ExportRequest, run_export

    root = tmp_path_factory.mktemp("gpu-bundle")
    private, public = generate_keypair(root / "keys")
    host = host_fingerprint()
    config = device_config_from_mapping({
        "name": "gpu-host", "device_class": host.device_model or "gpu-host", "backend": "tensorrt",
        "precisions": ["int8"], "default_precision": "int8", "batch": {"min": 1, "opt": 8, "max": 32},
        "quantization": {"scheme": "s8s8-qdq"}, "memory_budget_mb": 8192, "workspace_mb": 1024,
        "compute_capability": host.compute_capability, "tensorrt_version": host.tensorrt_version,
    }, str(root / "gpu-host.yaml"))
    run_export(ExportRequest(model="digits-cnn", configs=[config], key_path=private, out=root / "digits",
                             latency_runs=5, progress=False, skip_engine=True))
    return root / "digits", public
