"""The sync agent's settings: the ``sync:`` block of the agent's YAML file → a validated, frozen dataclass.

Paths are relative to the agent file's own directory (as in :mod:`edge_runtime.fleet.agent_config`);
unknown keys are errors; every problem is one line naming the file and the key. ``device_id`` is
not a key of the block: it is the file's top-level ``device_id`` (the director lists this device's
targets under it), filled by the loaders.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Mapping, Optional, Tuple, Union

from edge_runtime.config.schema import NOT_A_KEY, build_dataclass, read_yaml_mapping
from edge_runtime.errors import ConfigError
from edge_runtime.fleet.transport import check_server_url

DEFAULT_RESERVE_BYTES = 512 << 20


@dataclass(frozen=True)
class SyncSettings:
    """Where updates come from (TUF metadata and targets), what is trusted, and where they go."""

    metadata_url: str  # the TUF metadata directory: https://fleet.example.com/tuf/metadata/
    targets_url: str  # the bundle files: https://cdn.example.com/tuf/targets/
    metadata_dir: str  # the device's trusted TUF metadata (written by the agent only)
    trusted_root: str  # root.json installed with the device: copied into metadata_dir when that has none
    staging_dir: str  # downloads gather here (<name>.tar.partial) until verified
    repository: str  # the runtime's model repository
    trusted_keys: Tuple[str, ...]  # ed25519 public keys that sign bundles (as the runtime's trusted_keys)
    device_config: str  # this device's config (device class, TensorRT fingerprint)
    runtime_url: str = "http://127.0.0.1:8000"  # the runtime the health gate talks to
    restricted_header: Optional[str] = None  # the runtime's restricted_api header for the repository API ...
    restricted_value_file: Optional[str] = None  # ... and the file holding its secret (first line)
    ca_bundle: Optional[str] = None  # CA(s) of the metadata/targets servers; null: the system's CAs
    keep_versions: int = 3  # versions kept per model (never the active or the last-good one)
    reserve_bytes: int = DEFAULT_RESERVE_BYTES  # free space a download or install must leave on the disk
    poll_s: float = 300.0  # between two sync passes of the agent
    request_timeout_s: float = 30.0  # per socket read of a download
    grace_s: float = 300.0  # after a promotion: a runtime crash or restart within it rolls the device back
    device_id: str = field(default="", metadata=NOT_A_KEY)  # the agent file's top-level device_id
    source: str = field(default="", metadata=NOT_A_KEY)

    def resolve(self, path: str) -> Path:
        """``path`` as written in the file, resolved against the file's directory."""
        base = Path(self.source).parent if self.source else Path.cwd()
        return (base / path).resolve()


def load_sync_settings(path: Union[str, os.PathLike[str]]) -> SyncSettings:
    """The ``sync:`` block of the agent settings file at ``path``; ConfigError when missing or invalid."""
    data, source = read_yaml_mapping(path)
    block = data.get("sync")
    if block is None:
        raise ConfigError(f"{source}: no 'sync' block: add one to sync models (see device_configs/agent/example.yaml)")
    device_id = data.get("device_id")
    if not isinstance(device_id, str) or not device_id:
        raise ConfigError(f"{source}: device_id: expected this device's id (as enrolled), got {device_id!r}")
    return sync_settings_from_mapping(block, source, path="sync", device_id=device_id)


def sync_settings_from_mapping(data: Mapping[str, Any], source: str, path: str = "sync",
                               device_id: str = "") -> SyncSettings:
    """Validate an already parsed ``sync:`` mapping; ``source`` names the file in messages and anchors paths."""
    where = f"{source}: {path}"
    settings = build_dataclass(SyncSettings, data, source, path)
    settings = dataclasses.replace(settings, source=source, device_id=device_id)
    check_device_id(device_id, f"{source}: device_id", allow_empty=True)
    for key in ("metadata_url", "targets_url", "runtime_url"):
        check_server_url(getattr(settings, key), f"{where}.{key}")
    if not settings.trusted_keys:
        raise ConfigError(f"{where}.trusted_keys: expected at least one public key file")
    if (settings.restricted_header is None) != (settings.restricted_value_file is None):
        raise ConfigError(f"{where}: restricted_header and restricted_value_file go together (both or neither)")
    if settings.keep_versions < 2:
        raise ConfigError(f"{where}.keep_versions: expected at least 2 (the active version and its fallback), "
                          f"got {settings.keep_versions}")
    if settings.reserve_bytes < 0:
        raise ConfigError(f"{where}.reserve_bytes: expected 0 or more, got {settings.reserve_bytes}")
    for key in ("poll_s", "request_timeout_s", "grace_s"):
        if getattr(settings, key) <= 0:
            raise ConfigError(f"{where}.{key}: expected a positive number of seconds")
    return settings


def check_device_id(device_id: str, where: str, allow_empty: bool = False) -> None:
    """ConfigError unless ``device_id`` is 1..128 printable characters without '/' (it names a TUF path)."""
    if allow_empty and device_id == "":
        return
    if (not isinstance(device_id, str) or not device_id or len(device_id) > 128 or not device_id.isprintable()
            or "/" in device_id or device_id in (".", "..")):
        raise ConfigError(f"{where}: expected 1..128 printable characters without '/', got {device_id!r}")


def runtime_headers(settings: SyncSettings) -> Dict[str, str]:
    """The header that opens the runtime's restricted repository API (none when it is not restricted)."""
    if settings.restricted_header is None or settings.restricted_value_file is None:
        return {}
    path = settings.resolve(settings.restricted_value_file)
    try:
        lines = path.read_text(encoding="utf-8").strip().splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"restricted_value_file: cannot read {path}: "
                          f"{getattr(exc, 'strerror', None) or exc}") from exc
    if not lines or not lines[0].strip():
        raise ConfigError(f"restricted_value_file: {path} is empty")
    return {settings.restricted_header: lines[0].strip()}
