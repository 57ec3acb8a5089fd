"""The unmodified tritonclient.http client against a real `edge-runtime serve` on 127.0.0.1."""

from __future__ import annotations

import urllib.request
import uuid
from pathlib import Path
from typing import Tuple

import numpy as np
import pytest
from runtime_support import RunningServer, affine, write_tiny_bundle

httpclient = pytest.importorskip("tritonclient.http")
from tritonclient.utils import InferenceServerException  # noqa: E402
from tritonclient.utils import shared_memory as shm  # noqa: E402

X = np.random.default_rng(0).random((3, 4), dtype=np.float32)


@pytest.fixture()
def client(server: RunningServer) -> httpclient.InferenceServerClient:
    return httpclient.InferenceServerClient(server.url)


def _infer(client: httpclient.InferenceServerClient, binary: bool, model: str = "tiny") -> np.ndarray:
    given = httpclient.InferInput("input", list(X.shape), "FP32")
    given.set_data_from_numpy(X, binary_data=binary)
    wanted = httpclient.InferRequestedOutput("output", binary_data=binary)
    return client.infer(model, [given], outputs=[wanted]).as_numpy("output")


def test_health_and_metadata(client: httpclient.InferenceServerClient) -> None:
    assert client.is_server_live() and client.is_server_ready()
    assert client.is_model_ready("tiny") and client.is_model_ready("tiny", "1")
    assert not client.is_model_ready("tiny", "7")
    metadata = client.get_model_metadata("tiny")
    assert metadata["versions"] == ["1"] and metadata["platform"] == "onnxruntime_onnx"
    assert metadata["inputs"] == [{"name": "input", "datatype": "FP32", "shape": [-1, 4]}]
    assert metadata["outputs"] == [{"name": "output", "datatype": "FP32", "shape": [-1, 3]}]
    assert "system_shared_memory" in client.get_server_metadata()["extensions"]
    config = client.get_model_config("tiny")
    assert config["max_batch_size"] == 8 and config["input"][0]["dims"] == [4]


@pytest.mark.parametrize("binary", [False, True], ids=["json", "binary"])
def test_infer(client: httpclient.InferenceServerClient, binary: bool) -> None:
    np.testing.assert_allclose(_infer(client, binary), affine(X), rtol=1e-6)


def test_infer_with_all_outputs_by_default(client: httpclient.InferenceServerClient) -> None:
    given = httpclient.InferInput("input", list(X.shape), "FP32")
    given.set_data_from_numpy(X)
    result = client.infer("tiny", [given])  # no outputs: the client asks for binary_data_output
    np.testing.assert_allclose(result.as_numpy("output"), affine(X), rtol=1e-6)


def test_system_shared_memory(client: httpclient.InferenceServerClient) -> None:
    tag = uuid.uuid4().hex[:8]
    out_bytes = 3 * 3 * 4
    handle_in = shm.create_shared_memory_region(f"in-{tag}", f"/edge_in_{tag}", X.nbytes)
    handle_out = shm.create_shared_memory_region(f"out-{tag}", f"/edge_out_{tag}", out_bytes)
    try:
        shm.set_shared_memory_region(handle_in, [X])
        client.register_system_shared_memory(f"in-{tag}", f"/edge_in_{tag}", X.nbytes)
        client.register_system_shared_memory(f"out-{tag}", f"/edge_out_{tag}", out_bytes)
        names = {region["name"] for region in client.get_system_shared_memory_status()}
        assert {f"in-{tag}", f"out-{tag}"} <= names
        given = httpclient.InferInput("input", list(X.shape), "FP32")
        given.set_shared_memory(f"in-{tag}", X.nbytes)
        wanted = httpclient.InferRequestedOutput("output", binary_data=True)
        wanted.set_shared_memory(f"out-{tag}", out_bytes)
        result = client.infer("tiny", [given], outputs=[wanted])
        entry = result.get_output("output")  # the answer is in the region, not in the body
        assert "data" not in entry and entry["parameters"]["shared_memory_region"] == f"out-{tag}"
        written = shm.get_contents_as_numpy(handle_out, np.float32, [3, 3])
        np.testing.assert_allclose(written, affine(X), rtol=1e-6)
        client.unregister_system_shared_memory(f"in-{tag}")
        client.unregister_system_shared_memory(f"out-{tag}")
        assert client.get_system_shared_memory_status() == []
    finally:
        shm.destroy_shared_memory_region(handle_in)
        shm.destroy_shared_memory_region(handle_out)


def test_repository_index_unload_and_load(client: httpclient.InferenceServerClient) -> None:
    index = {entry["name"]: entry for entry in client.get_model_repository_index()}
    assert index["tiny"]["state"] == "READY" and index["fake"]["state"] == "READY"
    client.unload_model("tiny")
    assert not client.is_model_ready("tiny")
    with pytest.raises(InferenceServerException, match="not loaded"):
        _infer(client, binary=True)
    client.load_model("tiny")
    assert client.is_model_ready("tiny")
    np.testing.assert_allclose(_infer(client, binary=True), affine(X), rtol=1e-6)


def test_failed_reload_keeps_the_serving_version(client: httpclient.InferenceServerClient, repository: Path,
                                                 keypair: Tuple[Path, Path]) -> None:
    write_tiny_bundle(repository / "tiny" / "2", keypair[0], "2")
    model_file = repository / "tiny" / "2" / "model.onnx"
    data = bytearray(model_file.read_bytes())
    data[len(data) // 2] ^= 0xFF  # tampered after signing
    model_file.write_bytes(bytes(data))
    with pytest.raises(InferenceServerException, match="sha256 mismatch"):
        client.load_model("tiny")
    assert client.is_model_ready("tiny", "1")  # version 1 still serves
    np.testing.assert_allclose(_infer(client, binary=False), affine(X), rtol=1e-6)
    entry = next(e for e in client.get_model_repository_index() if e["name"] == "tiny")
    assert entry["version"] == "1" and entry["state"] == "READY"
    # a good version 3 then replaces version 1
    write_tiny_bundle(repository / "tiny" / "3", keypair[0], "3")
    client.load_model("tiny")
    assert client.get_model_metadata("tiny")["versions"] == ["3"]
    assert not client.is_model_ready("tiny", "1")


def test_statistics_and_metrics(client: httpclient.InferenceServerClient, server: RunningServer) -> None:
    from prometheus_client.parser import text_string_to_metric_families

    for _ in range(3):
        _infer(client, binary=True)
    with pytest.raises(InferenceServerException):
        client.infer("tiny", [httpclient.InferInput("wrong", [1, 4], "FP32")])
    stats = client.get_inference_statistics("tiny")["model_stats"][0]
    assert stats["inference_count"] == 9 and stats["inference_stats"]["success"]["count"] == 3
    with urllib.request.urlopen(f"http://{server.url}/metrics", timeout=5) as reply:
        text = reply.read().decode()
    samples = {
        (sample.name, sample.labels.get("model")): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }
    assert samples[("nv_inference_request_success", "tiny")] == 3
    assert samples[("nv_inference_count", "tiny")] == 9
    assert samples[("nv_inference_exec_count", "tiny")] >= 1
    assert samples[("nv_inference_request_duration_us", "tiny")] > 0
    assert samples[("nv_inference_compute_infer_duration_us", "tiny")] > 0
    assert samples[("process_resident_memory_bytes", None)] > 10e6


def test_unknown_model_is_404(client: httpclient.InferenceServerClient) -> None:
    with pytest.raises(InferenceServerException, match="404") as raised:
        _infer(client, binary=True, model="nope")
    assert "Request for unknown model: 'nope' is not found" in str(raised.value)


def test_sigterm_drains_and_exits_cleanly(server: RunningServer) -> None:
    assert server.stop() == 0
    assert "edge-runtime: stopped" in server.log.read_text()
