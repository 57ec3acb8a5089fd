"""The agent's settings (``edge-runtime agent --config FILE``): YAML → a validated, frozen dataclass.

Paths (token file, CA bundle, spool) are relative to the file's own directory, as in the runtime's
settings; validation rules as in :mod:`edge_runtime.config.schema` (unknown keys are errors).
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Optional, Union

from edge_runtime.config.schema import NOT_A_KEY, build_dataclass, read_yaml_mapping, require_mapping
from edge_runtime.errors import ConfigError
from edge_runtime.fleet.sync_config import SyncSettings, check_device_id, sync_settings_from_mapping
from edge_runtime.fleet.transport import check_server_url


@dataclass(frozen=True)
class AgentSettings:
    """Where the agent uploads (server, identity, trust) and how (batching, backoff, polling)."""

    server_url: str  # https://fleet.example.com; http:// only to 127.0.0.1/localhost
    device_id: str
    token_file: str  # first line: the device token from enrollment (re-read after a 401/403)
    ca_bundle: Optional[str]  # PEM file of the CA(s) that sign the server's certificate; null: system CAs
    spool_path: str  # the runtime's telemetry.spool_path (the same file)
    batch_max_records: int = 500
    backoff_initial_s: float = 1.0
    backoff_max_s: float = 300.0
    poll_s: float = 10.0  # how often an empty spool is looked at again
    request_timeout_s: float = 30.0
    sync: Optional[SyncSettings] = field(default=None, metadata=NOT_A_KEY)  # the `sync:` block (fleet sync)
    source: str = field(default="", metadata=NOT_A_KEY)

    def resolve(self, path: str) -> Path:
        """``path`` as written in the file, resolved against the file's directory."""
        base = Path(self.source).parent if self.source else Path.cwd()
        return (base / path).resolve()


def load_agent_settings(path: Union[str, os.PathLike[str]]) -> AgentSettings:
    """Read and validate an agent settings YAML file; every problem is a one-line ConfigError."""
    data, source = read_yaml_mapping(path)
    return agent_settings_from_mapping(data, source)


def agent_settings_from_mapping(data: Mapping[str, Any], source: str) -> AgentSettings:
    """Validate an already parsed mapping; ``source`` names it in messages and anchors relative paths."""
    data = dict(require_mapping(data, source))
    block = data.pop("sync", None)  # validated by its own rules (sync_config.py)
    settings = build_dataclass(AgentSettings, data, source)
    check_device_id(settings.device_id, f"{source}: device_id")
    sync = None if block is None else sync_settings_from_mapping(require_mapping(block, f"{source}: sync"), source,
                                                                  device_id=settings.device_id)
    settings = dataclasses.replace(settings, source=source, sync=sync)
    check_server_url(settings.server_url, f"{source}: server_url")
    if not 1 <= settings.batch_max_records <= 500:
        raise ConfigError(f"{source}: batch_max_records: expected 1..500, got {settings.batch_max_records}")
    for key in ("backoff_initial_s", "backoff_max_s", "poll_s", "request_timeout_s"):
        if getattr(settings, key) <= 0:
            raise ConfigError(f"{source}: {key}: expected a positive number of seconds")
    if settings.backoff_max_s < settings.backoff_initial_s:
        raise ConfigError(f"{source}: backoff_max_s: expected at least backoff_initial_s")
    return settings


def read_token(path: Path) -> str:
    """The device token: the file's first line; ConfigError when unreadable or empty."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"token_file: cannot read {path}: {getattr(exc, 'strerror', None) or exc}") from exc
    lines = text.strip().splitlines()
    token = lines[0].strip() if lines else ""
    if not token:
        raise ConfigError(f"token_file: {path} is empty: write the device token from `edge-fleet enroll` into it")
    return token
