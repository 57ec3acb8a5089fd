"""Which backend serves a device config's models on this host, and why (one decision, said everywhere).

A device config prefers a backend (``backend: tensorrt`` on a Jetson). Where TensorRT or pycuda
cannot be imported, the config decides: ``tensorrt.allow_fallback: true`` serves with ONNX Runtime
(on the CPU) and says so; otherwise the model fails to load with a line saying how to fix it. The
same :class:`BackendChoice` feeds the server log, ``/v2/models/<m>`` metadata and
``edge-runtime info --config``. The reasons name the device config by its file name, never its
directory: they reach HTTP clients.

Probing imports ``tensorrt``, which is slow (seconds on a Xavier); the result is kept for the
process (:func:`library_problems`, ``cache_clear()`` in tests), and tests pass their own probes.
"""

from __future__ import annotations

import functools
import importlib
import os
from dataclasses import dataclass
from typing import Callable, Dict, Optional

from edge_runtime.config import DeviceConfig
from edge_runtime.errors import BackendUnavailableError

Probe = Callable[[], Optional[str]]  # why a backend's libraries cannot serve here (one line), None when they can


@dataclass(frozen=True)
class BackendChoice:
    """The backend that serves (``name``), the one the device config prefers, and why they differ."""

    name: str
    preferred: str
    reason: str = ""  # one line; "" when the preferred backend serves and nothing needs saying

    @property
    def is_fallback(self) -> bool:
        """True when another backend serves than the device config prefers."""
        return self.name != self.preferred


@functools.lru_cache(maxsize=None)
def tensorrt_problem() -> Optional[str]:
    """Why TensorRT cannot serve on this host (tensorrt or pycuda missing), None when it can; probed once."""
    from edge_runtime.backends.tensorrt import api

    return api.unavailable_reason()


@functools.lru_cache(maxsize=None)
def onnxruntime_problem() -> Optional[str]:
    """Why ONNX Runtime cannot serve on this host (the pip extra to install), None when it can; probed once."""
    try:
        importlib.import_module("onnxruntime")
    except ImportError:
        return str(BackendUnavailableError.missing_module("onnxruntime", "cpu"))
    return None


def tensorrt_library_problems() -> Dict[str, Optional[str]]:
    """tensorrt and pycuda → why each cannot be imported here (None: it can): what ``edge-runtime info`` says."""
    from edge_runtime.backends.tensorrt import api

    found: Dict[str, Optional[str]] = {}
    for name, importer in (("tensorrt", api.import_tensorrt), ("pycuda", api.import_cuda)):
        try:
            importer()
            found[name] = None
        except BackendUnavailableError as exc:
            found[name] = str(exc)
    return found


def choose_backend(device: DeviceConfig, tensorrt_probe: Optional[Probe] = None,
                   onnxruntime_probe: Optional[Probe] = None) -> BackendChoice:
    """The backend that serves ``device``'s models here; BackendUnavailableError (503) when none may."""
    check_tensorrt = tensorrt_probe or tensorrt_problem
    check_ort = onnxruntime_probe or onnxruntime_problem
    if device.backend != "tensorrt":
        _require(check_ort, device.backend)
        return BackendChoice(device.backend, device.backend)
    missing = check_tensorrt()
    if missing is None:
        return BackendChoice("tensorrt", "tensorrt")
    config = _config_name(device)
    if not device.tensorrt.allow_fallback:
        raise BackendUnavailableError(
            f"{config} prefers TensorRT, which cannot be used here ({missing}); install TensorRT and pycuda, "
            f"or set tensorrt.allow_fallback: true in {_file_name(device)} to serve with ONNX Runtime")
    ort_missing = check_ort()
    if ort_missing is not None:
        raise BackendUnavailableError(
            f"{config} prefers TensorRT, which cannot be used here ({missing}), and the fallback "
            f"ONNX Runtime cannot either ({ort_missing})")
    return BackendChoice("onnxruntime", "tensorrt",
                         f"{config} prefers TensorRT, which cannot be used here ({missing}); "
                         "tensorrt.allow_fallback: true, so ONNX Runtime (CPU) serves instead")


def _require(probe: Probe, backend: str) -> None:
    if backend == "onnxruntime":
        problem = probe()
        if problem is not None:
            raise BackendUnavailableError(problem)


def _file_name(device: DeviceConfig) -> str:
    return os.path.basename(device.source) if device.source else "the device config"


def _config_name(device: DeviceConfig) -> str:
    where = f" ({os.path.basename(device.source)})" if device.source else ""
    return f"device config '{device.name}'{where}"
