"""The TensorRT backend end to end in the real server, on a simulated Jetson (fakes at the seam only).

`edge-runtime serve` runs as a subprocess with ``PYTHONPATH=tests/trt_fakes/site``, whose ``tensorrt``
and ``pycuda`` are the recording fakes (a Xavier: TensorRT 8.5.2, compute 7.2). Everything else is the
code a Jetson runs: backend choice, loader (no engine in the bundle: build on the device), builder,
engine cache, runner, zero-copy buffers, the memory budget, the HTTP API. The fake engine computes
with ONNX Runtime on the bytes at the tensor addresses, so answers are real numbers.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Tuple

import numpy as np
import pytest
from runtime_support import RunningServer, affine, call_json, start_server

SITE = Path(__file__).resolve().parents[1] / "trt_fakes" / "site"
ENV = {"PYTHONPATH": str(SITE)}


def _infer(server: RunningServer, x: np.ndarray) -> Tuple[int, Any]:
    body = {"inputs": [{"name": "input", "datatype": "FP32", "shape": list(x.shape), "data": x.ravel().tolist()}]}
    return call_json(server, "POST", "/v2/models/tiny/infer", body)


@pytest.fixture()
def xavier_runtime(tmp_path: Path, device_configs_dir: Path, keypair: Tuple[Path, Path]) -> Path:
    """Runtime settings for agx-xavier.yaml (TensorRT, zero-copy) with an engine cache in tmp_path."""
    device = tmp_path / "agx-xavier.yaml"
    device.write_text((device_configs_dir / "agx-xavier.yaml").read_text())
    runtime = tmp_path / "runtime.yaml"
    runtime.write_text(f"device_config: {device}\ntrusted_keys: [{keypair[1]}]\nwarmup_runs: 1\n"
                       f"drain_timeout_s: 5\nengine_cache_dir: {tmp_path / 'engines'}\n")
    return runtime


def _serve(repository: Path, runtime: Path, log: Path) -> RunningServer:
    return start_server(["--repository", str(repository), "--config", str(runtime)], log, env=ENV, timeout=120)


def test_built_on_first_load_served_over_http_then_taken_from_the_cache(
        repository: Path, xavier_runtime: Path, tmp_path: Path) -> None:
    server = _serve(repository, xavier_runtime, tmp_path / "first.log")
    try:
        x = np.random.default_rng(0).random((3, 4), dtype=np.float32)
        status, reply = _infer(server, x)
        assert status == 200, reply
        got = np.array(reply["outputs"][0]["data"], np.float32).reshape(3, 3)
        np.testing.assert_allclose(got, affine(x), rtol=1e-5, atol=1e-5)
        status, metadata = call_json(server, "GET", "/v2/models/tiny")
        assert status == 200 and metadata["backend"] == "tensorrt" and "backend_note" not in metadata
        status, config = call_json(server, "GET", "/v2/models/tiny/config")
        assert config["instance_group"][0]["kind"] == "KIND_GPU"
        assert config["parameters"]["artifact"]["string_value"].startswith("engine cache: tiny v1 agx-xavier fp16")
        # a request the engine's profile cannot take: one clear 400, the model keeps serving
        status, reply = _infer(server, np.zeros((33, 4), np.float32))
        assert status == 400 and "batch size 33" in reply["error"]
        assert _infer(server, x)[0] == 200
    finally:
        assert server.stop() == 0
    log = server.log.read_text()
    assert "building tiny v1 agx-xavier fp16" in log and "built tiny v1 agx-xavier fp16" in log
    plans = list((tmp_path / "engines").glob("*.plan"))
    assert len(plans) == 1 and len(list((tmp_path / "engines").glob("*.json"))) == 1

    again = _serve(repository, xavier_runtime, tmp_path / "second.log")
    try:
        assert _infer(again, x)[0] == 200
    finally:
        again.stop()
    assert "building" not in again.log.read_text()  # the restart took the cached engine


def test_a_corrupted_cached_engine_is_rebuilt_not_loaded(
        repository: Path, xavier_runtime: Path, tmp_path: Path) -> None:
    _serve(repository, xavier_runtime, tmp_path / "first.log").stop()
    plan = next((tmp_path / "engines").glob("*.plan"))
    data = bytearray(plan.read_bytes())
    data[-1] ^= 0xFF  # one flipped bit in the weights' part of the plan
    plan.write_bytes(bytes(data))
    server = _serve(repository, xavier_runtime, tmp_path / "second.log")
    try:
        x = np.ones((2, 4), np.float32)
        status, reply = _infer(server, x)
        assert status == 200
        np.testing.assert_allclose(np.array(reply["outputs"][0]["data"], np.float32).reshape(2, 3), affine(x),
                                   rtol=1e-5)
    finally:
        server.stop()
    log = server.log.read_text()
    assert "does not match its record" in log and "building tiny v1 agx-xavier fp16" in log


def test_an_engine_over_the_memory_budget_is_refused_and_the_server_stays_live(
        repository: Path, xavier_runtime: Path, tmp_path: Path) -> None:
    device = Path(xavier_runtime.read_text().split("device_config: ")[1].split("\n")[0])
    device.write_text(device.read_text().replace("memory_budget_mb: 8192", "memory_budget_mb: 1"))
    server = start_server(["--repository", str(repository), "--config", str(xavier_runtime)],
                          tmp_path / "server.log", env=ENV, timeout=120, wait_for="live")
    try:
        status, index = call_json(server, "POST", "/v2/repository/index")
        assert status == 200 and index[0]["state"] == "UNAVAILABLE"
        assert "reported by its TensorRT engine" in index[0]["reason"]
        assert "memory_budget_mb 1" in index[0]["reason"]
        assert _infer(server, np.ones((1, 4), np.float32))[0] == 503
    finally:
        server.stop()


def test_an_engine_cache_that_cannot_be_written_still_serves(
        repository: Path, xavier_runtime: Path, tmp_path: Path) -> None:
    (tmp_path / "not-a-dir").write_text("a file where the cache's parent should be")  # ENOTDIR, even for root
    xavier_runtime.write_text(xavier_runtime.read_text().replace(
        f"engine_cache_dir: {tmp_path / 'engines'}", f"engine_cache_dir: {tmp_path / 'not-a-dir' / 'engines'}"))
    server = _serve(repository, xavier_runtime, tmp_path / "server.log")
    try:
        assert _infer(server, np.ones((1, 4), np.float32))[0] == 200
    finally:
        server.stop()
    assert "cannot keep the engine tiny v1 agx-xavier fp16" in server.log.read_text()


def test_two_instances_build_the_engine_once(repository: Path, xavier_runtime: Path, tmp_path: Path) -> None:
    xavier_runtime.write_text(xavier_runtime.read_text() + "instances: 2\n")
    server = _serve(repository, xavier_runtime, tmp_path / "server.log")
    try:
        status, config = call_json(server, "GET", "/v2/models/tiny/config")
        assert status == 200 and config["instance_group"][0]["count"] == 2
        x = np.ones((2, 4), np.float32)
        assert all(_infer(server, x)[0] == 200 for _ in range(4))
    finally:
        server.stop()
    log = server.log.read_text()
    assert log.count("building tiny v1 agx-xavier fp16") == 1, log  # the second instance waited, then took the cache


def test_a_signed_but_unusable_engine_fails_the_model_not_the_server(
        tmp_path: Path, keypair: Tuple[Path, Path], xavier_runtime: Path) -> None:
    from edge_runtime.bundle.manifest import TargetInfo, TensorSpec
    from edge_runtime.bundle.signing import load_private_key
    from edge_runtime.bundle.writer import ArtifactSpec, finalize_bundle

    bundle = tmp_path / "repo" / "tiny" / "1"
    (bundle / "engines").mkdir(parents=True)
    (bundle / "model.onnx").write_bytes(b"not used")
    (bundle / "engines" / "agx-xavier.plan").write_bytes(b"\x00" * 64)  # what TensorRT cannot deserialize
    finalize_bundle(bundle, name="tiny", version="1", inputs=[TensorSpec("input", "float32", (-1, 4))],
                    outputs=[TensorSpec("output", "float32", (-1, 3))], source_model_sha256="0" * 64,
                    artifacts=[ArtifactSpec("model.onnx", "onnx", None, "fp32"),
                               ArtifactSpec("engines/agx-xavier.plan", "engine", "agx-xavier", "fp16")],
                    targets=[TargetInfo("agx-xavier", "jetson-agx-xavier", "tensorrt", "fp16", "7.2", "8.5.2.2")],
                    private_key=load_private_key(keypair[0]))
    server = start_server(["--repository", str(tmp_path / "repo"), "--config", str(xavier_runtime)],
                          tmp_path / "server.log", env=ENV, timeout=120, wait_for="live")
    try:
        status, index = call_json(server, "POST", "/v2/repository/index")
        assert status == 200 and index[0]["state"] == "UNAVAILABLE"
        assert "TensorRT cannot deserialize engines/agx-xavier.plan" in index[0]["reason"]
        assert str(tmp_path) not in json.dumps(index)
        assert _infer(server, np.ones((1, 4), np.float32))[0] == 503
    finally:
        assert server.stop() == 0
