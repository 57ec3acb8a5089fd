"""A device config that prefers TensorRT, on a host without it: the real `edge-runtime serve` and `info`.

With ``tensorrt.allow_fallback: true`` the model is served by ONNX Runtime, and the log,
``/v2/models/<m>`` (and ``/config``) and ``edge-runtime info --config`` say so and why; with
``false`` the model is not served (503, the index says TensorRT is missing), the server stays live,
and the log says why.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any, Iterator, Tuple

import numpy as np
import pytest
from runtime_support import RunningServer, affine, call_json, start_server

from edge_runtime.backends.tensorrt import api

pytestmark = pytest.mark.skipif(api.unavailable_reason() is None,
                                reason="TensorRT and pycuda are installed here: nothing falls back")

TRT_MISSING = "the Python module 'tensorrt' is not installed"


def xavier_runtime_config(tmp_path: Path, device_configs_dir: Path, public_key: Path, allow_fallback: bool) -> Path:
    """Runtime settings whose device config is agx-xavier.yaml (prefers TensorRT) with ``allow_fallback``."""
    text = (device_configs_dir / "agx-xavier.yaml").read_text()
    assert "allow_fallback: false" in text
    device = tmp_path / "agx-xavier.yaml"
    device.write_text(text.replace("allow_fallback: false", f"allow_fallback: {str(allow_fallback).lower()}"))
    runtime = tmp_path / "runtime.yaml"
    runtime.write_text(f"device_config: {device}\ntrusted_keys: [{public_key}]\nwarmup_runs: 1\n"
                       "drain_timeout_s: 5\n")
    return runtime


def info(runtime: Path) -> Any:
    done = subprocess.run([sys.executable, "-m", "edge_runtime.cli", "info", "--json", "--config", str(runtime)],
                          capture_output=True, text=True, timeout=60, check=True)
    return json.loads(done.stdout)


@pytest.fixture()
def serving(request: pytest.FixtureRequest, repository: Path, tmp_path: Path, keypair: Tuple[Path, Path],
            device_configs_dir: Path) -> Iterator[Tuple[RunningServer, Path]]:
    """The server on the tiny repository with the Xavier config; ``request.param`` is allow_fallback."""
    runtime = xavier_runtime_config(tmp_path, device_configs_dir, keypair[1], request.param)
    server = start_server(["--repository", str(repository), "--config", str(runtime)], tmp_path / "server.log",
                          wait_for="ready" if request.param else "live")
    yield server, runtime
    server.stop()


@pytest.mark.parametrize("serving", [True], indirect=True, ids=["allow_fallback"])
def test_fallback_is_served_by_onnxruntime_and_said_everywhere(serving: Tuple[RunningServer, Path],
                                                               tmp_path: Path) -> None:
    server, runtime = serving
    log = server.log.read_text()
    said = [line for line in log.splitlines() if "served by onnxruntime" in line]
    assert len(said) == 1, log
    assert "WARNING" in said[0] and "model tiny version 1" in said[0]
    assert TRT_MISSING in said[0] and "allow_fallback: true" in said[0]

    for path in ("/v2/models/tiny", "/v2/models/tiny/versions/1"):
        status, metadata = call_json(server, "GET", path)
        assert status == 200
        assert metadata["platform"] == "onnxruntime_onnx" and metadata["backend"] == "onnxruntime"
        assert "device config 'agx-xavier'" in metadata["backend_note"]
        assert TRT_MISSING in metadata["backend_note"] and "allow_fallback: true" in metadata["backend_note"]
        assert str(tmp_path) not in json.dumps(metadata)
    status, config = call_json(server, "GET", "/v2/models/tiny/config")
    assert status == 200 and config["backend"] == "onnxruntime"
    assert config["parameters"]["backend_note"]["string_value"] == metadata["backend_note"]

    x = [[1.0, 2.0, 3.0, 4.0]]
    status, result = call_json(server, "POST", "/v2/models/tiny/infer",
                          {"inputs": [{"name": "input", "shape": [1, 4], "datatype": "FP32", "data": x[0]}]})
    assert status == 200
    np.testing.assert_allclose(result["outputs"][0]["data"], affine(np.array(x, dtype=np.float32))[0], rtol=1e-6)

    facts = info(runtime)
    assert facts["backend_preferred"] == "tensorrt" and facts["backend"] == "onnxruntime"
    assert facts["backend_note"] == metadata["backend_note"]
    assert facts["tensorrt"].startswith("not installed (") or facts["pycuda"].startswith("not installed (")


@pytest.mark.parametrize("serving", [True], indirect=True, ids=["allow_fallback"])
def test_tritonclient_parses_the_fallback_metadata(serving: Tuple[RunningServer, Path]) -> None:
    httpclient = pytest.importorskip("tritonclient.http")
    client = httpclient.InferenceServerClient(serving[0].url)
    metadata = client.get_model_metadata("tiny")
    assert metadata["backend"] == "onnxruntime" and TRT_MISSING in metadata["backend_note"]
    assert metadata["inputs"] == [{"name": "input", "datatype": "FP32", "shape": [-1, 4]}]
    config = client.get_model_config("tiny")
    assert TRT_MISSING in config["parameters"]["backend_note"]["string_value"]


@pytest.mark.parametrize("serving", [False], indirect=True, ids=["no_fallback"])
def test_without_fallback_the_model_is_not_served_and_the_server_says_why(
        serving: Tuple[RunningServer, Path], tmp_path: Path) -> None:
    server, runtime = serving
    assert call_json(server, "GET", "/v2/health/live")[0] == 200
    assert call_json(server, "GET", "/v2/health/ready")[0] == 503
    status, answer = call_json(server, "POST", "/v2/models/tiny/infer",
                          {"inputs": [{"name": "input", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3, 4]}]})
    assert status == 503 and set(answer) == {"error"}
    assert call_json(server, "GET", "/v2/models/tiny")[0] == 503

    status, index = call_json(server, "POST", "/v2/repository/index", {})
    assert status == 200
    reason = next(entry["reason"] for entry in index if entry["name"] == "tiny" and entry["version"] == "1")
    assert TRT_MISSING in reason and "set tensorrt.allow_fallback: true in agx-xavier.yaml" in reason
    assert str(tmp_path) not in json.dumps(index)

    log = server.log.read_text()
    failed = [line for line in log.splitlines() if "model tiny version 1 failed to load" in line]
    assert len(failed) == 1 and TRT_MISSING in failed[0] and "install TensorRT and pycuda" in failed[0], log
    assert "served by onnxruntime" not in log

    facts = info(runtime)
    assert facts["backend_preferred"] == "tensorrt" and facts["backend"] is None
    assert "allow_fallback: true" in facts["backend_note"]
