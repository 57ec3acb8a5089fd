"""Triton behaviours that clients check, through the unmodified tritonclient.http (issue 13, Build 4).

One server per test module: a repository with ``tiny`` (a good bundle, versions 1 and 2), ``broken``
(its only version half-copied, so it never loads) and fake models: ``inf`` answers infinities.
The settings name the server ``conformance-edge``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable, Iterator, Tuple

import numpy as np
import pytest
from runtime_support import RunningServer, start_server, write_runtime_config, write_tiny_bundle

httpclient = pytest.importorskip("tritonclient.http")
from tritonclient.utils import InferenceServerException  # noqa: E402

X = np.arange(8, dtype=np.float32).reshape(2, 4)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, keypair: Tuple[Path, Path],
           device_configs_dir: Path) -> Iterator[RunningServer]:
    root = tmp_path_factory.mktemp("conformance")
    repository = root / "repo"
    for version in ("1", "2"):
        write_tiny_bundle(repository / "tiny" / version, keypair[0], version)
    write_tiny_bundle(repository / "broken" / "1", keypair[0], "1")
    model = repository / "broken" / "1" / "model.onnx"
    model.write_bytes(model.read_bytes()[: model.stat().st_size // 2])  # a half-copied bundle
    config = write_runtime_config(root / "runtime.yaml", device_configs_dir, keypair[1],
                                  "server_name: conformance-edge\n")
    running = start_server(["--repository", str(repository), "--config", str(config),
                            "--fake", "fake", "--fake", "inf:offset=inf"], root / "server.log", wait_for="live")
    yield running
    running.stop()


@pytest.fixture()
def client(server: RunningServer) -> httpclient.InferenceServerClient:
    return httpclient.InferenceServerClient(server.url)


def _error(call: Callable[[], object]) -> str:
    with pytest.raises(InferenceServerException) as raised:
        call()
    return str(raised.value)


def _infer(client: httpclient.InferenceServerClient, model: str, version: str = "", binary: bool = True) -> np.ndarray:
    name, shape = ("input", [2, 4]) if model in ("tiny", "broken") else ("INPUT0", [1, 16])
    data = X if name == "input" else np.ones(shape, dtype=np.float32)
    given = httpclient.InferInput(name, shape, "FP32")
    given.set_data_from_numpy(data, binary_data=binary)
    output = "output" if name == "input" else "OUTPUT0"
    wanted = httpclient.InferRequestedOutput(output, binary_data=binary)
    return client.infer(model, [given], model_version=version, outputs=[wanted]).as_numpy(output)


def test_unknown_model_and_version_texts(client: httpclient.InferenceServerClient, server: RunningServer) -> None:
    assert "Request for unknown model: 'nope' is not found" in _error(lambda: _infer(client, "nope"))
    assert "Request for unknown model: 'nope' is not found" in _error(lambda: client.get_model_metadata("nope"))
    assert "Request for unknown model: 'tiny' version 9 is not found" in _error(
        lambda: client.get_model_metadata("tiny", "9"))
    message = _error(lambda: _infer(client, "broken"))
    assert "Request for unknown model: 'broken' has no available versions" in message
    assert str(server.log.parent) not in message  # no filesystem path in any answer


def test_failed_load_names_the_model_and_no_path(client: httpclient.InferenceServerClient,
                                                 server: RunningServer) -> None:
    message = _error(lambda: client.load_model("broken"))
    assert "failed to load 'broken'" in message and str(server.log.parent) not in message
    index = client.get_model_repository_index()
    broken = [entry for entry in index if entry["name"] == "broken"]
    assert broken and broken[0]["state"] == "UNAVAILABLE" and "model.onnx" in broken[0]["reason"]
    assert all(str(server.log.parent) not in json.dumps(entry) for entry in index)


def test_strict_readiness(client: httpclient.InferenceServerClient) -> None:
    # 'broken' should serve and does not: not ready, yet live (a supervisor must not restart on it)
    assert client.is_server_live() and not client.is_server_ready()
    assert client.is_model_ready("tiny") and not client.is_model_ready("broken")


def test_server_name_is_a_setting(client: httpclient.InferenceServerClient) -> None:
    assert client.get_server_metadata()["name"] == "conformance-edge"


def test_cuda_shared_memory_as_a_triton_without_gpus(client: httpclient.InferenceServerClient) -> None:
    client.unregister_cuda_shared_memory()  # clients do this before they start
    client.unregister_cuda_shared_memory("region0")
    assert client.get_cuda_shared_memory_status() == []
    message = _error(lambda: client.register_cuda_shared_memory("region0", b"\0" * 64, 0, 64))
    assert "failed to register CUDA shared memory region" in message


def test_load_with_a_config_override_changes_how_the_model_is_served(
        client: httpclient.InferenceServerClient) -> None:
    override = {"max_batch_size": 2, "dynamic_batching": {"max_queue_delay_microseconds": 100},
                "instance_group": [{"count": 2}]}
    client.load_model("tiny", config=json.dumps(override))
    try:
        config = client.get_model_config("tiny")
        assert config["max_batch_size"] == 2 and config["instance_group"][0]["count"] == 2
        assert config["dynamic_batching"]["max_queue_delay_microseconds"] == 100
        np.testing.assert_allclose(_infer(client, "tiny")[0], X[0] @ np.arange(12, dtype=np.float32).reshape(4, 3)
                                   / 10.0 + np.array([0.5, -1.0, 2.0], dtype=np.float32), rtol=1e-6)
        assert "batch size 3 is outside 1..2" in _error(
            lambda: client.infer("tiny", [_batch_of(3)]))
    finally:
        client.load_model("tiny")  # back to the settings' way of serving it


def test_file_overrides_are_refused(client: httpclient.InferenceServerClient) -> None:
    message = _error(lambda: client.load_model("tiny", config="{}", files={"file:1/model.onnx": b"\0"}))
    assert "file" in message and "signed bundle" in message, message


def test_infinite_outputs_are_not_sent_as_null(client: httpclient.InferenceServerClient) -> None:
    message = _error(lambda: _infer(client, "inf", binary=False))
    assert "binary" in message, message  # the answer says how to get them
    assert np.isposinf(_infer(client, "inf", binary=True)).all()


def test_with_no_pointer_the_highest_version_serves(client: httpclient.InferenceServerClient) -> None:
    assert client.is_model_ready("tiny", "2") and not client.is_model_ready("tiny", "1")
    given = _batch_of(1)
    assert client.infer("tiny", [given]).get_response()["model_version"] == "2"


def _batch_of(rows: int) -> httpclient.InferInput:
    given = httpclient.InferInput("input", [rows, 4], "FP32")
    given.set_data_from_numpy(np.ones((rows, 4), dtype=np.float32))
    return given
