"""``edge-runtime sync --once`` (the real CLI, a subprocess) against a real TUF repository on 127.0.0.1.

The repository is made with ``fleet_server.tuf_repository`` through ``tuf_repo_tool.py`` (tuf 6; on
Python 3.8 through the project's ``.venv``, as in test_tuf_client.py) and served by http.server.
The health gate is a fake that promotes by writing the pointer (``edge_runtime.serving.active_version``),
put in place of ``sync_pass.health_gate`` by a wrapper around the CLI's ``main``: every other step
is the real one (TUF refresh, download, install).
"""

from __future__ import annotations

import functools
import http.server
import json
import shutil
import subprocess
import sys
import tarfile
import urllib.request
from pathlib import Path
from typing import Dict, Iterator, Optional, Tuple

import pytest

pytest.importorskip("tuf.ngclient")

from runtime_support import start_server, write_tiny_bundle
from served_in_thread import served_in_thread
from test_tuf_client import TOOL, _server_python

from edge_runtime.bundle.signing import generate_keypair, load_public_key
from edge_runtime.bundle.verify import verify_bundle
from edge_runtime.serving.active_version import ActiveVersion, read_pointer, write_pointer

ROOT = Path(__file__).resolve().parents[2]
DEVICE_ID = "test-device"

# The CLI with a fake gate: it promotes (writes the pointer as the runtime's promote does) and says so.
FAKE_GATE_CLI = """
import sys
from types import SimpleNamespace
from edge_runtime import cli
from edge_runtime.fleet import sync_pass
from edge_runtime.serving.active_version import next_pointer, read_pointer, write_pointer

def fake_gate(settings, device):
    def gate(installed):
        model_dir = installed.path.parent
        write_pointer(model_dir, next_pointer(read_pointer(model_dir), installed.version))
        return SimpleNamespace(passed=True, reason="")
    return gate

sync_pass.health_gate = fake_gate
sys.exit(cli.main(sys.argv[1:]))
"""


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        """Keep the test output clean."""


@pytest.fixture()
def file_server(tmp_path: Path) -> Iterator[Tuple[Path, str]]:
    """http.server on 127.0.0.1 serving ``tmp_path/tuf-repo``; yields that directory and its URL."""
    served = tmp_path / "tuf-repo"
    handler = functools.partial(_QuietHandler, directory=str(served))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    with served_in_thread(httpd) as port:
        yield served, f"http://127.0.0.1:{port}"


def _tar(bundle: Path, tar_path: Path) -> Path:
    """The bundle directory as an uncompressed POSIX tar, members relative to its root."""
    with tarfile.open(tar_path, "w", format=tarfile.PAX_FORMAT) as tar:
        for path in sorted(bundle.rglob("*")):
            tar.add(path, arcname=path.relative_to(bundle).as_posix(), recursive=False)
    return tar_path


def _tree(root: Path) -> Dict[str, Optional[bytes]]:
    return {str(p.relative_to(root)): (None if p.is_dir() else p.read_bytes()) for p in sorted(root.rglob("*"))}


class Device:
    """A device: its model repository (tiny 1 active), trusted TUF root, and agent settings with a sync block."""

    def __init__(self, base: Path, served: Path, url: str, keypair: Tuple[Path, Path],
                 device_configs_dir: Path) -> None:
        self.base = base
        self.python = _server_python()
        self.served, self.keys = served, base / "tuf-keys"
        self.tool("init", str(base / "tuf-root-keys"))
        self.repo = base / "models"
        write_tiny_bundle(self.repo / "tiny" / "1", keypair[0], "1")
        write_pointer(self.repo / "tiny", ActiveVersion("1"))
        self.key = keypair
        self.work = base / "work"
        for device_class in ("x86-cpu", "jetson-xavier-nx"):  # one folder each: the tar's name is the target's
            (self.work / device_class).mkdir(parents=True)
        shutil.copyfile(served / "metadata" / "1.root.json", base / "root.json")
        self.config = base / "agent.yaml"
        self.config.write_text(
            "server_url: http://127.0.0.1:9\n"
            f"device_id: {DEVICE_ID}\n"
            "token_file: token\n"
            "ca_bundle: null\n"
            "spool_path: spool.sqlite\n"
            "sync:\n"
            f"  metadata_url: {url}/metadata/\n"
            f"  targets_url: {url}/targets/\n"
            "  metadata_dir: tuf-trusted\n"
            "  trusted_root: root.json\n"
            "  staging_dir: staging\n"
            "  repository: models\n"
            f"  trusted_keys: [{keypair[1]}]\n"
            f"  device_config: {device_configs_dir / 'x86-cpu.yaml'}\n"
            "  reserve_bytes: 0\n")
        self.staging = base / "staging"

    def tool(self, command: str, *args: str) -> None:
        subprocess.run([self.python, str(TOOL), command, str(self.served), str(self.keys), *args],
                       check=True, cwd=str(ROOT), timeout=120)

    def publish(self, version: str, device_class: str = "x86-cpu", devices: Tuple[str, ...] = (DEVICE_ID,)) -> None:
        """Publish tiny ``version`` (the image role) and assign it to ``devices`` (the director)."""
        bundle = self.work / f"tiny-{version}-{device_class}"
        write_tiny_bundle(bundle, self.key[0], version)
        tar = _tar(bundle, self.work / device_class / f"tiny-{version}.tar")
        custom = {"model": "tiny", "version": version, "device_class": device_class}
        self.tool("publish", str(tar), json.dumps(custom), *devices)

    def sync(self, real_gate: bool = False) -> subprocess.CompletedProcess:
        command = ["-m", "edge_runtime.cli"] if real_gate else ["-c", FAKE_GATE_CLI]
        return subprocess.run([sys.executable, *command, "sync", "--once", "--config", str(self.config)],
                              capture_output=True, text=True, timeout=300, cwd=str(ROOT), check=False)


@pytest.fixture()
def device(tmp_path: Path, file_server: Tuple[Path, str], keypair: Tuple[Path, Path],
           device_configs_dir: Path) -> Device:
    return Device(tmp_path, file_server[0], file_server[1], keypair, device_configs_dir)


def test_sync_once_installs_and_promotes_v2_then_is_a_no_op(device: Device) -> None:
    device.publish("2")
    device.publish("3", device_class="jetson-xavier-nx", devices=("xavier-7",))  # another device's target

    first = device.sync()
    assert first.returncode == 0, first.stderr
    assert "tiny 2 (tiny-2.tar): promoted" in first.stdout
    assert "tiny-3" not in first.stdout
    assert read_pointer(device.repo / "tiny") == ActiveVersion("2", "1")
    assert verify_bundle(device.repo / "tiny" / "2", [load_public_key(device.key[1])]).version == "2"
    assert not (device.repo / "tiny" / "3").exists()
    assert list(device.staging.glob("*.tar*")) == []  # the tar is not kept once installed (reports may be queued)

    before = _tree(device.repo)
    again = device.sync()
    assert again.returncode == 0, again.stderr
    assert "up to date" in again.stdout
    assert _tree(device.repo) == before


def test_sync_once_refused_bundle_is_one_line_and_v1_stays(device: Device) -> None:
    rogue_private, _ = generate_keypair(device.work / "other-key")
    bundle = device.work / "rogue"
    write_tiny_bundle(bundle, rogue_private, "2")  # signed by a key the device does not trust
    tar = _tar(bundle, device.work / "x86-cpu" / "tiny-2.tar")
    device.tool("publish", str(tar), json.dumps({"model": "tiny", "version": "2", "device_class": "x86-cpu"}),
                DEVICE_ID)
    before = _tree(device.repo)

    result = device.sync()
    assert result.returncode == 1
    assert "tiny 2 (tiny-2.tar): refused" in result.stdout
    error_lines = [line for line in result.stderr.splitlines() if line.startswith("edge-runtime: error:")]
    assert len(error_lines) == 1 and "not promoted" in error_lines[0], result.stderr
    assert _tree(device.repo) == before
    assert read_pointer(device.repo / "tiny") == ActiveVersion("1")


def test_sync_once_with_the_real_gate_against_a_running_runtime(device: Device, runtime_config: Path) -> None:
    """The real health gate: the runtime stages v2 beside v1, probes it, promotes it; it then serves v2."""
    device.publish("2")
    server = start_server(["--repository", str(device.repo), "--config", str(runtime_config)],
                          device.base / "server.log")
    try:
        with device.config.open("a") as handle:
            handle.write(f"  runtime_url: http://{server.url}\n")
        result = device.sync(real_gate=True)
        assert result.returncode == 0, result.stdout + result.stderr
        assert "tiny 2 (tiny-2.tar): promoted" in result.stdout
        assert read_pointer(device.repo / "tiny") == ActiveVersion("2", "1")
        with urllib.request.urlopen(f"http://{server.url}/v2/models/tiny", timeout=10) as reply:
            assert json.loads(reply.read())["versions"] == ["2"]
    finally:
        server.stop()
