"""The grace period end to end: the runtime is SIGKILLed soon after v2 was promoted, and the agent rolls back to v1.

A real ``edge-runtime serve`` on a fixed 127.0.0.1 port serves tiny v1; v2 (a signed bundle placed in
the repository) is staged and promoted through the runtime's repository API, and its trial is opened
as the sync loop does after a promoted outcome (``trial.open_trials``, which reads the runtime's
``process_start_time_seconds`` from /metrics). A real ``edge-runtime agent`` with a ``sync:`` block
then watches. The runtime is SIGKILLed and started again (it serves v2: the pointer says so); the
agent sees the new start time, stages and promotes v1 through the API, remembers tiny-2.tar as
refused, and posts a ``rolled_back`` report (with the rollout id) to a stub fleet server, which
acknowledges it; the restarted runtime serves v1.
"""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Tuple

import pytest
from runtime_support import call_json, write_tiny_bundle
from served_in_thread import served_in_thread

from edge_runtime.fleet.refused_targets import RECORD_NAME, RefusedTargets
from edge_runtime.fleet.sync import PROMOTED, ROLLED_BACK, SyncOutcome
from edge_runtime.fleet.sync_reports import QUEUE_NAME
from edge_runtime.fleet.trial import TrialStore, metrics_start_time, open_trials
from edge_runtime.serving.active_version import ActiveVersion, read_pointer, write_pointer

SHA = "ab" * 32
ROLLOUT_ID = 7


class Stub(BaseHTTPRequestHandler):
    """The fleet server's /api/v1/sync-reports as the contract says (200 {"accepted": n}); records the bodies."""

    received: List[Dict[str, Any]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        if self.path != "/api/v1/sync-reports" or self.headers.get("Authorization") != "Bearer device-token":
            self._answer(404, b'{"error": "not here"}')
            return
        payload = json.loads(body)
        type(self).received.append(payload)
        self._answer(200, json.dumps({"accepted": len(payload["reports"])}).encode())

    def _answer(self, status: int, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        """Quiet."""


@pytest.fixture()
def fleet_stub() -> Iterator[Tuple[str, List[Dict[str, Any]]]]:
    received: List[Dict[str, Any]] = []
    handler = type("RecordingStub", (Stub,), {"received": received})
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    with served_in_thread(httpd) as port:
        yield f"http://127.0.0.1:{port}", received


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_runtime(repository: Path, config: Path, port: int, log: Path) -> subprocess.Popen:
    """`edge-runtime serve` on a fixed port (the agent's runtime_url), ready when it returns."""
    with log.open("a") as handle:
        process = subprocess.Popen([sys.executable, "-m", "edge_runtime.cli", "serve", "--repository",
                                    str(repository), "--config", str(config), "--port", str(port)],
                                   stdout=handle, stderr=subprocess.STDOUT)
    if not wait_for(lambda: _ready(port), 60):
        process.kill()
        process.wait()
        raise RuntimeError(f"the runtime did not become ready:\n{log.read_text()}")
    return process


def _ready(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/health/ready", timeout=2) as reply:
            return reply.status == 200
    except OSError:
        return False


def wait_for(condition: Any, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.2)
    return False


def served_versions(port: int) -> Optional[List[str]]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/models/tiny", timeout=5) as reply:
            return list(json.loads(reply.read())["versions"])
    except OSError:
        return None


def write_agent_file(base: Path, server_url: str, port: int, public_key: Path, device_configs_dir: Path) -> Path:
    (base / "token").write_text("device-token\n")
    config = base / "agent.yaml"
    config.write_text(
        f"server_url: {server_url}\ndevice_id: dev-1\ntoken_file: token\nca_bundle: null\n"
        "spool_path: spool.sqlite\nbackoff_initial_s: 0.2\nbackoff_max_s: 2\n"
        "sync:\n"
        f"  metadata_url: {server_url}/tuf/metadata/\n  targets_url: {server_url}/tuf/targets/\n"
        "  metadata_dir: tuf-trusted\n  trusted_root: root.json\n  staging_dir: staging\n  repository: models\n"
        f"  trusted_keys: [{public_key}]\n  device_config: {device_configs_dir / 'x86-cpu.yaml'}\n"
        f"  runtime_url: http://127.0.0.1:{port}\n  grace_s: 300\n  poll_s: 300\n")
    return config


def test_a_runtime_killed_in_the_grace_period_is_rolled_back_to_v1(
        tmp_path: Path, keypair: Tuple[Path, Path], runtime_config: Path, device_configs_dir: Path,
        fleet_stub: Tuple[str, List[Dict[str, Any]]]) -> None:
    repository, staging = tmp_path / "models", tmp_path / "staging"
    for version in ("1", "2"):
        write_tiny_bundle(repository / "tiny" / version, keypair[0], version)
    write_pointer(repository / "tiny", ActiveVersion("1"))
    port = free_port()
    log = tmp_path / "runtime.log"
    runtime = start_runtime(repository, runtime_config, port, log)
    agent: Optional[subprocess.Popen] = None
    try:
        server = type("Server", (), {"url": f"127.0.0.1:{port}"})()
        base = "/v2/repository/models/tiny/versions/2"
        assert call_json(server, "POST", base + "/stage", {})[0] == 200
        assert call_json(server, "POST", base + "/promote", {})[0] == 200
        assert read_pointer(repository / "tiny") == ActiveVersion("2", "1")
        outcome = SyncOutcome("tiny-2.tar", "tiny", "2", PROMOTED, "", time.time(), rollout_id=ROLLOUT_ID)
        trials = open_trials([outcome], repository, TrialStore(staging),
                             metrics_start_time(f"http://127.0.0.1:{port}", {}), lambda name: SHA)
        assert [t.runtime_started is not None for t in trials] == [True]

        url, received = fleet_stub
        config = write_agent_file(tmp_path, url, port, keypair[1], device_configs_dir)
        with (tmp_path / "agent.log").open("w") as agent_log:
            agent = subprocess.Popen([sys.executable, "-m", "edge_runtime.cli", "agent", "--config", str(config)],
                                     stdout=agent_log, stderr=subprocess.STDOUT)
        assert wait_for(lambda: "agent syncing models" in (tmp_path / "agent.log").read_text(), 60)

        runtime.send_signal(signal.SIGKILL)  # a crash within the grace period
        runtime.wait()
        runtime = start_runtime(repository, runtime_config, port, log)  # systemd starts it again: on v2

        def rolled_back() -> bool:
            return any(r["status"] == ROLLED_BACK for body in received for r in body["reports"])

        assert wait_for(rolled_back, 90), (tmp_path / "agent.log").read_text()
        report = next(r for body in received for r in body["reports"] if r["status"] == ROLLED_BACK)
        assert (report["model"], report["version"], report["target"], report["rollout_id"]) == (
            "tiny", "2", "tiny-2.tar", ROLLOUT_ID)
        assert "after tiny 2 was promoted (grace 300 s)" in report["reason"], report["reason"]
        assert "rolled back to 1" in report["reason"]
        assert received[-1]["device_id"] == "dev-1"
        assert wait_for(lambda: served_versions(port) == ["1"], 60), served_versions(port)
        assert read_pointer(repository / "tiny").active == "1"
        assert RefusedTargets(staging / RECORD_NAME).find("tiny-2.tar", SHA) is not None
        assert wait_for(lambda: not (staging / QUEUE_NAME).exists(), 30)  # acknowledged: dropped from the queue
        assert not TrialStore(staging).load()
    finally:
        if agent is not None:
            agent.send_signal(signal.SIGTERM)
            assert agent.wait(30) == 0
        runtime.send_signal(signal.SIGTERM)
        runtime.wait(30)
