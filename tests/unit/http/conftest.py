"""HTTP fixtures: the Flask app over fake models (no model file, no network) and its test client.

Models served: ``fake`` (INPUT0 FP32 [-1, 16] -> OUTPUT0 = 2x+1) and ``multi`` (A INT32 [-1, 4],
B BOOL [-1, 2] -> A_OUT, B_OUT). ``make_app`` builds more apps, e.g. with smaller limits.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Callable, Iterator, List, Optional

import pytest
from fake_models import multi_backend
from flask import Flask
from flask.testing import FlaskClient

from edge_runtime.backends.fake import FakeBackend
from edge_runtime.config import LimitSettings, RuntimeSettings, load_device_config
from edge_runtime.config.runtime import SharedMemorySettings
from edge_runtime.server.app import create_app
from edge_runtime.serving.repository import ModelRepository

MakeApp = Callable[..., Flask]


@pytest.fixture()
def settings(device_configs_dir: Path) -> RuntimeSettings:
    device_config = str(device_configs_dir / "x86-cpu.yaml")
    # The test's own process creates the shm objects: they are owned by the server's user.
    return RuntimeSettings(device_config=device_config, trusted_keys=("unused.pub",), warmup_runs=1,
                           shared_memory=SharedMemorySettings(allow_server_owned=True))


@pytest.fixture()
def make_app(settings: RuntimeSettings) -> Iterator[MakeApp]:
    """Build apps serving ``fake`` and ``multi`` (``limits``: other request caps); closed after the test."""
    repositories: List[ModelRepository] = []

    def make(limits: Optional[LimitSettings] = None) -> Flask:
        app_settings = settings if limits is None else dataclasses.replace(settings, limits=limits)
        repository = ModelRepository(None, app_settings, load_device_config(app_settings.device_config),
                                     trusted_keys=[])
        repositories.append(repository)
        repository.add_fake("fake", FakeBackend)
        repository.add_fake("multi", multi_backend)
        repository.load_all()
        return create_app(app_settings, repository)

    yield make
    for repository in repositories:
        repository.close()


@pytest.fixture()
def app(make_app: MakeApp) -> Flask:
    return make_app()


@pytest.fixture()
def client(app: Flask) -> FlaskClient:
    return app.test_client()
