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
import ssl
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Dict, Iterator

import pytest

pytest.importorskip("tuf.ngclient")

from served_in_thread import served_in_thread
from tls_support import TestPki, write_test_pki

from edge_runtime.fleet.errors import MetadataRefusedError, SyncError, TransportError, UnknownTargetError
from edge_runtime.fleet.transport import tls_context
from edge_runtime.fleet.tuf_client import TufClient
from edge_runtime.fleet.tuf_fetcher import TlsFetcher

ROOT = Path(__file__).resolve().parents[2]
TOOL = Path(__file__).with_name("tuf_repo_tool.py")
CUSTOM = {"model": "tiny", "version": "2", "device_class": "xavier-nx", "fingerprint": {"gpu": "sm_72"}}
DEVICE = "xavier-0001"


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

    def publish(self, tar: Path, *devices: str) -> None:
        """Publish ``tar`` (the image role) and assign it to ``devices`` (the director)."""
        self.tool("publish", str(tar), json.dumps(CUSTOM), *devices)

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
    with served_in_thread(httpd) as port:
        yield f"http://127.0.0.1:{port}"


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
    repo.publish(bundle_tar, DEVICE)
    client = _client(repo, served)
    client.refresh()
    target = client.target("tiny-2.tar")
    mine = client.device_targets(DEVICE)
    client.close()
    digest = hashlib.sha256(bundle_tar.read_bytes()).hexdigest()
    assert (target.length, target.sha256, target.custom) == (bundle_tar.stat().st_size, digest, CUSTOM)
    assert target.url == f"{served}/targets/{digest}.tiny-2.tar"
    assert [(t.name, t.length, t.sha256, t.url) for t in mine] == [("tiny-2.tar", target.length, digest, target.url)]
    assert mine[0].custom == {**CUSTOM, "image": "tiny-2.tar", "rollout_id": None}  # the director's custom
    with urllib.request.urlopen(target.url) as response:  # what download.py fetches
        assert hashlib.sha256(response.read()).hexdigest() == digest
    assert json.loads((repo.device / "timestamp.json").read_bytes())["signed"]["version"] == 3  # publish, assign
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


# --- over HTTPS, trusting the CA bundle the settings name -------------------------------------------

@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> TestPki:
    """PEM files: the server's certificate and key, the CA that signed it, and a CA that did not."""
    pytest.importorskip("cryptography")
    return write_test_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture()
def served_tls(repo: Repo, pki: TestPki) -> Iterator[str]:
    """The repository over HTTPS on 127.0.0.1 with the test CA's certificate; yields its base URL."""
    handler = functools.partial(_QuietHandler, directory=str(repo.dir))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(str(pki.cert), str(pki.key))
    httpd.socket = context.wrap_socket(httpd.socket, server_side=True)
    with served_in_thread(httpd) as port:
        yield f"https://127.0.0.1:{port}"


def _sync_client(repo: Repo, url: str, ca_bundle: Path) -> TufClient:
    """The client a sync pass builds (sync_pass.build_tuf_client) from settings naming ``ca_bundle``."""
    from edge_runtime.fleet.sync_config import SyncSettings
    from edge_runtime.fleet.sync_pass import build_tuf_client

    settings = SyncSettings(metadata_url=f"{url}/metadata/", targets_url=f"{url}/targets/",
                            metadata_dir=str(repo.device), trusted_root=str(repo.device / "root.json"),
                            staging_dir="staging", repository="models", trusted_keys=("signing.pub",),
                            device_config="device.yaml", ca_bundle=str(ca_bundle), request_timeout_s=10.0,
                            device_id=DEVICE, source=str(repo.device.parent / "agent.yaml"))
    return build_tuf_client(settings)


def test_refresh_over_https_trusts_the_ca_bundle(repo: Repo, served_tls: str, pki: TestPki,
                                                 bundle_tar: Path) -> None:
    repo.publish(bundle_tar, DEVICE)
    client = _sync_client(repo, served_tls, pki.ca)
    client.refresh()
    [target] = client.device_targets(DEVICE)
    client.close()
    assert target.sha256 == hashlib.sha256(bundle_tar.read_bytes()).hexdigest()
    assert target.url.startswith(f"{served_tls}/targets/")
    assert json.loads((repo.device / "timestamp.json").read_bytes())["signed"]["version"] == 3


def test_a_ca_bundle_that_did_not_sign_the_server_is_a_transport_error(repo: Repo, served_tls: str,
                                                                       pki: TestPki) -> None:
    before = repo.trusted()
    client = _sync_client(repo, served_tls, pki.other_ca)
    with pytest.raises(TransportError) as caught:  # retried later: the metadata is not condemned
        client.refresh()
    client.close()
    assert not isinstance(caught.value, MetadataRefusedError)
    assert "certificate did not verify" in str(caught.value) and "\n" not in str(caught.value)
    assert repo.trusted() == before


def test_plain_http_to_a_remote_host_is_never_fetched(repo: Repo) -> None:
    client = TufClient(repo.device, "http://fleet.example.com/metadata/", "http://fleet.example.com/targets/",
                       fetcher=TlsFetcher(tls_context(None), timeout_s=1.0))
    with pytest.raises(TransportError, match="plain http is allowed only to 127"):
        client.refresh()
    client.close()


class _EndlessHandler(http.server.BaseHTTPRequestHandler):
    """Answers every GET with a body that announces no length and does not end (until the client leaves)."""

    def do_GET(self) -> None:
        self.send_response(200)
        self.end_headers()
        try:
            for _ in range(4096):
                self.wfile.write(b" " * 4096)
        except OSError:
            pass

    def log_message(self, format: str, *args: object) -> None:
        """Keep the test output clean."""


def test_a_body_without_a_length_is_cut_at_the_cap(repo: Repo) -> None:
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _EndlessHandler)
    with served_in_thread(httpd) as port:
        _refused(repo, f"http://127.0.0.1:{port}", "larger than")


def test_unreachable_server_is_a_transport_error(repo: Repo) -> None:
    before = repo.trusted()
    client = _client(repo, "http://127.0.0.1:9")
    with pytest.raises(TransportError):
        client.refresh()
    client.close()
    assert repo.trusted() == before
