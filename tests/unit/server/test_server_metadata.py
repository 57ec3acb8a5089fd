"""``GET /v2``: the server metadata names the server (a setting) and only the extensions it answers."""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import pytest
from flask.testing import FlaskClient

from edge_runtime import __version__
from edge_runtime.config import RuntimeSettings, load_device_config
from edge_runtime.config.runtime import SharedMemorySettings
from edge_runtime.server.app import create_app
from edge_runtime.serving.repository import ModelRepository


def _client(device_configs_dir: Path, shm_enabled: bool) -> Iterator[FlaskClient]:
    settings = RuntimeSettings(device_config=str(device_configs_dir / "x86-cpu.yaml"), trusted_keys=(),
                               server_name="edge-test",
                               shared_memory=SharedMemorySettings(enabled=shm_enabled))
    repository = ModelRepository(None, settings, load_device_config(settings.device_config), trusted_keys=[])
    try:
        yield create_app(settings, repository).test_client()
    finally:
        repository.close()


@pytest.fixture()
def client_shm_on(device_configs_dir: Path) -> Iterator[FlaskClient]:
    yield from _client(device_configs_dir, shm_enabled=True)


@pytest.fixture()
def client_shm_off(device_configs_dir: Path) -> Iterator[FlaskClient]:
    yield from _client(device_configs_dir, shm_enabled=False)


def test_metadata_lists_shared_memory_when_enabled(client_shm_on: FlaskClient) -> None:
    response = client_shm_on.get("/v2")
    assert response.status_code == 200
    assert response.get_json() == {
        "name": "edge-test",
        "version": __version__,
        "extensions": ["binary_tensor_data", "system_shared_memory", "model_repository", "statistics"],
    }


def test_metadata_omits_shared_memory_when_disabled(client_shm_off: FlaskClient) -> None:
    # a client that reads the extension list must not try an extension that answers "not supported"
    extensions = client_shm_off.get("/v2").get_json()["extensions"]
    assert extensions == ["binary_tensor_data", "model_repository", "statistics"]
    register = client_shm_off.post("/v2/systemsharedmemory/region/r/register",
                                   json={"key": "/k", "offset": 0, "byte_size": 1})
    assert register.status_code == 400 and "disabled" in register.get_json()["error"]
