"""Publishing a signed bundle: check it as a device would, record it, add it to the TUF image role.

A bundle arrives as a tar (``POST /api/v1/bundles``) or as a directory or tar on the server's disk
(``edge-fleet publish PATH``; a directory is tarred first: uncompressed POSIX tar, members relative
to the bundle root, regular files and directories only). The tar is unpacked into a private
staging directory with the device's own unpacker (:mod:`edge_runtime.fleet.bundle_archive`: no
links, no ``..``, capped) and verified with :func:`edge_runtime.bundle.verify_bundle` against the
fleet's trusted keys; a bundle that fails either is refused (422) and nothing is stored. Its
manifest names the model, the version (ASCII digits: devices order versions numerically), the
device classes it targets, and per class the engine fingerprint the director passes on.

Publishing is idempotent: the same (model, version) with the same bytes answers the stored row;
other bytes under a published (model, version) are a conflict (409) — a version, once out, never
changes. The checks and the copy into the repository's content-addressed store run before any
lock is taken; then, under the director lock (:func:`fleet_server.director.lock_director`), the
row is checked, the target signed and the row inserted in one transaction.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import secrets
import shutil
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Dict, Iterator, List, Optional, Tuple

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from sqlalchemy import Connection, Engine, insert, select

from edge_runtime.atomic_io import fsync_dir
from edge_runtime.bundle import Manifest, TargetInfo, load_public_key, sha256_file, verify_bundle
from edge_runtime.bundle.verify import SIGNATURE_NAME
from edge_runtime.errors import BundleError, EdgeRuntimeError
from edge_runtime.fleet.bundle_archive import extract_bundle_tar
from edge_runtime.serving.active_version import is_version_name
from fleet_server.db import begin_write, database_errors
from fleet_server.director import lock_director, repository_paths
from fleet_server.errors import BundleRejectedError, ConflictError, PayloadTooLargeError
from fleet_server.models import Bundle, entity_rows
from fleet_server.settings import FleetSettings
from fleet_server.tuf_repository import publish_bundle

_CHUNK = 1 << 20
_FINGERPRINT_KEYS = ("compute_capability", "tensorrt_version", "jetpack", "l4t")


@dataclass(frozen=True)
class PublishedBundle:
    """A bundle as stored; ``new`` is False when the same bytes were already published."""

    row: Dict[str, Any]
    new: bool


def bundle_json(row: Any) -> Dict[str, Any]:
    """A ``bundles`` row as the API shows it."""
    return {"id": int(row.id), "model": row.model, "version": row.version, "target": row.target,
            "sha256": row.sha256, "length": int(row.length), "device_classes": list(row.device_classes),
            "fingerprints": dict(row.fingerprints), "signer_key_id": row.signer_key_id, "uploaded": row.uploaded}


def list_bundles(connection: Connection) -> List[Dict[str, Any]]:
    """Every published bundle, newest upload first."""
    rows = entity_rows(connection, select(Bundle).order_by(Bundle.uploaded.desc(), Bundle.id.desc()))
    return [bundle_json(row.Bundle) for row in rows]


@contextlib.contextmanager
def staging_area(settings: FleetSettings) -> Iterator[Path]:
    """A fresh private directory under the settings' staging_dir, removed afterwards."""
    root = settings.resolve(settings.tuf.staging_dir)
    try:
        root.mkdir(parents=True, exist_ok=True, mode=0o700)
        work = Path(tempfile.mkdtemp(prefix="bundle-", dir=root))
    except OSError as exc:
        raise ConflictError(f"{root}: cannot create the staging directory: {exc.strerror or exc}") from exc
    try:
        yield work
    finally:
        shutil.rmtree(work, ignore_errors=True)


def receive_tar(stream: IO[bytes], work: Path, cap: int) -> Path:
    """Copy an upload to ``work/upload.tar``, at most ``cap`` bytes (PayloadTooLargeError beyond)."""
    path = work / "upload.tar"
    total = 0
    with open(path, "wb") as out:
        for chunk in iter(lambda: stream.read(_CHUNK), b""):
            total += len(chunk)
            if total > cap:
                raise PayloadTooLargeError(f"the bundle is over the cap of {cap} bytes (tuf.max_bundle_bytes)")
            out.write(chunk)
    return path


def tar_directory(bundle_dir: Path, tar_path: Path) -> Path:
    """The bundle directory as an uncompressed POSIX tar, members relative to its root (files and dirs only)."""
    with tarfile.open(tar_path, "w", format=tarfile.PAX_FORMAT) as tar:
        for path in sorted(bundle_dir.rglob("*")):
            if path.is_symlink() or not (path.is_file() or path.is_dir()):
                raise BundleRejectedError(f"{path}: a bundle holds regular files and directories only")
            tar.add(path, arcname=path.relative_to(bundle_dir).as_posix(), recursive=False)
    return tar_path


def stage_path(path: Path, work: Path) -> Path:
    """A bundle directory or tar on disk as a tar inside ``work`` (tarred or copied)."""
    if path.is_dir():
        return tar_directory(path, work / "upload.tar")
    if not path.is_file():
        raise BundleRejectedError(f"{path}: no such bundle directory or tar")
    return Path(shutil.copyfile(path, work / "upload.tar"))


def trusted_keys(settings: FleetSettings) -> List[Ed25519PublicKey]:
    """The fleet's trusted bundle-signing keys (ConflictError when none is configured)."""
    if not settings.tuf.trusted_bundle_keys:
        raise ConflictError("no trusted bundle keys are configured (tuf.trusted_bundle_keys): nothing can be published")
    return [load_public_key(settings.resolve(path)) for path in settings.tuf.trusted_bundle_keys]


def publish_tar(engine: Engine, settings: FleetSettings, tar_path: Path, now: float) -> PublishedBundle:
    """Check, store and publish the bundle tar ``tar_path`` (inside a staging area the caller owns)."""
    repo_dir, keys_dir = repository_paths(settings)
    work = tar_path.parent
    manifest, key_id = _unpack_and_verify(tar_path, work / "bundle", settings)
    target = f"{manifest.name}-{manifest.version}.tar"
    named = work / "named" / target
    named.parent.mkdir()
    os.replace(tar_path, named)
    sha256, length = sha256_file(named), named.stat().st_size
    classes = sorted({t.device_class for t in manifest.targets})
    values = {"model": manifest.name, "version": manifest.version, "target": target, "sha256": sha256,
              "length": length, "device_classes": classes, "fingerprints": _fingerprints(manifest, classes),
              "signer_key_id": key_id, "uploaded": now}
    with database_errors(), engine.connect() as connection:
        existing = _existing(connection, manifest, sha256)
        if existing is not None:
            return PublishedBundle(existing, new=False)
        _store_content(repo_dir, named, sha256)
        begin_write(connection, engine.dialect.name == "sqlite")
        lock_director(connection)
        existing = _existing(connection, manifest, sha256)
        if existing is not None:
            return PublishedBundle(existing, new=False)
        custom = {"model": manifest.name, "version": manifest.version, "device_classes": classes}
        publish_bundle(repo_dir, keys_dir, named, custom, settings.tuf.expiry())
        bundle_id = connection.execute(insert(Bundle).values(**values).returning(Bundle.id)).scalar_one()
        connection.commit()
    return PublishedBundle({"id": int(bundle_id), **values}, new=True)


def _unpack_and_verify(tar_path: Path, dest: Path, settings: FleetSettings) -> Tuple[Manifest, str]:
    """The verified manifest and the id of the key that signed it; BundleRejectedError otherwise."""
    keys = trusted_keys(settings)
    dest.mkdir()
    try:
        extract_bundle_tar(tar_path, dest, max_bytes=settings.tuf.max_bundle_bytes)
        manifest = verify_bundle(dest, keys)
    except BundleError as exc:  # the message names the staging path first: keep only the reason
        raise BundleRejectedError(f"bundle refused: {exc.__cause__ or exc}") from exc
    except EdgeRuntimeError as exc:
        raise BundleRejectedError(f"bundle refused: {exc}") from exc
    if not is_version_name(manifest.version):
        raise BundleRejectedError(f"bundle refused: version {manifest.version!r} is not a version number "
                                  "(ASCII digits: devices order versions numerically)")
    if not manifest.targets:
        raise BundleRejectedError("bundle refused: its manifest names no target device class")
    signature = json.loads((dest / SIGNATURE_NAME).read_bytes())  # verified above: a JSON object with keyid
    return manifest, str(signature["keyid"])


def _fingerprints(manifest: Manifest, classes: List[str]) -> Dict[str, Optional[Dict[str, Any]]]:
    """Per device class, the engine fingerprint of its first target (null when it pins no hardware)."""
    found: Dict[str, Optional[Dict[str, Any]]] = {}
    for device_class in classes:
        target = next(t for t in manifest.targets if t.device_class == device_class)
        found[device_class] = _fingerprint(target)
    return found


def _fingerprint(target: TargetInfo) -> Optional[Dict[str, Any]]:
    if all(getattr(target, key) is None for key in _FINGERPRINT_KEYS):
        return None
    return {"target": target.name, "backend": target.backend, "precision": target.precision,
            "dla_core": target.dla_core, **{key: getattr(target, key) for key in _FINGERPRINT_KEYS}}


def _existing(connection: Connection, manifest: Manifest, sha256: str) -> Optional[Dict[str, Any]]:
    """The stored row for this (model, version) when it holds the same bytes; ConflictError for other bytes."""
    rows = entity_rows(connection, select(Bundle).where(Bundle.model == manifest.name,
                                                        Bundle.version == manifest.version))
    if not rows:
        return None
    row = rows[0]
    if row.Bundle.sha256 != sha256:
        raise ConflictError(f"{manifest.name} version {manifest.version} is already published with other content "
                            f"(sha256 {row.Bundle.sha256[:16]}...): publish a new version")
    return bundle_json(row.Bundle)


def _store_content(repo_dir: Path, named: Path, sha256: str) -> None:
    """Put the tar at ``targets/<sha256>.<name>`` now (link, else copy), so signing it later copies nothing.

    The store is content-addressed, so a file placed here by a publish that then fails is harmless.
    """
    stored = repo_dir / "targets" / f"{sha256}.{named.name}"
    if stored.exists():
        return
    temp = stored.with_name(f".{stored.name}.{secrets.token_hex(8)}.staged")  # concurrent uploads: own names
    try:
        try:
            os.link(named, temp)
        except OSError as exc:
            if exc.errno not in (errno.EXDEV, errno.EPERM, errno.EMLINK):
                raise
            shutil.copyfile(named, temp)
        with open(temp, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(temp, stored)
        fsync_dir(stored.parent)
    except OSError as exc:
        raise ConflictError(f"{stored.parent}: cannot store the bundle: {exc.strerror or exc}") from exc
    finally:
        with contextlib.suppress(FileNotFoundError):
            temp.unlink()
