"""The fleet's TUF repository as static files in a directory (any HTTP server or CDN serves it).

Layout (consistent snapshots, so a CDN may cache every file but ``timestamp.json`` forever)::

    <repo>/metadata/<N>.root.json  <repo>/metadata/timestamp.json
    <repo>/metadata/<N>.snapshot.json  <repo>/metadata/<N>.targets.json
    <repo>/targets/<sha256>.<name>.tar

Keys are ed25519, stored as unencrypted PKCS#8 PEM files named for their role. The root key is
written to its own directory (``root_keys_dir``) at :func:`init_repository` and is never read again
by the server: move it to offline storage; publishing and the periodic timestamp refresh only need
the online keys in ``keys_dir`` (targets, snapshot, timestamp). Devices are installed with
``metadata/1.root.json`` as their trusted ``root.json``.

The repository's state is its files (no server-side cache), so server instances stay stateless;
writers serialize through an exclusive ``flock`` on ``<repo>/.lock``. Files are written so that a
reader always sees a consistent set: new targets and versioned metadata first, ``timestamp.json``
(atomically replaced) last. Roles are listed in ``ONLINE_ROLES`` and in the snapshot's ``meta`` by
name, so a delegated targets role (the director's per-device roles, hashed bins) is one more entry.
"""

from __future__ import annotations

import fcntl
import os
import shutil
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Dict, Iterator, Optional

from cryptography.hazmat.primitives.serialization import load_pem_private_key
from securesystemslib.signer import CryptoSigner
from tuf.api.metadata import Metadata, MetaFile, Root, Snapshot, TargetFile, Targets, Timestamp
from tuf.api.serialization.json import JSONSerializer

from edge_runtime.atomic_io import fsync_dir, write_bytes_atomic

ONLINE_ROLES = ("targets", "snapshot", "timestamp")
_SERIALIZER = JSONSerializer(compact=True)


@dataclass(frozen=True)
class Expiry:
    """How long each role's metadata stays valid; the short timestamp is the anti-freeze clock."""

    root: timedelta = timedelta(days=365)
    targets: timedelta = timedelta(days=30)
    snapshot: timedelta = timedelta(days=7)
    timestamp: timedelta = timedelta(hours=6)
    renew_before: timedelta = field(default=timedelta(days=2))


def _now(now: Optional[datetime]) -> datetime:
    return (now or datetime.now(timezone.utc)).replace(microsecond=0)


def _write_key(keys_dir: Path, role: str, signer: CryptoSigner) -> None:
    keys_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    write_bytes_atomic(keys_dir / f"{role}.pem", signer.private_bytes, mode=0o600)


def load_signer(keys_dir: Path, role: str) -> CryptoSigner:
    """The signer for ``role`` from its PEM file in ``keys_dir``."""
    pem = (Path(keys_dir) / f"{role}.pem").read_bytes()
    return CryptoSigner(load_pem_private_key(pem, None))


def _metadata_dir(repo_dir: Path) -> Path:
    return Path(repo_dir) / "metadata"


def _write_metadata(repo_dir: Path, metadata: Metadata[Any], versioned: bool = True) -> None:
    role = metadata.signed.type
    name = f"{metadata.signed.version}.{role}.json" if versioned else f"{role}.json"
    write_bytes_atomic(_metadata_dir(repo_dir) / name, metadata.to_bytes(_SERIALIZER))


@contextmanager
def _locked(repo_dir: Path) -> Iterator[None]:
    """Serialize writers (several server instances may share the directory)."""
    with open(Path(repo_dir) / ".lock", "a+b") as lock:
        fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock.fileno(), fcntl.LOCK_UN)


def init_repository(repo_dir: Path, keys_dir: Path, root_keys_dir: Path, expiry: Expiry = Expiry(),
                    now: Optional[datetime] = None) -> None:
    """Create keys and version 1 of every top-level role; the root key goes to ``root_keys_dir`` (offline)."""
    repo_dir, keys_dir, root_keys_dir = Path(repo_dir), Path(keys_dir), Path(root_keys_dir)
    if (_metadata_dir(repo_dir) / "1.root.json").exists():
        raise FileExistsError(f"{repo_dir}: a TUF repository is already there")
    start = _now(now)
    signers = {role: CryptoSigner.generate_ed25519() for role in ("root", *ONLINE_ROLES)}
    root = Root(expires=start + expiry.root, consistent_snapshot=True)
    for role, signer in signers.items():
        root.add_key(signer.public_key, role)
    _write_key(root_keys_dir, "root", signers["root"])
    for role in ONLINE_ROLES:
        _write_key(keys_dir, role, signers[role])
    _metadata_dir(repo_dir).mkdir(parents=True, exist_ok=True)
    (Path(repo_dir) / "targets").mkdir(exist_ok=True)
    with _locked(repo_dir):
        root_md = Metadata(root)
        root_md.sign(signers["root"])
        _write_metadata(repo_dir, root_md)
        targets = Metadata(Targets(expires=start + expiry.targets))
        targets.sign(signers["targets"])
        _write_metadata(repo_dir, targets)
        _publish_snapshot(repo_dir, keys_dir, expiry, start, {"targets.json": 1}, timestamp_version=1)


def _publish_snapshot(repo_dir: Path, keys_dir: Path, expiry: Expiry, now: datetime,
                      meta: Dict[str, int], timestamp_version: int, snapshot_version: int = 1) -> None:
    """Sign and write a snapshot listing ``meta`` (role file → version), then the timestamp naming it."""
    snapshot = Metadata(Snapshot(version=snapshot_version, expires=now + expiry.snapshot,
                                 meta={name: MetaFile(version=v) for name, v in meta.items()}))
    snapshot.sign(load_signer(keys_dir, "snapshot"))
    _write_metadata(repo_dir, snapshot)
    _publish_timestamp(repo_dir, keys_dir, expiry, now, timestamp_version, snapshot_version)


def _publish_timestamp(repo_dir: Path, keys_dir: Path, expiry: Expiry, now: datetime,
                       version: int, snapshot_version: int) -> None:
    timestamp = Metadata(Timestamp(version=version, expires=now + expiry.timestamp,
                                   snapshot_meta=MetaFile(version=snapshot_version)))
    timestamp.sign(load_signer(keys_dir, "timestamp"))
    _write_metadata(repo_dir, timestamp, versioned=False)
    fsync_dir(_metadata_dir(repo_dir))


def read_current(repo_dir: Path, role: str) -> Metadata[Any]:
    """The newest published metadata of ``role`` (timestamp → snapshot → roles), as devices see it."""
    mdir = _metadata_dir(repo_dir)
    timestamp = Metadata[Timestamp].from_file(str(mdir / "timestamp.json"))
    if role == "timestamp":
        return timestamp
    snapshot_version = timestamp.signed.snapshot_meta.version
    snapshot = Metadata[Snapshot].from_file(str(mdir / f"{snapshot_version}.snapshot.json"))
    if role == "snapshot":
        return snapshot
    if role == "root":
        versions = [int(p.name.split(".")[0]) for p in mdir.glob("*.root.json")]
        return Metadata.from_file(str(mdir / f"{max(versions)}.root.json"))
    version = snapshot.signed.meta[f"{role}.json"].version
    return Metadata.from_file(str(mdir / f"{version}.{role}.json"))


def publish_bundle(repo_dir: Path, keys_dir: Path, tar_path: Path, custom: Dict[str, Any],
                   expiry: Expiry = Expiry(), now: Optional[datetime] = None) -> TargetFile:
    """Add the bundle tar as a target (length, sha256, ``custom``) and re-sign targets, snapshot, timestamp."""
    tar_path = Path(tar_path)
    name = tar_path.name
    if not name.endswith(".tar") or name.startswith("."):
        raise ValueError(f"{name}: a bundle target is a '<name>-<version>.tar' file")
    info = TargetFile.from_file(name, str(tar_path), ["sha256"])
    info.unrecognized_fields["custom"] = dict(custom)
    start = _now(now)
    with _locked(repo_dir):
        stored = Path(repo_dir) / "targets" / f"{info.hashes['sha256']}.{name}"
        if not stored.exists():
            tmp = stored.with_name(f".{stored.name}.tmp")
            shutil.copyfile(tar_path, tmp)
            with open(tmp, "rb") as handle:
                os.fsync(handle.fileno())
            os.replace(tmp, stored)
            fsync_dir(stored.parent)
        targets = read_current(repo_dir, "targets")
        targets.signed.targets[name] = info
        _resign_targets(repo_dir, keys_dir, expiry, start, targets)
    return info


def _resign_targets(repo_dir: Path, keys_dir: Path, expiry: Expiry, now: datetime, targets: Metadata[Any]) -> None:
    """Bump and sign targets, then a new snapshot and timestamp that name it."""
    snapshot = read_current(repo_dir, "snapshot")
    timestamp = read_current(repo_dir, "timestamp")
    targets.signed.version += 1
    targets.signed.expires = now + expiry.targets
    targets.signatures.clear()
    targets.sign(load_signer(keys_dir, "targets"))
    _write_metadata(repo_dir, targets)
    meta = {name: m.version for name, m in snapshot.signed.meta.items()}
    meta["targets.json"] = targets.signed.version
    _publish_snapshot(repo_dir, keys_dir, expiry, now, meta, timestamp.signed.version + 1,
                      snapshot.signed.version + 1)


def refresh_timestamp(repo_dir: Path, keys_dir: Path, expiry: Expiry = Expiry(),
                      now: Optional[datetime] = None) -> int:
    """Re-sign the timestamp (run it periodically: devices refuse a stale one); returns its new version.

    Targets and snapshot are re-signed too when they would expire within ``expiry.renew_before``.
    """
    start = _now(now)
    with _locked(repo_dir):
        targets = read_current(repo_dir, "targets")
        if targets.signed.expires - start < expiry.renew_before:
            _resign_targets(repo_dir, keys_dir, expiry, start, targets)
            return int(read_current(repo_dir, "timestamp").signed.version)
        snapshot = read_current(repo_dir, "snapshot")
        timestamp = read_current(repo_dir, "timestamp")
        if snapshot.signed.expires - start < expiry.renew_before:
            meta = {name: m.version for name, m in snapshot.signed.meta.items()}
            _publish_snapshot(repo_dir, keys_dir, expiry, start, meta, timestamp.signed.version + 1,
                              snapshot.signed.version + 1)
        else:
            _publish_timestamp(repo_dir, keys_dir, expiry, start, timestamp.signed.version + 1,
                               snapshot.signed.version)
        return int(timestamp.signed.version + 1)
