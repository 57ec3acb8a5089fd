"""The bundle format: manifest schema, ed25519 signing, verification and writing.

A bundle is a directory holding ``manifest.json`` (what it contains, with the sha256 of every
file), ``manifest.sig`` (an ed25519 signature over the manifest's exact bytes) and the listed
artifacts (ONNX model and its external data, TensorRT engines, calibration caches, report). See DESIGN rule 6: a bundle
is verified with :func:`verify_bundle` before anything inside it is parsed. Each target's engine
carries a :class:`EngineFingerprint`, checked against the host's with :func:`match` before it loads.
"""

from __future__ import annotations

from edge_runtime.bundle.fingerprint import (
    BuildFingerprint,
    EngineFingerprint,
    HostFingerprint,
    check_match,
    device_family,
    match,
)
from edge_runtime.bundle.manifest import (
    ARTIFACT_KINDS,
    DTYPES,
    FORMAT_VERSION,
    ONNX_DATA,
    Artifact,
    Manifest,
    TargetInfo,
    TensorSpec,
)
from edge_runtime.bundle.signing import (
    generate_keypair,
    key_id,
    load_private_key,
    load_public_key,
    sign_manifest,
    verify_manifest_signature,
)
from edge_runtime.bundle.verify import (
    MANIFEST_NAME,
    SIGNATURE_NAME,
    NotARegularFile,
    VerifiedBundle,
    open_bundle,
    open_regular,
    read_limited,
    sha256_file,
    verify_bundle,
)
from edge_runtime.bundle.writer import ArtifactSpec, finalize_bundle

__all__ = [
    "ARTIFACT_KINDS",
    "DTYPES",
    "FORMAT_VERSION",
    "MANIFEST_NAME",
    "ONNX_DATA",
    "SIGNATURE_NAME",
    "Artifact",
    "ArtifactSpec",
    "BuildFingerprint",
    "EngineFingerprint",
    "HostFingerprint",
    "Manifest",
    "NotARegularFile",
    "TargetInfo",
    "TensorSpec",
    "VerifiedBundle",
    "check_match",
    "device_family",
    "finalize_bundle",
    "generate_keypair",
    "key_id",
    "load_private_key",
    "load_public_key",
    "match",
    "open_bundle",
    "open_regular",
    "read_limited",
    "sha256_file",
    "sign_manifest",
    "verify_bundle",
    "verify_manifest_signature",
]
