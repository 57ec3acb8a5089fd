"""The fleet's TUF repository as static files in a directory (any HTTP server or CDN serves it).

Layout (consistent snapshots, so a CDN may cache every file but ``timestamp.json`` forever)::

    <repo>/metadata/<N>.root.json  <repo>/metadata/timestamp.json
    <repo>/metadata/<N>.snapshot.json  <repo>/metadata/<N>.targets.json
    <repo>/metadata/<N>.devices-<xx>.json   (the director's bins: :mod:`fleet_server.tuf_director`)
    <repo>/targets/<sha256>.<name>.tar

Two kinds of targets metadata share the repository, as Uptane's two repositories do:

- the IMAGE role is the top-level ``targets``: every published bundle, ``<model>-<version>.tar``
  (:func:`publish_bundle`), stored once under ``targets/``. It says what exists, not who takes it.
- the DIRECTOR: top-level targets delegates (terminating) to up to 256 hashed bins ``devices-<xx>``
  (``<xx>``: the first two hex digits of sha256(device id); a bin is added the first time one of
  its devices gets targets), signed with the online ``director`` key. A bin lists each of its
  devices' desired bundles as ``devices/<xx>/<device id>/<image>`` with the image's length and
  hashes and the rollout's custom fields; a device trusts a bundle only when both roles agree on
  its bytes. Why bins and not one role per device: the snapshot lists every targets role and every
  device fetches it after each change; one role per device would make it 10,001 entries at 10,000
  devices, with bins it stays at ≤ 257, and a device fetches timestamp, snapshot, targets and ONE
  bin (~40 devices' worth) per refresh, whatever the fleet size. :func:`set_device_targets` writes
  them; the bins' model (paths, delegations) is :mod:`fleet_server.tuf_director`.

Keys are ed25519, stored as unencrypted PKCS#8 PEM files named for their role. The root key is
written to its own directory (``root_keys_dir``) at :func:`init_repository` and is never read again
by the server: move it to offline storage; publishing, assigning and the periodic timestamp
refresh only need the online keys in ``keys_dir`` (targets, snapshot, timestamp, and ``director``,
which root does not list: top-level targets delegates to it). Devices are installed with
``metadata/1.root.json`` as their trusted ``root.json``.

The repository's state is its files (no server-side cache), so server instances stay stateless;
writers serialize through an exclusive ``flock`` on ``<repo>/.lock``. Files are written so that a
reader always sees a consistent set: new targets and versioned metadata first, ``timestamp.json``
(atomically replaced) last. Every targets role (top-level and bins) is one entry of the snapshot's
``meta``; :func:`refresh_timestamp` renews any of them close to expiry.
"""

from __future__ import annotations

import fcntl
import os
import shutil
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple

from cryptography.hazmat.primitives.serialization import load_pem_private_key
from securesystemslib.signer import CryptoSigner
from tuf.api.metadata import Metadata, MetaFile, Root, Snapshot, TargetFile, Targets, Timestamp
from tuf.api.serialization.json import JSONSerializer

from edge_runtime.atomic_io import fsync_dir, write_bytes_atomic
from fleet_server.tuf_director import (
    BIN_HEX,
    DeviceTarget,
    bin_role,
    delegate,
    device_bin,
    device_files,
    device_target_path,
    replace_devices,
    wanted_by_bin,
)

__all__ = ["BIN_HEX", "DIRECTOR_KEY", "DeviceTarget", "Expiry", "device_bin", "device_target_path",
           "device_targets_of", "init_repository", "load_signer", "publish_bundle", "read_current",
           "refresh_timestamp", "set_device_targets"]

ONLINE_ROLES = ("targets", "snapshot", "timestamp")
DIRECTOR_KEY = "director"  # signs the director's bins; top-level targets delegates to it (root does not list it)
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


def _write_metadata(repo_dir: Path, metadata: Metadata[Any], versioned: bool = True,
                    role: Optional[str] = None) -> None:
    role = role or metadata.signed.type
    name = f"{metadata.signed.version}.{role}.json" if versioned else f"{role}.json"
    write_bytes_atomic(_metadata_dir(repo_dir) / name, metadata.to_bytes(_SERIALIZER))


@contextmanager
def repository_lock(repo_dir: Path) -> Iterator[None]:
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
    _write_key(keys_dir, DIRECTOR_KEY, CryptoSigner.generate_ed25519())
    _metadata_dir(repo_dir).mkdir(parents=True, exist_ok=True)
    (Path(repo_dir) / "targets").mkdir(exist_ok=True)
    with repository_lock(repo_dir):
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
    with repository_lock(repo_dir):
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
    publish_roles(repo_dir, keys_dir, [("targets", targets)], expiry, now)


def publish_roles(repo_dir: Path, keys_dir: Path, roles: Sequence[Tuple[str, Metadata[Any]]],
                  expiry: Expiry, now: datetime) -> int:
    """Bump, sign and write each (role name, targets metadata), then one snapshot and timestamp naming them.

    ``targets`` is signed with the targets key, a bin with the director key; a role the snapshot does
    not list yet keeps its version (1). Call under the repo lock. Returns the new timestamp version.
    """
    snapshot = read_current(repo_dir, "snapshot")
    timestamp = read_current(repo_dir, "timestamp")
    meta = {name: m.version for name, m in snapshot.signed.meta.items()}
    signers: Dict[str, CryptoSigner] = {}
    for role, metadata in roles:
        key = "targets" if role == "targets" else DIRECTOR_KEY
        if key not in signers:
            signers[key] = load_signer(keys_dir, key)
        if f"{role}.json" in meta:
            metadata.signed.version += 1
        metadata.signed.expires = now + expiry.targets
        metadata.signatures.clear()
        metadata.sign(signers[key])
        _write_metadata(repo_dir, metadata, role=role)
        meta[f"{role}.json"] = metadata.signed.version
    version = int(timestamp.signed.version + 1)
    _publish_snapshot(repo_dir, keys_dir, expiry, now, meta, version, snapshot.signed.version + 1)
    return version


def refresh_timestamp(repo_dir: Path, keys_dir: Path, expiry: Expiry = Expiry(),
                      now: Optional[datetime] = None) -> int:
    """Re-sign the timestamp (run it periodically: devices refuse a stale one); returns its new version.

    Targets, the director's bins and the snapshot are re-signed too when they would expire within
    ``expiry.renew_before``.
    """
    start = _now(now)
    with repository_lock(repo_dir):
        snapshot = read_current(repo_dir, "snapshot")
        timestamp = read_current(repo_dir, "timestamp")
        stale = []
        for name in snapshot.signed.meta:
            role = name[:-len(".json")]
            metadata = read_current(repo_dir, role)
            if metadata.signed.expires - start < expiry.renew_before:
                stale.append((role, metadata))
        if stale:
            return publish_roles(repo_dir, keys_dir, stale, expiry, start)
        if snapshot.signed.expires - start < expiry.renew_before:
            meta = {name: m.version for name, m in snapshot.signed.meta.items()}
            _publish_snapshot(repo_dir, keys_dir, expiry, start, meta, timestamp.signed.version + 1,
                              snapshot.signed.version + 1)
        else:
            _publish_timestamp(repo_dir, keys_dir, expiry, start, timestamp.signed.version + 1,
                               snapshot.signed.version)
        return int(timestamp.signed.version + 1)


def set_device_targets(repo_dir: Path, keys_dir: Path, assignments: Mapping[str, Sequence[DeviceTarget]],
                       expiry: Expiry = Expiry(), now: Optional[datetime] = None) -> int:
    """Replace each named device's whole director target list (empty: none); returns the timestamp version.

    Devices not named are unchanged. ValueError (nothing written) for an image that is not published
    or a bad device id. Only bins whose content changed are re-signed, top-level targets only when a
    bin's delegation was added; then one snapshot and one timestamp. Nothing changed: nothing is
    written and the current timestamp version is returned.
    """
    start = _now(now)
    with repository_lock(repo_dir):
        targets = read_current(repo_dir, "targets")
        by_bin = wanted_by_bin(targets.signed.targets, assignments)
        listed = read_current(repo_dir, "snapshot").signed.meta
        changed: List[Tuple[str, Metadata[Any]]] = []
        for role, devices in sorted(by_bin.items()):
            new = f"{role}.json" not in listed
            metadata = Metadata(Targets(expires=start + expiry.targets)) if new else read_current(repo_dir, role)
            if replace_devices(metadata.signed, role, devices):
                if new:
                    delegate(targets.signed, role, load_signer(keys_dir, DIRECTOR_KEY).public_key)
                changed.append((role, metadata))
        if any(f"{role}.json" not in listed for role, _ in changed):
            changed.insert(0, ("targets", targets))
        if not changed:
            return int(read_current(repo_dir, "timestamp").signed.version)
        return publish_roles(repo_dir, keys_dir, changed, expiry, start)


def device_targets_of(repo_dir: Path, device_id: str) -> Dict[str, TargetFile]:
    """The director's targets for the device as published now, by image name (what the device would see)."""
    role = bin_role(device_id)
    if f"{role}.json" not in read_current(repo_dir, "snapshot").signed.meta:
        return {}
    return device_files(read_current(repo_dir, role).signed, device_id)
