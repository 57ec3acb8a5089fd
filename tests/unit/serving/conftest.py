"""Serving fixtures: runtime settings and a device config, models served by the public fake backend."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Callable, Iterator, List, Optional, Tuple

import pytest
from serving_support import REPOSITORY_LOGGER, BundleShelf, repository_log, settings

from edge_runtime.backends.fake import FakeBackend
from edge_runtime.bundle.signing import load_public_key
from edge_runtime.config import DeviceConfig, load_device_config
from edge_runtime.serving.model import ServedModel
from edge_runtime.serving.repository import ModelRepository


@pytest.fixture()
def serve(device_configs_dir: Path) -> Iterator[Callable[..., ServedModel]]:
    """Start a ServedModel over a fake backend; every model started is stopped at teardown."""
    started: List[ServedModel] = []
    device = load_device_config(device_configs_dir / "x86-cpu.yaml")

    def start(backend: FakeBackend, **overrides: Any) -> ServedModel:
        model = ServedModel("m", "1", lambda: backend, None, device, settings(**overrides))
        model.start()
        started.append(model)
        return model

    yield start
    for model in started:
        model.stop(drain_timeout_s=5.0)


@pytest.fixture()
def shelf(tmp_path: Path, keypair: Tuple[Path, Path]) -> BundleShelf:
    """Writes signed (or broken) bundles under ``tmp_path/repo``, the root of ``open_repository``'s repositories."""
    return BundleShelf(tmp_path / "repo", keypair[0])


@pytest.fixture()
def open_repository(shelf: BundleShelf, device_configs_dir: Path, keypair: Tuple[Path, Path]
                    ) -> Iterator[Callable[..., ModelRepository]]:
    """``open_repository(device=None, **settings)``: a ModelRepository over ``shelf.root``; closed at teardown."""
    opened: List[ModelRepository] = []

    def make(device: Optional[DeviceConfig] = None, **overrides: Any) -> ModelRepository:
        repository = ModelRepository(shelf.root, settings(**overrides),
                                     device or load_device_config(device_configs_dir / "x86-cpu.yaml"),
                                     [load_public_key(keypair[1])])
        opened.append(repository)
        return repository

    yield make
    for repository in opened:
        repository.close()


@pytest.fixture()
def repo_log(caplog: pytest.LogCaptureFixture) -> Callable[[], List[str]]:
    """``repo_log()``: the repository's log lines so far (INFO and up), as ``"LEVEL message"``."""
    caplog.set_level(logging.INFO, REPOSITORY_LOGGER)
    return lambda: repository_log(caplog.records)
