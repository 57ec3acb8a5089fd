"""Shared memory between two real uids: the server runs as one, the objects belong to another.

The runtime runs as its own user; an app shares a region with it by making its object 0660 with
the runtime's group (docs/security.md). Numeric uids/gids that need no /etc/passwd entry play the
two users. The confused deputy this prevents: a client naming an object the server's user owns
(its private state) and reading it back through a model, or overwriting it with an output.
Needs root (to switch uids); the server's interpreter must be reachable by an unprivileged uid.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, Optional, Tuple

import numpy as np
import pytest
from runtime_support import traversable_by_others

from edge_runtime.bundle.signing import generate_keypair

SERVER_UID = SERVER_GID = 64000
CLIENT_UID = CLIENT_GID = 64001
REPO_ROOT = Path(__file__).resolve().parents[2]
X = np.arange(16, dtype=np.float32).reshape(1, 16)  # the fake model answers 2x + 1

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root to run the server and the client as two uids")


def _as_server_user() -> None:
    os.setgroups([])
    os.setgid(SERVER_GID)
    os.setuid(SERVER_UID)


def _start(command: list, log: Path, cwd: Path, timeout: float = 60.0) -> Tuple[subprocess.Popen, int]:
    with log.open("w") as handle:
        process = subprocess.Popen(command, stdout=handle, stderr=subprocess.STDOUT, cwd=cwd,
                                   preexec_fn=_as_server_user, env={**os.environ, "HOME": str(cwd)})
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and process.poll() is None:
        match = re.search(r"serving on http://127\.0\.0\.1:(\d+)", log.read_text())
        if match:
            return process, int(match.group(1))
        time.sleep(0.1)
    process.kill()
    process.wait()
    raise RuntimeError(f"server did not start:\n{log.read_text()}")


@pytest.fixture()
def server_port(device_configs_dir: Path) -> Iterator[int]:
    """`edge-runtime serve --fake fake` running as SERVER_UID, its files in a directory that uid can read."""
    with traversable_by_others(Path(sys.executable), REPO_ROOT):
        yield from _serve_as_server_user(device_configs_dir)


def _serve_as_server_user(device_configs_dir: Path) -> Iterator[int]:
    try:
        probe = subprocess.run([sys.executable, "-c", "import edge_runtime.cli"], cwd=REPO_ROOT,
                               preexec_fn=_as_server_user, capture_output=True, text=True)
        problem = (probe.stderr.strip().splitlines() or ["?"])[-1] if probe.returncode else ""
    except OSError as exc:
        problem = str(exc)
    if problem:
        pytest.skip(f"{sys.executable} cannot run as uid {SERVER_UID} here (e.g. it lives under /root): {problem}")
    home = Path(tempfile.mkdtemp(prefix="edge-runtime-two-users-"))
    try:
        home.chmod(0o755)
        public = generate_keypair(home)[1]
        config = home / "runtime.yaml"
        config.write_text(
            f"device_config: {device_configs_dir / 'x86-cpu.yaml'}\n"
            f"trusted_keys: [{public}]\n"
            "warmup_runs: 1\n"
            "drain_timeout_s: 5\n"
        )
        for path in home.iterdir():
            path.chmod(0o644)
        command = [sys.executable, "-m", "edge_runtime.cli", "serve", "--config", str(config),
                   "--fake", "fake", "--port", "0"]
        process, port = _start(command, home / "server.log", REPO_ROOT)
        try:
            yield port
        finally:
            process.send_signal(signal.SIGTERM)
            process.wait(15)
    finally:
        shutil.rmtree(home, ignore_errors=True)


def call(port: int, path: str, body: Optional[Dict[str, Any]] = None) -> Tuple[int, Any]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        connection.request("POST" if body is not None else "GET", path,
                           body=None if body is None else json.dumps(body).encode())
        response = connection.getresponse()
        return response.status, json.loads(response.read())
    finally:
        connection.close()


def register(port: int, name: str, key: str) -> Tuple[int, Any]:
    return call(port, f"/v2/systemsharedmemory/region/{name}/register", {"key": key, "offset": 0, "byte_size": 64})


def infer_through(port: int, input_region: str, output_region: str) -> Tuple[int, Any]:
    shm = {"shared_memory_byte_size": 64}
    return call(port, "/v2/models/fake/infer", {
        "inputs": [{"name": "INPUT0", "datatype": "FP32", "shape": [1, 16],
                    "parameters": {"shared_memory_region": input_region, **shm}}],
        "outputs": [{"name": "OUTPUT0", "parameters": {"shared_memory_region": output_region, **shm}}],
    })


def owned(make_shm: Callable[..., str], uid: int, gid: int, mode: int, content: bytes = b"") -> str:
    key = make_shm(64, content)
    os.chown("/dev/shm" + key, uid, gid)
    os.chmod("/dev/shm" + key, mode)
    return key


def test_an_object_of_the_servers_user_cannot_be_registered(server_port: int, make_shm: Callable[..., str]) -> None:
    secret = owned(make_shm, SERVER_UID, SERVER_GID, 0o600, b"server state")
    status, body = register(server_port, "secret", secret)
    assert status == 400 and "owned by the server's own user" in body["error"], body
    shared = owned(make_shm, CLIENT_UID, SERVER_GID, 0o660)
    assert register(server_port, "out", shared)[0] == 200
    status, body = infer_through(server_port, "secret", "out")  # so it cannot be read through a model
    assert status == 400 and "unknown shared memory region 'secret'" in body["error"], body
    assert Path("/dev/shm" + secret).read_bytes()[:12] == b"server state"


def test_a_private_object_of_the_client_is_refused(server_port: int, make_shm: Callable[..., str]) -> None:
    private = owned(make_shm, CLIENT_UID, CLIENT_GID, 0o600)  # what tritonclient creates
    status, body = register(server_port, "private", private)
    assert status == 400 and "cannot open key" in body["error"] and "Permission denied" in body["error"], body


def test_an_object_shared_with_the_runtimes_group_works(server_port: int, make_shm: Callable[..., str]) -> None:
    source = owned(make_shm, CLIENT_UID, SERVER_GID, 0o660, X.tobytes())
    target = owned(make_shm, CLIENT_UID, SERVER_GID, 0o660)
    assert register(server_port, "in", source) == (200, {})
    assert register(server_port, "out", target) == (200, {})
    status, body = infer_through(server_port, "in", "out")
    assert status == 200, body
    written = np.frombuffer(Path("/dev/shm" + target).read_bytes(), dtype=np.float32).reshape(1, 16)
    np.testing.assert_array_equal(written, X * 2 + 1)
    assert call(server_port, "/v2/systemsharedmemory/unregister", {})[0] == 200
