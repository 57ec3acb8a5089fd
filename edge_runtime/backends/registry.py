"""Backend registry: name → class, imported lazily so a missing optional library costs nothing.

Adding a backend is one module plus one line here.
"""

from __future__ import annotations

import importlib
from typing import Any, Dict, List

from edge_runtime.backends.base import Backend
from edge_runtime.errors import ConfigError

_BACKENDS: Dict[str, str] = {
    "onnxruntime": "edge_runtime.backends.onnxruntime:OnnxRuntimeBackend",
    "fake": "edge_runtime.backends.fake:FakeBackend",
    "tensorrt": "edge_runtime.backends.tensorrt.runner:TensorRTBackend",
}


def available_backends() -> List[str]:
    """Registered backend names (whether their libraries are installed or not)."""
    return sorted(_BACKENDS)


def create_backend(name: str, **kwargs: Any) -> Backend:
    """A new, unloaded backend instance; unknown names are a ConfigError listing the known ones."""
    target = _BACKENDS.get(name)
    if target is None:
        raise ConfigError(f"unknown backend '{name}' (known: {', '.join(available_backends())})")
    module_name, _, class_name = target.partition(":")
    backend_class = getattr(importlib.import_module(module_name), class_name)
    backend: Backend = backend_class(**kwargs)
    return backend
