"""The device's TUF client: refreshes the fleet's signed metadata and says which bundle to fetch.

python-tuf's ``ngclient.Updater`` does the checks (signatures and thresholds, expiry = anti-freeze,
versions = anti-rollback, snapshot = anti-mix-and-match, length caps = anti-endless-data). Only the
API shared by tuf 5.1 (Python 3.8, JetPack 5) and tuf 6 is used.

ngclient persists each role as soon as it verifies, so a refresh that fails half-way (a good
timestamp, then a bad targets) would leave newer files behind. Here the Updater works on a copy
(``<metadata_dir>/.staging``) and the verified files are copied back only when the whole operation
succeeded: a refused refresh leaves the device's trusted metadata byte-identical.

The bundle download is not done here (``download.py`` resumes it with HTTP Range); this client
returns what to fetch: the target's URL, length and sha256.

The metadata travels through :class:`TlsFetcher` (ngclient's ``FetcherInterface``, the same in tuf
5.1 and 6), not ngclient's own HTTP stack: HTTPS checked against the agent's CA bundle
(:func:`edge_runtime.fleet.transport.tls_context`), plain http to loopback only, a time-out on every
socket read, and the length cap ngclient gives each file enforced while reading (and against the
announced Content-Length before the first byte).
"""

from __future__ import annotations

import contextlib
import http.client
import os
import shutil
import ssl
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Callable, Dict, Iterator, Optional, TypeVar
from urllib.parse import urlsplit

from edge_runtime.atomic_io import fsync_dir, write_bytes_atomic
from edge_runtime.errors import BackendUnavailableError, ConfigError
from edge_runtime.fleet.errors import MetadataRefusedError, TransportError, UnknownTargetError
from edge_runtime.fleet.transport import check_server_url, tls_context

try:
    from tuf.api import exceptions as tuf_errors
    from tuf.ngclient import FetcherInterface, Updater, UpdaterConfig
except ImportError:  # the `sync` extra is not installed
    tuf_errors = None  # type: ignore[assignment]
    FetcherInterface = object  # type: ignore[assignment,misc]

T = TypeVar("T")
STAGING = ".staging"

# Most specific first: each ngclient failure → the one-line reason a device reports.
_REASONS = (
    ("UnsignedMetadataError", "bad or missing signature, or a key the trusted root does not list"),
    ("ExpiredMetadataError", "expired (freeze attack or a stale mirror)"),
    ("EqualVersionNumberError", "same version number with different content"),
    ("BadVersionNumberError", "version older than trusted or not the one snapshot lists (rollback / mix-and-match)"),
    ("LengthOrHashMismatchError", "does not match the length or hash its parent role lists (mix-and-match)"),
    ("DownloadLengthMismatchError", "larger than the allowed maximum (endless data)"),
)


@dataclass(frozen=True)
class TufTarget:
    """A verified target: what to download (``url``), and the length and sha256 it must have."""

    name: str
    length: int
    sha256: str
    custom: Dict[str, Any]
    url: str


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


class TufClient:
    """Refreshes trusted metadata in ``metadata_dir`` (which starts from the root.json installed with the device)."""

    def __init__(self, metadata_dir: Path, metadata_url: str, targets_url: str,
                 config: Optional[Any] = None, fetcher: Optional[Any] = None) -> None:
        if tuf_errors is None:
            raise BackendUnavailableError.missing_module("tuf", "sync")
        self.metadata_dir = Path(metadata_dir)
        self.metadata_url = metadata_url if metadata_url.endswith("/") else metadata_url + "/"
        self.targets_url = targets_url if targets_url.endswith("/") else targets_url + "/"
        self._config = config if config is not None else UpdaterConfig()
        self._fetcher = fetcher if fetcher is not None else TlsFetcher()
        self._updater: Optional[Updater] = None

    def refresh(self) -> None:
        """Fetch and verify root (rotations), timestamp, snapshot and targets; keep them only if all hold."""
        self._updater = None
        updater = self._staged(lambda u: (u.refresh(), u)[1], fresh=True)
        self._updater = updater

    def target(self, name: str) -> TufTarget:
        """The verified target ``name`` (refreshing first if this client has not yet)."""
        if self._updater is None:
            self.refresh()
        info = self._staged(lambda u: u.get_targetinfo(name), fresh=False)
        if info is None:
            raise UnknownTargetError(f"TUF target '{name}': not listed in the verified targets metadata")
        sha256 = info.hashes.get("sha256")
        if not sha256 or info.length <= 0:
            raise MetadataRefusedError(f"TUF target '{name}': no sha256 hash or no length in its metadata")
        custom = info.unrecognized_fields.get("custom") or {}
        return TufTarget(name=name, length=int(info.length), sha256=str(sha256),
                         custom=dict(custom) if isinstance(custom, dict) else {}, url=self._target_url(name, sha256))

    def close(self) -> None:
        """Forget the Updater and remove the staging copy."""
        self._updater = None
        shutil.rmtree(self.metadata_dir / STAGING, ignore_errors=True)

    def _target_url(self, name: str, sha256: str) -> str:
        """``<targets_url>/<dir>/<sha256>.<basename>``: ngclient's consistent-snapshot target path."""
        directory, _, basename = name.rpartition("/")
        prefixed = f"{sha256}.{basename}" if self._config.prefix_targets_with_hash else basename
        return self.targets_url + (f"{directory}/{prefixed}" if directory else prefixed)

    def _staged(self, operation: Callable[[Any], T], fresh: bool) -> T:
        """Run ``operation`` on an Updater over the staging copy; copy verified files back only on success."""
        staging = self.metadata_dir / STAGING
        if fresh:
            shutil.rmtree(staging, ignore_errors=True)
            shutil.copytree(self.metadata_dir, staging, symlinks=True, ignore=shutil.ignore_patterns(STAGING))
        updater = self._updater if self._updater is not None else Updater(
            metadata_dir=str(staging), metadata_base_url=self.metadata_url,
            target_base_url=self.targets_url, fetcher=self._fetcher, config=self._config)
        try:
            result = operation(updater)
        except Exception as exc:  # ngclient raises many types: translated below, others re-raised as they are
            self._updater = None
            shutil.rmtree(staging, ignore_errors=True)
            translated = _translate(exc)
            if translated is exc:
                raise
            raise translated from exc
        _commit(staging, self.metadata_dir)
        return result


def _translate(exc: BaseException) -> BaseException:
    """ngclient's exception → MetadataRefusedError / TransportError with one line; anything else unchanged."""
    line = " ".join(str(exc).split()) or type(exc).__name__
    for cls in type(exc).__mro__:
        for name, reason in _REASONS:
            if cls.__name__ == name and cls.__module__.startswith("tuf."):
                return MetadataRefusedError(f"TUF metadata refused: {reason}: {line}")
    if isinstance(exc, tuf_errors.RepositoryError):
        return MetadataRefusedError(f"TUF metadata refused: {line}")
    if isinstance(exc, (tuf_errors.DownloadError, OSError)):
        return TransportError(f"TUF metadata could not be fetched: {line}")
    return exc


def _commit(staging: Path, trusted: Path) -> None:
    """Copy what changed in ``staging`` into ``trusted``: root history first, then root, timestamp, the rest."""
    def order(path: Path) -> tuple:
        rank = {"root_history": 0, "root.json": 1, "timestamp.json": 2, "snapshot.json": 3}
        return (rank.get(path.relative_to(staging).parts[0], 4), str(path))

    for path in sorted((p for p in staging.rglob("*") if not p.is_dir() or p.is_symlink()), key=order):
        dest = trusted / path.relative_to(staging)
        dest.parent.mkdir(parents=True, exist_ok=True)
        if path.is_symlink():
            link = os.readlink(path)
            if not dest.is_symlink() or os.readlink(dest) != link:
                tmp = dest.with_name(f".{dest.name}.link")
                if tmp.is_symlink() or tmp.exists():
                    tmp.unlink()
                os.symlink(link, tmp)
                os.replace(tmp, dest)
        elif path.name.startswith(".") or path.suffix != ".json":
            continue  # ngclient's temporary files
        elif dest.is_symlink() or not dest.exists() or dest.read_bytes() != path.read_bytes():
            write_bytes_atomic(dest, path.read_bytes())
    fsync_dir(trusted)
