"""The whole reporting path on 127.0.0.1: runtime (sampler → spool) → agent → edge-fleet serve → history.

Three real processes, as on a device and its fleet: `edge-runtime serve` with telemetry every 0.5 s
into its SQLite spool, `edge-runtime agent` uploading that spool, and `edge-fleet serve` (gunicorn)
on SQLite and on a real PostgreSQL. Inference traffic goes to the runtime; the test then reads the
device's history and the device list from the central server's API, as the dashboard does.
"""

from __future__ import annotations

import json
import ssl
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any, Dict, Iterator, List, Tuple

import numpy as np
import pytest
from fleet_support import Served, make_ca_and_server_cert, start_fleet, stop_fleet
from runtime_support import RunningServer, affine, start_server


@pytest.fixture()
def fleet(request: pytest.FixtureRequest, tmp_path: Path, database_url: str) -> Iterator[Served]:
    """edge-fleet serve, plain HTTP on 127.0.0.1 or TLS with a certificate from a CA made here."""
    config = tmp_path / "fleet.yaml"
    config.write_text(f"database_url: {database_url}\nsecret_file: secret.key\n")
    extra: List[str] = []
    context = None
    if request.param == "https":
        ca, cert, key = make_ca_and_server_cert(tmp_path)
        extra, context = ["--tls-cert", str(cert), "--tls-key", str(key)], ssl.create_default_context(cafile=str(ca))
    served = start_fleet(config, tmp_path / "fleet.log", extra, context)  # enrolls dev-a
    yield served
    stop_fleet(served)


@pytest.fixture()
def runtime(tmp_path: Path, repository: Path, keypair: Tuple[Path, Path], device_configs_dir: Path
            ) -> Iterator[RunningServer]:
    settings = tmp_path / "runtime.yaml"
    settings.write_text(f"device_config: {device_configs_dir / 'x86-cpu.yaml'}\ntrusted_keys: [{keypair[1]}]\n"
                        "warmup_runs: 1\ndrain_timeout_s: 5\n"
                        f"telemetry: {{interval_s: 0.5, spool_path: {tmp_path / 'spool.sqlite'}}}\n")
    server = start_server(["--repository", str(repository), "--config", str(settings)], tmp_path / "runtime.log")
    yield server
    assert server.stop() == 0


@pytest.fixture()
def agent(tmp_path: Path, fleet: Served, runtime: RunningServer) -> Iterator[subprocess.Popen]:
    (tmp_path / "device-token").write_text(fleet.device_token + "\n")
    config = tmp_path / "agent.yaml"
    scheme, ca = ("https", tmp_path / "ca.pem") if fleet.context is not None else ("http", None)
    config.write_text(f"server_url: {scheme}://127.0.0.1:{fleet.port}\ndevice_id: dev-a\ntoken_file: device-token\n"
                      f"ca_bundle: {ca or 'null'}\nspool_path: {tmp_path / 'spool.sqlite'}\npoll_s: 0.5\n")
    log = (tmp_path / "agent.log").open("w")
    process = subprocess.Popen([sys.executable, "-m", "edge_runtime.cli", "agent", "--config", str(config)],
                               stdout=log, stderr=subprocess.STDOUT)
    yield process
    process.terminate()
    assert process.wait(30) == 0


def _infer(runtime: RunningServer, count: int) -> None:
    x = np.ones((2, 4), np.float32)
    body = json.dumps({"inputs": [{"name": "input", "datatype": "FP32", "shape": [2, 4],
                                   "data": x.ravel().tolist()}]}).encode()
    for _ in range(count):
        request = urllib.request.Request(f"http://{runtime.url}/v2/models/tiny/infer", data=body, method="POST")
        with urllib.request.urlopen(request, timeout=10) as reply:
            outputs = json.loads(reply.read())["outputs"][0]["data"]
        np.testing.assert_allclose(np.array(outputs, np.float32).reshape(2, 3), affine(x), rtol=1e-5)


def _history(fleet: Served) -> Dict[str, Any]:
    status, _, body = fleet.request("GET", f"/api/v1/devices/dev-a/history?since=0&until={time.time() + 60:.0f}",
                                    token=fleet.operator_token)
    assert status == 200, body
    return dict(json.loads(body))


def _served_points(history: Dict[str, Any]) -> List[Dict[str, Any]]:
    return [p for p in history["points"] if p["models"].get("tiny", {}).get("requests")]


@pytest.mark.parametrize("database_url, fleet", [("sqlite", "http"), ("postgresql", "http"), ("sqlite", "https")],
                         indirect=True, ids=["sqlite", "postgresql", "sqlite-tls"])
def test_inference_traffic_shows_in_the_servers_history(fleet: Served, runtime: RunningServer,
                                                        agent: subprocess.Popen) -> None:
    _infer(runtime, 60)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        points = _served_points(_history(fleet))
        if sum(p["models"]["tiny"]["requests"] for p in points) >= 60:
            break
        time.sleep(0.5)
    else:
        raise AssertionError(f"the server never showed 60 requests: {_history(fleet)}")
    assert sum(p["models"]["tiny"]["requests"] for p in points) == 60  # each request counted once
    assert all(p["models"]["tiny"]["p50_ms"] > 0 and p["models"]["tiny"]["p99_ms"] >= p["models"]["tiny"]["p50_ms"]
               for p in points)
    assert all(p["rss_mb"] > 10 and p["mem_available_mb"] > 0 for p in points)
    status, _, body = fleet.request("GET", "/api/v1/devices", token=fleet.operator_token)
    devices = {d["device_id"]: d for d in json.loads(body)}
    assert status == 200 and devices["dev-a"]["online"] is True
    assert {(m["name"], m["version"], m["backend"]) for m in devices["dev-a"]["models"]} == {
        ("tiny", "1", "onnxruntime")}
    assert devices["dev-a"]["dropped"] == 0
