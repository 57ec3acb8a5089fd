"""finalize_bundle: what it writes into the manifest, and the whole one-line refusals an exporter reads."""

from __future__ import annotations

import os
import re
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator, List, Optional

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from edge_runtime.bundle import ArtifactSpec, Manifest, TargetInfo, TensorSpec, finalize_bundle, verify_bundle
from edge_runtime.errors import IntegrityError, ManifestError

SHA = "ab" * 32


@pytest.fixture(scope="module")
def key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


def finalize(root: Path, key: Ed25519PrivateKey, artifacts: List[ArtifactSpec], **changes: Any) -> Manifest:
    values: Any = dict(
        name="m",
        version="1",
        inputs=[TensorSpec("x", "float32", (1,))],
        outputs=[TensorSpec("y", "float32", (1,))],
        source_model_sha256=SHA,
        artifacts=artifacts,
        targets=[TargetInfo("orin", "jetson-orin-nano", "tensorrt", "int8")],
        private_key=key,
    )
    values.update(changes)
    return finalize_bundle(root, **values)


def message_of(error: pytest.ExceptionInfo[BaseException]) -> str:
    return str(error.value)


def test_the_manifest_lists_each_file_with_its_kind_target_precision_and_size(
    tmp_path: Path, key: Ed25519PrivateKey
) -> None:
    (tmp_path / "model.onnx").write_bytes(b"onnx")
    (tmp_path / "orin.plan").write_bytes(b"plan-bytes")
    manifest = finalize(tmp_path, key, [
        ArtifactSpec("model.onnx", "onnx", precision="fp16"),
        ArtifactSpec("orin.plan", "engine", "orin", "int8"),
    ], created="2024-05-01T12:00:00Z", metadata={"labels": ("zero", "one")})
    described = [(a.path, a.kind, a.target, a.precision, a.size) for a in manifest.artifacts]
    assert described == [("model.onnx", "onnx", None, "fp16", 4), ("orin.plan", "engine", "orin", "int8", 10)]
    assert manifest.created == "2024-05-01T12:00:00Z"
    assert manifest.metadata == {"labels": ["zero", "one"]}
    assert verify_bundle(tmp_path, [key.public_key()]) == manifest


@pytest.fixture
def tz_east_of_utc() -> Iterator[None]:
    """Local time five hours and a half ahead of UTC, so a local clock read shows in the result."""
    if not hasattr(time, "tzset"):
        pytest.skip("time.tzset is POSIX only")
    before = os.environ.get("TZ")
    os.environ["TZ"] = "IST-5:30"
    time.tzset()
    try:
        yield
    finally:
        if before is None:
            del os.environ["TZ"]
        else:
            os.environ["TZ"] = before
        time.tzset()


def test_the_default_created_time_is_utc_even_on_a_host_in_another_zone(
    tmp_path: Path, key: Ed25519PrivateKey, tz_east_of_utc: None
) -> None:
    (tmp_path / "model.onnx").write_bytes(b"m")
    before = datetime.now(timezone.utc).replace(microsecond=0)
    manifest = finalize(tmp_path, key, [ArtifactSpec("model.onnx", "onnx")])
    after = datetime.now(timezone.utc)
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", manifest.created)
    created = datetime.strptime(manifest.created, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=timezone.utc)
    assert before <= created <= after


def test_staging_dir_that_is_not_a_directory(tmp_path: Path, key: Ed25519PrivateKey) -> None:
    with pytest.raises(IntegrityError) as error:
        finalize(tmp_path / "missing", key, [])
    assert message_of(error) == f"{tmp_path / 'missing'}: not a directory; expected the bundle's staging directory"


@pytest.mark.parametrize(
    "spec, message",
    [
        (ArtifactSpec("../secret", "onnx"),
         "artifacts[1].path: '../secret' must stay inside the bundle (no '..', '.' or empty segments, "
         "no trailing '/')"),
        (ArtifactSpec("secret", "weights"),
         "artifacts[1].kind: expected one of onnx, onnx_data, engine, calib, report, got 'weights'"),
        (ArtifactSpec("secret", "engine"), "artifacts[1].target: required for an artifact of kind 'engine'"),
        (ArtifactSpec("secret", "onnx", precision="fp64"),
         "artifacts[1].precision: expected one of fp32, fp16, int8, got 'fp64'"),
    ],
    ids=["path", "kind", "target", "precision"],
)
def test_a_bad_spec_is_refused_before_any_file_is_read(
    tmp_path: Path, key: Ed25519PrivateKey, spec: ArtifactSpec, message: str
) -> None:
    stage = tmp_path / "stage"
    stage.mkdir()
    (stage / "model.onnx").write_bytes(b"m")
    # "secret" is not in the staging directory: a file check first would raise IntegrityError instead
    with pytest.raises(ManifestError) as error:
        finalize(stage, key, [ArtifactSpec("model.onnx", "onnx"), spec])
    assert message_of(error) == message
    assert not (stage / "manifest.json").exists()


def test_a_path_listed_twice_is_refused_naming_both(tmp_path: Path, key: Ed25519PrivateKey) -> None:
    (tmp_path / "model.onnx").write_bytes(b"m")
    (tmp_path / "report.json").write_bytes(b"{}")
    specs = [ArtifactSpec("report.json", "report"), ArtifactSpec("model.onnx", "onnx"),
             ArtifactSpec("model.onnx", "onnx")]
    with pytest.raises(ManifestError) as error:
        finalize(tmp_path, key, specs)
    assert message_of(error) == "artifacts[2].path: 'model.onnx' is listed twice (also artifacts[1])"


def test_an_unlisted_file_is_refused_whole(tmp_path: Path, key: Ed25519PrivateKey) -> None:
    (tmp_path / "model.onnx").write_bytes(b"m")
    (tmp_path / "debug.log").write_bytes(b"d")
    with pytest.raises(IntegrityError) as error:
        finalize(tmp_path, key, [ArtifactSpec("model.onnx", "onnx")])
    assert message_of(error) == (
        f"{tmp_path / 'debug.log'}: unlisted file in the staging directory; "
        "a bundle must not ship files its manifest does not list"
    )


def test_a_listed_file_that_is_missing_is_refused_whole(tmp_path: Path, key: Ed25519PrivateKey) -> None:
    with pytest.raises(IntegrityError) as error:
        finalize(tmp_path, key, [ArtifactSpec("model.onnx", "onnx")])
    assert message_of(error) == f"{tmp_path / 'model.onnx'}: listed as an artifact but missing"


def test_a_listed_directory_is_refused_as_not_a_regular_file(tmp_path: Path, key: Ed25519PrivateKey) -> None:
    (tmp_path / "model.onnx").mkdir()
    with pytest.raises(IntegrityError) as error:
        finalize(tmp_path, key, [ArtifactSpec("model.onnx", "onnx")])
    assert message_of(error) == f"{tmp_path / 'model.onnx'}: not a regular file; a bundle holds regular files only"


@pytest.mark.parametrize(
    "metadata, message",
    [
        ({"scale": float("nan")}, r"Out of range float values are not JSON compliant(: nan)?"),
        ({"labels": {"zero"}}, r"Object of type set is not JSON serializable"),
    ],
    ids=["nan", "set"],
)
def test_metadata_that_is_not_json_is_refused_whole(
    tmp_path: Path, key: Ed25519PrivateKey, metadata: Optional[Any], message: str
) -> None:
    (tmp_path / "model.onnx").write_bytes(b"m")
    with pytest.raises(ManifestError) as error:
        finalize(tmp_path, key, [ArtifactSpec("model.onnx", "onnx")], metadata=metadata)
    assert re.fullmatch("metadata: not JSON-serializable: " + message, message_of(error))
    assert not (tmp_path / "manifest.json").exists()
