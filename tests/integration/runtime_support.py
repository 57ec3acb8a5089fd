"""Integration test support: a tiny signed bundle and `edge-runtime serve` subprocesses.

The model is a tiny affine ONNX graph written with onnx.helper (no torch), so these tests also
run on the device's Python 3.8: output = input @ W + b, input float32 [-1, 4], output [-1, 3].
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import re
import signal
import socket
import stat
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple

import numpy as np
import pytest

from edge_runtime.bundle.manifest import TargetInfo, TensorSpec
from edge_runtime.bundle.signing import load_private_key
from edge_runtime.bundle.writer import ArtifactSpec, finalize_bundle

W = np.arange(12, dtype=np.float32).reshape(4, 3) / 10.0
B = np.array([0.5, -1.0, 2.0], dtype=np.float32)


def affine(x: np.ndarray) -> np.ndarray:
    """What the tiny model computes."""
    return x @ W + B


def affine_onnx(bias: np.ndarray = B) -> bytes:
    """The tiny affine model (input @ W + bias) as ONNX bytes; a NaN bias makes every output NaN."""
    pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper

    graph = helper.make_graph(
        [helper.make_node("MatMul", ["input", "W"], ["xw"]), helper.make_node("Add", ["xw", "B"], ["output"])],
        "affine", [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 4])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["batch", 3])],
        [numpy_helper.from_array(W, "W"), numpy_helper.from_array(np.asarray(bias, dtype=np.float32), "B")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8  # readable by onnxruntime 1.19 (the last with Python 3.8 wheels)
    return bytes(model.SerializeToString())


def write_tiny_bundle(directory: Path, key_path: Path, version: str, bias: np.ndarray = B) -> None:
    """A signed bundle holding the affine model (``bias``: B; NaN makes a bad model) as x86-cpu's FP32 ONNX."""
    directory.mkdir(parents=True)
    (directory / "model.onnx").write_bytes(affine_onnx(bias))
    finalize_bundle(
        directory, name="tiny", version=version,
        inputs=[TensorSpec(name="input", dtype="float32", shape=(-1, 4))],
        outputs=[TensorSpec(name="output", dtype="float32", shape=(-1, 3))],
        source_model_sha256="0" * 64,
        artifacts=[ArtifactSpec("model.onnx", "onnx", None, "fp32")],
        targets=[TargetInfo(name="x86-cpu", device_class="x86-cpu", backend="onnxruntime", precision="fp32")],
        private_key=load_private_key(key_path),
    )


@dataclass
class RunningServer:
    """An `edge-runtime serve` subprocess on 127.0.0.1."""

    process: subprocess.Popen
    port: int
    log: Path

    @property
    def url(self) -> str:
        return f"127.0.0.1:{self.port}"

    def stop(self, timeout: float = 15.0) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout)


def start_server(args: List[str], log: Path, timeout: float = 60.0, *, env: Optional[Dict[str, str]] = None,
                 preexec_fn: Optional[Callable[[], None]] = None, close_fds: bool = True,
                 wait_for: str = "ready", cwd: Optional[Path] = None) -> RunningServer:
    """Start `edge-runtime serve ARGS --port 0` and wait until /v2/health/<wait_for> answers 200.

    ``env``: extra environment variables; ``preexec_fn``/``close_fds``: as for subprocess.Popen
    (to change the server's limits or hand it open descriptors). ``wait_for="live"`` for a server
    that is meant not to be ready (strict readiness with a model that fails to load).
    """
    handle = log.open("w")
    process = subprocess.Popen([sys.executable, "-m", "edge_runtime.cli", "serve", *args, "--port", "0"],
                               stdout=handle, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})},
                               preexec_fn=preexec_fn, close_fds=close_fds, cwd=cwd)
    deadline = time.monotonic() + timeout
    port = 0
    while time.monotonic() < deadline and process.poll() is None:
        match = re.search(r"serving on http://127\.0\.0\.1:(\d+)", log.read_text())
        if match:
            port = int(match.group(1))
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/health/{wait_for}", timeout=2) as reply:
                    if reply.status == 200:
                        return RunningServer(process, port, log)
            except OSError:
                pass
        time.sleep(0.1)
    process.kill()
    raise RuntimeError(f"server did not become ready:\n{log.read_text()}")




def write_runtime_config(path: Path, device_configs_dir: Path, public_key: Path, extra: str = "") -> Path:
    """Runtime settings YAML for the x86-cpu device trusting ``public_key``, plus ``extra`` YAML lines."""
    path.write_text(f"device_config: {device_configs_dir / 'x86-cpu.yaml'}\ntrusted_keys: [{public_key}]\n"
                    f"warmup_runs: 1\ndrain_timeout_s: 5\n{extra}")
    return path


def run_serve(args: List[str], env: Optional[Dict[str, str]] = None, timeout: float = 60.0
              ) -> subprocess.CompletedProcess:
    """Run `edge-runtime serve ARGS` to its end (for start-up refusals): its status and output."""
    return subprocess.run([sys.executable, "-m", "edge_runtime.cli", "serve", *args], capture_output=True,
                          text=True, timeout=timeout, env={**os.environ, **(env or {})}, check=False)


def raw_exchange(port: int, data: bytes, timeout: float = 10.0) -> Tuple[int, Dict[str, str], bytes]:
    """Send raw bytes to 127.0.0.1:port and read one HTTP response: status, headers (lower-case), body."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(data)
        response = http.client.HTTPResponse(sock)
        response.begin()
        body = response.read()
        return response.status, {key.lower(): value for key, value in response.getheaders()}, body


def get(port: int, path: str, headers: Optional[Dict[str, str]] = None, timeout: float = 10.0
        ) -> Tuple[int, Dict[str, str], bytes]:
    """GET 127.0.0.1:port/path: status, headers (lower-case), body; an error status is returned, not raised."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        connection.request("GET", path, headers=headers or {})
        response = connection.getresponse()
        return response.status, {key.lower(): value for key, value in response.getheaders()}, response.read()
    finally:
        connection.close()


@contextlib.contextmanager
def traversable_by_others(*paths: Path) -> Iterator[None]:
    """Let other uids traverse (o+x, never read) the folders above ``paths`` while the test runs.

    The interpreter may live under a 0700 home (pyenv under /root here and on CI machines): the
    server's uid must reach it. Each mode is restored afterwards.
    """
    changed: Dict[Path, int] = {}
    for path in paths:
        for folder in Path(os.path.realpath(path)).parents:
            mode = folder.stat().st_mode
            if folder not in changed and not mode & stat.S_IXOTH:
                changed[folder] = stat.S_IMODE(mode)
                folder.chmod(stat.S_IMODE(mode) | stat.S_IXOTH)
    try:
        yield
    finally:
        for folder, mode in changed.items():
            folder.chmod(mode)


def run_as(uid: int, gid: int) -> Callable[[], None]:
    """A ``preexec_fn`` that drops a child process to ``uid``/``gid`` (no supplementary groups; needs root)."""

    def drop() -> None:
        os.setgroups([])
        os.setgid(gid)
        os.setuid(uid)

    return drop


def call_json(server: RunningServer, method: str, path: str, body: Any = None) -> Tuple[int, Any]:
    """One JSON request to the server: (status, parsed JSON body), error statuses included."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(f"http://{server.url}{path}", data=data, method=method)
    try:
        with urllib.request.urlopen(request, timeout=20) as reply:
            return reply.status, json.loads(reply.read() or b"null")
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"null")
