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
