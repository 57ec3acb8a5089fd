"""Install a downloaded bundle tar as a new version of a model in the repository, atomically.

The steps, each of which refuses with one of :mod:`edge_runtime.fleet.errors` and leaves the
repository as it was (the staging directory is removed, a model directory made for it too):

1. unpack the tar into a hidden staging directory in the model's folder
   (:func:`~edge_runtime.fleet.bundle_archive.extract_bundle_tar`: regular files and folders only);
2. verify it (:func:`~edge_runtime.bundle.verify_bundle`: signature by a trusted key, every file's
   hash, no unlisted file);
3. check it is for this device: the model's name, a target of this device's class (or name) and,
   on TensorRT, an engine built for this host (or the ONNX to rebuild from, when allowed);
4. check its version: ASCII digits, above the active one (anti-rollback), not already on disk with
   other content (the same content again is a no-op: an install that was killed after its rename);
5. publish it by one rename to ``<repository>/<model>/<version>/`` (:func:`~edge_runtime.atomic_io.publish_dir`);
6. retention (:mod:`edge_runtime.fleet.retention`): at most ``keep_versions`` versions stay.

The active-version pointer is never written here: the health gate flips it after the new version
served its probes. One installer runs per repository (the agent); nothing here locks.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, List, Optional, Sequence, Tuple

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from edge_runtime.atomic_io import fsync_dir, publish_dir, staging_dir_for
from edge_runtime.bundle import MANIFEST_NAME, HostFingerprint, Manifest, TargetInfo, match, verify_bundle
from edge_runtime.config import DeviceConfig
from edge_runtime.errors import BundleError, OutputError, PointerError
from edge_runtime.fleet.bundle_archive import DEFAULT_MAX_BYTES, DEFAULT_MAX_MEMBERS, extract_bundle_tar
from edge_runtime.fleet.errors import (
    BundleRefusedError,
    RepositoryWriteError,
    SyncError,
    VersionRefusedError,
    WrongTargetError,
)
from edge_runtime.fleet.retention import STAGING_NAME, apply_retention, remove_install_leftovers
from edge_runtime.serving.active_version import is_version_name, read_pointer, sorted_versions, version_key
from edge_runtime.serving.repository_layout import is_model_name

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class InstalledVersion:
    """A version now on disk: where, its verified manifest, and what retention removed."""

    model: str
    version: str
    path: Path
    manifest: Manifest
    already_installed: bool  # the same bundle was there already (e.g. an install killed after its rename)
    removed: Tuple[str, ...]  # versions deleted by retention, oldest first


def install_bundle(tar_path: Path, repository_root: Path, model_name: str,
                   trusted_keys: Sequence[Ed25519PublicKey], device: DeviceConfig, host: HostFingerprint,
                   keep_versions: int, max_members: int = DEFAULT_MAX_MEMBERS,
                   max_bytes: int = DEFAULT_MAX_BYTES, reserve_bytes: int = 0,
                   expected_version: Optional[str] = None) -> InstalledVersion:
    """Unpack, verify, check and publish the bundle tar as ``<repository_root>/<model_name>/<version>/``.

    Every refusal is a :class:`SyncError` (one line, starting with the tar's name) and leaves the
    repository as it was. The pointer is untouched. ``max_members``/``max_bytes`` cap the tar;
    ``reserve_bytes`` is the free space the unpacked files must leave on the disk;
    ``expected_version`` (the TUF target's) must be the signed manifest's, checked before publishing.
    """
    if keep_versions < 1:
        raise ValueError(f"keep_versions must be at least 1, got {keep_versions}")
    tar_path, root = Path(tar_path), Path(repository_root)
    label = tar_path.name
    try:
        _check_model_name(model_name)
        if not root.is_dir():
            raise RepositoryWriteError(f"the model repository {root} is not a directory")
        with _model_dir(root / model_name) as model_dir:
            return _install(tar_path, model_dir, model_name, trusted_keys, device, host, keep_versions,
                            (max_members, max_bytes, reserve_bytes), expected_version)
    except SyncError as exc:
        raise type(exc)(f"{label}: {exc}") from exc
    except OSError as exc:
        raise RepositoryWriteError(f"{label}: {exc.filename or root}: {exc.strerror or exc}") from exc


def _install(tar_path: Path, model_dir: Path, model_name: str, trusted_keys: Sequence[Ed25519PublicKey],
             device: DeviceConfig, host: HostFingerprint, keep_versions: int,
             caps: Tuple[int, int, int], expected_version: Optional[str]) -> InstalledVersion:
    remove_install_leftovers(model_dir)
    staging = _staging(model_dir)
    try:
        extract_bundle_tar(tar_path, staging, *caps)
        manifest = _verified(staging, trusted_keys)
        check_target(manifest, model_name, device, host)
        if expected_version is not None and manifest.version != expected_version:
            raise VersionRefusedError(f"the bundle is version {manifest.version}, its TUF target says "
                                      f"{expected_version}")
        dest = model_dir / manifest.version
        already = _check_version(model_dir, staging, manifest, trusted_keys)
        if not already:
            try:
                publish_dir(staging, dest, overwrite=False)
            except OutputError as exc:
                raise RepositoryWriteError(f"cannot publish version {manifest.version}: {exc}") from exc
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    if not already:
        log.info("model %s: version %s installed in %s", model_name, manifest.version, dest)
    # Also when it was already there: an install killed after its rename never got to retention.
    removed = apply_retention(model_dir, keep_versions, installed=manifest.version)
    return InstalledVersion(model_name, manifest.version, dest, manifest, already, tuple(removed))


def _check_model_name(name: str) -> None:
    if not is_model_name(name) or "/" in name or name in (".", ".."):
        raise SyncError(f"{name!r} is not a model name")


@contextlib.contextmanager
def _model_dir(model_dir: Path) -> Iterator[Path]:
    """The model's folder, made if missing and removed again when the install fails."""
    made = False
    if not model_dir.is_dir():
        try:
            os.mkdir(model_dir, 0o755)
            fsync_dir(model_dir.parent)
        except (OSError, OutputError) as exc:
            raise RepositoryWriteError(f"cannot create the model directory {model_dir}: {exc}") from exc
        made = True
    try:
        yield model_dir
    except BaseException:
        if made:
            with contextlib.suppress(OSError):
                os.rmdir(model_dir)
        raise


def _staging(model_dir: Path) -> Path:
    try:
        return staging_dir_for(model_dir / STAGING_NAME)
    except OutputError as exc:
        raise RepositoryWriteError(str(exc)) from exc


def _verified(staging: Path, trusted_keys: Sequence[Ed25519PublicKey]) -> Manifest:
    try:
        return verify_bundle(staging, trusted_keys)
    except BundleError as exc:
        # verify_bundle names the (hidden, temporary) staging directory first: the tar is named instead.
        message = str(exc)
        prefix = f"{staging}: "
        raise BundleRefusedError(message[len(prefix):] if message.startswith(prefix) else message) from exc


def check_target(manifest: Manifest, model_name: str, device: DeviceConfig, host: HostFingerprint) -> TargetInfo:
    """The manifest's target for this device; WrongTargetError when the bundle is not for it."""
    if manifest.name != model_name:
        raise WrongTargetError(f"the bundle is model '{manifest.name}', not '{model_name}'")
    named = [t for t in manifest.targets if t.name == device.name]
    candidates = named or [t for t in manifest.targets if t.device_class == device.device_class]
    if not candidates:
        classes = ", ".join(sorted({t.device_class for t in manifest.targets})) or "none"
        raise WrongTargetError(f"wrong device class: the bundle targets {classes}, this device is "
                               f"{device.device_class} ({device.name})")
    if not device.uses_tensorrt:
        return candidates[0]
    reasons: List[str] = []
    for target in candidates:
        if not manifest.artifacts_of("engine", target.name):
            return target  # no engine: built on the device at load
        found = match(target.fingerprint, host)
        if not found:
            return target
        reasons.extend(f"{target.name}: {reason}" for reason in found)
    rebuildable = [t for t in candidates if _has_onnx_for(manifest, t)]
    if rebuildable and device.tensorrt.rebuild_on_mismatch:
        return rebuildable[0]
    why = ("tensorrt.rebuild_on_mismatch is off" if rebuildable
           else "the bundle carries no ONNX model to rebuild it from")
    raise WrongTargetError(f"wrong TensorRT fingerprint: the engine cannot run on this host: {'; '.join(reasons)} "
                           f"({why})")


def _has_onnx_for(manifest: Manifest, target: TargetInfo) -> bool:
    return any(a.target in (None, target.name) for a in manifest.artifacts_of("onnx"))


def _check_version(model_dir: Path, staging: Path, manifest: Manifest,
                   trusted_keys: Sequence[Ed25519PublicKey]) -> bool:
    """Refuse a version that is not newer than the active one or exists with other content; True: already there."""
    version = manifest.version
    if not is_version_name(version):
        raise VersionRefusedError(f"version {version!r} is not a version number (ASCII digits)")
    active = active_floor(model_dir)
    if active is not None and version_key(version) <= version_key(active):
        raise VersionRefusedError(f"version {version} is not newer than the active version {active} (rollback refused)")
    existing = model_dir / version
    if not os.path.lexists(existing):
        return False
    if _same_bundle(existing, staging, trusted_keys):
        log.info("model %s: version %s is already installed", manifest.name, version)
        return True
    raise VersionRefusedError(f"version {version} already exists with other content")


def active_floor(model_dir: Path) -> Optional[str]:
    """The version a new one must be above: the pointer's active one (none: no floor).

    A pointer that cannot be read makes the repository serve its highest version: that is the floor then.
    """
    try:
        pointer = read_pointer(model_dir)
    except PointerError:
        versions = sorted_versions([p.name for p in model_dir.iterdir() if p.is_dir()])
        return versions[-1] if versions else None
    return pointer.active if pointer is not None else None


def _same_bundle(existing: Path, staging: Path, trusted_keys: Sequence[Ed25519PublicKey]) -> bool:
    """True when ``existing`` verifies and holds the same signed manifest (so the same files) as ``staging``."""
    if existing.is_symlink() or not existing.is_dir():
        return False
    try:
        verify_bundle(existing, trusted_keys)
        return (existing / MANIFEST_NAME).read_bytes() == (staging / MANIFEST_NAME).read_bytes()
    except (BundleError, OSError):
        return False
