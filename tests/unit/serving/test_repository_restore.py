"""Start (ModelRepository.load_all): which version serves, what the index and the log say, nothing written."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable, List

import numpy as np
import pytest
from serving_support import BundleShelf

from edge_runtime.backends.fake import FakeBackend
from edge_runtime.errors import ModelNotReadyError
from edge_runtime.serving.active_version import ActiveVersion, write_pointer
from edge_runtime.serving.repository import ModelRepository

OpenRepository = Callable[..., ModelRepository]
RepoLog = Callable[[], List[str]]
UNSIGNED = "no manifest.sig (the bundle is not signed)"


def ready_line(name: str, version: str) -> str:
    return f"INFO model {name} version {version} ready (onnxruntime, model.onnx, 1 MiB)"


def test_with_no_pointer_the_highest_version_serves_and_nothing_is_written(
        shelf: BundleShelf, open_repository: OpenRepository, repo_log: RepoLog) -> None:
    shelf.add("m", "1")
    shelf.add("m", "2")
    repository = open_repository()
    repository.load_all()
    model = repository.get("m")
    assert model.version == "2" and model.backend_note == ""
    assert model.infer({"x": np.zeros((1, 4), np.float32)})["y"].tolist() == [[1.0, 1.0, 1.0, 1.0]]
    assert repository.loaded_versions("m") == ["2"] and repository.ready()
    assert repository.index() == [
        {"name": "m", "version": "1", "state": "UNAVAILABLE", "reason": "not loaded"},
        {"name": "m", "version": "2", "state": "READY", "reason": ""},
    ]
    assert not (shelf.root / "m" / "active.json").exists()
    assert repo_log() == [ready_line("m", "2")]


def test_the_pointer_names_the_version_that_serves_not_the_highest(
        shelf: BundleShelf, open_repository: OpenRepository) -> None:
    shelf.add("m", "1")
    shelf.add("m", "2")
    write_pointer(shelf.root / "m", ActiveVersion("1"))
    repository = open_repository()
    repository.load_all()
    assert repository.get("m").version == "1" and repository.active_version("m") == "1"
    assert repository.index()[0] == {"name": "m", "version": "1", "state": "READY", "reason": ""}


def test_a_failed_active_version_falls_back_to_last_good_and_says_why(
        shelf: BundleShelf, open_repository: OpenRepository, repo_log: RepoLog) -> None:
    shelf.add("m", "1")
    shelf.add_unsigned("m", "2")
    write_pointer(shelf.root / "m", ActiveVersion("2", "1"))
    pointer = (shelf.root / "m" / "active.json").read_bytes()
    repository = open_repository()
    repository.load_all()
    note = f"version 2 failed ({UNSIGNED}); serving version 1 instead"
    assert repository.get("m").version == "1" and repository.ready()
    assert repository.index() == [
        {"name": "m", "version": "1", "state": "READY", "reason": note},
        {"name": "m", "version": "2", "state": "UNAVAILABLE", "reason": UNSIGNED},
    ]
    assert repo_log() == [
        f"WARNING model m version 2 failed to load: {shelf.root}/m/2: {UNSIGNED}",
        ready_line("m", "1"),
        f"WARNING model m: {note}",
    ]
    assert (shelf.root / "m" / "active.json").read_bytes() == pointer  # start never writes the pointer


def test_with_no_pointer_failed_versions_are_skipped_down_to_one_that_loads(
        shelf: BundleShelf, open_repository: OpenRepository) -> None:
    shelf.add("m", "1")
    shelf.add_unsigned("m", "2")
    shelf.add_unsigned("m", "3")
    repository = open_repository()
    repository.load_all()
    assert repository.get("m").version == "1"
    assert repository.index()[0]["reason"] == f"version 3 failed ({UNSIGNED}); serving version 1 instead"


def test_when_no_version_loads_the_model_is_not_ready_with_every_reason(
        shelf: BundleShelf, open_repository: OpenRepository) -> None:
    shelf.add_unsigned("m", "1")
    shelf.add_unsigned("m", "2")
    repository = open_repository()
    repository.load_all()
    assert not repository.ready() and repository.loaded() == []
    with pytest.raises(ModelNotReadyError) as info:
        repository.get("m")
    assert str(info.value) == (
        "Request for unknown model: 'm' has no available versions (model 'm' is not loaded: "
        f"version 1: {UNSIGNED}; version 2: {UNSIGNED})")


def test_an_invalid_pointer_is_ignored_logged_and_shown_in_the_index(
        shelf: BundleShelf, open_repository: OpenRepository, repo_log: RepoLog) -> None:
    shelf.add("m", "1")
    shelf.add("m", "2")
    (shelf.root / "m" / "active.json").write_text('{"x": 1}')
    repository = open_repository()
    repository.load_all()
    note = 'active.json: expected {"active": "N", "last_good": "M" or null}: ignored, serving the highest version ' \
           "that loads"
    assert repository.get("m").version == "2"
    assert repository.index()[1] == {"name": "m", "version": "2", "state": "READY", "reason": note}
    assert repo_log() == [f"ERROR model m: {note}", ready_line("m", "2")]
    assert (shelf.root / "m" / "active.json").read_text() == '{"x": 1}'  # never repaired at start


def test_a_fake_model_ignores_a_pointer_in_a_directory_of_its_name(
        shelf: BundleShelf, open_repository: OpenRepository) -> None:
    (shelf.root / "echo").mkdir(parents=True)
    write_pointer(shelf.root / "echo", ActiveVersion("2"))
    repository = open_repository()
    repository.add_fake("echo", FakeBackend)
    repository.load_all()
    assert repository.active_version("echo") == "1" and repository.get("echo").backend_note == ""


def test_directory_entries_that_are_not_versions_are_logged_and_ignored(
        shelf: BundleShelf, open_repository: OpenRepository, repo_log: RepoLog) -> None:
    shelf.add("m", "1")
    (shelf.root / "m" / "x-old").mkdir()
    (shelf.root / "m" / "latest").mkdir()
    repository = open_repository()
    repository.load_all()
    assert repository.get("m").version == "1"
    assert repo_log() == ["WARNING model m: ignoring 'latest', 'x-old' (not version numbers)", ready_line("m", "1")]


def test_a_model_directory_that_cannot_be_listed_fails_alone(
        shelf: BundleShelf, open_repository: OpenRepository, repo_log: RepoLog, monkeypatch: pytest.MonkeyPatch
        ) -> None:
    (shelf.root / "a").mkdir(parents=True)  # sorts first: the models after it still load
    shelf.add("b", "1")
    real_scandir = os.scandir

    def scandir(path: Any = ".") -> Any:
        if Path(path) == shelf.root / "a":
            raise PermissionError(13, "Permission denied")
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", scandir)
    repository = open_repository()
    repository.load_all()
    problem = "the model directory cannot be listed (Permission denied)"
    assert repository.get("b").version == "1"
    assert not repository.ready()  # 'a' should serve and does not
    with pytest.raises(ModelNotReadyError) as info:
        repository.get("a")
    assert str(info.value) == f"Request for unknown model: 'a' has no available versions (model 'a' is not loaded: " \
                              f"{problem})"
    assert repo_log() == [f"ERROR model a: {problem} ({shelf.root})", ready_line("b", "1")]
