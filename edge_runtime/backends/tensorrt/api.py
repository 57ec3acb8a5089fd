"""The seam to TensorRT and pycuda: the only module that imports them, and the one place versions differ.

The backend, the builder and the loader take the ``tensorrt`` module and ``pycuda.driver`` as
arguments (the real ones from :func:`import_tensorrt` and :func:`import_cuda` by default), so unit
tests inject recording fakes here and nowhere else. Everything else in this package keeps to the
API that TensorRT 8.5 (JetPack 5, Xavier) and 10.x (JetPack 6) share, the list in docs/jetson.md;
what differs between them is decided by :class:`TrtFeatures`:

- ``create_network``: 8.5 needs the EXPLICIT_BATCH flag; 10.x is explicit-batch only (flag deprecated).
- ``IProgressMonitor`` exists only in 10.x; on 8.5 a build reports "building…" with elapsed time.
- ``DataType.INT64`` (and BF16/FP8, which we do not serve) exist only in 10.x.
- INT8 calibrators exist in both (deprecated since 10.1); only DLA INT8 on 8.x uses one.
"""

from __future__ import annotations

import importlib
import re
from dataclasses import dataclass
from typing import Any, Callable, List, Optional, Tuple

from edge_runtime.errors import BackendUnavailableError

TrtModule = Any  # the ``tensorrt`` module (or a test double); objects it returns are annotated with its stubs
MIN_VERSION = (8, 5, 0)
_TRT_HINT = ("the Python module 'tensorrt' is not installed: it comes with JetPack (apt install "
             "python3-libnvinfer); on other hosts install NVIDIA's TensorRT wheel")

# TensorRT DataType names → numpy dtype names; types missing here are refused at load with a clear error.
NUMPY_DTYPES = {
    "FLOAT": "float32", "HALF": "float16", "INT8": "int8", "INT32": "int32", "INT64": "int64",
    "BOOL": "bool", "UINT8": "uint8",
}


def import_tensorrt() -> TrtModule:
    """The real ``tensorrt`` module, or BackendUnavailableError saying where it comes from."""
    try:
        module = importlib.import_module("tensorrt")
    except ImportError as exc:
        raise BackendUnavailableError(_TRT_HINT) from exc
    if getattr(module, "__file__", None) is None or not hasattr(module, "Builder"):
        # tensorrt-stubs leaves a bare namespace package named tensorrt behind
        raise BackendUnavailableError(_TRT_HINT)
    return module


def import_cuda() -> Any:
    """``pycuda.driver`` (typed by :mod:`.cuda_api`'s protocols where it is used)."""
    try:
        return importlib.import_module("pycuda.driver")
    except ImportError as exc:
        raise BackendUnavailableError.missing_module("pycuda", "tensorrt") from exc


def unavailable_reason() -> Optional[str]:
    """Why TensorRT cannot serve on this host (one line), or None when tensorrt and pycuda both import."""
    for importer in (import_tensorrt, import_cuda):
        try:
            importer()
        except BackendUnavailableError as exc:
            return str(exc)
    return None


@dataclass(frozen=True)
class TrtFeatures:
    """What the running TensorRT offers, from its version: every version test lives here."""

    version: Tuple[int, int, int]

    @property
    def needs_explicit_batch_flag(self) -> bool:
        return self.version < (10, 0, 0)

    @property
    def has_progress_monitor(self) -> bool:
        return self.version >= (10, 0, 0)

    @property
    def has_int64(self) -> bool:
        return self.version >= (10, 0, 0)

    @property
    def label(self) -> str:
        return ".".join(str(part) for part in self.version)


def features(trt: TrtModule) -> TrtFeatures:
    """The features of ``trt``; BackendUnavailableError for a release older than 8.5 (no name-based I/O API)."""
    text = str(getattr(trt, "__version__", ""))
    found = re.match(r"(\d+)\.(\d+)(?:\.(\d+))?", text)
    if not found:
        raise BackendUnavailableError(f"cannot read the TensorRT version ({text!r})")
    version = (int(found.group(1)), int(found.group(2)), int(found.group(3) or 0))
    if version < MIN_VERSION:
        raise BackendUnavailableError(
            f"TensorRT {text} is too old: the runtime needs 8.5 or newer (JetPack 5.1+)")
    return TrtFeatures(version)


def network_flags(trt: TrtModule, feats: TrtFeatures) -> int:
    """The ``create_network`` flags: EXPLICIT_BATCH on 8.x, none on 10.x."""
    if feats.needs_explicit_batch_flag:
        return 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)
    return 0


def numpy_dtype(trt_dtype: Any, tensor: str) -> str:
    """The numpy dtype name of a TensorRT DataType; BackendUnavailableError for types we cannot serve."""
    name = getattr(trt_dtype, "name", str(trt_dtype).rsplit(".", 1)[-1])
    dtype = NUMPY_DTYPES.get(name)
    if dtype is None:
        raise BackendUnavailableError(f"tensor '{tensor}' has TensorRT type {name}, which this runtime does not serve")
    return dtype


def make_logger(trt: TrtModule, errors: List[str], info: Optional[Callable[[str], None]] = None) -> Any:
    """A TensorRT logger that keeps error messages in ``errors`` (for one-line exceptions), warnings to ``info``."""

    class _Logger(trt.ILogger):
        def __init__(self) -> None:
            trt.ILogger.__init__(self)

        def log(self, severity: Any, msg: str) -> None:
            if severity in (trt.ILogger.Severity.INTERNAL_ERROR, trt.ILogger.Severity.ERROR):
                errors.append(msg)
            elif severity == trt.ILogger.Severity.WARNING and info is not None:
                info(msg)

    return _Logger()
