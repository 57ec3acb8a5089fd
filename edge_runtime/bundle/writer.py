"""Finish a bundle: hash the files already written, then write and sign the manifest.

The export pipeline writes its artifacts into a staging directory (see
:func:`edge_runtime.atomic_io.staging_dir_for`), calls :func:`finalize_bundle`, and publishes
the directory with :func:`edge_runtime.atomic_io.publish_dir`. A bundle never ships a file its
manifest does not list: an unlisted file in the staging directory is an error here, as it would
be at verification on the device.
"""

from __future__ import annotations

import json
import os
import stat
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Dict, Mapping, Optional, Sequence, Union

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from edge_runtime.atomic_io import fsync_tree, write_bytes_atomic
from edge_runtime.bundle.manifest import Artifact, Manifest, TargetInfo, TensorSpec
from edge_runtime.bundle.signing import sign_manifest
from edge_runtime.bundle.verify import (
    MANIFEST_NAME,
    SIGNATURE_NAME,
    list_bundle_entries,
    sha256_file,
)
from edge_runtime.errors import IntegrityError, ManifestError

PathLike = Union[str, "os.PathLike[str]"]
_NO_HASH = "0" * 64  # placeholder to validate an ArtifactSpec before its file is hashed


@dataclass(frozen=True)
class ArtifactSpec:
    """A file already written in the staging directory, to be listed in the manifest."""

    path: str  # POSIX, relative to the bundle root
    kind: str
    target: Optional[str] = None
    precision: Optional[str] = None


def finalize_bundle(
    staging_dir: PathLike,
    *,
    name: str,
    version: str,
    inputs: Sequence[TensorSpec],
    outputs: Sequence[TensorSpec],
    source_model_sha256: str,
    artifacts: Sequence[ArtifactSpec],
    targets: Sequence[TargetInfo],
    private_key: Ed25519PrivateKey,
    metadata: Optional[Mapping[str, Any]] = None,
    created: Optional[str] = None,
) -> Manifest:
    """Hash the listed files, write ``manifest.json`` and ``manifest.sig``, flush all to disk."""
    root = Path(staging_dir)
    if not root.is_dir():
        raise IntegrityError(f"{root}: not a directory; expected the bundle's staging directory")
    for index, spec in enumerate(artifacts):
        # Validate path, kind, target and precision before touching the file: '../x' is outside.
        try:
            Artifact(spec.path, _NO_HASH, 0, spec.kind, spec.target, spec.precision)
        except ManifestError as exc:
            raise ManifestError(f"artifacts[{index}].{exc}") from None
    _check_listing(root, artifacts)
    manifest = Manifest(
        name=name,
        version=version,
        created=created if created is not None else _utc_now(),
        inputs=tuple(inputs),
        outputs=tuple(outputs),
        source_model_sha256=source_model_sha256,
        artifacts=tuple(_hash_artifact(root, spec) for spec in artifacts),
        targets=tuple(targets),
        metadata=_json_metadata(metadata),
    )
    manifest_bytes = manifest.to_json()
    # Round trip: never sign a manifest the device would refuse to parse.
    Manifest.from_json(manifest_bytes)
    write_bytes_atomic(root / MANIFEST_NAME, manifest_bytes)
    write_bytes_atomic(root / SIGNATURE_NAME, sign_manifest(manifest_bytes, private_key))
    fsync_tree(root)
    return manifest


def _check_listing(root: Path, artifacts: Sequence[ArtifactSpec]) -> None:
    listed: Dict[str, int] = {}
    for index, spec in enumerate(artifacts):
        if spec.path in listed:
            raise ManifestError(
                f"artifacts[{index}].path: {spec.path!r} is listed twice "
                f"(also artifacts[{listed[spec.path]}])"
            )
        listed[spec.path] = index
    present = list_bundle_entries(root)
    for relative in sorted(present):
        if relative not in listed and relative not in (MANIFEST_NAME, SIGNATURE_NAME):
            raise IntegrityError(
                f"{root / relative}: unlisted file in the staging directory; "
                "a bundle must not ship files its manifest does not list"
            )
    for relative in listed:
        if not os.path.lexists(root / relative):
            raise IntegrityError(f"{root / relative}: listed as an artifact but missing")


def _hash_artifact(root: Path, spec: ArtifactSpec) -> Artifact:
    path = root / spec.path
    info = os.lstat(path)
    if not stat.S_ISREG(info.st_mode):
        raise IntegrityError(f"{path}: not a regular file; a bundle holds regular files only")
    return Artifact(
        path=spec.path,
        sha256=sha256_file(path),
        size=info.st_size,
        kind=spec.kind,
        target=spec.target,
        precision=spec.precision,
    )


def _json_metadata(metadata: Optional[Mapping[str, Any]]) -> Dict[str, Any]:
    """A plain JSON copy (tuples become lists), so the manifest equals what is read back."""
    if metadata is None:
        return {}
    try:
        return dict(json.loads(json.dumps(dict(metadata), allow_nan=False)))
    except (TypeError, ValueError) as exc:
        raise ManifestError(f"metadata: not JSON-serializable: {exc}") from exc


def _utc_now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
