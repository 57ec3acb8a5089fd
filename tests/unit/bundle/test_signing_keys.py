"""Signing keys and manifest.sig: key files, key generation, the signature's layout, every refusal's message."""

from __future__ import annotations

import base64
import errno
import json
import os
import stat
from pathlib import Path
from typing import Any, Iterator

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import x25519
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from edge_runtime.bundle import signing
from edge_runtime.bundle.signing import (
    generate_keypair,
    key_id,
    load_private_key,
    load_public_key,
    sign_manifest,
    verify_manifest_signature,
)
from edge_runtime.errors import KeyFileError, SignatureError

# Fixed keys: ed25519 signatures are deterministic, so the whole manifest.sig can be pinned.
SIGNER = Ed25519PrivateKey.from_private_bytes(bytes(range(32)))
OTHER = Ed25519PrivateKey.from_private_bytes(bytes(range(32, 64)))
THIRD = Ed25519PrivateKey.from_private_bytes(bytes(range(64, 96)))


@pytest.fixture
def umask_022() -> Iterator[None]:
    previous = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(previous)


def _pem(key: Any) -> bytes:
    if hasattr(key, "private_bytes"):
        return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                 serialization.NoEncryption())
    return key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def _sig(**fields: Any) -> bytes:
    document = {"algorithm": "ed25519", "keyid": key_id(SIGNER.public_key()),
                "signature": base64.b64encode(SIGNER.sign(b"{}")).decode()}
    document.update(fields)
    return json.dumps({k: v for k, v in document.items() if v is not ...}).encode()


# --- manifest.sig ---------------------------------------------------------------------------


def test_manifest_sig_is_indented_json_with_sorted_keys_and_a_final_newline() -> None:
    keyid = key_id(SIGNER.public_key())
    signature = base64.b64encode(SIGNER.sign(b"manifest")).decode("ascii")
    expected = f'{{\n  "algorithm": "ed25519",\n  "keyid": "{keyid}",\n  "signature": "{signature}"\n}}\n'
    assert sign_manifest(b"manifest", SIGNER) == expected.encode("ascii")


def test_no_trusted_keys_is_refused_before_the_signature_is_read() -> None:
    with pytest.raises(SignatureError) as info:
        verify_manifest_signature(b"{}", b"not even json", [])
    assert str(info.value) == "no trusted public keys given: cannot verify the bundle signature"


def test_an_untrusted_signer_is_refused_naming_every_trusted_key_in_order() -> None:
    trusted = [THIRD.public_key(), OTHER.public_key()]
    names = sorted(key_id(key) for key in trusted)
    with pytest.raises(SignatureError) as info:
        verify_manifest_signature(b"{}", sign_manifest(b"{}", SIGNER), trusted)
    assert str(info.value) == (
        f"manifest.json is signed by key {key_id(SIGNER.public_key())}, which is not trusted "
        f"(trusted: {names[0]}, {names[1]})"
    )


def test_a_signature_over_other_bytes_is_refused_naming_the_key() -> None:
    keyid = key_id(SIGNER.public_key())
    with pytest.raises(SignatureError) as info:
        verify_manifest_signature(b"{}\n", sign_manifest(b"{}", SIGNER), [SIGNER.public_key()])
    assert str(info.value) == (
        f"manifest.sig: the signature does not match manifest.json (key {keyid}): "
        "the manifest or the signature was altered"
    )


def test_the_signing_key_is_found_among_several_trusted_keys() -> None:
    trusted = [OTHER.public_key(), SIGNER.public_key(), SIGNER.public_key()]
    assert verify_manifest_signature(b"m", sign_manifest(b"m", SIGNER), trusted) == key_id(SIGNER.public_key())


@pytest.mark.parametrize(
    "sig, message",
    [
        (b"\xff\xfe", "manifest.sig: malformed: not JSON ('utf-8' codec can't decode byte 0xff in position 0: "
                      "invalid start byte)"),
        (_sig(keyid=...), "manifest.sig: malformed: expected an object with keys algorithm, keyid, signature"),
        (_sig(extra=1), "manifest.sig: malformed: expected an object with keys algorithm, keyid, signature"),
        (_sig(algorithm="rsa"), "manifest.sig: unsupported algorithm 'rsa' (expected ed25519)"),
        (_sig(keyid=12), "manifest.sig: malformed keyid 12 (expected 16 hex digits)"),
        (_sig(keyid="0011223344556677aa"), "manifest.sig: malformed keyid '0011223344556677aa' "
                                           "(expected 16 hex digits)"),
        (_sig(signature=64), "manifest.sig: malformed signature: not base64 (not a string)"),
        (_sig(signature="AAAA"), "manifest.sig: malformed signature: 3 bytes, expected 64"),
    ],
    ids=["not-utf8", "missing-key", "extra-key", "algorithm", "keyid-int", "keyid-long", "signature-int",
         "signature-short"],
)
def test_a_malformed_signature_file_is_refused_with_one_clear_line(sig: bytes, message: str) -> None:
    with pytest.raises(SignatureError) as info:
        verify_manifest_signature(b"{}", sig, [SIGNER.public_key()])
    assert str(info.value) == message


# --- key files ------------------------------------------------------------------------------


def test_an_encrypted_private_key_is_refused_asking_for_an_unencrypted_one(tmp_path: Path) -> None:
    path = tmp_path / "locked.key"
    path.write_bytes(SIGNER.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                          serialization.BestAvailableEncryption(b"secret")))
    with pytest.raises(KeyFileError) as info:
        load_private_key(path)
    assert str(info.value) == f"{path}: the private key is password-protected; expected an unencrypted key"


def test_a_private_key_of_another_type_is_refused_naming_its_type(tmp_path: Path) -> None:
    path = tmp_path / "x.key"
    path.write_bytes(_pem(x25519.X25519PrivateKey.generate()))
    with pytest.raises(KeyFileError) as info:
        load_private_key(path)
    assert str(info.value) == f"{path}: holds a X25519 key, expected ed25519"


def test_a_public_key_of_another_type_is_refused_naming_its_type(tmp_path: Path) -> None:
    path = tmp_path / "x.pub"
    path.write_bytes(_pem(x25519.X25519PrivateKey.generate().public_key()))
    with pytest.raises(KeyFileError) as info:
        load_public_key(path)
    assert str(info.value) == f"{path}: holds a X25519 key, expected ed25519"


def test_a_key_class_named_with_underscores_is_named_without_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """cryptography 41 (still supported) names its OpenSSL classes ``_EllipticCurvePublicKey`` and so on."""
    path = tmp_path / "ec.pub"
    path.write_bytes(_pem(OTHER.public_key()))
    backend_class = type("_EllipticCurvePublicKey", (), {})
    monkeypatch.setattr(signing.serialization, "load_pem_public_key", lambda data: backend_class())
    with pytest.raises(KeyFileError) as info:
        load_public_key(path)
    assert str(info.value) == f"{path}: holds a EllipticCurve key, expected ed25519"


@pytest.mark.parametrize("loader", [load_private_key, load_public_key], ids=["private", "public"])
def test_a_directory_given_as_key_file_is_refused_with_the_reason(tmp_path: Path, loader: Any) -> None:
    with pytest.raises(KeyFileError) as info:
        loader(tmp_path)
    assert str(info.value) == f"{tmp_path}: cannot read key file: Is a directory"


@pytest.mark.parametrize("loader", [load_private_key, load_public_key], ids=["private", "public"])
def test_a_missing_key_file_is_named(tmp_path: Path, loader: Any) -> None:
    with pytest.raises(KeyFileError) as info:
        loader(tmp_path / "nowhere.pem")
    assert str(info.value) == f"{tmp_path / 'nowhere.pem'}: no such key file"


@pytest.mark.parametrize(
    "loader, key, what",
    [(load_private_key, SIGNER, "private"), (load_public_key, SIGNER.public_key(), "public")],
    ids=["private", "public"],
)
def test_a_key_file_is_read_up_to_64_kib_only(tmp_path: Path, loader: Any, key: Any, what: str) -> None:
    """A key path pointing at a huge file (or /dev/zero) must not be read whole: the key is in the first 64 KiB."""
    path = tmp_path / "padded.pem"
    path.write_bytes(b"\n" * (1 << 16) + _pem(key))
    with pytest.raises(KeyFileError) as info:
        loader(path)
    assert str(info.value) == f"{path}: not a PEM {what} key"
    path.write_bytes(b"\n" * ((1 << 16) - len(_pem(key))) + _pem(key))
    assert key_id(loader(path) if what == "public" else loader(path).public_key()) == key_id(SIGNER.public_key())


# --- key generation -------------------------------------------------------------------------


def test_keygen_names_the_files_signing_by_default(tmp_path: Path) -> None:
    key_path, pub_path = generate_keypair(tmp_path)
    assert (key_path, pub_path) == (tmp_path / "signing.key", tmp_path / "signing.pub")
    assert isinstance(load_public_key(pub_path), Ed25519PublicKey)
    assert key_id(load_private_key(key_path).public_key()) == key_id(load_public_key(pub_path))


def test_keygen_creates_missing_folders_private_and_the_public_key_readable(
    tmp_path: Path, umask_022: None
) -> None:
    folder = tmp_path / "a" / "b" / "keys"
    key_path, pub_path = generate_keypair(folder)
    assert stat.S_IMODE(os.stat(folder).st_mode) == 0o700
    assert stat.S_IMODE(os.stat(key_path).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(pub_path).st_mode) == 0o644


@pytest.mark.parametrize("name", ["", "a/b", ".hidden", "../up"])
def test_keygen_refuses_a_name_that_is_not_a_plain_file_name(tmp_path: Path, name: str) -> None:
    with pytest.raises(KeyFileError) as info:
        generate_keypair(tmp_path / "keys", name=name)
    assert str(info.value) == f"invalid key name {name!r}: expected a plain file name"
    assert not (tmp_path / "keys").exists()


def test_keygen_reports_a_folder_it_cannot_create(tmp_path: Path) -> None:
    (tmp_path / "file").write_bytes(b"")
    folder = tmp_path / "file" / "keys"
    with pytest.raises(KeyFileError) as info:
        generate_keypair(folder)
    assert str(info.value) == f"{folder}: cannot create directory: Not a directory"


def test_keygen_reports_a_key_it_cannot_write(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def disk_full(fd: int, data: Any) -> int:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    with monkeypatch.context() as patch:
        patch.setattr(os, "write", disk_full)
        with pytest.raises(KeyFileError) as info:
            generate_keypair(tmp_path)
    assert str(info.value) == f"{tmp_path / 'signing.key'}: cannot write: No space left on device"
    assert sorted(os.listdir(tmp_path)) == []

