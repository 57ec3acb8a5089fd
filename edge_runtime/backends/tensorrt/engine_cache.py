"""The device-local engine cache: TensorRT engines built on this device, never written into a bundle.

A signed bundle is never modified (DESIGN rule 4), so an engine built at first load (or rebuilt
after a fingerprint mismatch) is kept here, under ``RuntimeSettings.engine_cache_dir``:

    <dir>/<key>.plan   the serialized engine
    <dir>/<key>.json   its record: sha256 and size of the plan, the engine fingerprint, the bundle
                       (name, version, manifest sha256), the source model, build time
    <dir>/timing-<host key>.cache   TensorRT's timing cache for this host (later builds are faster)

The key is the sha256 of the bundle's manifest hash, the source model's path, the static batch
size (DLA) and the engine fingerprint (TensorRT version, compute capability, L4T/JetPack, device,
precision, DLA core): a new bundle, a JetPack upgrade or another precision gets its own entry.
Both files are written atomically (temp, fsync, rename, fsync dir); the record is written last,
so a plan without a record is an interrupted build and is never used. Before a cached plan is
deserialized it is read into memory while hashed and compared with its record: a plan that was
corrupted or swapped is dropped (and rebuilt by the loader), never deserialized.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Optional, Tuple

from edge_runtime.atomic_io import remove_stale_temp_files, write_bytes_atomic
from edge_runtime.bundle.fingerprint import EngineFingerprint, HostFingerprint
from edge_runtime.bundle.verify import NotARegularFile, open_regular, read_limited
from edge_runtime.errors import OutputError

log = logging.getLogger(__name__)

MAX_PLAN_BYTES = 4 << 30  # a plan larger than this is not one of ours
MAX_RECORD_BYTES = 64 << 10
RECORD_VERSION = 1


def fingerprint_dict(fingerprint: EngineFingerprint) -> Dict[str, Any]:
    """The fingerprint as plain JSON values (stable keys: part of the cache key)."""
    return {"host": dataclasses.asdict(fingerprint.host), "build": dataclasses.asdict(fingerprint.build)}


@dataclass(frozen=True)
class CacheKey:
    """What one cached engine is for."""

    manifest_sha256: str
    source: str  # the bundle artifact it was built from, e.g. "onnx/agx-xavier.int8.onnx"
    fingerprint: EngineFingerprint
    static_batch: Optional[int] = None  # DLA engines: the one batch size they run

    @property
    def digest(self) -> str:
        document = {"manifest": self.manifest_sha256, "source": self.source, "batch": self.static_batch,
                    "fingerprint": fingerprint_dict(self.fingerprint)}
        return hashlib.sha256(json.dumps(document, sort_keys=True).encode()).hexdigest()


@dataclass(frozen=True)
class CachedEngine:
    """A cached plan, hashed while read and matching its record."""

    plan: bytes
    record: Dict[str, Any]
    path: Path


class EngineCache:
    """One engine cache directory; every method is safe against a crash at any point."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def _paths(self, key: CacheKey) -> Tuple[Path, Path]:
        digest = key.digest
        return self.directory / f"{digest}.plan", self.directory / f"{digest}.json"

    def get(self, key: CacheKey) -> Optional[CachedEngine]:
        """The cached plan for ``key`` if there is one whose bytes match its record; else None (dropped)."""
        plan_path, record_path = self._paths(key)
        record = self._read_record(record_path)
        if record is None:
            return None
        plan = self._read(plan_path, MAX_PLAN_BYTES)
        digest = hashlib.sha256(plan).hexdigest() if plan is not None else None
        if plan is None or digest != record.get("sha256") or len(plan) != record.get("size"):
            log.warning("engine cache: %s does not match its record; dropping it (it will be rebuilt)", plan_path)
            self.drop(key)
            return None
        return CachedEngine(plan, record, plan_path)

    def put(self, key: CacheKey, plan: bytes, details: Dict[str, Any]) -> Path:
        """Store ``plan`` for ``key``: the plan first, then its record (the commit point)."""
        plan_path, record_path = self._paths(key)
        self._ensure_dir()
        write_bytes_atomic(plan_path, plan, mode=0o600)
        record = {"version": RECORD_VERSION, "sha256": hashlib.sha256(plan).hexdigest(), "size": len(plan),
                  "manifest_sha256": key.manifest_sha256, "source": key.source, "static_batch": key.static_batch,
                  "fingerprint": fingerprint_dict(key.fingerprint), **details}
        write_bytes_atomic(record_path, (json.dumps(record, indent=2, sort_keys=True) + "\n").encode(), mode=0o600)
        return plan_path

    def drop(self, key: CacheKey) -> None:
        """Remove ``key``'s record, then its plan (a crash in between leaves an unused plan, never a bad record)."""
        for path in reversed(self._paths(key)):
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass
            except OSError as exc:
                log.warning("engine cache: cannot remove %s: %s", path, exc.strerror or exc)

    def timing_cache(self, host: HostFingerprint) -> Optional[bytes]:
        """This host's TensorRT timing cache, if one was saved."""
        return self._read(self._timing_path(host), MAX_PLAN_BYTES)

    def put_timing_cache(self, host: HostFingerprint, data: bytes) -> None:
        """Save this host's timing cache (atomically; a failure only costs the next build time)."""
        try:
            self._ensure_dir()
            write_bytes_atomic(self._timing_path(host), data, mode=0o600)
        except OutputError as exc:
            log.warning("engine cache: timing cache not saved: %s", exc)

    def clean_interrupted(self) -> int:
        """Remove temp files of writes a crash interrupted (untouched for a minute); returns how many."""
        try:
            names = {path.name.split(".")[1] for path in self.directory.glob(".*.tmp")}
        except OSError:
            return 0
        return sum(remove_stale_temp_files(self.directory / f"{name}.{suffix}")
                   for name in names for suffix in ("plan", "json", "cache"))

    def _timing_path(self, host: HostFingerprint) -> Path:
        digest = hashlib.sha256(json.dumps(dataclasses.asdict(host), sort_keys=True).encode()).hexdigest()
        return self.directory / f"timing-{digest[:16]}.cache"

    def _ensure_dir(self) -> None:
        try:
            self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        except OSError as exc:
            raise OutputError(f"{self.directory}: cannot create the engine cache: {exc.strerror or exc}") from exc

    def _read_record(self, path: Path) -> Optional[Dict[str, Any]]:
        data = self._read(path, MAX_RECORD_BYTES)
        if data is None:
            return None
        try:
            record = json.loads(data)
        except ValueError:
            record = None
        if not isinstance(record, dict) or record.get("version") != RECORD_VERSION:
            log.warning("engine cache: %s is not a valid record; ignoring it", path)
            return None
        return record

    @staticmethod
    def _read(path: Path, limit: int) -> Optional[bytes]:
        """The file's bytes; None when absent, not a regular file, unreadable or too large."""
        try:
            fd = open_regular(path)
        except FileNotFoundError:
            return None
        except (NotARegularFile, OSError) as exc:
            log.warning("engine cache: cannot read %s: %s", path, exc)
            return None
        try:
            return read_limited(fd, limit)
        except OSError as exc:
            log.warning("engine cache: cannot read %s: %s", path, exc.strerror or exc)
            return None
