"""ngclient's fetcher over the agent's transport: how the device's TUF client reads metadata.

A ``FetcherInterface`` (the same in tuf 5.1 and 6) instead of ngclient's own HTTP stack: HTTPS
checked against the agent's CA bundle (:func:`edge_runtime.fleet.transport.tls_context`), plain
http to loopback only, a time-out on every socket read, and the length cap ngclient gives each file
enforced while reading (and against the announced Content-Length before the first byte).
"""

from __future__ import annotations

import contextlib
import http.client
import ssl
import tempfile
from typing import IO, Iterator, Optional
from urllib.parse import urlsplit

from edge_runtime.errors import ConfigError
from edge_runtime.fleet.transport import check_server_url, tls_context

try:
    from tuf.api import exceptions as tuf_errors
    from tuf.ngclient import FetcherInterface
except ImportError:  # the `sync` extra is not installed: TufClient says so before a fetcher is used
    tuf_errors = None  # type: ignore[assignment]
    FetcherInterface = object  # type: ignore[assignment,misc]


class TlsFetcher(FetcherInterface):
    """ngclient's fetcher over the agent's TLS: CA-bundle HTTPS or loopback http, per-read time-outs, length caps."""

    def __init__(self, ssl_context: Optional[ssl.SSLContext] = None, timeout_s: float = 30.0,
                 chunk_bytes: int = 1 << 16) -> None:
        self._context = ssl_context if ssl_context is not None else tls_context(None)
        self._timeout_s = timeout_s  # a socket time-out: it bounds every read
        self._chunk_bytes = chunk_bytes

    def _fetch(self, url: str) -> Iterator[bytes]:
        """The body of ``url`` in chunks (no cap: ngclient's ``download_file`` counts them)."""
        return self._stream(url, None)

    @contextlib.contextmanager
    def download_file(self, url: str, max_length: int) -> Iterator[IO[bytes]]:
        """The body of ``url`` in a temporary file; DownloadLengthMismatchError past ``max_length`` bytes."""
        with tempfile.TemporaryFile() as temp:
            for chunk in self._stream(url, max_length):
                temp.write(chunk)
            temp.seek(0)
            yield temp

    def _stream(self, url: str, max_length: Optional[int]) -> Iterator[bytes]:
        """Send the GET now (errors raise here); the body's chunks, never more than ``max_length`` bytes."""
        response = self._get(url)
        try:
            if response.status != 200:
                raise tuf_errors.DownloadHTTPError(f"{url}: the metadata server answered HTTP {response.status}",
                                                   response.status)
            announced = (response.getheader("Content-Length") or "").strip()
            if max_length is not None and announced.isdigit() and int(announced) > max_length:
                raise tuf_errors.DownloadLengthMismatchError(
                    f"{url}: the server announces {announced} bytes, over the allowed {max_length}")
        except BaseException:
            response.close()
            raise
        return self._chunks(url, response, max_length)

    def _chunks(self, url: str, response: http.client.HTTPResponse, max_length: Optional[int]) -> Iterator[bytes]:
        """Read the body one socket read at a time, one byte past the cap at most (which refuses it)."""
        received = 0
        try:
            while True:
                size = self._chunk_bytes if max_length is None else min(self._chunk_bytes, max_length - received + 1)
                try:
                    chunk = response.read1(size)
                except (OSError, http.client.HTTPException) as exc:  # socket.timeout is an OSError
                    raise tuf_errors.DownloadError(f"{url}: cut after {received} bytes: "
                                                   f"{type(exc).__name__}: {exc}") from exc
                if not chunk:
                    return
                received += len(chunk)
                if max_length is not None and received > max_length:
                    raise tuf_errors.DownloadLengthMismatchError(
                        f"{url}: more than the allowed {max_length} bytes")
                yield chunk
        finally:
            response.close()

    def _get(self, url: str) -> http.client.HTTPResponse:
        """One GET on a new connection; tuf's DownloadError (one line) when no HTTP answer came back."""
        try:
            check_server_url(url, source="TUF URL")
        except ConfigError as exc:
            raise tuf_errors.DownloadError(str(exc)) from exc
        parts = urlsplit(url)
        host = parts.hostname or ""
        if parts.scheme == "https":
            connection: http.client.HTTPConnection = http.client.HTTPSConnection(
                host, parts.port, timeout=self._timeout_s, context=self._context)
        else:
            connection = http.client.HTTPConnection(host, parts.port, timeout=self._timeout_s)
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        try:
            connection.request("GET", path, headers={"Accept-Encoding": "identity", "Connection": "close"})
            return connection.getresponse()
        except ssl.SSLCertVerificationError as exc:
            connection.close()
            raise tuf_errors.DownloadError(f"{host}: the metadata server's certificate did not verify: "
                                           f"{exc.verify_message or exc}") from exc
        except (OSError, http.client.HTTPException) as exc:
            connection.close()
            raise tuf_errors.DownloadError(f"{host}: {type(exc).__name__}: {exc}") from exc
