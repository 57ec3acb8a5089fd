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

    max_request_bytes: int = 16 * 1024 * 1024  # any body (binary tensor extension included)
    # A body with no binary section is parsed as JSON while holding the GIL: every other thread,
    # health checks included, waits for the parse and the conversion to an array (one C call each).
    # Measured here (scripts/bench/abuse_bench.py): a hostile 4 MiB body stalled them 90 ms; 1 MiB
    # bounds that near 25 ms. Larger tensors go binary (README); a 224x224x3 FP32 image as JSON is ~3 MB.
    max_json_bytes: int = 1024 * 1024
    max_json_depth: int = 64
    max_tensor_elements: int = 64 * 1024 * 1024
    max_dims: int = 8


@dataclass(frozen=True)
class HttpSettings:
    """The transport (waitress): threads, connections, timeouts, admission."""

    threads: int = 10  # worker threads; max_in_flight of them at most run requests that do work
    # Requests that do work (inference, repository, shared memory, statistics) being handled at
    # once; one more is answered 503 with Retry-After at once. Health, readiness, server metadata
    # and /metrics are never refused and always find one of the other threads free.
    max_in_flight: int = 8
    retry_after_s: int = 1
    connection_limit: int = 200  # open connections; past it, the longest idle one is closed
    channel_timeout_s: int = 20  # an idle connection is closed after this long
    max_header_bytes: int = 16 * 1024  # request line + headers; more gets 431


@dataclass(frozen=True)
class SharedMemorySettings:
    """Triton's system shared-memory extension, and who may share memory with the runtime (docs/security.md)."""

    enabled: bool = True
    max_regions: int = 64
    max_total_bytes: int = 512 * 1024 * 1024  # the sum of the registered regions' byte_size
    key_prefixes: Tuple[str, ...] = ()  # e.g. ["/myapp-"]; empty: any key
    # Users (names or uids) whose objects may be registered; empty: any user but the server's own.
    allowed_owners: Tuple[Union[int, str], ...] = ()
    # Objects owned by the server's own user: a client could otherwise name the server's private
    # objects. Set to true when apps run as the runtime's user (docs/security.md).
    allow_server_owned: bool = False


@dataclass(frozen=True)
class RestrictedApi:
    """Triton's --http-restricted-api: these API groups need the header ``header: <secret>``.

    The secret comes from a file (``value_file``, first line) or an environment variable
    (``value_env``), never from this YAML file, and is never logged.
    """

    groups: Tuple[str, ...]
    header: str
    value_file: Optional[str] = None
    value_env: Optional[str] = None


@dataclass(frozen=True)
class BatchingSettings:
    """Dynamic batching, as Triton's ``dynamic_batching`` block; ``enabled: false`` runs requests one by one."""

    enabled: bool = True
    max_batch_size: int = 8  # also capped by the device config's batch.max and the model's batch axis
    max_queue_delay_us: int = 0  # Triton's default: batch what is queued, never wait for more
    preferred_batch_sizes: Tuple[int, ...] = ()
    max_queue_size: int = 64  # requests waiting per model; one more is answered 503


@dataclass(frozen=True)
class TelemetrySettings:
    """What the runtime samples and where it spools it (the agent process uploads the spool)."""

    enabled: bool = True
    interval_s: float = 10.0  # one sample per interval, on the sampler's own thread
    spool_path: str = "telemetry/spool.sqlite"  # relative to this settings file; on a device /var/lib/edge-runtime/
    spool_max_bytes: int = 64 * 1024 * 1024  # past it, the oldest records are dropped (and counted)
    sysfs_root: str = "/"  # where /proc and /sys are read from (tests point it at a recorded Jetson tree)


@dataclass(frozen=True)
class RuntimeSettings:
    """Everything ``edge-runtime serve`` needs besides the model repository."""

    device_config: str
    trusted_keys: Tuple[str, ...]
    host: str = "127.0.0.1"
    port: int = 8000  # 0 picks a free port (printed at start)
    server_name: str = "edge-runtime"  # the name in /v2 server metadata
    http: HttpSettings = field(default_factory=HttpSettings)
    limits: LimitSettings = field(default_factory=LimitSettings)
    shared_memory: SharedMemorySettings = field(default_factory=SharedMemorySettings)
    restricted_api: Tuple[RestrictedApi, ...] = ()
    # Binding to an address other than loopback needs the model-repository and shared-memory
    # groups restricted, or this set to true (an explicit decision, not a default).
    allow_unrestricted_remote: bool = False
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
    # Device-local TensorRT engines built on this device (never inside a signed bundle), keyed by
    # the bundle's manifest hash and the engine fingerprint; also holds the timing cache.
    engine_cache_dir: str = "engine-cache"
    telemetry: TelemetrySettings = field(default_factory=TelemetrySettings)
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
    if not 0 <= settings.port < 65536:
        raise ConfigError(f"{src}: port: expected 0..65535 (0: a free port), got {settings.port}")
    for key in ("instances", "warmup_runs"):
        check_at_least(src, key, getattr(settings, key), 1 if key != "warmup_runs" else 0)
    _check_http(src, settings.http)
    _check_shared_memory(src, settings.shared_memory)
    for index, rule in enumerate(settings.restricted_api):
        _check_restricted(src, f"restricted_api[{index}]", rule)
    batching = settings.batching
    check_at_least(src, "batching.max_batch_size", batching.max_batch_size, 1)
    check_at_least(src, "batching.max_queue_delay_us", batching.max_queue_delay_us, 0)
    check_at_least(src, "batching.max_queue_size", batching.max_queue_size, 1)
    for index, size in enumerate(batching.preferred_batch_sizes):
        if not 1 <= size <= batching.max_batch_size:
            raise ConfigError(f"{src}: batching.preferred_batch_sizes[{index}]: expected 1..max_batch_size, got {size}")
    for key in ("max_request_bytes", "max_json_bytes", "max_json_depth", "max_tensor_elements", "max_dims"):
        check_at_least(src, f"limits.{key}", getattr(settings.limits, key), 1)
    if settings.limits.max_json_bytes > settings.limits.max_request_bytes:
        raise ConfigError(f"{src}: limits.max_json_bytes: expected at most limits.max_request_bytes")
    if settings.telemetry.interval_s < 0.1:
        raise ConfigError(f"{src}: telemetry.interval_s: expected at least 0.1 seconds")
    check_at_least(src, "telemetry.spool_max_bytes", settings.telemetry.spool_max_bytes, 64 * 1024)
    for key in ("request_timeout_s", "drain_timeout_s"):
        if getattr(settings, key) <= 0:
            raise ConfigError(f"{src}: {key}: expected a positive number of seconds")


def _check_http(src: str, http: HttpSettings) -> None:
    for key in ("threads", "max_in_flight", "retry_after_s", "connection_limit", "channel_timeout_s"):
        check_at_least(src, f"http.{key}", getattr(http, key), 1)
    check_at_least(src, "http.max_header_bytes", http.max_header_bytes, 1024)
    if http.max_in_flight >= http.threads:
        raise ConfigError(
            f"{src}: http.max_in_flight: expected fewer than http.threads ({http.threads}), got "
            f"{http.max_in_flight}: the other threads keep health and metrics answering"
        )


def _check_shared_memory(src: str, shm: SharedMemorySettings) -> None:
    check_at_least(src, "shared_memory.max_regions", shm.max_regions, 1)
    check_at_least(src, "shared_memory.max_total_bytes", shm.max_total_bytes, 1)
    for index, prefix in enumerate(shm.key_prefixes):
        if not prefix.startswith("/") or len(prefix) < 2 or "/" in prefix[1:]:
            raise ConfigError(f"{src}: shared_memory.key_prefixes[{index}]: expected '/name-prefix', got {prefix!r}")


# Triton's API group names (--http-restricted-api)
RESTRICTABLE_GROUPS = ("health", "metadata", "inference", "shared-memory", "model-config", "model-repository",
                       "statistics")


def _check_restricted(src: str, where: str, rule: RestrictedApi) -> None:
    if not rule.groups:
        raise ConfigError(f"{src}: {where}.groups: expected at least one of {', '.join(RESTRICTABLE_GROUPS)}")
    for index, group in enumerate(rule.groups):
        if group not in RESTRICTABLE_GROUPS:
            raise ConfigError(
                f"{src}: {where}.groups[{index}]: expected one of {', '.join(RESTRICTABLE_GROUPS)}, got {group!r}"
            )
    if not rule.header or not all((c.isascii() and c.isalnum()) or c == "-" for c in rule.header):
        # no '_': waitress drops header names holding one (their WSGI keys would collide with '-')
        raise ConfigError(f"{src}: {where}.header: expected a header name (letters, digits and -), got {rule.header!r}")
    if (rule.value_file is None) == (rule.value_env is None):
        raise ConfigError(f"{src}: {where}: expected exactly one of value_file, value_env (the secret)")
