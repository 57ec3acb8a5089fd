"""Active-version pointer, last-good fallback, two versions loaded at once, memory budget: real bundles."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Callable, Iterator, List, Tuple

import numpy as np
import pytest
from runtime_support import affine, write_tiny_bundle

from edge_runtime.bundle.signing import load_public_key
from edge_runtime.config import load_device_config, runtime_settings_from_mapping
from edge_runtime.errors import IntegrityError, ModelNotFoundError, ModelNotReadyError
from edge_runtime.serving import memory_budget
from edge_runtime.serving.active_version import POINTER_NAME, ActiveVersion, read_pointer, write_pointer
from edge_runtime.serving.config_override import apply_config_override
from edge_runtime.serving.repository import ModelRepository

X = np.array([[1.0, 2.0, 3.0, 4.0]], dtype=np.float32)
MakeRepo = Callable[..., ModelRepository]


@pytest.fixture()
def root(tmp_path: Path) -> Path:
    return tmp_path / "repo"


@pytest.fixture()
def make_repo(root: Path, keypair: Tuple[Path, Path], device_configs_dir: Path) -> Iterator[MakeRepo]:
    made: List[ModelRepository] = []

    def make(budget_mb: int = 4096) -> ModelRepository:
        device = load_device_config(device_configs_dir / "x86-cpu.yaml")
        device = dataclasses.replace(device, memory_budget_mb=budget_mb)
        settings = runtime_settings_from_mapping({"device_config": "unused.yaml", "trusted_keys": ["unused.pub"],
                                                  "warmup_runs": 1, "drain_timeout_s": 5.0}, "test-settings")
        repo = ModelRepository(root, settings, device, [load_public_key(keypair[1])])
        made.append(repo)
        return repo

    yield make
    for repo in made:
        repo.close()


def bundles(root: Path, key: Path, *versions: str) -> None:
    for version in versions:
        write_tiny_bundle(root / "tiny" / version, key, version)


def half_copy(root: Path, version: str) -> None:
    """Cut the version's model.onnx in half, as an interrupted copy leaves it."""
    model = root / "tiny" / version / "model.onnx"
    model.write_bytes(model.read_bytes()[: model.stat().st_size // 2])


def entry(repo: ModelRepository, version: str) -> dict:
    return next(e for e in repo.index() if e["name"] == "tiny" and e["version"] == version)


def test_fresh_repository_serves_the_highest_version_and_writes_nothing(
        root: Path, keypair: Tuple[Path, Path], make_repo: MakeRepo) -> None:
    bundles(root, keypair[0], "1", "2")
    repo = make_repo()
    repo.load_all()
    assert repo.get("tiny").version == "2"
    assert not (root / "tiny" / POINTER_NAME).exists()


def test_fresh_repository_falls_back_to_a_lower_version_that_loads(
        root: Path, keypair: Tuple[Path, Path], make_repo: MakeRepo) -> None:
    bundles(root, keypair[0], "1", "2")
    half_copy(root, "2")
    repo = make_repo()
    repo.load_all()
    assert repo.get("tiny").version == "1" and repo.ready()
    np.testing.assert_allclose(repo.get("tiny").infer({"input": X})["output"], affine(X), rtol=1e-6)
    assert entry(repo, "2")["state"] == "UNAVAILABLE" and "model.onnx: size is" in entry(repo, "2")["reason"]
    assert "version 2 failed" in entry(repo, "1")["reason"]
    assert str(root) not in json.dumps(repo.index())


def test_pointer_holds_back_a_newer_version(root: Path, keypair: Tuple[Path, Path], make_repo: MakeRepo) -> None:
    bundles(root, keypair[0], "1", "2")
    write_pointer(root / "tiny", ActiveVersion("1"))
    repo = make_repo()
    repo.load_all()
    assert repo.get("tiny").version == "1"
    assert entry(repo, "2") == {"name": "tiny", "version": "2", "state": "UNAVAILABLE", "reason": "not loaded"}


def test_failing_active_version_falls_back_to_last_good_and_says_why(
        root: Path, keypair: Tuple[Path, Path], make_repo: MakeRepo) -> None:
    bundles(root, keypair[0], "1", "2", "3")
    half_copy(root, "3")
    write_pointer(root / "tiny", ActiveVersion("3", last_good="1"))
    repo = make_repo()
    repo.load_all()
    assert repo.get("tiny").version == "1"  # not 2: nobody pointed at it
    assert "version 3 failed" in entry(repo, "1")["reason"]
    assert read_pointer(root / "tiny") == ActiveVersion("3", "1")  # only an explicit act writes it


def test_corrupt_pointer_is_ignored_and_reported(root: Path, keypair: Tuple[Path, Path], make_repo: MakeRepo) -> None:
    bundles(root, keypair[0], "1", "2")
    (root / "tiny" / POINTER_NAME).write_text('{"active": "²"}')
    repo = make_repo()
    repo.load_all()
    assert repo.get("tiny").version == "2"
    assert "active.json" in entry(repo, "2")["reason"]
    assert (root / "tiny" / POINTER_NAME).read_text() == '{"active": "²"}'


def test_activate_writes_the_pointer_and_replaces_the_active_version(
        root: Path, keypair: Tuple[Path, Path], make_repo: MakeRepo) -> None:
    bundles(root, keypair[0], "1", "2")
    write_pointer(root / "tiny", ActiveVersion("1"))
    repo = make_repo()
    repo.load_all()
    repo.activate("tiny", "2")
    assert repo.get("tiny").version == "2" and repo.loaded_versions("tiny") == ["2"]
    assert read_pointer(root / "tiny") == ActiveVersion("2", "1")
    half_copy(root, "2")  # the next start finds the active version broken: last good serves
    restarted = make_repo()
    restarted.load_all()
    assert restarted.get("tiny").version == "1"


def test_failed_activation_keeps_what_serves_and_the_pointer(
        root: Path, keypair: Tuple[Path, Path], make_repo: MakeRepo) -> None:
    bundles(root, keypair[0], "1", "2")
    write_pointer(root / "tiny", ActiveVersion("1"))
    half_copy(root, "2")
    repo = make_repo()
    repo.load_all()
    with pytest.raises(IntegrityError, match=r"failed to load 'tiny' version 2: model\.onnx: size is") as raised:
        repo.activate("tiny", "2")
    assert str(root) not in str(raised.value)
    assert repo.get("tiny").version == "1" and read_pointer(root / "tiny") == ActiveVersion("1")


def test_gate_stages_beside_the_active_version_then_promotes(
        root: Path, keypair: Tuple[Path, Path], make_repo: MakeRepo) -> None:
    bundles(root, keypair[0], "1", "2")
    write_pointer(root / "tiny", ActiveVersion("1"))
    repo = make_repo()
    repo.load_all()
    staged = repo.stage("tiny", "2")
    assert repo.get("tiny").version == "1" and repo.get("tiny", "2") is staged
    assert repo.loaded_versions("tiny") == ["1", "2"]
    np.testing.assert_allclose(staged.infer({"input": X})["output"], affine(X), rtol=1e-6)
    assert entry(repo, "2")["reason"] == "loaded beside the active version"
    assert read_pointer(root / "tiny") == ActiveVersion("1")  # staging writes nothing
    repo.promote("tiny", "2")
    assert repo.get("tiny") is staged and repo.loaded_versions("tiny") == ["2"]
    assert read_pointer(root / "tiny") == ActiveVersion("2", "1")


def test_a_failed_gate_unloads_the_staged_version(root: Path, keypair: Tuple[Path, Path], make_repo: MakeRepo) -> None:
    bundles(root, keypair[0], "1", "2")
    repo = make_repo()
    repo.activate("tiny", "1")
    repo.stage("tiny", "2")
    repo.unload("tiny", "2")
    assert repo.get("tiny").version == "1"
    with pytest.raises(ModelNotFoundError, match="'tiny' version 2 is not found"):
        repo.get("tiny", "2")
    assert read_pointer(root / "tiny") == ActiveVersion("1")


def test_strict_readiness(root: Path, keypair: Tuple[Path, Path], make_repo: MakeRepo) -> None:
    bundles(root, keypair[0], "1")
    half_copy(root, "1")
    repo = make_repo()
    repo.load_all()
    assert not repo.ready()
    with pytest.raises(ModelNotReadyError, match="Request for unknown model: 'tiny' has no available versions"):
        repo.get("tiny")


def test_memory_recorded_in_the_bundle_is_checked_before_load(
        root: Path, keypair: Tuple[Path, Path], make_repo: MakeRepo, monkeypatch: pytest.MonkeyPatch) -> None:
    bundles(root, keypair[0], "1")
    monkeypatch.setattr(memory_budget, "recorded_mb", lambda bundle: 5000.0)
    started: List[str] = []
    monkeypatch.setattr("edge_runtime.serving.model.ServedModel.start", lambda self, timeout_s=0: started.append("x"))
    repo = make_repo(budget_mb=4096)
    with pytest.raises(memory_budget.MemoryBudgetError, match=r"needs 5000 MiB \(recorded in the bundle\)") as raised:
        repo.activate("tiny")
    assert not started  # refused before anything was loaded
    assert "memory_budget_mb 4096" in str(raised.value) and "memory_budget_mb" in entry(repo, "1")["reason"]


def test_memory_measured_while_loading_is_refused_and_unloaded(
        root: Path, keypair: Tuple[Path, Path], make_repo: MakeRepo, monkeypatch: pytest.MonkeyPatch) -> None:
    bundles(root, keypair[0], "1")
    readings = iter([100.0, 400.0])  # RSS before and after the load: 300 MiB
    monkeypatch.setattr(memory_budget, "resident_mb", lambda: next(readings))
    repo = make_repo(budget_mb=256)
    with pytest.raises(memory_budget.MemoryBudgetError, match=r"needs 300 MiB \(measured while loading\)"):
        repo.activate("tiny")
    assert repo.loaded() == [] and not repo.ready()


def test_config_override_changes_how_the_bundle_is_served(
        root: Path, keypair: Tuple[Path, Path], make_repo: MakeRepo) -> None:
    bundles(root, keypair[0], "1")
    repo = make_repo()
    batching = {"max_queue_delay_microseconds": 100, "default_queue_policy": {"max_queue_size": 9}}
    override = {"max_batch_size": 4, "instance_group": [{"count": 2}], "dynamic_batching": batching}
    model = repo.load("tiny", None, apply_config_override("tiny", json.dumps(override), repo.settings))
    assert model.max_batch_size == 4 and model.settings.instances == 2
    assert model.settings.batching.max_queue_delay_us == 100 and model.settings.batching.max_queue_size == 9
    np.testing.assert_allclose(model.infer({"input": np.vstack([X] * 4)})["output"], affine(np.vstack([X] * 4)),
                               rtol=1e-6)
