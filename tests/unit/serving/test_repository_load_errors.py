"""A load that fails: one clear line for the client (no paths), the path in the log, what served stays."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any, Callable, Iterator, List, Optional, Type

import pytest
from serving_support import BundleShelf, settings

from edge_runtime.backends import choice
from edge_runtime.backends.base import BackendOptions
from edge_runtime.backends.fake import FakeBackend
from edge_runtime.bundle.verify import VerifiedBundle
from edge_runtime.config import DeviceConfig, load_device_config
from edge_runtime.errors import (
    EdgeRuntimeError,
    MemoryBudgetError,
    ModelNotFoundError,
    ModelNotReadyError,
    RequestError,
    SignatureError,
)
from edge_runtime.serving import memory_budget
from edge_runtime.serving.repository import ModelRepository

OpenRepository = Callable[..., ModelRepository]
RepoLog = Callable[[], List[str]]
UNSIGNED = "no manifest.sig (the bundle is not signed)"


def refusal(call: Callable[[], Any], kind: Type[EdgeRuntimeError]) -> str:
    """The message of the ``kind`` error that ``call`` raises."""
    with pytest.raises(kind) as info:
        call()
    return str(info.value)


@pytest.mark.parametrize("version, kind, message", [
    ("v1", RequestError, "failed to load 'm': version 'v1' is not a version number"),
    ("7", ModelNotFoundError, "failed to load 'm': version 7 is not in the repository"),
])
def test_a_load_of_a_version_that_is_not_on_disk_is_refused_naming_it(
        shelf: BundleShelf, open_repository: OpenRepository, version: str, kind: Type[EdgeRuntimeError],
        message: str) -> None:
    shelf.add("m", "1")
    repository = open_repository()
    assert refusal(lambda: repository.load("m", version), kind) == message
    assert repository.loaded() == []


def test_a_load_of_an_unknown_model_is_refused_naming_it(shelf: BundleShelf, open_repository: OpenRepository
                                                         ) -> None:
    shelf.root.mkdir()
    repository = open_repository()
    assert refusal(lambda: repository.load("nope"), ModelNotFoundError) == \
        "failed to load 'nope': no model 'nope' in the repository"


def test_a_load_of_a_model_whose_directory_cannot_be_listed_says_why(
        shelf: BundleShelf, open_repository: OpenRepository, monkeypatch: pytest.MonkeyPatch) -> None:
    (shelf.root / "a").mkdir(parents=True)
    real_scandir = os.scandir

    def scandir(path: Any = ".") -> Any:
        if Path(path) == shelf.root / "a":
            raise PermissionError(13, "Permission denied")
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", scandir)
    repository = open_repository()
    assert refusal(lambda: repository.load("a"), ModelNotReadyError) == \
        "failed to load 'a': the model directory cannot be listed (Permission denied)"


def test_a_bundle_that_fails_to_verify_is_refused_without_its_path_and_logged_with_it(
        shelf: BundleShelf, open_repository: OpenRepository, repo_log: RepoLog) -> None:
    shelf.add("m", "1")
    shelf.add_unsigned("m", "2")
    repository = open_repository()
    repository.load("m", "1")
    assert refusal(lambda: repository.load("m", "2"), SignatureError) == f"failed to load 'm' version 2: {UNSIGNED}"
    assert repository.get("m").version == "1"
    assert repository.index()[1] == {"name": "m", "version": "2", "state": "UNAVAILABLE", "reason": UNSIGNED}
    assert repo_log()[-1] == f"WARNING model m version 2 failed to load: {shelf.root}/m/2: {UNSIGNED}"


class FailingLoad(FakeBackend):
    """A backend whose load fails with ``message`` (which may name files)."""

    def __init__(self, message: str) -> None:
        super().__init__()
        self.message = message

    def _load(self, bundle: Optional[VerifiedBundle], device: DeviceConfig, options: BackendOptions) -> None:
        raise EdgeRuntimeError(self.message)


@pytest.mark.parametrize("message, public", [
    ("{root}/echo/1: engine.plan is corrupt", "engine.plan is corrupt"),
    ("cannot read {root}/echo/1/engine.plan", "cannot read echo/1/engine.plan"),
    ("cache {root}/cache/echo.bin is stale", "cache <repository>/cache/echo.bin is stale"),
])
def test_paths_in_a_load_error_never_reach_the_client(
        shelf: BundleShelf, open_repository: OpenRepository, message: str, public: str) -> None:
    shelf.root.mkdir()
    repository = open_repository()
    repository.add_fake("echo", lambda: FailingLoad(message.format(root=shelf.root)))
    assert refusal(lambda: repository.load("echo"), EdgeRuntimeError) == f"failed to load 'echo' version 1: {public}"
    assert repository.index() == [{"name": "echo", "version": "1", "state": "UNAVAILABLE", "reason": public}]


def test_without_a_repository_directory_load_errors_are_answered_as_they_are(
        device_configs_dir: Path) -> None:
    repository = ModelRepository(None, settings(), load_device_config(device_configs_dir / "x86-cpu.yaml"),
                                 [])
    repository.add_fake("echo", lambda: FailingLoad("/srv/models/echo/1: engine.plan is corrupt"))
    try:
        assert refusal(lambda: repository.load("echo"), EdgeRuntimeError) == \
            "failed to load 'echo' version 1: /srv/models/echo/1: engine.plan is corrupt"
    finally:
        repository.close()


# --- the memory budget (x86-cpu: memory_budget_mb 4096) ------------------------------------------

def test_a_bundle_that_records_more_memory_than_the_budget_is_refused_before_loading(
        shelf: BundleShelf, open_repository: OpenRepository) -> None:
    shelf.add("m", "1", memory_mb=5000)
    repository = open_repository()
    assert refusal(lambda: repository.load("m"), MemoryBudgetError) == (
        "failed to load 'm' version 1: 'm' version 1 needs 5000 MiB (recorded in the bundle); the loaded models "
        "use 0 MiB of the device's memory_budget_mb 4096")


def test_the_version_a_load_replaces_does_not_count_against_the_budget(
        shelf: BundleShelf, open_repository: OpenRepository) -> None:
    shelf.add("m", "1", memory_mb=3000)
    shelf.add("m", "2", memory_mb=3000)
    repository = open_repository()
    repository.load("m", "1")
    repository.load("m", "1")  # a reload of the same version
    assert repository.load("m", "2").memory_mb == 3000.0  # replaces 1
    assert refusal(lambda: repository.stage("m", "1"), MemoryBudgetError) == (  # beside 2: both would count
        "failed to load 'm' version 1: 'm' version 1 needs 3000 MiB (recorded in the bundle); the loaded models "
        "use 3000 MiB of the device's memory_budget_mb 4096")
    assert repository.loaded_versions("m") == ["2"]


def test_a_measured_model_over_the_budget_is_stopped_and_refused(
        shelf: BundleShelf, open_repository: OpenRepository, monkeypatch: pytest.MonkeyPatch) -> None:
    shelf.root.mkdir()
    readings: Iterator[float] = iter([100.0, 5000.0])  # resident MiB before and after the load
    monkeypatch.setattr(memory_budget, "resident_mb", lambda: next(readings))
    backend = FakeBackend()
    repository = open_repository()
    repository.add_fake("echo", lambda: backend)
    assert refusal(lambda: repository.load("echo"), MemoryBudgetError) == (
        "failed to load 'echo' version 1: 'echo' version 1 needs 4900 MiB (measured while loading); the loaded "
        "models use 0 MiB of the device's memory_budget_mb 4096")
    assert not backend.loaded and repository.loaded() == []


# --- which backend serves --------------------------------------------------------------------------

def test_a_fallback_backend_is_logged_and_noted_on_the_model(
        shelf: BundleShelf, open_repository: OpenRepository, repo_log: RepoLog, device_configs_dir: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(choice, "tensorrt_problem", lambda: "tensorrt is not installed")
    xavier = load_device_config(device_configs_dir / "agx-xavier.yaml")
    xavier = dataclasses.replace(xavier, tensorrt=dataclasses.replace(xavier.tensorrt, allow_fallback=True))
    reason = choice.choose_backend(xavier).reason
    assert reason.startswith("device config 'agx-xavier' (agx-xavier.yaml) prefers TensorRT")
    shelf.add("m", "1")
    repository = open_repository(device=xavier)
    model = repository.load("m")
    assert model.backend_note == reason and model.platform == "onnxruntime"
    assert repo_log()[0] == f"WARNING model m version 1: served by onnxruntime: {reason}"
