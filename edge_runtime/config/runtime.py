"""Runtime settings: how ``edge-runtime serve`` runs (YAML → validated, frozen dataclasses).

Paths in the file (the device config, the trusted public keys) are relative to the file's own
directory, so a config directory can be moved as a whole. Validation rules: see
:mod:`edge_runtime.config.schema`.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Optional, Tuple, Union

from edge_runtime.config.schema import NOT_A_KEY, build_dataclass, check_at_least, read_yaml_mapping, require_mapping
from edge_runtime.errors import ConfigError


@dataclass(frozen=True)
class LimitSettings:
    """Caps on what one request may ask of the server."""

    max_request_bytes: int = 16 * 1024 * 1024
    max_json_depth: int = 64
    max_tensor_elements: int = 64 * 1024 * 1024
    max_dims: int = 8


@dataclass(frozen=True)
class BatchingSettings:
    """Dynamic batching, as Triton's ``dynamic_batching`` block; ``enabled: false`` runs requests one by one."""

    enabled: bool = True
    max_batch_size: int = 8  # also capped by the device config's batch.max and the model's batch axis
    max_queue_delay_us: int = 0  # Triton's default: batch what is queued, never wait for more
    preferred_batch_sizes: Tuple[int, ...] = ()
    max_queue_size: int = 64  # requests waiting per model; one more is answered 503


@dataclass(frozen=True)
class RuntimeSettings:
    """Everything ``edge-runtime serve`` needs besides the model repository."""

    device_config: str
    trusted_keys: Tuple[str, ...]
    host: str = "127.0.0.1"
    port: int = 8000
    http_threads: int = 8
    limits: LimitSettings = field(default_factory=LimitSettings)
    batching: BatchingSettings = field(default_factory=BatchingSettings)
    instances: int = 1  # worker threads (each with its own backend) per model
    intra_op_threads: Optional[int] = None  # ONNX Runtime threads per instance; None: all cores
    # Off by default: an idle session's spinning threads slowed another busy one by ~1.7x on 2 cores
    # (measured here); off costs a single busy model ~10 % latency. Turn on for one model per device.
    intra_op_spinning: bool = False
    warmup_runs: int = 3
    request_timeout_s: float = 30.0
    drain_timeout_s: float = 10.0
    load_models_at_start: bool = True
    source: str = field(default="", metadata=NOT_A_KEY)

    def resolve(self, path: str) -> Path:
        """``path`` as written in the file, resolved against the file's directory."""
        base = Path(self.source).parent if self.source else Path.cwd()
        return (base / path).resolve()


def load_runtime_settings(path: Union[str, os.PathLike[str]]) -> RuntimeSettings:
    """Read and validate a runtime settings YAML file; every problem is a one-line ConfigError."""
    data, source = read_yaml_mapping(path)
    return runtime_settings_from_mapping(data, source)


def runtime_settings_from_mapping(data: Mapping[str, Any], source: str) -> RuntimeSettings:
    """Validate an already parsed mapping; ``source`` names it in messages and anchors relative paths."""
    settings = build_dataclass(RuntimeSettings, require_mapping(data, source), source)
    settings = dataclasses.replace(settings, source=source)
    _check(settings)
    return settings


def _check(settings: RuntimeSettings) -> None:
    src = settings.source
    if not settings.trusted_keys:
        raise ConfigError(f"{src}: trusted_keys: expected at least one public key file")
    if not 0 < settings.port < 65536:
        raise ConfigError(f"{src}: port: expected 1..65535, got {settings.port}")
    for key in ("http_threads", "instances", "warmup_runs"):
        check_at_least(src, key, getattr(settings, key), 1 if key != "warmup_runs" else 0)
    batching = settings.batching
    check_at_least(src, "batching.max_batch_size", batching.max_batch_size, 1)
    check_at_least(src, "batching.max_queue_delay_us", batching.max_queue_delay_us, 0)
    check_at_least(src, "batching.max_queue_size", batching.max_queue_size, 1)
    for index, size in enumerate(batching.preferred_batch_sizes):
        if not 1 <= size <= batching.max_batch_size:
            raise ConfigError(f"{src}: batching.preferred_batch_sizes[{index}]: expected 1..max_batch_size, got {size}")
    for key in ("max_request_bytes", "max_json_depth", "max_tensor_elements", "max_dims"):
        check_at_least(src, f"limits.{key}", getattr(settings.limits, key), 1)
    for key in ("request_timeout_s", "drain_timeout_s"):
        if getattr(settings, key) <= 0:
            raise ConfigError(f"{src}: {key}: expected a positive number of seconds")
