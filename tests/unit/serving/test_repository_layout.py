"""Reading the repository directory: odd names, unreadable model directories, special files."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from serving_support import settings

from edge_runtime.config import load_device_config
from edge_runtime.errors import ModelNotReadyError
from edge_runtime.serving import repository_layout
from edge_runtime.serving.repository import ModelRepository


def make_versions(root: Path, model: str, *names: str) -> None:
    for name in names:
        (root / model / name).mkdir(parents=True)


def test_only_ascii_digit_directories_are_versions(tmp_path: Path) -> None:
    make_versions(tmp_path, "m", "2", "10", "\u00b2", "\u0663", "latest", ".3", "01")
    os.mkfifo(tmp_path / "m" / "4")  # not a directory
    layout = repository_layout.scan(tmp_path)
    assert layout.versions == {"m": ["01", "2", "10"]}
    assert layout.ignored == {"m": ["latest", "\u00b2", "\u0663"]}


def test_undecodable_and_hidden_model_names_are_left_out(tmp_path: Path) -> None:
    make_versions(tmp_path, "ok", "1")
    make_versions(tmp_path, ".hidden", "1")
    os.makedirs(os.path.join(os.fsencode(tmp_path), b"bad\xff", b"1"))
    assert repository_layout.scan(tmp_path).versions == {"ok": ["1"]}


def test_an_unreadable_model_directory_is_only_that_models_problem(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, device_configs_dir: Path) -> None:
    make_versions(tmp_path, "locked", "1")
    make_versions(tmp_path, "other", "1")
    real_scandir = os.scandir

    def scandir(path: Any) -> Any:  # root ignores chmod 000: fake the permission error
        if str(path).endswith("locked"):
            raise PermissionError(13, "Permission denied", str(path))
        return real_scandir(path)

    monkeypatch.setattr(repository_layout.os, "scandir", scandir)
    layout = repository_layout.scan(tmp_path)
    assert layout.versions == {"other": ["1"]}
    assert layout.problems == {"locked": "the model directory cannot be listed (Permission denied)"}
    repo = ModelRepository(tmp_path, settings(), load_device_config(device_configs_dir / "x86-cpu.yaml"), [])
    repo.load_all()  # does not raise; 'other' fails on its own (no signature), 'locked' is reported
    index = {e["name"]: e for e in repo.index()}
    assert index["locked"] == {"name": "locked", "version": "", "state": "UNAVAILABLE",
                               "reason": "the model directory cannot be listed (Permission denied)"}
    assert str(tmp_path) not in str(repo.index())
    with pytest.raises(ModelNotReadyError, match="cannot be listed"):
        repo.load("locked")
    assert not repo.ready()
