"""Explicit acts (load/activate, stage, promote, unload): what serves after each, and what the pointer records."""

from __future__ import annotations

from typing import Callable, List

import pytest
from serving_support import BundleShelf, settings

from edge_runtime.backends.fake import FakeBackend
from edge_runtime.errors import ModelNotFoundError, ModelNotReadyError, PointerError
from edge_runtime.serving.active_version import ActiveVersion, read_pointer, write_pointer
from edge_runtime.serving.model import READY, UNAVAILABLE
from edge_runtime.serving.repository import ModelRepository

OpenRepository = Callable[..., ModelRepository]
RepoLog = Callable[[], List[str]]


def ready_line(version: str) -> str:
    return f"INFO model m version {version} ready (onnxruntime, model.onnx, 1 MiB)"


def test_a_load_records_the_version_active_and_the_one_that_served_as_last_good(
        shelf: BundleShelf, open_repository: OpenRepository, repo_log: RepoLog) -> None:
    shelf.add("m", "1")
    shelf.add("m", "2")
    repository = open_repository()
    first = repository.load("m", "1")
    assert repository.get("m") is first and first.version == "1" and repository.ready()
    assert read_pointer(shelf.root / "m") == ActiveVersion("1", None)
    second = repository.load("m")  # default: the highest on disk
    assert repository.get("m") is second and second.version == "2"
    assert first.state == UNAVAILABLE and repository.loaded_versions("m") == ["2"]
    assert read_pointer(shelf.root / "m") == ActiveVersion("2", "1")
    assert repo_log() == [
        ready_line("1"), "INFO model m: active version 1 recorded (last good: None)",
        ready_line("2"), "INFO model m: active version 2 recorded (last good: 1)",
    ]


def test_reloading_the_active_version_replaces_it(shelf: BundleShelf, open_repository: OpenRepository) -> None:
    shelf.add("m", "1")
    repository = open_repository()
    first = repository.load("m", "1")
    again = repository.load("m", "1")
    assert again is not first and repository.get("m") is again and first.state == UNAVAILABLE
    assert read_pointer(shelf.root / "m") == ActiveVersion("1", None)


def test_a_load_with_its_own_settings_serves_with_them(shelf: BundleShelf, open_repository: OpenRepository) -> None:
    shelf.add("m", "1")
    shelf.add("m", "2")
    repository = open_repository()
    override = settings(instances=2)
    model = repository.load("m", "1", override)
    assert model.version == "1" and model.settings is override
    staged = repository.stage("m", "2", override)
    assert staged.settings is override


def test_activating_after_a_fallback_records_the_version_that_served_as_last_good(
        shelf: BundleShelf, open_repository: OpenRepository) -> None:
    shelf.add("m", "1")
    shelf.add_unsigned("m", "2")
    shelf.add("m", "3")
    write_pointer(shelf.root / "m", ActiveVersion("2", "1"))
    repository = open_repository()
    repository.load_all()
    assert repository.get("m").version == "1"
    repository.activate("m", "3")
    assert read_pointer(shelf.root / "m") == ActiveVersion("3", "1")  # not the broken 2
    assert repository.index()[0] == {"name": "m", "version": "1", "state": "UNAVAILABLE", "reason": "not loaded"}
    assert repository.index()[2] == {"name": "m", "version": "3", "state": READY, "reason": ""}  # no fallback note


def test_a_pointer_that_cannot_be_written_fails_the_load_and_what_served_stays(
        shelf: BundleShelf, open_repository: OpenRepository, repo_log: RepoLog) -> None:
    shelf.add("m", "1")
    shelf.add("m", "2")
    repository = open_repository()
    repository.load("m", "1")
    (shelf.root / "m" / "active.json").unlink()
    (shelf.root / "m" / "active.json").mkdir()  # the rename over it fails
    with pytest.raises(PointerError) as info:
        repository.load("m", "2")
    assert str(info.value) == ("failed to load 'm': cannot record version 2 as active (the repository is not "
                               "writable; see the server log)")
    assert repository.get("m").version == "1" and repository.loaded_versions("m") == ["1"]
    assert repo_log()[-1] == (f"ERROR model m: cannot record version 2 as active: {shelf.root}/m/active.json: "
                              "cannot write: Is a directory")


def test_a_first_load_whose_pointer_cannot_be_written_serves_nothing(
        shelf: BundleShelf, open_repository: OpenRepository) -> None:
    shelf.add("m", "1")
    (shelf.root / "m" / "active.json").mkdir()
    repository = open_repository()
    with pytest.raises(PointerError):
        repository.load("m", "1")
    assert repository.loaded() == [] and not repository.ready()


def test_a_fake_model_has_no_pointer(shelf: BundleShelf, open_repository: OpenRepository) -> None:
    shelf.root.mkdir()
    repository = open_repository()
    repository.add_fake("echo", FakeBackend)
    assert repository.load("echo").backend_note == ""
    assert not (shelf.root / "echo").exists()


def test_a_staged_version_serves_beside_the_active_one_until_promoted(
        shelf: BundleShelf, open_repository: OpenRepository, repo_log: RepoLog) -> None:
    for version in ("1", "2", "3"):
        shelf.add("m", version)
    repository = open_repository()
    active = repository.load("m", "1")
    pointer = (shelf.root / "m" / "active.json").read_bytes()
    staged = repository.stage("m", "2")
    assert staged.version == "2" and repository.get("m", "2") is staged and repository.get("m") is active
    assert repository.hold("m", "2") is staged and repository.hold("m") is active
    staged.release()
    active.release()
    assert repository.active_version("m") == "1" and repository.loaded_versions("m") == ["1", "2"]
    assert repository.index()[1] == {"name": "m", "version": "2", "state": READY,
                                     "reason": "loaded beside the active version"}
    assert (shelf.root / "m" / "active.json").read_bytes() == pointer  # staging writes nothing
    assert repository.stage("m", "2") is staged  # already loaded and ready: kept

    repository.promote("m", "2")
    assert repository.get("m") is staged and active.state == UNAVAILABLE
    assert repository.loaded_versions("m") == ["2"] and repository.ready()
    assert read_pointer(shelf.root / "m") == ActiveVersion("2", "1")
    assert repo_log()[-1] == "INFO model m: version 2 is active (was 1)"
    promoted = (shelf.root / "m" / "active.json").read_bytes()
    repository.promote("m", "2")  # already active: nothing to do
    assert (shelf.root / "m" / "active.json").read_bytes() == promoted
    assert repo_log()[-1] == "INFO model m: version 2 is active (was 1)"


def test_promote_refuses_a_version_that_is_not_loaded(shelf: BundleShelf, open_repository: OpenRepository) -> None:
    shelf.add("m", "1")
    shelf.add("m", "2")
    repository = open_repository()
    repository.load("m", "1")
    with pytest.raises(ModelNotReadyError) as info:
        repository.promote("m", "2")
    assert str(info.value) == "cannot promote 'm' version 2: it is not loaded and ready"
    assert repository.get("m").version == "1"


def test_promote_after_a_restart_stops_the_old_active_version(
        shelf: BundleShelf, open_repository: OpenRepository) -> None:
    shelf.add("m", "1")
    shelf.add("m", "2")
    repository = open_repository()
    repository.load_all()  # no pointer: 2 serves
    old = repository.get("m")
    repository.stage("m", "1")
    repository.promote("m", "1")
    assert old.state == UNAVAILABLE and repository.get("m").version == "1"
    assert read_pointer(shelf.root / "m") == ActiveVersion("1", "2")


def test_unloading_one_version_keeps_the_others(shelf: BundleShelf, open_repository: OpenRepository) -> None:
    shelf.add("m", "1")
    shelf.add("m", "2")
    repository = open_repository()
    active = repository.load("m", "1")
    staged = repository.stage("m", "2")
    repository.unload("m", "2")
    assert staged.state == UNAVAILABLE and repository.get("m") is active and repository.loaded_versions("m") == ["1"]
    with pytest.raises(ModelNotFoundError) as info:
        repository.unload("m", "2")
    assert str(info.value) == "model 'm' is not loaded at version 2"
    repository.unload("m")
    assert active.state == UNAVAILABLE and repository.loaded() == []
    with pytest.raises(ModelNotFoundError) as info:
        repository.unload("m")
    assert str(info.value) == "model 'm' is not loaded"
