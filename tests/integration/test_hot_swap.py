"""Hot swap under load: the health gate stages, probes and promotes tiny/2 while clients keep inferring.

A real `edge-runtime serve` on 127.0.0.1 with tiny/1 active (pointer) and tiny/2 on disk; the
model-repository API is restricted, so the gate's calls carry the header. Client threads send
inference requests to ``/v2/models/tiny/infer`` before, during and after the switch: none may fail.
"""

from __future__ import annotations

import http.client
import json
import threading
from pathlib import Path
from typing import Dict, Iterator, List, Tuple

import numpy as np
import pytest
from runtime_support import RunningServer, affine, get, start_server, write_runtime_config, write_tiny_bundle

from edge_runtime.config.device import HealthGateSettings
from edge_runtime.fleet.health_gate import run_gate
from edge_runtime.serving.active_version import POINTER_NAME, ActiveVersion, write_pointer

SECRET = "hot-swap-secret"
HEADERS = {"repo-key": SECRET}
X = np.array([[1.0, 2.0, 3.0, 4.0]], dtype=np.float32)
CLIENTS = 6


@pytest.fixture()
def repo_root(tmp_path: Path, keypair: Tuple[Path, Path]) -> Path:
    """tiny/1 active (the pointer says so), tiny/2 on disk, not loaded."""
    root = tmp_path / "repo"
    for version in ("1", "2"):
        write_tiny_bundle(root / "tiny" / version, keypair[0], version)
    write_pointer(root / "tiny", ActiveVersion("1"))
    return root


@pytest.fixture()
def server(repo_root: Path, tmp_path: Path, keypair: Tuple[Path, Path],
           device_configs_dir: Path) -> Iterator[RunningServer]:
    config = write_runtime_config(
        tmp_path / "runtime.yaml", device_configs_dir, keypair[1],
        "batching: {max_batch_size: 8, max_queue_delay_us: 500, max_queue_size: 256}\n"
        "restricted_api:\n  - {groups: [model-repository], header: repo-key, value_env: EDGE_TEST_REPO_KEY}\n")
    running = start_server(["--repository", str(repo_root), "--config", str(config)], tmp_path / "server.log",
                           env={"EDGE_TEST_REPO_KEY": SECRET})
    yield running
    running.stop()


class Load:
    """Client threads inferring on /v2/models/tiny/infer until stopped; every answer is recorded."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.stop_event = threading.Event()
        self.lock = threading.Lock()
        self.failures: List[str] = []
        self.versions: Dict[str, int] = {}
        self.count = 0
        self.threads = [threading.Thread(target=self._run, daemon=True) for _ in range(CLIENTS)]

    def __enter__(self) -> Load:
        for thread in self.threads:
            thread.start()
        self.wait_for(self.count + 5 * CLIENTS)
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop_event.set()
        for thread in self.threads:
            thread.join(30)

    def wait_for(self, count: int) -> None:
        """Block until ``count`` requests in all have been answered (or some failed)."""
        while not self.stop_event.wait(0.01):
            with self.lock:
                if self.count >= count or self.failures:
                    return

    def _run(self) -> None:
        body = json.dumps({"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 4],
                                       "data": X.ravel().tolist()}]})
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        try:
            while not self.stop_event.is_set():
                try:
                    connection.request("POST", "/v2/models/tiny/infer", body, {"Content-Type": "application/json"})
                    reply = connection.getresponse()
                    data = reply.read()
                except (OSError, http.client.HTTPException) as exc:
                    self._record(f"no answer: {exc!r}", None)
                    connection.close()
                    continue
                if reply.status != 200:
                    self._record(f"{reply.status} {data[:200]!r}", None)
                    continue
                answer = json.loads(data)
                output = np.array(answer["outputs"][0]["data"], np.float32).reshape(1, 3)
                ok = np.allclose(output, affine(X), rtol=1e-5)
                self._record("" if ok else f"wrong output {output}", answer["model_version"])
        finally:
            connection.close()

    def _record(self, failure: str, version: object) -> None:
        with self.lock:
            self.count += 1
            if failure:
                self.failures.append(failure)
            else:
                self.versions[str(version)] = self.versions.get(str(version), 0) + 1


def metadata_versions(port: int, version: str = "") -> Tuple[int, List[str]]:
    path = "/v2/models/tiny" + (f"/versions/{version}" if version else "")
    status, _, body = get(port, path)
    return status, json.loads(body).get("versions", []) if status == 200 else []


def test_hot_swap_under_load_fails_no_request(server: RunningServer, repo_root: Path) -> None:
    with Load(server.port) as load:
        result = run_gate(f"http://{server.url}", "tiny", "2", HealthGateSettings(probe_requests=20),
                          headers=HEADERS)
        load.wait_for(load.count + 5 * CLIENTS)  # still under load after the switch
    assert result.passed, result.reason
    assert load.failures == [], f"{len(load.failures)} of {load.count} requests failed: {load.failures[:5]}"
    assert load.versions.get("1", 0) > 0 and load.versions.get("2", 0) > 0, load.versions
    assert metadata_versions(server.port) == (200, ["2"])
    assert json.loads((repo_root / "tiny" / POINTER_NAME).read_text()) == {"active": "2", "last_good": "1"}
    assert metadata_versions(server.port, "1")[0] == 404  # the old version was unloaded after draining


def _assert_v1_untouched(server: RunningServer, repo_root: Path, pointer_before: bytes) -> None:
    assert metadata_versions(server.port) == (200, ["1"])
    assert metadata_versions(server.port, "2")[0] == 404  # v2 unloaded
    assert (repo_root / "tiny" / POINTER_NAME).read_bytes() == pointer_before


def test_a_gate_over_its_latency_budget_leaves_v1_serving(server: RunningServer, repo_root: Path) -> None:
    pointer_before = (repo_root / "tiny" / POINTER_NAME).read_bytes()
    with Load(server.port) as load:
        result = run_gate(f"http://{server.url}", "tiny", "2",
                          HealthGateSettings(probe_requests=5, max_p99_ms=0.001), headers=HEADERS)
        load.wait_for(load.count + 5 * CLIENTS)
    assert not result.passed and "over the budget of 0.001 ms" in result.reason
    assert "active version is unchanged" in result.reason
    assert load.failures == [] and set(load.versions) == {"1"}
    _assert_v1_untouched(server, repo_root, pointer_before)


def test_a_broken_v2_bundle_is_refused_at_staging(server: RunningServer, repo_root: Path) -> None:
    model = repo_root / "tiny" / "2" / "model.onnx"
    model.write_bytes(model.read_bytes()[: model.stat().st_size // 2])  # an interrupted copy
    pointer_before = (repo_root / "tiny" / POINTER_NAME).read_bytes()
    with Load(server.port) as load:
        result = run_gate(f"http://{server.url}", "tiny", "2", HealthGateSettings(probe_requests=5),
                          headers=HEADERS)
    assert not result.passed and result.reason.startswith("tiny version 2: not staged: ")
    assert " 422 " in result.reason and str(repo_root) not in result.reason and "\n" not in result.reason
    assert load.failures == []
    _assert_v1_untouched(server, repo_root, pointer_before)


def test_the_gate_without_the_restricted_header_is_refused(server: RunningServer, repo_root: Path) -> None:
    result = run_gate(f"http://{server.url}", "tiny", "2", HealthGateSettings(probe_requests=5))
    assert not result.passed and "403 This API is restricted, expecting header 'repo-key'" in result.reason
    assert metadata_versions(server.port) == (200, ["1"])


def test_routes_answer_json_errors(server: RunningServer) -> None:
    def post(path: str) -> Tuple[int, dict]:
        connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
        try:
            connection.request("POST", path, b"", HEADERS)
            reply = connection.getresponse()
            return reply.status, json.loads(reply.read())
        finally:
            connection.close()

    base = "/v2/repository/models/tiny/versions"
    assert post(f"{base}/2/promote") == (409, {"error": "cannot promote 'tiny' version 2: it is not loaded and "
                                                        "ready"})
    assert post(f"{base}/9/stage")[0] == 404
    assert post(f"{base}/x/stage")[0] == 400
    assert post(f"{base}/2/unload") == (404, {"error": "model 'tiny' is not loaded at version 2"})
    assert post(f"{base}/2/stage") == (200, {"name": "tiny", "version": "2", "state": "READY"})
    assert metadata_versions(server.port, "2") == (200, ["2"]) and metadata_versions(server.port) == (200, ["1", "2"])
    assert post(f"{base}/2/unload") == (200, {})
    assert metadata_versions(server.port) == (200, ["1"])


def test_a_request_holding_the_old_version_during_promote_is_still_answered(
        repo_root: Path, keypair: Tuple[Path, Path], device_configs_dir: Path) -> None:
    """The infer route gets the model, then decodes the body, then queues: a promote in between must not fail it."""
    from edge_runtime.bundle.signing import load_public_key
    from edge_runtime.config import load_device_config, runtime_settings_from_mapping
    from edge_runtime.serving.repository import ModelRepository

    settings = runtime_settings_from_mapping({"device_config": "unused.yaml", "trusted_keys": ["unused.pub"],
                                              "warmup_runs": 1, "drain_timeout_s": 5.0}, "test-settings")
    repo = ModelRepository(repo_root, settings, load_device_config(device_configs_dir / "x86-cpu.yaml"),
                           [load_public_key(keypair[1])])
    try:
        repo.load_all()
        repo.stage("tiny", "2")
        held = repo.hold("tiny")  # what routes_infer does before reading the body
        swap = threading.Thread(target=repo.promote, args=("tiny", "2"))
        swap.start()  # the swap lands while that request decodes
        swap.join(1.0)  # the pointer is flipped at once; stopping the old version waits for the held request
        assert repo.active_version("tiny") == "2"
        try:
            np.testing.assert_allclose(held.infer({"input": X})["output"], affine(X), rtol=1e-6)
        finally:
            held.release()
            swap.join(30)
    finally:
        repo.close()
