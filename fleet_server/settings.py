"""Central server settings: `edge-fleet --config FILE` (YAML → validated, frozen dataclasses).

Validated with :mod:`edge_runtime.config.schema` like the device's configs (unknown keys are
errors). Relative paths — the SQLite file in ``database_url``, ``secret_file``, the ``tuf:`` block's
directories and key files — are resolved
against the settings file's directory (or the working directory when there is no file).
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Optional, Tuple, Union

from edge_runtime.config.schema import NOT_A_KEY, build_dataclass, check_at_least, read_yaml_mapping, require_mapping
from edge_runtime.errors import ConfigError

if TYPE_CHECKING:
    from fleet_server.tuf_repository import Expiry

SQLITE_PREFIXES = ("sqlite:///", "sqlite+pysqlite:///")


@dataclass(frozen=True)
class RetentionSettings:
    """How long each resolution is kept: raw samples → per-minute rollups → per-hour rollups → gone."""

    raw_days: float = 7.0  # raw samples older than this are rolled up per minute, then deleted
    minute_days: float = 90.0  # per-minute rollups older than this are rolled up per hour, then deleted
    hour_days: float = 730.0  # per-hour rollups older than this are deleted
    run_every_s: float = 3600.0  # `edge-fleet serve` runs retention this often (0: never; use the CLI)


@dataclass(frozen=True)
class TufSettings:
    """The fleet's TUF repository (static files any HTTP server serves) and what bundles it accepts."""

    repository_dir: str = "tuf"  # metadata/ and targets/: serve this directory (nginx, a CDN)
    keys_dir: str = "tuf-keys"  # the online keys (targets, snapshot, timestamp, director); never served
    staging_dir: str = "tuf-staging"  # uploads and unpacked bundles being checked; never served
    # ed25519 public key files (PEM): an uploaded bundle must be signed by one of them
    trusted_bundle_keys: Tuple[str, ...] = ()
    max_bundle_bytes: int = 4 << 30  # POST /api/v1/bundles bodies; more is 413
    targets_days: float = 30.0  # how long signed targets (image and director bins) stay valid
    snapshot_days: float = 7.0
    timestamp_hours: float = 6.0  # the anti-freeze clock: run `edge-fleet tuf-refresh` well within it
    # `edge-fleet serve` re-signs the timestamp this often (0: never; then run `edge-fleet tuf-refresh` from a timer)
    refresh_every_s: float = 3600.0

    def expiry(self) -> Expiry:
        """These lifetimes as the repository's Expiry (root keeps its default: it is signed offline)."""
        from fleet_server.tuf_repository import Expiry

        return Expiry(targets=timedelta(days=self.targets_days), snapshot=timedelta(days=self.snapshot_days),
                      timestamp=timedelta(hours=self.timestamp_hours))


@dataclass(frozen=True)
class FleetSettings:
    """Everything the central server needs: database, secret, limits, retention, the TUF repository."""

    # SQLite (embedded, the default) or PostgreSQL (a fleet: postgresql+psycopg://user@host/db)
    database_url: str = "sqlite:///fleet.sqlite"
    secret_file: str = "fleet-secret.key"  # HMAC-SHA256 key for token digests; created (0600) if missing
    max_ingest_bytes: int = 1024 * 1024  # POST /api/v1/ingest bodies; more is 413 before parsing
    max_batch_records: int = 500
    max_future_s: float = 300.0  # a record whose time is further ahead of the server's clock is refused
    # A device is online when seen within this many seconds; null: three of its own sampling intervals.
    online_after_s: Optional[float] = None
    pool_size: int = 10  # database connections per worker process (PostgreSQL)
    pool_timeout_s: float = 5.0  # waiting longer for a connection answers 503 with Retry-After
    retry_after_s: int = 5
    max_history_points: int = 5000
    retention: RetentionSettings = field(default_factory=RetentionSettings)
    tuf: TufSettings = field(default_factory=TufSettings)
    source: str = field(default="", metadata=NOT_A_KEY)

    def resolve(self, path: str) -> Path:
        """``path`` as written in the file, resolved against the file's directory."""
        base = Path(self.source).parent if self.source else Path.cwd()
        return (base / path).resolve()

    @property
    def resolved_database_url(self) -> str:
        """``database_url`` with a relative SQLite path made absolute; ``postgresql://`` uses psycopg 3."""
        url = self.database_url
        for prefix in SQLITE_PREFIXES:
            if url.startswith(prefix):
                rest = url[len(prefix):]
                if rest and rest != ":memory:" and not rest.startswith("/"):
                    return prefix + str(self.resolve(rest))
                return url
        if url.startswith(("postgresql://", "postgres://")):
            return "postgresql+psycopg://" + url.split("://", 1)[1]
        return url

    @property
    def is_sqlite(self) -> bool:
        """Whether the database is an embedded SQLite file."""
        return self.database_url.startswith("sqlite")


def load_fleet_settings(path: Union[str, os.PathLike[str], None] = None) -> FleetSettings:
    """Read and validate a settings file; ``None``: the defaults, relative to the working directory."""
    if path is None:
        return fleet_settings_from_mapping({}, "")
    data, source = read_yaml_mapping(path)
    return fleet_settings_from_mapping(data, source)


def fleet_settings_from_mapping(data: Mapping[str, Any], source: str) -> FleetSettings:
    """Validate an already parsed mapping; ``source`` names it in messages and anchors relative paths."""
    settings = build_dataclass(FleetSettings, require_mapping(data, source or "settings"), source or "settings")
    settings = dataclasses.replace(settings, source=source)
    _check(settings)
    return settings


def _check(settings: FleetSettings) -> None:
    src = settings.source or "settings"
    url = settings.database_url
    if not url.startswith(("sqlite", "postgres")):
        scheme = url.split(":")[0]
        raise ConfigError(f"{src}: database_url: expected sqlite:///FILE or postgresql://..., got {scheme!r}")
    for key in ("max_ingest_bytes", "max_batch_records", "pool_size", "retry_after_s", "max_history_points"):
        check_at_least(src, key, getattr(settings, key), 1)
    for key in ("max_future_s", "pool_timeout_s"):
        if getattr(settings, key) <= 0:
            raise ConfigError(f"{src}: {key}: expected a positive number of seconds")
    if settings.online_after_s is not None and settings.online_after_s <= 0:
        raise ConfigError(f"{src}: online_after_s: expected a positive number of seconds or null")
    retention = settings.retention
    if not 0 < retention.raw_days <= retention.minute_days <= retention.hour_days:
        raise ConfigError(f"{src}: retention: expected 0 < raw_days <= minute_days <= hour_days")
    if retention.run_every_s < 0:
        raise ConfigError(f"{src}: retention.run_every_s: expected seconds >= 0 (0: never)")
    tuf = settings.tuf
    check_at_least(src, "tuf.max_bundle_bytes", tuf.max_bundle_bytes, 1)
    for key in ("targets_days", "snapshot_days", "timestamp_hours"):
        if getattr(tuf, key) <= 0:
            raise ConfigError(f"{src}: tuf.{key}: expected a positive number")
    if tuf.timestamp_hours / 24 > tuf.snapshot_days or tuf.snapshot_days > tuf.targets_days:
        raise ConfigError(f"{src}: tuf: expected timestamp_hours/24 <= snapshot_days <= targets_days")
    if not 0 <= tuf.refresh_every_s < tuf.timestamp_hours * 3600 / 2:
        raise ConfigError(f"{src}: tuf.refresh_every_s: expected 0 (never) or less than half of timestamp_hours, "
                          "so that devices never see an expired timestamp")
