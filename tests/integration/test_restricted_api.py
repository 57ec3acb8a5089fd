"""Restricted API groups (Triton's --http-restricted-api) with the unmodified tritonclient, over a socket."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Callable, Dict, Iterator, Optional, Tuple

import numpy as np
import pytest
from runtime_support import RunningServer, get, start_server, write_runtime_config

httpclient = pytest.importorskip("tritonclient.http")
from tritonclient.utils import InferenceServerException  # noqa: E402
from tritonclient.utils import shared_memory as shm  # noqa: E402

ADMIN_SECRET = f"admin-{uuid.uuid4().hex}"
STATS_SECRET = f"stats-{uuid.uuid4().hex}"
ADMIN = {"admin-key": ADMIN_SECRET}
STATS = {"stats-key": STATS_SECRET}


@pytest.fixture()
def server(repository: Path, tmp_path: Path, device_configs_dir: Path,
           keypair: Tuple[Path, Path]) -> Iterator[RunningServer]:
    """The tiny model and a fake one; repository + shared memory need admin-key, statistics need stats-key."""
    secret_file = tmp_path / "stats.secret"
    secret_file.write_text(STATS_SECRET + "\nignored second line\n")
    secret_file.chmod(0o600)
    config = write_runtime_config(
        tmp_path / "runtime.yaml", device_configs_dir, keypair[1],
        "shared_memory: {allow_server_owned: true}\n"
        "restricted_api:\n"
        "  - {groups: [model-repository, shared-memory], header: admin-key, value_env: EDGE_TEST_ADMIN_KEY}\n"
        f"  - {{groups: [statistics], header: stats-key, value_file: {secret_file}}}\n",
    )
    running = start_server(["--repository", str(repository), "--config", str(config), "--fake", "fake"],
                           tmp_path / "server.log", env={"EDGE_TEST_ADMIN_KEY": ADMIN_SECRET})
    yield running
    running.stop()


@pytest.fixture()
def client(server: RunningServer) -> httpclient.InferenceServerClient:
    return httpclient.InferenceServerClient(server.url)


def _refused(call: Callable[..., object], header: str, headers: Optional[Dict[str, str]] = None) -> None:
    """``call(headers=headers)`` is answered as Triton answers a restricted API: 403 and its message."""
    with pytest.raises(InferenceServerException) as raised:
        call(headers=headers)
    assert raised.value.status() == "403"
    assert raised.value.message() == f"This API is restricted, expecting header '{header}'"


def test_model_repository_needs_the_header(client: httpclient.InferenceServerClient) -> None:
    _refused(client.get_model_repository_index, "admin-key")
    _refused(lambda headers: client.unload_model("tiny", headers=headers), "admin-key")
    _refused(lambda headers: client.unload_model("tiny", headers=headers), "admin-key", {"admin-key": "wrong"})
    _refused(lambda headers: client.unload_model("tiny", headers=headers), "admin-key", STATS)
    assert client.is_model_ready("tiny")  # the refused unloads did nothing
    index = {entry["name"]: entry for entry in client.get_model_repository_index(headers=ADMIN)}
    assert index["tiny"]["state"] == "READY"
    client.unload_model("tiny", headers=ADMIN)
    assert not client.is_model_ready("tiny")
    _refused(lambda headers: client.load_model("tiny", headers=headers), "admin-key")
    client.load_model("tiny", headers=ADMIN)
    assert client.is_model_ready("tiny")


def test_shared_memory_needs_the_header(client: httpclient.InferenceServerClient) -> None:
    tag = uuid.uuid4().hex[:8]
    handle = shm.create_shared_memory_region(f"r-{tag}", f"/edge_restricted_{tag}", 64)
    try:
        _refused(client.get_system_shared_memory_status, "admin-key")
        _refused(lambda headers: client.register_system_shared_memory(
            f"r-{tag}", f"/edge_restricted_{tag}", 64, headers=headers), "admin-key", {"admin-key": "nope"})
        client.register_system_shared_memory(f"r-{tag}", f"/edge_restricted_{tag}", 64, headers=ADMIN)
        _refused(client.unregister_system_shared_memory, "admin-key")  # unregister all: refused
        assert [r["name"] for r in client.get_system_shared_memory_status(headers=ADMIN)] == [f"r-{tag}"]
        client.unregister_system_shared_memory(f"r-{tag}", headers=ADMIN)
        assert client.get_system_shared_memory_status(headers=ADMIN) == []
    finally:
        shm.destroy_shared_memory_region(handle)


def test_statistics_and_metrics_need_their_header(client: httpclient.InferenceServerClient,
                                                  server: RunningServer) -> None:
    _refused(lambda headers: client.get_inference_statistics("tiny", headers=headers), "stats-key")
    _refused(lambda headers: client.get_inference_statistics("tiny", headers=headers), "stats-key", ADMIN)
    assert client.get_inference_statistics("tiny", headers=STATS)["model_stats"][0]["name"] == "tiny"
    status, headers, _ = get(server.port, "/metrics")
    assert status == 403 and headers["content-type"] == "application/json"
    assert get(server.port, "/metrics", STATS)[0] == 200


def test_unrestricted_groups_need_no_header(client: httpclient.InferenceServerClient) -> None:
    assert client.is_server_live() and client.is_server_ready() and client.is_model_ready("tiny")
    assert client.get_server_metadata()["name"] == "edge-runtime"
    assert client.get_model_metadata("tiny")["name"] == "tiny"
    assert client.get_model_config("tiny")["name"] == "tiny"
    given = httpclient.InferInput("input", [1, 4], "FP32")
    given.set_data_from_numpy(np.ones((1, 4), np.float32))
    assert client.infer("tiny", [given]).as_numpy("output").shape == (1, 3)


def test_secrets_are_never_logged(client: httpclient.InferenceServerClient, server: RunningServer) -> None:
    with pytest.raises(InferenceServerException) as raised:
        client.get_model_repository_index(headers={"admin-key": STATS_SECRET})
    assert STATS_SECRET not in str(raised.value)
    client.get_model_repository_index(headers=ADMIN)
    server.stop()
    log = server.log.read_text()
    assert ADMIN_SECRET not in log and STATS_SECRET not in log
