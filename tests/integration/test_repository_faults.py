"""Repository faults against the real server subprocess: SIGKILL and restart, odd names, FIFOs."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any, Iterator, List, Tuple

import pytest
from runtime_support import RunningServer, call_json, run_as, start_server, traversable_by_others, write_tiny_bundle

REPO_ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs POSIX FIFOs")


def infer(server: RunningServer) -> Tuple[int, Any]:
    body = {"inputs": [{"name": "input", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3, 4]}]}
    return call_json(server, "POST", "/v2/models/tiny/infer", body)


@pytest.fixture()
def servers(repository: Path, runtime_config: Path, tmp_path: Path) -> Iterator[List[RunningServer]]:
    started: List[RunningServer] = []
    yield started
    for server in started:
        if server.process.poll() is None:
            server.process.kill()
            server.process.wait(10)


def serve(servers: List[RunningServer], repository: Path, runtime_config: Path, log: Path) -> RunningServer:
    server = start_server(["--repository", str(repository), "--config", str(runtime_config)], log)
    servers.append(server)
    return server


def half_copied(repository: Path, key: Path, version: str) -> None:
    write_tiny_bundle(repository / "tiny" / version, key, version)
    model = repository / "tiny" / version / "model.onnx"
    model.write_bytes(model.read_bytes()[: model.stat().st_size // 2])


def test_sigkill_after_a_failed_reload_restarts_on_the_good_version(
        servers: List[RunningServer], repository: Path, runtime_config: Path, tmp_path: Path,
        keypair: Tuple[Path, Path]) -> None:
    first = serve(servers, repository, runtime_config, tmp_path / "first.log")
    half_copied(repository, keypair[0], "2")
    status, body = call_json(first, "POST", "/v2/repository/models/tiny/load", {})
    assert status == 422 and "failed to load 'tiny'" in body["error"], body
    assert str(repository) not in body["error"]
    first.process.kill()
    first.process.wait(10)
    second = serve(servers, repository, runtime_config, tmp_path / "second.log")  # waits for ready: 200
    status, body = infer(second)
    assert status == 200 and body["model_version"] == "1", body
    status, index = call_json(second, "POST", "/v2/repository/index", {})
    reasons = {e["version"]: e["reason"] for e in index}
    assert "model.onnx: size is" in reasons["2"] and str(repository) not in json.dumps(index)


def test_version_directory_with_a_non_ascii_digit_name_is_ignored(
        servers: List[RunningServer], repository: Path, runtime_config: Path, tmp_path: Path) -> None:
    (repository / "tiny" / "\u00b2").mkdir()  # '²'.isdigit() is True, int('²') raises
    server = serve(servers, repository, runtime_config, tmp_path / "server.log")
    assert call_json(server, "POST", "/v2/repository/index", {})[0] == 200
    assert call_json(server, "POST", "/v2/repository/models/tiny/load", {})[0] == 200
    assert infer(server)[0] == 200


@pytest.mark.parametrize("name", ["manifest.sig", "model.onnx"])
def test_fifo_in_a_bundle_hangs_neither_start_nor_reload_nor_check(
        servers: List[RunningServer], repository: Path, runtime_config: Path, tmp_path: Path,
        keypair: Tuple[Path, Path], name: str) -> None:
    write_tiny_bundle(repository / "tiny" / "2", keypair[0], "2")
    (repository / "tiny" / "2" / name).unlink()
    os.mkfifo(repository / "tiny" / "2" / name)
    server = serve(servers, repository, runtime_config, tmp_path / "server.log")  # v2 fails, v1 serves
    assert infer(server)[1]["model_version"] == "1"
    status, body = call_json(server, "POST", "/v2/repository/models/tiny/load", {"parameters": {"version": "2"}})
    assert status == 422 and f"{name}: not a regular file (a FIFO)" in body["error"], body
    assert call_json(server, "POST", "/v2/repository/models/tiny/load", {})[0] == 422  # the load lock was released
    check = subprocess.run([sys.executable, "-m", "edge_runtime.cli", "check", str(repository / "tiny" / "2"),
                            "--key", str(keypair[1])], capture_output=True, text=True, timeout=60)
    assert check.returncode == 1 and "not a regular file (a FIFO)" in check.stderr


def test_unreadable_model_directory_stays_with_its_model(
        repository: Path, runtime_config: Path, tmp_path: Path, keypair: Tuple[Path, Path]) -> None:
    # Root reads a 0000 directory anyway: as root, the server runs as an unprivileged uid instead.
    as_root = os.geteuid() == 0
    write_tiny_bundle(repository / "locked" / "1", keypair[0], "1")
    (repository / "locked").chmod(0)
    reachable = (Path(sys.executable), REPO_ROOT, repository / "tiny" / "1" / "model.onnx", runtime_config, keypair[1])
    try:
        with traversable_by_others(*reachable) if as_root else contextlib.nullcontext():
            server = start_server(["--repository", str(repository), "--config", str(runtime_config)],
                                  tmp_path / "server.log", wait_for="live", cwd=REPO_ROOT,
                                  preexec_fn=run_as(64000, 64000) if as_root else None)
            try:
                assert infer(server)[0] == 200
                index = call_json(server, "POST", "/v2/repository/index", {})[1]
                locked = next(e for e in index if e["name"] == "locked")
                assert locked["state"] == "UNAVAILABLE" and "cannot be listed" in locked["reason"]
                assert call_json(server, "GET", "/v2/health/ready")[0] == 503  # strict readiness: a model failed
            finally:
                server.stop()
    finally:
        (repository / "locked").chmod(0o755)
        shutil.rmtree(repository / "locked")
