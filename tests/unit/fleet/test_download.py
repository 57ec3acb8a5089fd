"""The resumable bundle download, against a Range-capable file server on 127.0.0.1 that misbehaves on demand."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import ssl
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Iterator, List, Mapping, Optional, Tuple

import pytest
from tls_support import TestPki, write_test_pki

from edge_runtime.errors import ConfigError
from edge_runtime.fleet import download as download_module
from edge_runtime.fleet.download import HttpOpener, download, partial_path
from edge_runtime.fleet.errors import (
    DownloadError,
    DownloadIntegrityError,
    DownloadSpaceError,
    RepositoryWriteError,
    TransportError,
)

DATA = bytes(range(256)) * 1024  # 256 KiB, every offset distinguishable
SHA = hashlib.sha256(DATA).hexdigest()
NO_RESERVE = 0


class FileServer(ThreadingHTTPServer):
    """Serves DATA at any path; ``mode`` makes it misbehave; ``ranges`` records each request's Range header."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.data = DATA
        self.mode = "normal"
        self.cut_at = len(DATA) // 3
        self.ranges: List[Optional[str]] = []
        self.stall = threading.Event()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/bundles/model-2.tar"


class _Handler(BaseHTTPRequestHandler):
    server: FileServer

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        server = self.server
        server.ranges.append(self.headers.get("Range"))
        mode, data = server.mode, server.data
        if mode == "missing":
            self.send_error(404)
            return
        start = _range_start(self.headers.get("Range"))
        if start is not None and mode == "always_416":
            self._head(416, {"Content-Range": f"bytes */{len(data)}"})
            return
        if start is None or mode == "ignore_range":
            self._send_whole(mode, data)
            return
        shown = start + 7 if mode == "wrong_content_range" else start
        self._head(206, {"Content-Range": f"bytes {shown}-{len(data) - 1}/{len(data)}",
                         "Content-Length": str(len(data) - start)})
        self._write(data[start:])

    def _send_whole(self, mode: str, data: bytes) -> None:
        if mode == "endless":
            self._head(200, {})  # no Content-Length: the body ends when the connection closes
            with contextlib.suppress(OSError):
                for _ in range(256):  # 64 MiB at most, so that a broken client cannot hang the test
                    self.wfile.write(data)
            return
        headers = {"Content-Length": str(len(data) + 1000 if mode == "announce_more" else len(data))}
        self._head(200, headers)
        if mode == "tampered":
            data = data[:100] + bytes([data[100] ^ 1]) + data[101:]
        if mode == "cut":
            data = data[:self.server.cut_at]
        if mode == "stall":
            self._write(data[:self.server.cut_at])
            self.server.stall.wait(10)
            return
        self._write(data + (b"junk" * 100 if mode in ("more_than_announced", "announce_more") else b""))

    def _head(self, status: int, headers: Mapping[str, str]) -> None:
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()

    def _write(self, body: bytes) -> None:
        with contextlib.suppress(OSError):
            self.wfile.write(body)
            self.wfile.flush()


def _range_start(header: Optional[str]) -> Optional[int]:
    if not header:
        return None
    assert header.startswith("bytes=") and header.endswith("-"), header
    return int(header[len("bytes="):-1])


@pytest.fixture()
def server() -> Iterator[FileServer]:
    file_server = FileServer()
    thread = threading.Thread(target=file_server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield file_server
    finally:
        file_server.stall.set()
        file_server.shutdown()
        file_server.server_close()
        thread.join()


@pytest.fixture()
def dest(tmp_path: Path) -> Path:
    return tmp_path / "staging" / "model-2.tar"


@pytest.fixture(autouse=True)
def _staging(tmp_path: Path) -> None:
    (tmp_path / "staging").mkdir()


def fetch(server: FileServer, dest: Path, **kwargs: object) -> Path:
    kwargs.setdefault("reserve_bytes", NO_RESERVE)
    return download(server.url, dest, len(DATA), SHA, **kwargs)  # type: ignore[arg-type]


def test_fresh_download_is_verified_and_renamed(server: FileServer, dest: Path) -> None:
    seen: List[Tuple[int, int]] = []
    assert fetch(server, dest, chunk_bytes=10_000, progress=lambda done, total: seen.append((done, total))) == dest
    assert dest.read_bytes() == DATA
    assert not partial_path(dest).exists()
    assert server.ranges == [None]
    assert seen[-1] == (len(DATA), len(DATA)) and len(seen) > 1


def test_resume_after_a_cut_fetches_only_the_rest(server: FileServer, dest: Path) -> None:
    server.mode = "cut"
    with pytest.raises(TransportError, match="kept to resume"):
        fetch(server, dest)
    assert partial_path(dest).stat().st_size == server.cut_at
    assert not dest.exists()
    server.mode = "normal"
    fetch(server, dest)
    assert server.ranges == [None, f"bytes={server.cut_at}-"]
    assert dest.read_bytes() == DATA and not partial_path(dest).exists()


def test_a_partial_left_by_a_killed_agent_is_resumed(server: FileServer, dest: Path) -> None:
    partial_path(dest).write_bytes(DATA[:12345])
    fetch(server, dest)
    assert server.ranges == ["bytes=12345-"]
    assert dest.read_bytes() == DATA


def test_a_complete_partial_needs_no_request(server: FileServer, dest: Path) -> None:
    partial_path(dest).write_bytes(DATA)
    fetch(server, dest)
    assert server.ranges == []
    assert dest.read_bytes() == DATA


def test_endless_data_is_refused_and_never_written_past_the_length(server: FileServer, dest: Path) -> None:
    server.mode = "endless"
    sizes: List[int] = []
    with pytest.raises(DownloadIntegrityError, match="runs past") as caught:
        fetch(server, dest, progress=lambda done, total: sizes.append(done))
    assert caught.value.http_status == 422
    assert max(sizes) <= len(DATA)
    assert not dest.exists() and not partial_path(dest).exists()


def test_a_longer_announced_length_is_refused_before_the_body(server: FileServer, dest: Path) -> None:
    server.mode = "announce_more"
    sizes: List[int] = []
    with pytest.raises(DownloadIntegrityError, match="announces"):
        fetch(server, dest, progress=lambda done, total: sizes.append(done))
    assert sizes == []
    assert not dest.exists() and not partial_path(dest).exists()


def test_bytes_past_the_announced_length_are_not_read(server: FileServer, dest: Path) -> None:
    server.mode = "more_than_announced"
    fetch(server, dest)
    assert dest.read_bytes() == DATA


def test_a_tampered_body_is_refused_and_the_partial_deleted(server: FileServer, dest: Path) -> None:
    server.mode = "tampered"
    with pytest.raises(DownloadIntegrityError, match="sha256") as caught:
        fetch(server, dest)
    assert caught.value.http_status == 422
    assert not dest.exists() and not partial_path(dest).exists()


def test_a_complete_but_wrong_partial_is_deleted(server: FileServer, dest: Path) -> None:
    partial_path(dest).write_bytes(b"x" * len(DATA))
    with pytest.raises(DownloadIntegrityError):
        fetch(server, dest)
    assert not partial_path(dest).exists()
    fetch(server, dest)  # the next pass starts clean
    assert dest.read_bytes() == DATA


def test_a_partial_longer_than_the_target_is_dropped(server: FileServer, dest: Path) -> None:
    partial_path(dest).write_bytes(DATA + b"more")
    fetch(server, dest)
    assert server.ranges == [None]
    assert dest.read_bytes() == DATA


def test_a_server_ignoring_the_range_starts_the_file_over(server: FileServer, dest: Path) -> None:
    partial_path(dest).write_bytes(b"x" * 5000)  # a wrong prefix: a restart must drop it
    server.mode = "ignore_range"
    fetch(server, dest)
    assert server.ranges == ["bytes=5000-"]
    assert dest.read_bytes() == DATA


def test_416_restarts_once_from_the_first_byte(server: FileServer, dest: Path) -> None:
    partial_path(dest).write_bytes(b"x" * 5000)
    server.mode = "always_416"
    fetch(server, dest)
    assert server.ranges == ["bytes=5000-", None]
    assert dest.read_bytes() == DATA


def test_a_wrong_content_range_is_refused_and_nothing_appended(server: FileServer, dest: Path) -> None:
    partial_path(dest).write_bytes(DATA[:5000])
    server.mode = "wrong_content_range"
    with pytest.raises(DownloadError, match="5000") as caught:
        fetch(server, dest)
    assert caught.value.http_status == 502
    assert partial_path(dest).read_bytes() == DATA[:5000]
    server.mode = "normal"
    fetch(server, dest)
    assert dest.read_bytes() == DATA


def test_an_error_status_is_reported(server: FileServer, dest: Path) -> None:
    server.mode = "missing"
    with pytest.raises(DownloadError, match="HTTP 404"):
        fetch(server, dest)
    assert not dest.exists()


@pytest.mark.parametrize("free_over_need", [-1, 0])
def test_no_space_is_refused_before_any_byte(server: FileServer, dest: Path, monkeypatch: pytest.MonkeyPatch,
                                             free_over_need: int) -> None:
    reserve = 512 << 20
    partial_path(dest).write_bytes(DATA[:1000])
    needed = len(DATA) - 1000  # a resume needs only the rest
    monkeypatch.setattr(download_module, "free_bytes", lambda directory: needed + reserve + free_over_need)
    if free_over_need < 0:
        with pytest.raises(DownloadSpaceError, match=f"need {needed} bytes") as caught:
            fetch(server, dest, reserve_bytes=reserve)
        assert caught.value.http_status == 507
        assert server.ranges == []
        assert partial_path(dest).read_bytes() == DATA[:1000]
    else:
        fetch(server, dest, reserve_bytes=reserve)
        assert dest.read_bytes() == DATA


def test_the_space_the_install_needs_next_is_counted_before_any_byte(
        server: FileServer, dest: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The tar fits but unpacking it beside the tar would not: refused before the download starts."""
    monkeypatch.setattr(download_module, "free_bytes", lambda directory: len(DATA) + len(DATA) // 2)
    with pytest.raises(DownloadSpaceError, match=f"need {2 * len(DATA)} bytes"):
        fetch(server, dest, then_bytes=len(DATA))
    assert server.ranges == [] and not partial_path(dest).exists()
    fetch(server, dest)  # the tar alone fits
    assert dest.read_bytes() == DATA


def test_a_stalled_read_times_out_and_keeps_the_partial(server: FileServer, dest: Path) -> None:
    server.mode = "stall"
    with pytest.raises(TransportError, match="kept to resume"):
        fetch(server, dest, opener=HttpOpener(timeout_s=0.5))
    assert partial_path(dest).stat().st_size == server.cut_at


def test_plain_http_is_refused_off_loopback(dest: Path) -> None:
    with pytest.raises(ConfigError, match="plain http"):
        download("http://files.example.com/model-2.tar", dest, len(DATA), SHA)
    assert not partial_path(dest).exists()


@pytest.mark.parametrize("length, digest", [(-1, SHA), (len(DATA), "abc"), (len(DATA), SHA.upper())])
def test_an_unusable_target_is_refused(server: FileServer, dest: Path, length: int, digest: str) -> None:
    with pytest.raises(DownloadIntegrityError, match="no usable"):
        download(server.url, dest, length, digest, reserve_bytes=NO_RESERVE)
    assert server.ranges == []


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> TestPki:
    """The server's certificate and key, the CA that signed it, an unrelated CA, as PEM files."""
    pytest.importorskip("cryptography")
    return write_test_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture()
def tls_server(server: FileServer, pki: TestPki) -> FileServer:
    """The same file server behind TLS, with a certificate from the test CA."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(str(pki.cert), str(pki.key))
    server.socket = context.wrap_socket(server.socket, server_side=True)
    return server


def test_https_checked_against_the_ca_bundle(tls_server: FileServer, pki: TestPki,
                                             dest: Path) -> None:
    url = tls_server.url.replace("http://", "https://")
    opener = HttpOpener(ssl.create_default_context(cafile=str(pki.ca)), timeout_s=10)
    download(url, dest, len(DATA), SHA, opener=opener, reserve_bytes=NO_RESERVE)
    assert dest.read_bytes() == DATA


def test_https_from_a_server_the_ca_bundle_did_not_sign_is_refused(
        tls_server: FileServer, pki: TestPki, dest: Path) -> None:
    url = tls_server.url.replace("http://", "https://")
    opener = HttpOpener(ssl.create_default_context(cafile=str(pki.other_ca)), timeout_s=10)
    with pytest.raises(TransportError, match="certificate did not verify"):
        download(url, dest, len(DATA), SHA, opener=opener, reserve_bytes=NO_RESERVE)
    assert tls_server.ranges == [] and not dest.exists()


def test_a_disk_that_fills_up_midway_is_a_space_error_not_a_network_one(server: FileServer, dest: Path) -> None:
    def disk_full(done: int, total: int) -> None:  # progress runs right after each write: fail like one
        if done > 100_000:
            raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(DownloadSpaceError, match="filled up") as caught:
        fetch(server, dest, progress=disk_full)
    assert caught.value.http_status == 507
    assert not dest.exists() and partial_path(dest).exists()  # what is there stays, to resume once space is freed


def test_a_missing_staging_folder_is_one_of_our_errors(server: FileServer, tmp_path: Path) -> None:
    with pytest.raises(RepositoryWriteError, match="cannot write"):
        fetch(server, tmp_path / "no-such-folder" / "model-2.tar")
    assert server.ranges == []
