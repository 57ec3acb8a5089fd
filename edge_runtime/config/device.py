"""Device configs: YAML files under ``device_configs/`` → validated, frozen dataclasses.

A device config says what a target can run (backend, precisions, and its host fingerprint:
TensorRT/JetPack versions, compute capability, DLA cores, see :attr:`DeviceConfig.fingerprint`),
which batch profile engines are built for, how INT8 models are quantized for it, and how much
memory the runtime may use there. Validation rules: see
:mod:`edge_runtime.config.schema`.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Mapping, Optional, Tuple, Union

from edge_runtime.config.schema import (
    NOT_A_KEY,
    build_dataclass,
    check_at_least,
    check_one_of,
    read_yaml_mapping,
    require_mapping,
)
from edge_runtime.errors import ConfigError

if TYPE_CHECKING:
    from edge_runtime.bundle.fingerprint import HostFingerprint

PRECISIONS = ("fp32", "fp16", "int8")
BACKENDS = ("onnxruntime", "tensorrt")
QUANT_SCHEMES = ("u8s8-qdq", "s8s8-qdq")
CALIBRATION_METHODS = ("minmax", "entropy", "percentile")


@dataclass(frozen=True)
class BatchProfile:
    """Batch sizes an engine is built for: TensorRT optimization profile min/opt/max."""

    min: int
    opt: int
    max: int


@dataclass(frozen=True)
class QuantizationSettings:
    """How the export pipeline quantizes a model to INT8 for this device."""

    # "u8s8-qdq": ONNX Runtime CPU (uint8 activations, int8 per-channel weights);
    # "s8s8-qdq": TensorRT explicit quantization (symmetric int8, zero point 0).
    scheme: str
    per_channel: bool = True
    calibration_method: str = "minmax"  # minmax | entropy | percentile
    calibration_samples: int = 256


@dataclass(frozen=True)
class DimRange:
    """min/opt/max of a TensorRT optimization profile for one kind of dimension."""

    min: int
    opt: int
    max: int


@dataclass(frozen=True)
class DlaSettings:
    """Engines for a Deep Learning Accelerator core (Xavier, Orin AGX/NX): static shapes, FP16/INT8 only.

    DLA has no dynamic dimensions, so one engine is built per listed batch size (profile
    min = opt = max); layers DLA cannot run fall back to the GPU. INT8 on DLA in TensorRT 8.x is
    implicit quantization from the bundle's calibration cache (``calib/<target>.cache``), not QDQ.
    """

    core: int = 0
    batch_sizes: Tuple[int, ...] = (1,)


@dataclass(frozen=True)
class TensorRTSettings:
    """How the runtime builds, caches and runs TensorRT engines on this device."""

    # Jetson memory is shared CPU/GPU DRAM: mapped page-locked host memory (DEVICEMAP) used by
    # the engine directly saves the host<->device copies. False: pinned host + device buffers.
    zero_copy: bool = False
    # An engine built for another TensorRT/GPU/L4T: refuse (False) or rebuild it on the device
    # from the bundle's ONNX into the engine cache, keeping the old engine until the new one loads.
    rebuild_on_mismatch: bool = False
    # No engine in the bundle for this device (or none that fits): build one at first load.
    build_on_device: bool = True
    # backend: tensorrt and TensorRT (or pycuda) missing: serve with ONNX Runtime (said in the
    # log, `edge-runtime info` and model metadata) instead of failing the model.
    allow_fallback: bool = False
    # Optimization profile for every dynamic dimension that is not the batch axis (e.g. sequence length).
    dynamic_dim: DimRange = field(default_factory=lambda: DimRange(1, 128, 512))
    dla: Optional[DlaSettings] = None  # None: the GPU only
    timing_cache: bool = True  # keep TensorRT's timing cache in the engine cache: later builds are faster
    device_index: int = 0  # the CUDA device (Jetsons have one)


@dataclass(frozen=True)
class HealthGateSettings:
    """What a new model version must show, loaded beside the active one, before it may replace it (fleet sync)."""

    probe_requests: int = 20  # inferences sent to the staged version after its warm-up
    # p99 latency budget of those probes, end to end over loopback HTTP. Generous by default: a
    # gate that fails on a slow moment rolls back a good version; tighten it per device.
    max_p99_ms: float = 1000.0
    max_failures: int = 0  # probes that may fail (an error status or a non-finite output)
    # Fraction of the bundle's probe set whose outputs must match the expected ones; None: no check.
    accuracy_min: Optional[float] = None
    # How long the stage request may take: the runtime loads the version and, on TensorRT with no
    # engine for this device in the bundle, builds one first (tens of minutes for a large model or
    # INT8 on a Xavier). Past it the gate gives up for this pass and the next pass tries again.
    stage_timeout_s: float = 3600.0


@dataclass(frozen=True)
class DeviceConfig:
    """Everything the export pipeline and the runtime need to know about one target device."""

    name: str
    device_class: str
    backend: str
    precisions: Tuple[str, ...]
    default_precision: str
    batch: BatchProfile
    quantization: QuantizationSettings
    memory_budget_mb: int
    workspace_mb: int
    compute_capability: Optional[str] = None
    jetpack: Optional[str] = None
    l4t: Optional[str] = None
    cuda_version: Optional[str] = None
    tensorrt_version: Optional[str] = None
    dla_cores: int = 0
    tensorrt: TensorRTSettings = field(default_factory=TensorRTSettings)
    health_gate: HealthGateSettings = field(default_factory=HealthGateSettings)
    source: str = field(default="", metadata=NOT_A_KEY)

    @property
    def uses_tensorrt(self) -> bool:
        """True when engines for this device are built and run with TensorRT."""
        return self.backend == "tensorrt"

    @property
    def fingerprint(self) -> HostFingerprint:
        """The host this config describes, comparable with an engine's and the running host's."""
        # Imported here: edge_runtime.bundle imports edge_runtime.config, which is loading this module.
        from edge_runtime.bundle.fingerprint import HostFingerprint

        return HostFingerprint(
            tensorrt_version=self.tensorrt_version,
            compute_capability=self.compute_capability,
            l4t=self.l4t,
            jetpack=self.jetpack,
            device_model=self.device_class,
            dla_cores=self.dla_cores,
        )


def load_device_config(path: Union[str, os.PathLike]) -> DeviceConfig:
    """Read and validate one device config YAML file; every problem is a one-line ConfigError."""
    data, source = read_yaml_mapping(path)
    return device_config_from_mapping(data, source)


def device_config_from_mapping(data: Mapping[str, Any], source: str) -> DeviceConfig:
    """Validate an already parsed mapping; ``source`` names it in messages and in the result."""
    config = build_dataclass(DeviceConfig, require_mapping(data, source), source)
    config = dataclasses.replace(config, source=source)
    _check_device_config(config)
    return config


def _check_device_config(cfg: DeviceConfig) -> None:
    src = cfg.source
    check_one_of(src, "backend", cfg.backend, BACKENDS)
    _check_batch(src, cfg.batch)
    _check_precisions(src, cfg.precisions, cfg.default_precision)
    _check_quantization(src, cfg.quantization)
    if cfg.uses_tensorrt:
        for key in ("tensorrt_version", "compute_capability"):
            if getattr(cfg, key) is None:
                raise ConfigError(f"{src}: missing required key '{key}' (backend is tensorrt)")
        # TensorRT only takes symmetric int8 Q/DQ (zero point 0); u8 activations fail its parser.
        if cfg.quantization.scheme != "s8s8-qdq":
            raise ConfigError(
                f"{src}: quantization.scheme: expected 's8s8-qdq' for backend tensorrt, "
                f"got {cfg.quantization.scheme!r}"
            )
    check_at_least(src, "dla_cores", cfg.dla_cores, 0)
    _check_tensorrt(src, cfg)
    _check_health_gate(src, cfg.health_gate)
    check_at_least(src, "memory_budget_mb", cfg.memory_budget_mb, 1)
    check_at_least(src, "workspace_mb", cfg.workspace_mb, 1)


def _check_batch(src: str, batch: BatchProfile) -> None:
    if not 1 <= batch.min <= batch.opt <= batch.max:
        raise ConfigError(
            f"{src}: batch: expected 1 <= min <= opt <= max, "
            f"got min={batch.min}, opt={batch.opt}, max={batch.max}"
        )


def _check_precisions(src: str, precisions: Tuple[str, ...], default: str) -> None:
    if not precisions:
        raise ConfigError(f"{src}: precisions: expected at least one of {', '.join(PRECISIONS)}")
    for index, precision in enumerate(precisions):
        check_one_of(src, f"precisions[{index}]", precision, PRECISIONS)
        if precision in precisions[:index]:
            raise ConfigError(f"{src}: precisions[{index}]: {precision!r} is listed twice")
    if default not in precisions:
        raise ConfigError(
            f"{src}: default_precision: expected one of the precisions "
            f"({', '.join(precisions)}), got {default!r}"
        )


def _check_quantization(src: str, quant: QuantizationSettings) -> None:
    check_one_of(src, "quantization.scheme", quant.scheme, QUANT_SCHEMES)
    check_one_of(
        src, "quantization.calibration_method", quant.calibration_method, CALIBRATION_METHODS
    )
    check_at_least(src, "quantization.calibration_samples", quant.calibration_samples, 1)


def _check_health_gate(src: str, gate: HealthGateSettings) -> None:
    check_at_least(src, "health_gate.probe_requests", gate.probe_requests, 1)
    check_at_least(src, "health_gate.max_failures", gate.max_failures, 0)
    if gate.max_failures >= gate.probe_requests:
        raise ConfigError(f"{src}: health_gate.max_failures: expected fewer than probe_requests "
                          f"({gate.probe_requests}), got {gate.max_failures} (every probe could fail)")
    if not gate.max_p99_ms > 0 or gate.max_p99_ms == float("inf"):
        raise ConfigError(f"{src}: health_gate.max_p99_ms: expected a positive number of milliseconds, "
                          f"got {gate.max_p99_ms!r}")
    if not gate.stage_timeout_s > 0 or gate.stage_timeout_s == float("inf"):
        raise ConfigError(f"{src}: health_gate.stage_timeout_s: expected a positive number of seconds, "
                          f"got {gate.stage_timeout_s!r}")
    if gate.accuracy_min is not None and not 0.0 <= gate.accuracy_min <= 1.0:
        raise ConfigError(f"{src}: health_gate.accuracy_min: expected a fraction in 0..1, "
                          f"got {gate.accuracy_min!r}")


def _check_tensorrt(src: str, cfg: DeviceConfig) -> None:
    trt = cfg.tensorrt
    dim = trt.dynamic_dim
    if not 1 <= dim.min <= dim.opt <= dim.max:
        raise ConfigError(f"{src}: tensorrt.dynamic_dim: expected 1 <= min <= opt <= max, "
                          f"got min={dim.min}, opt={dim.opt}, max={dim.max}")
    check_at_least(src, "tensorrt.device_index", trt.device_index, 0)
    if trt.dla is None:
        return
    if not cfg.uses_tensorrt:
        raise ConfigError(f"{src}: tensorrt.dla: DLA needs backend tensorrt")
    if not 0 <= trt.dla.core < cfg.dla_cores:
        raise ConfigError(f"{src}: tensorrt.dla.core: expected 0..{cfg.dla_cores - 1} "
                          f"(dla_cores is {cfg.dla_cores}), got {trt.dla.core}")
    if not trt.dla.batch_sizes:
        raise ConfigError(f"{src}: tensorrt.dla.batch_sizes: expected at least one batch size")
    for index, size in enumerate(trt.dla.batch_sizes):
        if not 1 <= size <= cfg.batch.max:
            raise ConfigError(f"{src}: tensorrt.dla.batch_sizes[{index}]: expected 1..batch.max "
                              f"({cfg.batch.max}), got {size}")
    if "fp16" not in cfg.precisions and "int8" not in cfg.precisions:
        raise ConfigError(f"{src}: tensorrt.dla: DLA runs fp16 or int8 only, and precisions has neither")
