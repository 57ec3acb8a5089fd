"""The GPU conformance suite: runs only where TensorRT, pycuda and a CUDA device are present."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

GPU_DIR = Path(__file__).resolve().parent


def pytest_collection_modifyitems(items: list) -> None:
    missing = [m for m in ("tensorrt", "pycuda") if importlib.util.find_spec(m) is None]
    for item in items:
        if GPU_DIR not in Path(str(item.fspath)).resolve().parents:
            continue
        item.add_marker(pytest.mark.gpu)
        if missing:
            item.add_marker(pytest.mark.skip(reason=f"needs {' and '.join(missing)} (no GPU stack here)"))
