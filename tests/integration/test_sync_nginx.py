"""``edge-runtime sync --once`` (the real CLI) with the TUF repository and bundle tars served by a real nginx.

TUF metadata and bundles are static files: any HTTP server or CDN serves them. nginx (Debian's
package) is started on 127.0.0.1 by ``scripts/lib/nginx.sh``, its access log recording each
request's Range header and status. The resume test throttles the bundles (nginx's ``limit_rate``
on ``/targets/``), SIGKILLs the first pass once part of the tar has landed in ``<name>.tar.partial``,
and checks that the next pass asks nginx for the rest (``Range: bytes=N-``, N > 0, answered 206)
and installs a bundle that verifies. The gate is the fake of test_sync_once.py (it promotes).
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, List, Tuple

import pytest

pytest.importorskip("tuf.ngclient")

from ci_policy import unavailable
from test_sync_once import FAKE_GATE_CLI, ROOT, Device

from edge_runtime.bundle.signing import load_public_key
from edge_runtime.bundle.verify import verify_bundle
from edge_runtime.serving.active_version import ActiveVersion, read_pointer

NGINX_SH = ROOT / "scripts" / "lib" / "nginx.sh"
# 127.0.0.1 "GET /targets/<sha>.tiny-2.tar HTTP/1.1" 206 1234 range="bytes=4096-"
ACCESS_LINE = re.compile(r'"GET (?P<path>\S+) HTTP/[\d.]+" (?P<status>\d{3}) (?P<sent>\d+) range="(?P<range>[^"]*)"')
THROTTLE = "2k"  # bytes per second per connection under /targets/: the tiny bundle's tar takes seconds


@dataclass
class Nginx:
    """A running nginx: the directory it serves, its URL, and its access log."""

    served: Path
    url: str
    access_log: Path

    def requests(self) -> List[Tuple[str, int, str]]:
        """(path, status, Range header or "-") of every request logged so far."""
        text = self.access_log.read_text() if self.access_log.exists() else ""
        return [(m["path"], int(m["status"]), m["range"]) for m in ACCESS_LINE.finditer(text)]


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture()
def start_nginx() -> Iterator[Callable[[str], Nginx]]:
    """Starts nginx (``limit_rate`` on /targets/ as given, "0" = none) serving an empty directory; stops it after."""
    started: List[Path] = []

    def start(rate: str) -> Nginx:
        directory = Path(tempfile.mkdtemp(prefix="edge-nginx-"))
        started.append(directory)
        directory.chmod(0o755)  # as root, the workers run as an unprivileged user: they must reach the files
        served, state = directory / "tuf-repo", directory / "nginx"
        served.mkdir()
        result = subprocess.run(["bash", str(NGINX_SH), "start", str(state), str(served), str(_free_port()), rate],
                                capture_output=True, text=True, timeout=300, check=False)
        if result.returncode != 0:
            unavailable(f"nginx could not be started: {result.stderr.strip()[-300:] or result.stdout.strip()}")
        return Nginx(served, result.stdout.strip().splitlines()[-1], state / "access.log")

    yield start
    for directory in started:
        subprocess.run(["bash", str(NGINX_SH), "stop", str(directory / "nginx")], capture_output=True,
                       timeout=60, check=False)
        shutil.rmtree(directory, ignore_errors=True)


def _device(tmp_path: Path, server: Nginx, keypair: Tuple[Path, Path], device_configs_dir: Path) -> Device:
    return Device(tmp_path, server.served, server.url, keypair, device_configs_dir)


def test_sync_once_through_nginx_installs_and_promotes_v2(
        tmp_path: Path, start_nginx: Callable[[str], Nginx], keypair: Tuple[Path, Path],
        device_configs_dir: Path) -> None:
    server = start_nginx("0")
    device = _device(tmp_path, server, keypair, device_configs_dir)
    device.publish("2")

    result = device.sync()
    assert result.returncode == 0, result.stdout + result.stderr
    assert "tiny 2 (tiny-2.tar): promoted" in result.stdout
    assert read_pointer(device.repo / "tiny") == ActiveVersion("2", "1")
    assert verify_bundle(device.repo / "tiny" / "2", [load_public_key(device.key[1])]).version == "2"
    served = server.requests()
    assert any(path.startswith("/metadata/") and path.endswith("timestamp.json") and status == 200
               for path, status, _ in served), served
    assert [(status, rng) for path, status, rng in served if path.startswith("/targets/")] == [(200, "-")]


def _tar_size(device: Device) -> int:
    return (device.work / "x86-cpu" / "tiny-2.tar").stat().st_size


def _kill_when_partial(device: Device, total: int) -> int:
    """Run a sync pass, SIGKILL it once ``tiny-2.tar.partial`` holds some but not all bytes; that size."""
    partial = device.staging / "tiny-2.tar.partial"
    process = subprocess.Popen([sys.executable, "-c", FAKE_GATE_CLI, "sync", "--once", "--config", str(device.config)],
                               cwd=str(ROOT), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                               start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and process.poll() is None:
            size = partial.stat().st_size if partial.exists() else 0
            if 0 < size < total:
                os.killpg(process.pid, signal.SIGKILL)
                break
            time.sleep(0.01)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
        _, stderr = process.communicate(timeout=60)
    assert process.returncode == -signal.SIGKILL, f"the pass ended before it was killed: {stderr!r}"
    return partial.stat().st_size


def test_killed_download_resumes_with_a_range_request_to_nginx(
        tmp_path: Path, start_nginx: Callable[[str], Nginx], keypair: Tuple[Path, Path],
        device_configs_dir: Path) -> None:
    server = start_nginx(THROTTLE)
    device = _device(tmp_path, server, keypair, device_configs_dir)
    device.publish("2")
    total = _tar_size(device)

    kept = _kill_when_partial(device, total)
    assert 0 < kept < total
    assert read_pointer(device.repo / "tiny") == ActiveVersion("1")  # nothing installed yet
    assert not (device.repo / "tiny" / "2").exists()

    result = device.sync()
    assert result.returncode == 0, result.stdout + result.stderr
    assert "tiny 2 (tiny-2.tar): promoted" in result.stdout
    assert read_pointer(device.repo / "tiny") == ActiveVersion("2", "1")
    assert verify_bundle(device.repo / "tiny" / "2", [load_public_key(device.key[1])]).version == "2"
    assert list(device.staging.glob("*.tar*")) == []  # the partial became the tar, removed once installed

    resumed = [(status, rng) for path, status, rng in server.requests()
               if path.startswith("/targets/") and rng.startswith("bytes=")]
    offsets = [int(rng[len("bytes="):-1]) for status, rng in resumed if status == 206 and rng.endswith("-")]
    assert offsets == [kept], server.requests()  # one resume, from exactly the bytes the killed pass kept
