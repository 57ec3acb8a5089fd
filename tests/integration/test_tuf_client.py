"""The device's TUF client against a real repository served over HTTP on 127.0.0.1.

The repository is built by ``tuf_repo_tool.py`` (tuf 6, the server library) in a subprocess, so
that this device test also runs on Python 3.8 with tuf 5.1: there it uses the project's
``.venv`` Python, and is skipped only if that venv is missing. Every refusal must be a SyncError
and leave the device's trusted metadata byte-identical.
"""

from __future__ import annotations

import functools
import hashlib
import http.server
import json
import shutil
import subprocess
import sys
import threading
import urllib.request
from pathlib import Path
from typing import Dict, Iterator

import pytest

pytest.importorskip("tuf.ngclient")

from edge_runtime.fleet.errors import MetadataRefusedError, SyncError, TransportError, UnknownTargetError
from edge_runtime.fleet.tuf_client import TufClient

ROOT = Path(__file__).resolve().parents[2]
TOOL = Path(__file__).with_name("tuf_repo_tool.py")
CUSTOM = {"model": "tiny", "version": "2", "device_class": "xavier-nx", "fingerprint": {"gpu": "sm_72"}}


def _server_python() -> str:
    """A Python with tuf 6 and fleet_server: this one on >= 3.10, else the project's .venv."""
    if sys.version_info >= (3, 10):
        return sys.executable
    candidate = ROOT / ".venv" / "bin" / "python"
    if not candidate.exists():
        pytest.skip("building the TUF repository needs the project's Python >= 3.10 venv (.venv)")
    return str(candidate)


class Repo:
    """The server side, driven through the tool: the directory served, its keys, and a device."""

    def __init__(self, base: Path) -> None:
        self.dir, self.keys, self.root_keys = base / "repo", base / "keys", base / "root-keys"
        self.python = _server_python()
        self.tool("init", str(self.root_keys))
        self.device = base / "device"
        self.device.mkdir()
        shutil.copyfile(self.dir / "metadata" / "1.root.json", self.device / "root.json")

    def tool(self, command: str, *args: str) -> None:
        subprocess.run([self.python, str(TOOL), command, str(self.dir), str(self.keys), *args],
                       check=True, cwd=str(ROOT), timeout=120)

    def publish(self, tar: Path) -> None:
        self.tool("publish", str(tar), json.dumps(CUSTOM))

    def metadata(self, name: str) -> Path:
        return self.dir / "metadata" / name

    def trusted(self) -> Dict[str, bytes]:
        """The device's trusted metadata, file by file (links as their target)."""
        return {str(p.relative_to(self.device)): p.read_bytes() for p in sorted(self.device.rglob("*.json"))
                if ".staging" not in p.parts}


@pytest.fixture()
def repo(tmp_path: Path) -> Repo:
    return Repo(tmp_path)


@pytest.fixture()
def bundle_tar(tmp_path: Path) -> Path:
    tar = tmp_path / "tiny-2.tar"
    tar.write_bytes(b"pretend tar " * 1000)
    return tar


@pytest.fixture()
def served(repo: Repo) -> Iterator[str]:
    """An HTTP server on 127.0.0.1 serving the repository directory; yields its base URL."""
    handler = functools.partial(_QuietHandler, directory=str(repo.dir))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        """Keep the test output clean."""


def _client(repo: Repo, url: str) -> TufClient:
    return TufClient(repo.device, f"{url}/metadata/", f"{url}/targets/")


def _refused(repo: Repo, url: str, words: str) -> None:
    """A fresh client's refresh is refused as MetadataRefusedError naming ``words``; trusted files unchanged."""
    before = repo.trusted()
    client = _client(repo, url)
    with pytest.raises(MetadataRefusedError) as caught:
        client.refresh()
    client.close()
    assert isinstance(caught.value, SyncError)
    message = str(caught.value)
    assert "\n" not in message and words in message, message
    assert repo.trusted() == before


def _seen_by_device(repo: Repo, url: str) -> None:
    client = _client(repo, url)
    client.refresh()
    client.close()


def test_refresh_and_target_lookup(repo: Repo, served: str, bundle_tar: Path) -> None:
    repo.publish(bundle_tar)
    client = _client(repo, served)
    client.refresh()
    target = client.target("tiny-2.tar")
    client.close()
    digest = hashlib.sha256(bundle_tar.read_bytes()).hexdigest()
    assert (target.length, target.sha256, target.custom) == (bundle_tar.stat().st_size, digest, CUSTOM)
    assert target.url == f"{served}/targets/{digest}.tiny-2.tar"
    with urllib.request.urlopen(target.url) as response:  # what download.py fetches
        assert hashlib.sha256(response.read()).hexdigest() == digest
    assert json.loads((repo.device / "timestamp.json").read_bytes())["signed"]["version"] == 2
    assert not (repo.device / ".staging").exists()


def test_unknown_target(repo: Repo, served: str) -> None:
    client = _client(repo, served)
    with pytest.raises(UnknownTargetError):
        client.target("other-1.tar")
    client.close()


def test_tampered_targets_is_a_bad_signature(repo: Repo, served: str, bundle_tar: Path) -> None:
    _seen_by_device(repo, served)
    repo.publish(bundle_tar)
    path = repo.metadata("2.targets.json")
    document = json.loads(path.read_bytes())
    document["signed"]["targets"]["tiny-2.tar"]["hashes"]["sha256"] = "0" * 64
    path.write_text(json.dumps(document))
    # timestamp and snapshot verify first: they must not be kept either
    _refused(repo, served, "signature")


def test_expired_timestamp_is_a_freeze(repo: Repo, served: str) -> None:
    repo.tool("refresh-timestamp", "24")
    _refused(repo, served, "expired")


def test_older_timestamp_is_a_rollback(repo: Repo, served: str, bundle_tar: Path) -> None:
    old = repo.metadata("timestamp.json").read_bytes()
    repo.publish(bundle_tar)
    _seen_by_device(repo, served)
    repo.metadata("timestamp.json").write_bytes(old)
    _refused(repo, served, "rollback")


def test_older_snapshot_is_a_rollback(repo: Repo, served: str, bundle_tar: Path) -> None:
    repo.publish(bundle_tar)
    _seen_by_device(repo, served)
    repo.tool("forge-timestamp", "1", "trusted")  # a newer timestamp naming snapshot 1 again
    _refused(repo, served, "rollback")


def test_targets_not_the_version_snapshot_lists(repo: Repo, served: str, bundle_tar: Path) -> None:
    repo.publish(bundle_tar)
    shutil.copyfile(repo.metadata("1.targets.json"), repo.metadata("2.targets.json"))
    _refused(repo, served, "mix-and-match")


def test_timestamp_signed_by_an_untrusted_key(repo: Repo, served: str) -> None:
    repo.tool("forge-timestamp", "1", "rogue")
    _refused(repo, served, "signature")


def test_oversize_timestamp(repo: Repo, served: str) -> None:
    _seen_by_device(repo, served)
    repo.metadata("timestamp.json").write_bytes(b" " * (1 << 20))
    _refused(repo, served, "larger than")


def test_unreachable_server_is_a_transport_error(repo: Repo) -> None:
    before = repo.trusted()
    client = _client(repo, "http://127.0.0.1:9")
    with pytest.raises(TransportError):
        client.refresh()
    client.close()
    assert repo.trusted() == before
