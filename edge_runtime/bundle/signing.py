"""Ed25519 keys and the bundle signature (``manifest.sig``).

The signature covers the exact bytes of ``manifest.json``; the manifest in turn lists the sha256
of every other file, so one signature vouches for the whole bundle. ``manifest.sig`` is JSON::

    {"algorithm": "ed25519", "keyid": "<16 hex>", "signature": "<base64 of 64 bytes>"}

``keyid`` only picks which trusted key to try (several may be trusted during a key rotation);
it is not trusted itself: the signature must verify under that key.
Key files are PEM: PKCS#8 for the private key (mode 0600), SubjectPublicKeyInfo for the public.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
import re
from pathlib import Path
from typing import Any, Sequence, Tuple, Union

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from edge_runtime.atomic_io import write_bytes_atomic
from edge_runtime.errors import KeyFileError, OutputError, SignatureError

ALGORITHM = "ed25519"
_SIGNATURE_KEYS = ("algorithm", "keyid", "signature")
_KEY_ID = re.compile(r"[0-9a-f]{16}")
_SIGNATURE_LENGTH = 64  # bytes of an ed25519 signature

PathLike = Union[str, "os.PathLike[str]"]


def generate_keypair(directory: PathLike, name: str = "signing") -> Tuple[Path, Path]:
    """Write a new signing key ``name.key`` (0600) and its public key ``name.pub``.

    Refuses to overwrite either file: losing a signing key orphans every bundle it signed.
    """
    if not name or "/" in name or name.startswith("."):
        raise KeyFileError(f"invalid key name {name!r}: expected a plain file name")
    folder = Path(directory)
    key_path, pub_path = folder / f"{name}.key", folder / f"{name}.pub"
    for path in (key_path, pub_path):
        if os.path.lexists(path):
            raise KeyFileError(f"{path}: already exists (refusing to overwrite a key)")
    private_key = Ed25519PrivateKey.generate()
    private_pem = private_key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    public_pem = private_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    try:
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        write_bytes_atomic(key_path, private_pem, mode=0o600)
        write_bytes_atomic(pub_path, public_pem)  # 0644: anyone may read a public key
    except OSError as exc:
        raise KeyFileError(f"{folder}: cannot create directory: {exc.strerror or exc}") from exc
    except OutputError as exc:
        raise KeyFileError(str(exc)) from exc
    return key_path, pub_path


def load_private_key(path: PathLike) -> Ed25519PrivateKey:
    """Read an unencrypted PKCS#8 PEM ed25519 private key."""
    data = _read_key_file(path)
    try:
        key: Any = serialization.load_pem_private_key(data, password=None)
    except TypeError as exc:  # cryptography's way of saying "encrypted, give a password"
        raise KeyFileError(
            f"{path}: the private key is password-protected; expected an unencrypted key"
        ) from exc
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise KeyFileError(f"{path}: not a PEM private key") from exc
    if not isinstance(key, Ed25519PrivateKey):
        raise KeyFileError(f"{path}: holds a {_key_type(key)} key, expected ed25519")
    return key


def load_public_key(path: PathLike) -> Ed25519PublicKey:
    """Read a SubjectPublicKeyInfo PEM ed25519 public key."""
    data = _read_key_file(path)
    if b"PRIVATE KEY-----" in data:
        raise KeyFileError(f"{path}: holds a private key; pass the public key (.pub) file")
    try:
        key: Any = serialization.load_pem_public_key(data)
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise KeyFileError(f"{path}: not a PEM public key") from exc
    if not isinstance(key, Ed25519PublicKey):
        raise KeyFileError(f"{path}: holds a {_key_type(key)} key, expected ed25519")
    return key


def key_id(public_key: Ed25519PublicKey) -> str:
    """Short public name of a key: the first 16 hex digits of sha256 of its 32 raw bytes."""
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def sign_manifest(manifest_bytes: bytes, private_key: Ed25519PrivateKey) -> bytes:
    """The content of ``manifest.sig`` for these exact manifest bytes."""
    document = {  # keys in sorted order: the layout of manifest.sig
        "algorithm": ALGORITHM,
        "keyid": key_id(private_key.public_key()),
        "signature": base64.b64encode(private_key.sign(manifest_bytes)).decode("ascii"),
    }
    return (json.dumps(document, indent=2) + "\n").encode("ascii")


def verify_manifest_signature(
    manifest_bytes: bytes, sig_bytes: bytes, trusted_keys: Sequence[Ed25519PublicKey]
) -> str:
    """Check ``manifest.sig`` against the manifest bytes; return the id of the signing key."""
    if not trusted_keys:
        raise SignatureError("no trusted public keys given: cannot verify the bundle signature")
    keyid, signature = _parse_signature(sig_bytes)
    candidates = [key for key in trusted_keys if key_id(key) == keyid]
    if not candidates:
        trusted = ", ".join(sorted({key_id(key) for key in trusted_keys}))
        raise SignatureError(
            f"manifest.json is signed by key {keyid}, which is not trusted (trusted: {trusted})"
        )
    for key in candidates:
        try:
            key.verify(signature, manifest_bytes)
        except InvalidSignature:
            continue
        return keyid
    raise SignatureError(
        f"manifest.sig: the signature does not match manifest.json (key {keyid}): "
        "the manifest or the signature was altered"
    )


def _parse_signature(sig_bytes: bytes) -> Tuple[str, bytes]:
    try:
        document = json.loads(sig_bytes.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise SignatureError(f"manifest.sig: malformed: not JSON ({exc})") from exc
    if not isinstance(document, dict) or sorted(document) != list(_SIGNATURE_KEYS):
        raise SignatureError(
            f"manifest.sig: malformed: expected an object with keys {', '.join(_SIGNATURE_KEYS)}"
        )
    if document["algorithm"] != ALGORITHM:
        raise SignatureError(
            f"manifest.sig: unsupported algorithm {document['algorithm']!r} (expected {ALGORITHM})"
        )
    keyid = document["keyid"]
    if not isinstance(keyid, str) or not _KEY_ID.fullmatch(keyid):
        raise SignatureError(f"manifest.sig: malformed keyid {keyid!r} (expected 16 hex digits)")
    encoded = document["signature"]
    try:
        if not isinstance(encoded, str):
            raise ValueError("not a string")
        signature = base64.b64decode(encoded, validate=True)
    except (ValueError, binascii.Error) as exc:
        raise SignatureError(f"manifest.sig: malformed signature: not base64 ({exc})") from exc
    if len(signature) != _SIGNATURE_LENGTH:
        raise SignatureError(
            f"manifest.sig: malformed signature: {len(signature)} bytes, "
            f"expected {_SIGNATURE_LENGTH}"
        )
    return keyid, signature


def _read_key_file(path: PathLike) -> bytes:
    try:
        with open(path, "rb") as handle:
            return handle.read(1 << 16)  # key files are a few hundred bytes
    except FileNotFoundError as exc:
        raise KeyFileError(f"{path}: no such key file") from exc
    except OSError as exc:
        raise KeyFileError(f"{path}: cannot read key file: {exc.strerror or exc}") from exc


def _key_type(key: Any) -> str:
    return type(key).__name__.replace("PrivateKey", "").replace("PublicKey", "").strip("_")
