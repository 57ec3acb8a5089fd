"""sd_notify from the real `edge-runtime serve` and `edge-runtime agent` to a fake NOTIFY_SOCKET.

The test binds an AF_UNIX datagram socket in its temp folder and hands its path to the process
as systemd would (``NOTIFY_SOCKET``, ``WATCHDOG_USEC``). READY=1 must come only once the models
that can load are warm and the port answers, with a failed model named in STATUS= and not holding
READY back; WATCHDOG=1 must keep coming while the process serves, and must stop when a model's
worker is wedged (a fake model whose inference sleeps for ten minutes); SIGTERM sends STOPPING=1.
Time bounds are generous ("within 30 s"); "stopped" is "none for several ping intervals".
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Callable, Dict, Iterator, List, Optional, Tuple

import pytest
from runtime_support import get

WATCHDOG_USEC = 2_000_000  # pings every 1 s
INTERVAL_S = WATCHDOG_USEC / 1e6 / 2
BOUND_S = 60.0  # "arrives within a generous bound"


class NotifySocket:
    """A datagram socket standing in for systemd's notify socket; every message it got, in order."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.messages: List[str] = []
        self.log: Optional[Path] = None  # the process's log, shown when a message does not come

    def receive(self, timeout_s: float) -> Optional[str]:
        """The next message, or None after ``timeout_s`` with none."""
        self.sock.settimeout(max(timeout_s, 0.001))
        try:
            data = self.sock.recv(4096)
        except socket.timeout:
            return None
        message = data.decode("utf-8")
        self.messages.append(message)
        return message

    def wait_for(self, wanted: Callable[[str], bool], timeout_s: float = BOUND_S) -> str:
        """The first message (from now) for which ``wanted`` holds; fails after ``timeout_s``."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            message = self.receive(deadline - time.monotonic())
            if message is not None and wanted(message):
                return message
        log = self.log.read_text() if self.log is not None and self.log.exists() else ""
        raise AssertionError(f"no such sd_notify message within {timeout_s} s; got {self.messages}\n{log}")

    def collect(self, seconds: float) -> List[str]:
        """Every message that arrives in the next ``seconds``."""
        got: List[str] = []
        deadline = time.monotonic() + seconds
        while True:
            message = self.receive(deadline - time.monotonic())
            if message is None:
                return got
            got.append(message)

    def close(self) -> None:
        self.sock.close()


@pytest.fixture()
def notify_socket() -> Iterator[NotifySocket]:
    """A notify socket in a short temp folder (AF_UNIX paths are limited to 107 bytes)."""
    with tempfile.TemporaryDirectory(prefix="sdn") as folder:
        listener = NotifySocket(Path(folder) / "notify")
        try:
            yield listener
        finally:
            listener.close()


def lines(message: str) -> List[str]:
    return message.split("\n")


def status_of(message: str) -> str:
    return next((line[len("STATUS="):] for line in lines(message) if line.startswith("STATUS=")), "")


def systemd_env(listener: NotifySocket) -> Dict[str, str]:
    return {**os.environ, "NOTIFY_SOCKET": str(listener.path), "WATCHDOG_USEC": str(WATCHDOG_USEC),
            "PYTHONUNBUFFERED": "1"}


@contextlib.contextmanager
def serve(tmp_path: Path, listener: NotifySocket, config: str, fakes: List[str]) -> Iterator[subprocess.Popen]:
    """`edge-runtime serve --fake ...` on 127.0.0.1 as systemd would start it; killed if still running at the end."""
    runtime = tmp_path / "runtime.yaml"
    runtime.write_text(config)
    args = [sys.executable, "-m", "edge_runtime.cli", "serve", "--config", str(runtime), "--host", "127.0.0.1",
            "--port", "0"]
    for spec in fakes:
        args += ["--fake", spec]
    listener.log = tmp_path / "server.log"
    with listener.log.open("w") as log:
        process = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, env=systemd_env(listener))
    try:
        yield process
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(30)


def runtime_config(device_configs_dir: Path, public_key: Path, extra: str = "") -> str:
    return (f"device_config: {device_configs_dir / 'x86-cpu.yaml'}\ntrusted_keys: [{public_key}]\ndrain_timeout_s: 2\n"
            f"request_timeout_s: 2\nbatching: {{max_batch_size: 4}}\n{extra}")


def port_in(log: Path) -> int:
    match = re.search(r"serving on http://127\.0\.0\.1:(\d+)", log.read_text())
    assert match, log.read_text()
    return int(match.group(1))


def stop_and_expect_stopping(process: subprocess.Popen, listener: NotifySocket) -> None:
    process.send_signal(signal.SIGTERM)
    listener.wait_for(lambda m: "STOPPING=1" in lines(m))
    assert process.wait(BOUND_S) == 0


def test_ready_only_after_warm_up_with_the_failed_model_in_status_then_watchdog_then_stopping(
        tmp_path: Path, notify_socket: NotifySocket, device_configs_dir: Path, keypair: Tuple[Path, Path]) -> None:
    # slow: each warm-up inference takes 1 s (batch 1 and batch 4: 2 s); bad: its warm-up fails.
    config = runtime_config(device_configs_dir, keypair[1], "warmup_runs: 1\n")
    with serve(tmp_path, notify_socket, config, ["slow:delay_ms=1000", "bad:fail=1"]) as process:
        ready = notify_socket.wait_for(lambda m: "READY=1" in lines(m))
        # The log says what happened before READY was sent: warm-up done, the socket listening.
        log_at_ready = (tmp_path / "server.log").read_text()
        assert notify_socket.messages[0] == ready, "nothing (no WATCHDOG=1) before READY=1"
        assert "model slow version 1 ready" in log_at_ready
        status, _, body = get(port_in(tmp_path / "server.log"), "/v2/models/slow/ready")
        assert status == 200, body  # the port answers, the slow model is warm
        text = status_of(ready)
        assert text.startswith("serving 1 model(s)"), text
        assert "failed: bad (" in text, text  # reported, and READY came anyway

        pings = [m for m in notify_socket.collect(4 * INTERVAL_S) if "WATCHDOG=1" in lines(m)]
        assert len(pings) >= 2, notify_socket.messages
        stop_and_expect_stopping(process, notify_socket)


def infer_in_background(port: int, model: str) -> threading.Thread:
    """POST one JSON inference to ``model`` from a thread (its answer, a time-out, is not looked at)."""
    import http.client

    body = json.dumps({"inputs": [{"name": "INPUT0", "shape": [1, 16], "datatype": "FP32", "data": [0.0] * 16}]})

    def post() -> None:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        try:
            connection.request("POST", f"/v2/models/{model}/infer", body, {"Content-Type": "application/json"})
            connection.getresponse().read()
        except OSError:
            pass
        finally:
            connection.close()

    thread = threading.Thread(target=post, daemon=True)
    thread.start()
    return thread


def test_a_wedged_model_worker_stops_the_watchdog_and_is_named(
        tmp_path: Path, notify_socket: NotifySocket, device_configs_dir: Path, keypair: Tuple[Path, Path]) -> None:
    # No warm-up, so the hanging model loads; its first inference then sleeps for ten minutes.
    config = runtime_config(device_configs_dir, keypair[1], "warmup_runs: 0\n")
    with serve(tmp_path, notify_socket, config, ["hang:delay_ms=600000", "ok"]) as process:
        notify_socket.wait_for(lambda m: "READY=1" in lines(m))
        for _ in range(2):  # serving, idle: the watchdog is pinged
            notify_socket.wait_for(lambda m: "WATCHDOG=1" in lines(m), timeout_s=10 * INTERVAL_S)
        port = port_in(tmp_path / "server.log")
        requester = infer_in_background(port, "hang")

        wedged = notify_socket.wait_for(lambda m: "wedged" in status_of(m))
        assert "model worker hang-1-0" in status_of(wedged), wedged
        assert "WATCHDOG=1" not in lines(wedged)
        after = notify_socket.collect(3 * INTERVAL_S)
        assert not [m for m in after if "WATCHDOG=1" in lines(m)], after
        # The process is still up and its HTTP loop answers: only the watchdog knows the model is stuck.
        assert get(port, "/v2/health/live")[0] == 200
        log = (tmp_path / "server.log").read_text()
        assert re.search(r"wedged: model worker hang-1-0", log), log
        stop_and_expect_stopping(process, notify_socket)
        requester.join(30)


def write_agent_config(folder: Path) -> Path:
    """An agent uploading an empty spool to a port where nothing listens (its loop backs off and goes on)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        free_port = probe.getsockname()[1]
    (folder / "token").write_text("device-token\n")
    config = folder / "agent.yaml"
    config.write_text(f"server_url: http://127.0.0.1:{free_port}\ndevice_id: dev-1\ntoken_file: token\n"
                      f"ca_bundle: null\nspool_path: {folder / 'spool.db'}\n"
                      "backoff_initial_s: 0.05\nbackoff_max_s: 0.5\npoll_s: 0.2\nrequest_timeout_s: 2\n")
    return config


def test_the_agent_sends_ready_then_watchdog_then_stopping(tmp_path: Path, notify_socket: NotifySocket) -> None:
    config = write_agent_config(tmp_path)
    notify_socket.log = tmp_path / "agent.log"
    with notify_socket.log.open("w") as log:
        process = subprocess.Popen([sys.executable, "-m", "edge_runtime.cli", "agent", "--config", str(config)],
                                   stdout=log, stderr=subprocess.STDOUT, env=systemd_env(notify_socket))
    try:
        ready = notify_socket.wait_for(lambda m: "READY=1" in lines(m))
        assert "uploading telemetry" in status_of(ready)
        for _ in range(3):
            notify_socket.wait_for(lambda m: "WATCHDOG=1" in lines(m), timeout_s=10 * INTERVAL_S)
        stop_and_expect_stopping(process, notify_socket)
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(30)
