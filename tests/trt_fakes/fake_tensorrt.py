"""A recording test double of the ``tensorrt`` module, injected at the backend's seam (``backends/tensorrt/api``).

It keeps to the API TensorRT 8.5 and 10.x share (the names in docs/jetson.md), so a call the
real library lacks fails here too (AttributeError). Every call worth checking is appended to
``module.calls`` as ``(name, args)``, in order, so tests can assert the call sequence.

Pieces:
- this file: the enums, the logger, the call log, :class:`FakePlan` (what a fake serialized
  engine holds: the network's I/O, its optimization profile, the build flags and the ONNX bytes)
  and :func:`make_tensorrt`, which assembles one fresh module object;
- ``fake_trt_builder.py``: Builder, INetworkDefinition, OnnxParser, IBuilderConfig,
  IOptimizationProfile, ITimingCache, IInt8EntropyCalibrator2, IProgressMonitor (10.x only);
- ``fake_trt_runtime.py``: Runtime, ICudaEngine, IExecutionContext; execution runs the plan's
  ONNX with ONNX Runtime on the bytes found at the tensor addresses (``fake_pycuda`` memory), so
  a missing copy or a wrong address gives wrong numbers, as on a GPU.
"""

from __future__ import annotations

import enum
import json
import types
from dataclasses import asdict, dataclass, field
from typing import Any, Dict, List, Optional, Tuple

PLAN_MAGIC = b"FAKEPLAN1\n"


class DataType(enum.IntEnum):
    FLOAT = 0
    HALF = 1
    INT8 = 2
    INT32 = 3
    BOOL = 4
    UINT8 = 5
    INT64 = 8  # TensorRT 10.x only (8.5 has no INT64 I/O)


class TensorIOMode(enum.IntEnum):
    NONE = 0
    INPUT = 1
    OUTPUT = 2


class BuilderFlag(enum.IntEnum):
    FP16 = 0
    INT8 = 1
    DEBUG = 2
    GPU_FALLBACK = 3
    REFIT = 5
    STRICT_TYPES = 6  # gone in 10.x, deprecated in 8.5: the code must not use it


class MemoryPoolType(enum.IntEnum):
    WORKSPACE = 0
    DLA_MANAGED_SRAM = 1


class DeviceType(enum.IntEnum):
    GPU = 0
    DLA = 1


class NetworkDefinitionCreationFlag(enum.IntEnum):
    EXPLICIT_BATCH = 0


class _Severity(enum.IntEnum):
    INTERNAL_ERROR = 0
    ERROR = 1
    WARNING = 2
    INFO = 3
    VERBOSE = 4


class ILogger:
    Severity = _Severity
    INTERNAL_ERROR, ERROR, WARNING, INFO, VERBOSE = list(_Severity)

    def __init__(self) -> None:
        pass

    def log(self, severity: _Severity, msg: str) -> None:  # overridden by subclasses
        pass


class Logger(ILogger):
    def __init__(self, min_severity: _Severity = _Severity.WARNING) -> None:
        super().__init__()
        self.min_severity = min_severity


@dataclass
class FakeTensor:
    """One network I/O tensor as the fake engine describes it."""

    name: str
    mode: str  # "INPUT" | "OUTPUT"
    dtype: str  # DataType name
    shape: List[int]  # -1 for dynamic


@dataclass
class FakePlan:
    """What a fake serialized engine holds; ``to_bytes``/``from_bytes`` are its file format."""

    trt_version: str
    tensors: List[FakeTensor]
    onnx: bytes = b""
    # input name -> [min, opt, max] shapes of the one optimization profile
    profile: Dict[str, List[List[int]]] = field(default_factory=dict)
    flags: List[str] = field(default_factory=list)  # BuilderFlag names set at build
    dla_core: Optional[int] = None
    device_memory_size: int = 1 << 20
    calibration_cache: bool = False  # an INT8 calibrator's cache was read during the build

    def to_bytes(self) -> bytes:
        header = asdict(self)
        header.pop("onnx")
        text = json.dumps(header, sort_keys=True).encode()
        return PLAN_MAGIC + len(text).to_bytes(8, "little") + text + self.onnx

    @classmethod
    def from_bytes(cls, data: bytes) -> Optional[FakePlan]:
        """The plan, or None when ``data`` is not one (as deserialize_cuda_engine returns None)."""
        data = bytes(data)
        if not data.startswith(PLAN_MAGIC):
            return None
        start = len(PLAN_MAGIC) + 8
        length = int.from_bytes(data[len(PLAN_MAGIC):start], "little")
        try:
            header = json.loads(data[start:start + length])
        except ValueError:
            return None
        header["tensors"] = [FakeTensor(**t) for t in header["tensors"]]
        return cls(onnx=data[start + length:], **header)


def volume(shape: Tuple[int, ...]) -> int:
    result = 1
    for dim in shape:
        result *= dim
    return result


def make_tensorrt(version: str = "8.5.2.2", calls: Optional[List[Tuple[str, Tuple[Any, ...]]]] = None,
                  **overrides: Any) -> types.SimpleNamespace:
    """A fresh fake ``tensorrt`` module of ``version``; ``calls`` records (name, args) in order.

    ``overrides`` replace attributes (e.g. a Runtime whose deserialize fails) for one test.
    """
    from trt_fakes import fake_trt_builder, fake_trt_runtime

    module = types.SimpleNamespace(
        __version__=version,
        __file__=__file__,
        calls=[] if calls is None else calls,
        DataType=DataType,
        TensorIOMode=TensorIOMode,
        BuilderFlag=BuilderFlag,
        MemoryPoolType=MemoryPoolType,
        DeviceType=DeviceType,
        NetworkDefinitionCreationFlag=NetworkDefinitionCreationFlag,
        ILogger=ILogger,
        Logger=Logger,
        volume=volume,
    )
    major = int(version.split(".")[0])
    fake_trt_builder.install(module, major)
    fake_trt_runtime.install(module, major)
    for name, value in overrides.items():
        setattr(module, name, value)
    return module
