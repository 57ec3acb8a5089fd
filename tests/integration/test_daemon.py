"""The composition root through `edge-runtime serve`: start-up refusals, fake models, drain on SIGTERM."""

from __future__ import annotations

import json
import signal
import socket
import threading
import time
import urllib.request
from pathlib import Path
from typing import List, Tuple

import pytest
from runtime_support import get, run_serve, start_server, write_runtime_config


@pytest.fixture()
def config(tmp_path: Path, device_configs_dir: Path, keypair: Tuple[Path, Path]) -> Path:
    return write_runtime_config(tmp_path / "runtime.yaml", device_configs_dir, keypair[1])


def _one_error_line(stderr: str) -> str:
    """The one error line (other lines may be library warnings, e.g. cryptography's on Python 3.8)."""
    assert "Traceback" not in stderr, stderr
    lines = [line for line in stderr.splitlines() if line.startswith("edge-runtime:")]
    assert len(lines) == 1 and lines[0].startswith("edge-runtime: error: "), stderr
    return lines[0]


def test_non_loopback_bind_without_restrictions_is_refused(config: Path) -> None:
    result = run_serve(["--config", str(config), "--fake", "fake", "--host", "0.0.0.0", "--port", "0"])
    assert result.returncode == 1
    line = _one_error_line(result.stderr)
    assert "0.0.0.0" in line and "model-repository and shared-memory" in line


def test_missing_secret_is_one_line(tmp_path: Path, device_configs_dir: Path, keypair: Tuple[Path, Path]) -> None:
    config = write_runtime_config(tmp_path / "runtime.yaml", device_configs_dir, keypair[1],
                                  "restricted_api: [{groups: [model-repository], header: admin-key, "
                                  "value_env: EDGE_TEST_UNSET_SECRET}]\n")
    result = run_serve(["--config", str(config), "--fake", "fake", "--port", "0"], env={})
    assert result.returncode == 1
    assert "EDGE_TEST_UNSET_SECRET is not set" in _one_error_line(result.stderr)


def test_a_port_in_use_is_one_line(config: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        result = run_serve(["--config", str(config), "--fake", "fake", "--port", str(port)])
    assert result.returncode == 1
    assert f"cannot listen on 127.0.0.1:{port}: Address already in use" in _one_error_line(result.stderr)


@pytest.mark.parametrize("spec", ["slow:delay_ms=abc", "slow:colour=red", ":delay_ms=1"])
def test_bad_fake_spec_is_one_line(config: Path, spec: str) -> None:
    result = run_serve(["--config", str(config), "--fake", spec, "--port", "0"])
    assert result.returncode == 1
    assert "--fake" in _one_error_line(result.stderr)


def _infer(port: int, model: str) -> Tuple[int, dict]:
    body = json.dumps({"inputs": [{"name": "INPUT0", "shape": [1, 16], "datatype": "FP32", "data": [1.0] * 16}]})
    request = urllib.request.Request(f"http://127.0.0.1:{port}/v2/models/{model}/infer", data=body.encode(),
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as reply:
        return reply.status, json.loads(reply.read())


def test_fake_models_with_options_and_drain_on_sigterm(config: Path, tmp_path: Path) -> None:
    server = start_server(["--config", str(config), "--fake", "plain", "--fake", "slow:delay_ms=1500,scale=3"],
                          tmp_path / "server.log")
    try:
        assert _infer(server.port, "plain")[1]["outputs"][0]["data"] == [3.0] * 16  # 2x + 1
        answers: List[Tuple[int, dict]] = []
        in_flight = threading.Thread(target=lambda: answers.append(_infer(server.port, "slow")))
        in_flight.start()
        time.sleep(0.5)  # the slow request is being served
        server.process.send_signal(signal.SIGTERM)
        in_flight.join(30)
        assert answers and answers[0][0] == 200 and answers[0][1]["outputs"][0]["data"] == [4.0] * 16  # 3x + 1
        assert server.process.wait(30) == 0
        assert "edge-runtime: stopped" in server.log.read_text()
    finally:
        server.stop()
    with pytest.raises(OSError):
        get(server.port, "/v2/health/live", timeout=2)
