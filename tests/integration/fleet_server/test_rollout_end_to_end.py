"""A staged rollout end to end on 127.0.0.1: central server on PostgreSQL, static TUF files, two devices.

Real processes as in a fleet: `edge-fleet serve` (gunicorn) on a real PostgreSQL holding the rollout
state, the TUF repository it signs served as static files by a separate HTTP server, and two
simulated devices of class x86-cpu, each an `edge-runtime serve` with tiny v1 active and an agent
settings file; each device's sync pass is `edge-runtime sync --once` (TUF refresh of its own
director bin, resumable download, install, the real health gate against its runtime, reports to the
server). The operator drives everything through the server's HTTP API with an operator token.

1. v2 is uploaded and rolled out to a canary of one device (dev-a): only dev-a takes it.
2. The rollout advances to 100 %: dev-b takes it too; both serve v2.
3. A bad v3 (its model answers NaN) is rolled out to all: each device's gate fails, v3 is unloaded
   and v2 keeps serving, each device reports `gate_failed`, and the server shows the rollout paused
   by the first report with each device's report and installed version.
"""

from __future__ import annotations

import functools
import http.server
import json
import shutil
import subprocess
import sys
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Iterator, Tuple

import numpy as np
import pytest
from fleet_support import Served, fleet_cli, serve_fleet, stop_fleet
from runtime_support import RunningServer, W, call_json, start_server, write_tiny_bundle
from served_in_thread import served_in_thread

from edge_runtime.serving.active_version import ActiveVersion, write_pointer

ROOT = Path(__file__).resolve().parents[3]
CLASS = "x86-cpu"


class _QuietFiles(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        """Keep the test output clean."""


@dataclass
class Device:
    """A simulated device: its runtime, model repository and agent settings."""

    device_id: str
    runtime: RunningServer
    config: Path

    def sync(self) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "edge_runtime.cli", "sync", "--once", "--config",
                               str(self.config)], capture_output=True, text=True, timeout=300, cwd=str(ROOT),
                              check=False)

    def serves(self) -> Tuple[Any, np.ndarray]:
        """The versions the runtime lists for tiny, and its answer to one inference."""
        status, metadata = call_json(self.runtime, "GET", "/v2/models/tiny")
        assert status == 200, metadata
        x = np.arange(4, dtype=np.float32).reshape(1, 4)
        body = {"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 4], "data": x.ravel().tolist()}]}
        status, answer = call_json(self.runtime, "POST", "/v2/models/tiny/infer", body)
        assert status == 200, answer
        return metadata["versions"], np.array(answer["outputs"][0]["data"], dtype=np.float32).reshape(1, 3)


@pytest.fixture()
def tuf_files(tmp_path: Path) -> Iterator[Tuple[Path, str]]:
    """The directory the fleet signs its TUF repository into, served as static files on 127.0.0.1."""
    directory = tmp_path / "tuf"
    directory.mkdir()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0),
                                             functools.partial(_QuietFiles, directory=str(directory)))
    with served_in_thread(server) as port:
        yield directory, f"http://127.0.0.1:{port}"


@pytest.fixture()
def fleet(tmp_path: Path, postgres_database: str, keypair: Tuple[Path, Path],
          tuf_files: Tuple[Path, str]) -> Iterator[Served]:
    config = tmp_path / "fleet.yaml"
    config.write_text(f"database_url: {postgres_database}\nsecret_file: secret.key\n"
                      f"tuf: {{repository_dir: {tuf_files[0]}, keys_dir: tuf-keys,\n"
                      f"      trusted_bundle_keys: [{keypair[1]}]}}\n")
    tokens: Dict[str, str] = {}
    for command in (["migrate"], ["tuf-init", "--root-keys-dir", str(tmp_path / "offline")],
                    ["enroll", "dev-a", "--device-class", CLASS], ["enroll", "dev-b", "--device-class", CLASS],
                    ["operator-token", "create", "ops"]):
        result = fleet_cli(config, *command)
        assert result.returncode == 0, result.stderr
        tokens[command[1] if command[0] == "enroll" else command[0]] = result.stdout.strip()
    served = serve_fleet(config, tmp_path / "fleet.log", [], None, operator_token=tokens["operator-token"])
    (tmp_path / "dev-a.token").write_text(tokens["dev-a"] + "\n")
    (tmp_path / "dev-b.token").write_text(tokens["dev-b"] + "\n")
    yield served
    stop_fleet(served)


def _device(base: Path, device_id: str, fleet: Served, tuf_files: Tuple[Path, str], keypair: Tuple[Path, Path],
            runtime_config: Path) -> Device:
    base.mkdir()
    repository = base / "models"
    write_tiny_bundle(repository / "tiny" / "1", keypair[0], "1")
    write_pointer(repository / "tiny", ActiveVersion("1"))
    runtime = start_server(["--repository", str(repository), "--config", str(runtime_config)], base / "runtime.log")
    shutil.copyfile(tuf_files[0] / "metadata" / "1.root.json", base / "root.json")
    shutil.copyfile(base.parent / f"{device_id}.token", base / "token")
    config = base / "agent.yaml"
    config.write_text(
        f"server_url: http://127.0.0.1:{fleet.port}\ndevice_id: {device_id}\ntoken_file: token\nca_bundle: null\n"
        "spool_path: spool.sqlite\n"
        "sync:\n"
        f"  metadata_url: {tuf_files[1]}/metadata/\n  targets_url: {tuf_files[1]}/targets/\n"
        "  metadata_dir: tuf-trusted\n  trusted_root: root.json\n  staging_dir: staging\n  repository: models\n"
        f"  trusted_keys: [{keypair[1]}]\n  device_config: {ROOT / 'device_configs' / 'x86-cpu.yaml'}\n"
        f"  reserve_bytes: 0\n  runtime_url: http://{runtime.url}\n")
    return Device(device_id, runtime, config)


@pytest.fixture()
def devices(tmp_path: Path, fleet: Served, tuf_files: Tuple[Path, str], keypair: Tuple[Path, Path],
            runtime_config: Path) -> Iterator[Dict[str, Device]]:
    made: Dict[str, Device] = {}
    try:
        for device_id in ("dev-a", "dev-b"):
            made[device_id] = _device(tmp_path / device_id, device_id, fleet, tuf_files, keypair, runtime_config)
        yield made
    finally:
        for device in made.values():
            device.runtime.stop()


def _upload(fleet: Served, tmp_path: Path, keypair: Tuple[Path, Path], version: str,
            bias: np.ndarray) -> Dict[str, Any]:
    bundle = tmp_path / f"bundle-{version}"
    write_tiny_bundle(bundle, keypair[0], version, bias)
    tar_path = tmp_path / f"tiny-{version}.tar"
    with tarfile.open(tar_path, "w", format=tarfile.PAX_FORMAT) as tar:
        for path in sorted(bundle.rglob("*")):
            tar.add(path, arcname=str(path.relative_to(bundle)), recursive=False)
    status, _, body = fleet.request("POST", "/api/v1/bundles", tar_path.read_bytes(), fleet.operator_token,
                                    {"Content-Type": "application/x-tar"})
    assert status == 201, body
    return dict(json.loads(body))


def _api(fleet: Served, method: str, path: str, body: Any = None) -> Any:
    data = None if body is None else json.dumps(body).encode()
    status, _, answer = fleet.request(method, path, data, fleet.operator_token)
    assert status in (200, 201), answer
    return json.loads(answer)


def _synced(device: Device, expected: str) -> None:
    result = device.sync()
    assert expected in result.stdout, result.stdout + result.stderr


def test_canary_then_all_then_a_bad_version_rolled_back_everywhere(
        fleet: Served, devices: Dict[str, Device], tmp_path: Path, keypair: Tuple[Path, Path]) -> None:
    a, b = devices["dev-a"], devices["dev-b"]
    x = np.arange(4, dtype=np.float32).reshape(1, 4)
    good_bias = np.array([0.5, -0.5, 2.0], dtype=np.float32)

    # 1. v2 to a canary of one device
    _upload(fleet, tmp_path, keypair, "2", good_bias)
    rollout = _api(fleet, "POST", "/api/v1/rollouts",
                   {"model": "tiny", "version": "2", "device_class": CLASS, "canary": ["dev-a"], "percent": 0})
    _synced(a, "tiny 2 (tiny-2.tar): promoted")
    _synced(b, "up to date")
    assert a.serves()[0] == ["2"] and b.serves()[0] == ["1"]

    # 2. then to every device of the class
    _api(fleet, "POST", f"/api/v1/rollouts/{rollout['id']}/advance", {"percent": 100})
    _synced(b, "tiny 2 (tiny-2.tar): promoted")
    _synced(a, "up to date")
    for device in (a, b):
        versions, output = device.serves()
        assert versions == ["2"]
        np.testing.assert_allclose(output, x @ W + good_bias, rtol=1e-5)

    # 3. a bad v3 to all: every gate fails, v2 keeps serving, the server shows it
    _upload(fleet, tmp_path, keypair, "3", np.full(3, np.nan, dtype=np.float32))
    bad = _api(fleet, "POST", "/api/v1/rollouts",
               {"model": "tiny", "version": "3", "device_class": CLASS, "canary": [], "percent": 100})
    for device in (a, b):
        result = device.sync()
        assert result.returncode == 1
        assert "tiny 3 (tiny-3.tar): gate_failed" in result.stdout, result.stdout + result.stderr
        assert device.serves()[0] == ["2"]
    shown = _api(fleet, "GET", f"/api/v1/rollouts/{bad['id']}")
    assert shown["state"] == "paused" and shown["pause_reason"].startswith("dev-a: gate_failed: ")
    by_device = {entry["device_id"]: entry for entry in shown["devices"]}
    for device_id in ("dev-a", "dev-b"):
        entry = by_device[device_id]
        assert entry["member"] and entry["active"] == "2", entry
        assert entry["report"]["status"] == "gate_failed" and "NaN" in entry["report"]["reason"], entry
    assert _api(fleet, "GET", f"/api/v1/rollouts/{rollout['id']}")["state"] == "active"
