"""Bundle format: manifest schema, ed25519 signing, verification order, writer."""

from __future__ import annotations

import json
import os
import shutil
import stat
from pathlib import Path
from typing import Any, Callable, Dict, List, Tuple

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from edge_runtime.bundle import (
    Artifact,
    ArtifactSpec,
    Manifest,
    TargetInfo,
    TensorSpec,
    finalize_bundle,
    generate_keypair,
    key_id,
    load_private_key,
    load_public_key,
    sha256_file,
    sign_manifest,
    verify_bundle,
    verify_manifest_signature,
)
from edge_runtime.bundle.verify import list_bundle_entries
from edge_runtime.errors import (
    BundleError,
    IntegrityError,
    KeyFileError,
    ManifestError,
    SignatureError,
)

SOURCE_SHA = "ab" * 32
# Every file of the bundle built by `make_bundle`; `test_bundle_files_are_all_listed` keeps it so.
ARTIFACT_FILES = {
    "model.onnx": b"onnx-bytes " * 50,
    "engines/orin-nano.plan": b"\x00\x01plan" * 300,
    "calib/orin-nano.cache": b"TRT-8601-EntropyCalibration2\n",
    "report.json": b'{"top1": 0.98}\n',
}
BUNDLE_FILES = ["manifest.json", "manifest.sig", *sorted(ARTIFACT_FILES)]


def make_bundle(root: Path, private_key: Ed25519PrivateKey) -> Manifest:
    """Write the artifacts of a small two-target bundle into ``root`` and finalize it."""
    for relative, content in ARTIFACT_FILES.items():
        (root / relative).parent.mkdir(parents=True, exist_ok=True)
        (root / relative).write_bytes(content)
    return finalize_bundle(
        root,
        name="digits",
        version="1.2.0",
        inputs=[TensorSpec("input", "float32", (-1, 1, 28, 28))],
        outputs=[TensorSpec("logits", "float32", (-1, 10))],
        source_model_sha256=SOURCE_SHA,
        artifacts=[
            ArtifactSpec("model.onnx", "onnx", precision="fp32"),
            ArtifactSpec("engines/orin-nano.plan", "engine", "orin-nano", "int8"),
            ArtifactSpec("calib/orin-nano.cache", "calib", "orin-nano"),
            ArtifactSpec("report.json", "report"),
        ],
        targets=[
            TargetInfo("orin-nano", "jetson-orin-nano", "tensorrt", "int8", "8.7", "8.6.2",
                       "6.0", "36.3.0"),
            TargetInfo("x86-cpu", "x86-64", "onnxruntime", "fp32"),
        ],
        private_key=private_key,
        metadata={"labels": ("zero", "one")},
        created="2024-05-01T12:00:00Z",
    )


@pytest.fixture(scope="module")
def private_key(keypair: Tuple[Path, Path]) -> Ed25519PrivateKey:
    return load_private_key(keypair[0])


@pytest.fixture
def trusted(keypair: Tuple[Path, Path]) -> List[Any]:
    return [load_public_key(keypair[1])]


@pytest.fixture
def bundle(tmp_path: Path, private_key: Ed25519PrivateKey) -> Path:
    root = tmp_path / "bundle"
    root.mkdir()
    make_bundle(root, private_key)
    return root


def resign(root: Path, document: Dict[str, Any], key: Ed25519PrivateKey) -> None:
    """Replace the manifest with ``document`` and sign it with ``key`` (the attacker's tool)."""
    data = json.dumps(document).encode()
    (root / "manifest.json").write_bytes(data)
    (root / "manifest.sig").write_bytes(sign_manifest(data, key))


# --- round trip and tampering ---------------------------------------------------------------


def test_round_trip_sign_and_verify(bundle: Path, trusted: List[Any]) -> None:
    manifest = verify_bundle(bundle, trusted)
    assert manifest.name == "digits" and manifest.version == "1.2.0"
    assert manifest.metadata == {"labels": ["zero", "one"]}
    assert [a.path for a in manifest.artifacts_of("engine", "orin-nano")] == [
        "engines/orin-nano.plan"
    ]
    model = manifest.artifacts_of("onnx")[0]
    assert model.size == len(ARTIFACT_FILES["model.onnx"])
    assert model.sha256 == sha256_file(bundle / "model.onnx")
    assert Manifest.from_json((bundle / "manifest.json").read_bytes()) == manifest


def test_bundle_files_are_all_listed(bundle: Path) -> None:
    assert sorted(list_bundle_entries(bundle)) == sorted(BUNDLE_FILES)


@pytest.mark.parametrize("where", ["first", "middle", "last"])
@pytest.mark.parametrize("relative", BUNDLE_FILES)
def test_flipping_any_byte_of_any_file_is_refused(
    bundle: Path, trusted: List[Any], relative: str, where: str
) -> None:
    path = bundle / relative
    data = bytearray(path.read_bytes())
    index = {"first": 0, "middle": len(data) // 2, "last": len(data) - 1}[where]
    data[index] ^= 0x01
    path.write_bytes(bytes(data))
    if relative.startswith("manifest."):
        with pytest.raises(SignatureError, match=r"manifest\.sig"):
            verify_bundle(bundle, trusted)
    else:
        with pytest.raises(IntegrityError, match=f"{relative}: sha256 mismatch"):
            verify_bundle(bundle, trusted)


@pytest.mark.parametrize(
    "edit",
    [lambda data: data + b"\n", lambda data: data + b"\n\n", lambda data: data.rstrip(b"\n")],
    ids=["one-more-newline", "two-more-newlines", "newline-removed"],
)
def test_a_manifest_with_its_trailing_newlines_changed_is_refused(
    bundle: Path, trusted: List[Any], edit: Callable[[bytes], bytes]
) -> None:
    # The signature covers the exact bytes: whitespace at the end is not "the same manifest".
    path = bundle / "manifest.json"
    original = path.read_bytes()
    assert original.endswith(b"}\n")
    path.write_bytes(edit(original))
    with pytest.raises(SignatureError, match=r"manifest\.sig: the signature does not match manifest\.json"):
        verify_bundle(bundle, trusted)


@pytest.mark.parametrize(("signed", "checked"), [(b"content", b"content\n"), (b"content\n", b"content")])
def test_the_signature_covers_the_exact_bytes(
    private_key: Any, trusted: List[Any], signed: bytes, checked: bytes
) -> None:
    with pytest.raises(SignatureError, match="does not match"):
        verify_manifest_signature(checked, sign_manifest(signed, private_key), trusted)


def test_wrong_key_is_not_trusted(bundle: Path, tmp_path: Path, private_key: Any) -> None:
    _, other_pub = generate_keypair(tmp_path / "other")
    signer = key_id(private_key.public_key())
    with pytest.raises(SignatureError, match=f"signed by key {signer}, which is not trusted"):
        verify_bundle(bundle, [load_public_key(other_pub)])


def test_no_trusted_keys_is_refused(bundle: Path) -> None:
    with pytest.raises(SignatureError, match="no trusted public keys"):
        verify_bundle(bundle, [])


def test_missing_signature(bundle: Path, trusted: List[Any]) -> None:
    (bundle / "manifest.sig").unlink()
    with pytest.raises(SignatureError, match=r"no manifest\.sig"):
        verify_bundle(bundle, trusted)


def test_missing_manifest(bundle: Path, trusted: List[Any]) -> None:
    (bundle / "manifest.json").unlink()
    with pytest.raises(IntegrityError, match=r"no manifest\.json"):
        verify_bundle(bundle, trusted)


def test_deleted_artifact(bundle: Path, trusted: List[Any]) -> None:
    (bundle / "engines/orin-nano.plan").unlink()
    with pytest.raises(IntegrityError) as info:
        verify_bundle(bundle, trusted)
    # The message names the bundle, then the file in it.
    assert str(info.value) == f"{bundle}: engines/orin-nano.plan: listed in the manifest but missing"


def test_grown_artifact_reports_size(bundle: Path, trusted: List[Any]) -> None:
    with open(bundle / "report.json", "ab") as handle:
        handle.write(b" ")
    with pytest.raises(IntegrityError, match=r"report\.json: size is"):
        verify_bundle(bundle, trusted)


@pytest.mark.parametrize("extra", ["notes.txt", "engines/other.plan", ".hidden"])
def test_extra_unlisted_file(bundle: Path, trusted: List[Any], extra: str) -> None:
    (bundle / extra).write_bytes(b"x")
    with pytest.raises(IntegrityError, match=f"{extra}: unlisted file"):
        verify_bundle(bundle, trusted)


def test_symlinked_artifact(bundle: Path, tmp_path: Path, trusted: List[Any]) -> None:
    # Same content outside the bundle: only the link itself can be the reason to refuse.
    outside = tmp_path / "model.onnx"
    shutil.move(str(bundle / "model.onnx"), str(outside))
    (bundle / "model.onnx").symlink_to(outside)
    with pytest.raises(IntegrityError, match=r"bundle: model\.onnx is a symbolic link"):
        verify_bundle(bundle, trusted)


def test_symlinked_artifact_folder(bundle: Path, tmp_path: Path, trusted: List[Any]) -> None:
    shutil.move(str(bundle / "engines"), str(tmp_path / "engines"))
    (bundle / "engines").symlink_to(tmp_path / "engines", target_is_directory=True)
    with pytest.raises(IntegrityError, match=r"bundle: engines is a symbolic link"):
        verify_bundle(bundle, trusted)


def test_not_a_directory(tmp_path: Path, trusted: List[Any]) -> None:
    (tmp_path / "bundle.tar").write_bytes(b"")
    with pytest.raises(BundleError, match=r"bundle\.tar: is not a directory"):
        verify_bundle(tmp_path / "bundle.tar", trusted)


@pytest.mark.parametrize("bad_path", ["../outside.onnx", "/etc/hostname", "a/../../x"])
def test_escaping_path_signed_with_the_right_key(
    bundle: Path, trusted: List[Any], private_key: Any, bad_path: str
) -> None:
    document = json.loads((bundle / "manifest.json").read_bytes())
    document["artifacts"][0]["path"] = bad_path
    resign(bundle, document, private_key)
    with pytest.raises(ManifestError, match=r"artifacts\[0\]\.path: .*(inside|absolute)"):
        verify_bundle(bundle, trusted)


# --- the signature is checked before the manifest is parsed (DESIGN rule 6) ------------------


def test_untrusted_garbage_is_a_signature_error_not_a_parse_error(
    bundle: Path, trusted: List[Any]
) -> None:
    attacker = Ed25519PrivateKey.generate()
    garbage = b"\xff{ not json"
    (bundle / "manifest.json").write_bytes(garbage)
    (bundle / "manifest.sig").write_bytes(sign_manifest(garbage, attacker))
    with pytest.raises(SignatureError, match="which is not trusted"):
        verify_bundle(bundle, trusted)


def test_trusted_garbage_reaches_the_parser(
    bundle: Path, trusted: List[Any], private_key: Any
) -> None:
    garbage = b"{ not json"
    (bundle / "manifest.json").write_bytes(garbage)
    (bundle / "manifest.sig").write_bytes(sign_manifest(garbage, private_key))
    with pytest.raises(ManifestError, match="not valid JSON"):
        verify_bundle(bundle, trusted)


def test_parser_never_runs_on_a_bad_signature(
    bundle: Path, trusted: List[Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: List[bytes] = []
    monkeypatch.setattr(Manifest, "from_json", classmethod(lambda cls, data: calls.append(data)))
    manifest_path = bundle / "manifest.json"
    manifest_path.write_bytes(manifest_path.read_bytes().replace(b"1.2.0", b"1.2.1"))
    with pytest.raises(SignatureError, match="does not match"):
        verify_bundle(bundle, trusted)
    assert calls == []


# --- signature file and keys ----------------------------------------------------------------


@pytest.mark.parametrize(
    "sig, message",
    [
        (b"", "not JSON"),
        (b"[]", "expected an object"),
        (b'{"algorithm": "ed25519", "keyid": "00"}', "expected an object"),
        (b'{"algorithm": "rsa", "keyid": "0011223344556677", "signature": ""}', "algorithm"),
        (b'{"algorithm": "ed25519", "keyid": "XYZ", "signature": ""}', "keyid"),
        (b'{"algorithm": "ed25519", "keyid": "0011223344556677", "signature": "!!"}', "base64"),
        (b'{"algorithm": "ed25519", "keyid": "0011223344556677", "signature": "AAAA"}', "3 bytes"),
    ],
    ids=["empty", "list", "missing-key", "algorithm", "keyid", "not-base64", "short"],
)
def test_malformed_signature_file(trusted: List[Any], sig: bytes, message: str) -> None:
    with pytest.raises(SignatureError, match=message):
        verify_manifest_signature(b"{}", sig, trusted)


def test_verify_returns_the_key_id(private_key: Any, trusted: List[Any]) -> None:
    sig = sign_manifest(b"content", private_key)
    assert verify_manifest_signature(b"content", sig, trusted) == key_id(trusted[0])
    assert json.loads(sig)["keyid"] == key_id(trusted[0])


def test_keygen_writes_0600_and_refuses_to_overwrite(tmp_path: Path) -> None:
    key_path, pub_path = generate_keypair(tmp_path / "keys", name="release")
    assert (key_path.name, pub_path.name) == ("release.key", "release.pub")
    assert stat.S_IMODE(os.stat(key_path).st_mode) == 0o600
    assert key_path.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")
    assert pub_path.read_bytes().startswith(b"-----BEGIN PUBLIC KEY-----")
    before = key_path.read_bytes()
    with pytest.raises(KeyFileError, match=r"release\.key: already exists"):
        generate_keypair(tmp_path / "keys", name="release")
    assert key_path.read_bytes() == before
    key_path.unlink()
    with pytest.raises(KeyFileError, match=r"release\.pub: already exists"):
        generate_keypair(tmp_path / "keys", name="release")
    assert not key_path.exists()


def test_key_id_is_a_prefix_of_the_raw_key_hash(keypair: Tuple[Path, Path]) -> None:
    import hashlib

    public = load_public_key(keypair[1])
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    assert key_id(public) == hashlib.sha256(raw).hexdigest()[:16]
    assert key_id(load_private_key(keypair[0]).public_key()) == key_id(public)


def _ec_key_pem() -> bytes:
    return ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


@pytest.mark.parametrize(
    "loader, content, message",
    [
        (load_private_key, None, "no such key file"),
        (load_private_key, b"hello", "not a PEM private key"),
        (load_private_key, _ec_key_pem(), "expected ed25519"),
        (load_public_key, None, "no such key file"),
        (load_public_key, b"hello", "not a PEM public key"),
        (load_public_key, _ec_key_pem(), "holds a private key"),
    ],
    ids=["private-missing", "private-not-pem", "private-ec", "public-missing",
         "public-not-pem", "public-given-private"],
)
def test_bad_key_files(
    tmp_path: Path, loader: Callable[[Path], Any], content: Any, message: str
) -> None:
    path = tmp_path / "key.pem"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(KeyFileError, match=message):
        loader(path)


# --- manifest schema ------------------------------------------------------------------------


def _set(path: str, value: Any) -> Callable[[Dict[str, Any]], None]:
    def mutate(document: Dict[str, Any]) -> None:
        *parents, last = path.split(".")
        node: Any = document
        for part in parents:
            node = node[int(part)] if part.isdigit() else node[part]
        node[int(last) if last.isdigit() else last] = value

    return mutate


def _drop(key: str) -> Callable[[Dict[str, Any]], None]:
    return lambda document: document.pop(key)


def _duplicate_path(document: Dict[str, Any]) -> None:
    document["artifacts"].append(dict(document["artifacts"][0]))


@pytest.mark.parametrize(
    "mutate, message",
    [
        pytest.param(_set("surprise", 1), "unknown key", id="unknown-key"),
        pytest.param(_drop("created"), "missing key.* created", id="missing-key"),
        pytest.param(
            _set("artifacts.0.size", True),
            r"artifacts\[0\]\.size: expected an int",
            id="bool-as-int",
        ),
        pytest.param(_set("artifacts.0.size", "12"), r"artifacts\[0\]\.size", id="str-as-int"),
        pytest.param(
            _set("artifacts.0.kind", "weights"),
            r"artifacts\[0\]\.kind: expected one of",
            id="bad-kind",
        ),
        pytest.param(_set("artifacts.0.sha256", "AB" * 32), "lowercase hex", id="uppercase-sha"),
        pytest.param(
            _set("artifacts.1.target", "xavier-nx"),
            r"'xavier-nx' is not one of the targets",
            id="unknown-target",
        ),
        pytest.param(
            _set("artifacts.2.target", None),
            r"artifacts\[2\]\.target: required",
            id="calib-without-target",
        ),
        pytest.param(
            _duplicate_path,
            r"artifacts\[4\]\.path: 'model.onnx' is listed twice",
            id="duplicate-path",
        ),
        pytest.param(_set("artifacts.0.path", "manifest.sig"), "reserved", id="reserved-path"),
        pytest.param(
            _set("artifacts.0.path", "engines//x.plan"),
            "inside the bundle",
            id="empty-segment",
        ),
        pytest.param(_set("format_version", 2), "unsupported version 2", id="format-version"),
        pytest.param(_set("inputs", []), "inputs: expected at least one", id="no-inputs"),
        pytest.param(_set("inputs.0.dtype", "float"), r"inputs\[0\]\.dtype", id="bad-dtype"),
        pytest.param(_set("inputs.0.shape", [1, 0]), r"inputs\[0\]\.shape\[1\]", id="zero-dim"),
        pytest.param(
            _set("targets.0.backend", "tflite"),
            r"targets\[0\]\.backend",
            id="bad-backend",
        ),
        pytest.param(_set("targets.0.dla_core", -1), r"targets\[0\]\.dla_core", id="negative-dla"),
        pytest.param(_set("name", "../digits"), "name: '../digits' must be", id="unsafe-name"),
        pytest.param(
            _set("created", "2024-13-01T00:00:00Z"),
            "created: expected an ISO-8601 UTC time",
            id="bad-date",
        ),
        pytest.param(_set("created", "2024-05-01T12:00:00+02:00"), "created", id="not-utc"),
        pytest.param(_set("metadata", []), "metadata: expected an object", id="metadata-list"),
        pytest.param(_set("artifacts", {}), "artifacts: expected a list", id="artifacts-object"),
    ],
)
def test_strict_manifest_parsing(
    bundle: Path, mutate: Callable[[Dict[str, Any]], None], message: str
) -> None:
    document = json.loads((bundle / "manifest.json").read_bytes())
    mutate(document)
    with pytest.raises(ManifestError, match=f"^manifest.json: .*{message}"):
        Manifest.from_json(json.dumps(document).encode())


@pytest.mark.parametrize(
    "raw, message",
    [
        (b'{"name": "a", "name": "b"}', "duplicate key 'name'"),
        (b'{"x": NaN}', "NaN is not valid JSON"),
        (b"\xff\xfe", "not UTF-8"),
        (b"[1]", "top level: expected an object"),
    ],
)
def test_manifest_json_level_errors(raw: bytes, message: str) -> None:
    with pytest.raises(ManifestError, match=message):
        Manifest.from_json(raw)


def test_manifest_json_is_canonical(bundle: Path) -> None:
    raw = (bundle / "manifest.json").read_bytes()
    manifest = Manifest.from_json(raw)
    assert manifest.to_json() == raw
    assert raw.endswith(b"}\n")
    assert raw == (json.dumps(json.loads(raw), sort_keys=True, indent=2) + "\n").encode()


def test_artifacts_of_rejects_unknown_kind(bundle: Path) -> None:
    manifest = Manifest.from_json((bundle / "manifest.json").read_bytes())
    assert [a.kind for a in manifest.artifacts_of("calib")] == ["calib"]
    assert manifest.artifacts_of("engine", "x86-cpu") == []
    with pytest.raises(ValueError, match="unknown artifact kind 'engines'"):
        manifest.artifacts_of("engines")


def test_onnx_external_data_is_its_own_kind_within_format_1(tmp_path: Path, private_key: Any) -> None:
    (tmp_path / "weights.bin").write_bytes(b"\x00" * 16)
    (tmp_path / "model.onnx").write_bytes(b"m")
    manifest = _finalize(tmp_path, private_key, [ArtifactSpec("weights.bin", "onnx_data"),
                                                 ArtifactSpec("model.onnx", "onnx")])
    assert manifest.format_version == 1
    assert [a.path for a in manifest.artifacts_of("onnx")] == ["model.onnx"]  # weights are never a model
    assert [a.path for a in manifest.artifacts_of("onnx_data")] == ["weights.bin"]
    assert verify_bundle(tmp_path, [private_key.public_key()]) == manifest


def test_dataclasses_validate_on_construction() -> None:
    with pytest.raises(ManifestError, match="path: '/abs' is absolute"):
        Artifact("/abs", "0" * 64, 1, "onnx")
    assert TensorSpec("x", "uint8", [1, 2]).shape == (1, 2)  # type: ignore[arg-type]


# --- writer ---------------------------------------------------------------------------------


def _finalize(root: Path, key: Any, artifacts: List[ArtifactSpec]) -> Manifest:
    return finalize_bundle(
        root,
        name="m",
        version="1",
        inputs=[TensorSpec("x", "float32", (1,))],
        outputs=[TensorSpec("y", "float32", (1,))],
        source_model_sha256=SOURCE_SHA,
        artifacts=artifacts,
        targets=[],
        private_key=key,
    )


def test_writer_refuses_unlisted_files(tmp_path: Path, private_key: Any) -> None:
    (tmp_path / "model.onnx").write_bytes(b"m")
    (tmp_path / "debug.log").write_bytes(b"d")
    with pytest.raises(IntegrityError, match=r"debug\.log: unlisted file in the staging"):
        _finalize(tmp_path, private_key, [ArtifactSpec("model.onnx", "onnx")])
    assert not (tmp_path / "manifest.json").exists()


def test_writer_refuses_missing_and_linked_files(tmp_path: Path, private_key: Any) -> None:
    stage = tmp_path / "stage"
    stage.mkdir()
    with pytest.raises(IntegrityError, match=r"model\.onnx: listed as an artifact but missing"):
        _finalize(stage, private_key, [ArtifactSpec("model.onnx", "onnx")])
    (tmp_path / "real.onnx").write_bytes(b"m")
    (stage / "model.onnx").symlink_to(tmp_path / "real.onnx")
    with pytest.raises(IntegrityError, match=r"model\.onnx: not a regular file"):
        _finalize(stage, private_key, [ArtifactSpec("model.onnx", "onnx")])


def test_writer_checks_paths_before_reading_files(tmp_path: Path, private_key: Any) -> None:
    stage = tmp_path / "stage"
    stage.mkdir()
    (tmp_path / "secret").write_bytes(b"s")
    with pytest.raises(ManifestError, match=r"artifacts\[0\]\.path: '../secret'"):
        _finalize(stage, private_key, [ArtifactSpec("../secret", "onnx")])
    with pytest.raises(ManifestError, match=r"artifacts\[0\]\.kind"):
        _finalize(stage, private_key, [ArtifactSpec("secret", "weights")])


def test_writer_default_created_is_utc(tmp_path: Path, private_key: Any) -> None:
    (tmp_path / "model.onnx").write_bytes(b"m")
    manifest = _finalize(tmp_path, private_key, [ArtifactSpec("model.onnx", "onnx")])
    assert manifest.created.endswith("Z") and len(manifest.created) == 20
    assert verify_bundle(tmp_path, [private_key.public_key()]) == manifest


# --- files that are not regular files: no open may block (issue 13) -------------------------


def _verify_within(root: Path, trusted: List[Any], seconds: float = 10.0) -> BaseException:
    """Run verify_bundle in a daemon thread; fail (not hang) if it is still blocked after ``seconds``."""
    import threading

    outcome: List[BaseException] = []

    def run() -> None:
        try:
            verify_bundle(root, trusted)
        except BaseException as exc:
            outcome.append(exc)

    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    worker.join(seconds)
    assert not worker.is_alive(), "verify_bundle blocked opening a special file"
    assert outcome, "a special file was accepted"
    return outcome[0]


@pytest.mark.parametrize("name", ["manifest.sig", "manifest.json", "model.onnx"])
def test_fifo_in_place_of_a_file_is_refused_without_blocking(
    bundle: Path, trusted: List[Any], name: str
) -> None:
    (bundle / name).unlink()
    os.mkfifo(bundle / name)
    error = _verify_within(bundle, trusted)
    assert isinstance(error, BundleError)
    assert f"{name}: not a regular file (a FIFO)" in str(error)


def test_socket_in_place_of_an_artifact_is_refused(bundle: Path, trusted: List[Any]) -> None:
    import socket

    (bundle / "report.json").unlink()
    # AF_UNIX paths are short: bind through a relative name from inside the bundle
    here = os.getcwd()
    os.chdir(bundle)
    sock = socket.socket(socket.AF_UNIX)
    try:
        sock.bind("report.json")
    finally:
        os.chdir(here)
    try:
        error = _verify_within(bundle, trusted)
    finally:
        sock.close()
    assert isinstance(error, IntegrityError) and "report.json: not a regular file (a socket)" in str(error)


def test_device_file_in_place_of_the_signature_is_never_opened(
    bundle: Path, trusted: List[Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    (bundle / "manifest.sig").unlink()
    os.symlink("/dev/zero", bundle / "manifest.sig")  # a link is refused before any open, too
    opened: List[str] = []
    real_open = os.open
    monkeypatch.setattr(os, "open", lambda path, *a, **k: opened.append(str(path)) or real_open(path, *a, **k))
    error = _verify_within(bundle, trusted)
    assert isinstance(error, SignatureError) and "symbolic link" in str(error)
    assert not any(path.endswith("manifest.sig") for path in opened)


def test_read_verified_returns_the_hashed_bytes(bundle: Path, trusted: List[Any]) -> None:
    from edge_runtime.bundle.verify import open_bundle

    verified = open_bundle(bundle, trusted)
    artifact = next(a for a in verified.manifest.artifacts if a.path == "model.onnx")
    assert verified.read_verified(artifact) == ARTIFACT_FILES["model.onnx"]


def test_read_verified_refuses_a_file_swapped_after_verification(bundle: Path, trusted: List[Any]) -> None:
    from edge_runtime.bundle.verify import open_bundle

    verified = open_bundle(bundle, trusted)
    artifact = next(a for a in verified.manifest.artifacts if a.path == "model.onnx")
    swapped = bytearray(ARTIFACT_FILES["model.onnx"])
    swapped[0] ^= 0xFF  # same size, other bytes
    (bundle / "model.onnx.new").write_bytes(bytes(swapped))
    os.replace(bundle / "model.onnx.new", bundle / "model.onnx")
    with pytest.raises(IntegrityError, match=r"model\.onnx: sha256 mismatch"):
        verified.read_verified(artifact)


def test_model_files_are_hashed_once_when_read_for_loading(bundle: Path, trusted: List[Any]) -> None:
    """open_bundle leaves the model's hash to read_verified (one pass); verify_bundle hashes everything."""
    from edge_runtime.bundle.verify import open_bundle

    corrupted = bytearray(ARTIFACT_FILES["model.onnx"])
    corrupted[-1] ^= 0xFF  # same size: only the hash tells
    (bundle / "model.onnx").write_bytes(bytes(corrupted))
    with pytest.raises(IntegrityError, match=r"model\.onnx: sha256 mismatch"):
        verify_bundle(bundle, trusted)  # edge-runtime check, the fleet agent
    verified = open_bundle(bundle, trusted)  # signature, listing, types and sizes held
    artifact = next(a for a in verified.manifest.artifacts if a.path == "model.onnx")
    with pytest.raises(IntegrityError, match=r"model\.onnx: sha256 mismatch"):
        verified.read_verified(artifact)  # before anything parses it
    (bundle / "model.onnx").write_bytes(bytes(corrupted[:-1]))
    with pytest.raises(IntegrityError, match=r"model\.onnx: size is"):
        open_bundle(bundle, trusted)  # sizes are still checked up front
