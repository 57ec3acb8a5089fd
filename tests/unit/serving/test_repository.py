"""The model repository: index, load, reload keeping the old version on failure, 404 vs 503."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterator, List, Tuple

import numpy as np
import pytest
from serving_support import settings

from edge_runtime.backends.fake import FakeBackend
from edge_runtime.bundle.signing import load_public_key
from edge_runtime.config import load_device_config
from edge_runtime.errors import InferenceError, ModelNotFoundError, ModelNotReadyError, SignatureError
from edge_runtime.serving import repository_layout
from edge_runtime.serving.repository import ModelRepository


@pytest.fixture()
def repository(tmp_path: Path, device_configs_dir: Path, keypair: Tuple[Path, Path]) -> Iterator[ModelRepository]:
    repo = ModelRepository(tmp_path / "repo", settings(), load_device_config(device_configs_dir / "x86-cpu.yaml"),
                           [load_public_key(keypair[1])])
    yield repo
    repo.close()


def test_fake_model_lifecycle(repository: ModelRepository) -> None:
    repository.add_fake("echo", FakeBackend)
    with pytest.raises(ModelNotReadyError, match="not loaded"):
        repository.get("echo")
    repository.load("echo")
    model = repository.get("echo", "1")
    assert model.infer({"INPUT0": np.ones((2, 16), np.float32)})["OUTPUT0"].shape == (2, 16)
    with pytest.raises(ModelNotFoundError, match="'echo' version 2 is not found"):
        repository.get("echo", "2")
    repository.unload("echo")
    assert repository.index() == [{"name": "echo", "version": "1", "state": "UNAVAILABLE", "reason": "not loaded"}]
    with pytest.raises(ModelNotFoundError):
        repository.unload("echo")


def test_unknown_model_is_404(repository: ModelRepository) -> None:
    with pytest.raises(ModelNotFoundError):
        repository.get("nope")
    with pytest.raises(ModelNotFoundError):
        repository.load("nope")


def test_failed_reload_keeps_the_serving_model(repository: ModelRepository) -> None:
    backends = [FakeBackend(), FakeBackend(fail=True)]
    repository.add_fake("flaky", lambda: backends.pop(0))
    first = repository.load("flaky")
    with pytest.raises(InferenceError):
        repository.load("flaky")  # the second backend fails its warm-up
    assert repository.get("flaky") is first and first.ready
    entry = repository.index()[0]
    assert entry["state"] == "READY"


def test_unsigned_bundle_directory_is_refused_and_reported(repository: ModelRepository) -> None:
    assert repository.root is not None
    (repository.root / "broken" / "1").mkdir(parents=True)
    (repository.root / "broken" / "1" / "model.onnx").write_bytes(b"not really")
    repository.load_all()
    entry = next(e for e in repository.index() if e["name"] == "broken")
    assert entry["state"] == "UNAVAILABLE" and "not signed" in entry["reason"]
    with pytest.raises(ModelNotReadyError, match="not signed"):
        repository.get("broken")
    with pytest.raises(SignatureError):
        repository.load("broken")


def test_highest_numeric_version_wins(repository: ModelRepository) -> None:
    assert repository.root is not None
    for version in ("2", "10", "9", "latest"):
        (repository.root / "m" / version).mkdir(parents=True)
    assert repository.available()["m"] == ["2", "9", "10"]


def test_requests_for_unknown_models_never_scan_the_repository(
        repository: ModelRepository, monkeypatch: pytest.MonkeyPatch) -> None:
    assert repository.root is not None
    (repository.root / "broken" / "1").mkdir(parents=True)  # on disk, fails to load: 503 with its reason
    repository.add_fake("echo", FakeBackend)
    repository.load_all()
    scans: List[str] = []
    real_scan, real_scandir = repository_layout.scan, os.scandir
    monkeypatch.setattr(repository_layout, "scan", lambda root: scans.append("scan") or real_scan(root))
    monkeypatch.setattr(os, "scandir", lambda *args: scans.append("scandir") or real_scandir(*args))
    for number in range(100):
        with pytest.raises(ModelNotFoundError, match="is not found"):
            repository.get(f"unknown-{number}")
    with pytest.raises(ModelNotReadyError, match="not signed"):
        repository.get("broken")
    assert repository.get("echo").name == "echo"
    assert scans == []


def test_a_model_put_on_disk_after_start_is_unknown_until_loaded(repository: ModelRepository) -> None:
    assert repository.root is not None
    repository.load_all()
    (repository.root / "late" / "1").mkdir(parents=True)
    with pytest.raises(ModelNotFoundError, match="'late' is not found"):
        repository.get("late")  # as Triton in explicit mode: on disk is not known
    assert any(entry["name"] == "late" for entry in repository.index())  # the index shows the disk
    with pytest.raises(SignatureError):
        repository.load("late")  # an explicit act refreshes what the repository knows
    with pytest.raises(ModelNotReadyError, match="not signed"):
        repository.get("late")
