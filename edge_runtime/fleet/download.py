"""Resumable download of one bundle tar, checked against the length and sha256 its TUF target names.

The bytes land in ``<dest>.partial`` beside the final name. A later call resumes that file with an
HTTP ``Range: bytes=N-`` request (206: the rest is appended; 200: the server ignored the range, so
it starts over; 416: the partial is wrong for this file, so it starts over once). The body is never
allowed past the expected length (anti endless data), and the file takes its final name, by an
atomic rename after fsync, only when its length and sha256 match: a tampered or oversize file is
deleted, a cut one is kept for the next resume, and neither ever reaches the installer.

The space check runs before any byte moves: the bytes still to come must fit the destination
filesystem's free space minus a reserve (a Jetson's small eMMC also holds the system). Transport:
HTTPS checked against an :class:`ssl.SSLContext` the caller builds from the agent's CA bundle, or
plain http to loopback only (:func:`edge_runtime.fleet.transport.check_server_url`); every socket
read has a time-out. :data:`Opener` is the seam tests and other transports plug into.
"""

from __future__ import annotations

import errno
import hashlib
import http.client
import os
import re
import shutil
import ssl
from pathlib import Path
from typing import BinaryIO, Callable, Mapping, Optional, Protocol
from urllib.parse import urlsplit

from edge_runtime.atomic_io import fsync_dir
from edge_runtime.fleet.errors import (
    DownloadError,
    DownloadIntegrityError,
    DownloadSpaceError,
    RepositoryWriteError,
    TransportError,
)
from edge_runtime.fleet.transport import check_server_url

DEFAULT_CHUNK_BYTES = 1 << 16
DEFAULT_RESERVE_BYTES = 512 << 20
PARTIAL_SUFFIX = ".partial"
_CONTENT_RANGE = re.compile(r"bytes\s+(\d+)-(\d+)/(\d+|\*)$")


class Body(Protocol):
    """An HTTP answer being read: the part of :class:`http.client.HTTPResponse` the download uses."""

    status: int

    def getheader(self, name: str) -> Optional[str]:
        """A response header, or None."""

    def read1(self, n: int) -> bytes:
        """Up to ``n`` bytes of the body, from at most one socket read; b"" at its end."""

    def close(self) -> None:
        """Release the connection."""


# (url, request headers) -> Body; raises TransportError when no HTTP answer came back.
Opener = Callable[[str, Mapping[str, str]], Body]
# (bytes on disk so far, expected total)
Progress = Callable[[int, int], None]


def partial_path(dest: Path) -> Path:
    """Where the bytes of ``dest`` gather until they are verified: ``<dest>.partial``."""
    return dest.with_name(dest.name + PARTIAL_SUFFIX)


def free_bytes(directory: Path) -> int:
    """Bytes an unprivileged writer may still use on the filesystem holding ``directory``."""
    return shutil.disk_usage(str(directory)).free


def check_space(directory: Path, needed: int, reserve_bytes: int) -> None:
    """DownloadSpaceError (507) unless ``needed`` bytes fit the free space minus the reserve."""
    free = free_bytes(directory)
    if needed > free - reserve_bytes:
        raise DownloadSpaceError(f"not enough space in {directory}: need {needed} bytes, free {free} "
                                     f"(of which {reserve_bytes} are kept in reserve)")


def download(url: str, dest: Path, expected_length: int, expected_sha256: str, *,
             opener: Optional[Opener] = None, chunk_bytes: int = DEFAULT_CHUNK_BYTES,
             progress: Optional[Progress] = None, reserve_bytes: int = DEFAULT_RESERVE_BYTES,
             then_bytes: int = 0) -> Path:
    """Fetch ``url`` into ``dest`` (resuming ``<dest>.partial``); ``dest`` only once length and sha256 match.

    ``then_bytes``: space the caller needs next on the same filesystem (unpacking the tar there):
    counted in the space check, so a download that could not then be installed never starts.
    """
    check_server_url(url, source="bundle URL")
    if expected_length < 0 or not re.fullmatch(r"[0-9a-f]{64}", expected_sha256):
        raise DownloadIntegrityError(f"{url}: the target names no usable length/sha256 "
                                     f"({expected_length}, {expected_sha256!r})")
    partial = partial_path(dest)
    fetch = opener if opener is not None else HttpOpener()
    try:
        check_space(dest.parent, expected_length - _usable_prefix(partial, expected_length) + then_bytes,
                    reserve_bytes)
        sink = _fill(partial, fetch, url, expected_length, chunk_bytes, progress)
        _verify_and_publish(url, partial, dest, sink, expected_sha256)
    except DownloadIntegrityError:
        partial.unlink(missing_ok=True)  # tampered, oversize or foreign: never resumed
        raise
    except OSError as exc:  # the device's disk, not the network (those are TransportError)
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise DownloadSpaceError(f"{partial}: the disk filled up during the download: {exc.strerror}") from exc
        raise RepositoryWriteError(f"{partial}: cannot write the download: {exc.strerror or exc}") from exc
    return dest


def _fill(partial: Path, fetch: Opener, url: str, expected_length: int, chunk_bytes: int,
          progress: Optional[Progress]) -> _Sink:
    """Bring the partial file to its full length (or raise), then sync it."""
    with partial.open("a+b") as out:
        sink = _Sink(out, expected_length, progress)
        try:
            if sink.size < expected_length:
                _receive(fetch, url, sink, chunk_bytes)
        finally:  # a cut partial is synced too, so that it resumes well after a power loss
            out.flush()
            os.fsync(out.fileno())
    return sink


class HttpOpener:
    """GETs over HTTPS (checked by ``ssl_context``, else the system CAs) or loopback HTTP, one connection each."""

    def __init__(self, ssl_context: Optional[ssl.SSLContext] = None, timeout_s: float = 30.0) -> None:
        self._context = ssl_context
        self._timeout_s = timeout_s  # a socket time-out: it bounds every read, not the whole download

    def __call__(self, url: str, headers: Mapping[str, str]) -> Body:
        """Send the GET and return the answer with its body unread."""
        check_server_url(url, source="bundle URL")
        parts = urlsplit(url)
        host = parts.hostname or ""
        if parts.scheme == "https":
            connection: http.client.HTTPConnection = http.client.HTTPSConnection(
                host, parts.port, timeout=self._timeout_s,
                context=self._context or ssl.create_default_context())
        else:
            connection = http.client.HTTPConnection(host, parts.port, timeout=self._timeout_s)
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        try:
            # Connection: close hands the socket to the response: closing that after the body releases it
            connection.request("GET", path, headers={**headers, "Connection": "close"})
            return connection.getresponse()
        except ssl.SSLCertVerificationError as exc:
            connection.close()
            raise TransportError(f"{host}: the file server's certificate did not verify: "
                                 f"{exc.verify_message or exc}") from exc
        except (OSError, http.client.HTTPException) as exc:
            connection.close()
            raise TransportError(f"{host}: {type(exc).__name__}: {exc}") from exc


def _usable_prefix(partial: Path, expected_length: int) -> int:
    """Bytes of an earlier partial to keep: all of it, unless it is already longer than the target."""
    try:
        size = partial.stat().st_size
    except FileNotFoundError:
        return 0
    if size > expected_length:
        partial.unlink()
        return 0
    return size


class _Sink:
    """The partial file being appended to, with the running sha256 of everything in it."""

    def __init__(self, out: BinaryIO, expected_length: int, progress: Optional[Progress]) -> None:
        self.out = out
        self.expected_length = expected_length
        self.progress = progress
        self.hasher = hashlib.sha256()
        out.seek(0)
        for block in iter(lambda: out.read(1 << 20), b""):
            self.hasher.update(block)
        self.size = out.tell()

    def restart(self) -> None:
        """Drop what is there: the next body starts at byte 0."""
        self.out.seek(0)
        self.out.truncate(0)
        self.hasher = hashlib.sha256()
        self.size = 0

    def append(self, block: bytes) -> None:
        """Write and hash one block at the end."""
        self.out.write(block)
        self.hasher.update(block)
        self.size += len(block)
        if self.progress is not None:
            self.progress(self.size, self.expected_length)


def _receive(fetch: Opener, url: str, sink: _Sink, chunk_bytes: int) -> None:
    """Append the missing bytes; a 200 starts the file over, and so does a first 416."""
    for _ in range(2):
        offset = sink.size
        headers = {"Accept-Encoding": "identity"}  # a compressed body would not match the target
        if offset:
            headers["Range"] = f"bytes={offset}-"
        body = fetch(url, headers)
        try:
            if body.status == 416:  # the server's file is shorter than our partial: ours is wrong
                sink.restart()
                continue
            if _body_start(url, body, offset, sink.expected_length) != offset:
                sink.restart()
            _copy_body(url, body, sink, chunk_bytes)
            return
        finally:
            body.close()
    raise DownloadError(f"{url}: the file server refused the whole file as a range (416)")


def _body_start(url: str, body: Body, offset: int, expected_length: int) -> int:
    """Where the answer's body starts in the file, after checking its status and length headers."""
    length = body.getheader("Content-Length")
    if body.status == 200:
        if length is not None and length.strip() != str(expected_length):
            raise DownloadIntegrityError(f"{url}: the server announces {length.strip()} bytes, "
                                         f"the target {expected_length}")
        return 0
    if body.status != 206:
        raise DownloadError(f"{url}: the file server answered HTTP {body.status}")
    match = _CONTENT_RANGE.match((body.getheader("Content-Range") or "").strip())
    if match is None or int(match.group(1)) != offset:
        raise DownloadError(f"{url}: asked for bytes from {offset}, the server sent the range "
                            f"{body.getheader('Content-Range')!r}")
    total = match.group(3)
    if (total != "*" and int(total) != expected_length) or int(match.group(2)) >= expected_length:
        raise DownloadIntegrityError(f"{url}: the server's file is {total} bytes "
                                     f"(range {match.group(0)}), the target {expected_length}")
    return offset


def _copy_body(url: str, body: Body, sink: _Sink, chunk_bytes: int) -> None:
    """Append the body, refusing it as soon as it runs past the expected length."""
    remaining = sink.expected_length - sink.size
    while True:
        # one byte more than is missing tells an over-long body
        block = _read(url, body, sink, min(chunk_bytes, remaining + 1))
        if not block:
            break
        if len(block) > remaining:
            raise DownloadIntegrityError(f"{url}: the body runs past the target's {sink.expected_length} bytes")
        sink.append(block)
        remaining -= len(block)
    if remaining:
        raise TransportError(f"{url}: the connection closed after {sink.size} of "
                             f"{sink.expected_length} bytes (kept to resume)")


def _read(url: str, body: Body, sink: _Sink, size: int) -> bytes:
    """One socket read's worth of the body (read1: what came is kept even if the next read times out)."""
    try:
        return body.read1(size)
    except (OSError, http.client.HTTPException) as exc:  # socket.timeout is an OSError
        raise TransportError(f"{url}: cut after {sink.size} of {sink.expected_length} bytes "
                             f"(kept to resume): {type(exc).__name__}: {exc}") from exc


def _verify_and_publish(url: str, partial: Path, dest: Path, sink: _Sink, expected_sha256: str) -> None:
    """Rename the partial to ``dest`` when length and sha256 match the target; else delete it."""
    digest = sink.hasher.hexdigest()
    if sink.size != sink.expected_length or digest != expected_sha256:
        raise DownloadIntegrityError(f"{url}: the file differs from its target: {sink.size} bytes "
                                     f"(expected {sink.expected_length}), sha256 {digest} "
                                     f"(expected {expected_sha256})")
    os.replace(partial, dest)
    fsync_dir(dest.parent)
