"""How the agent reaches the central server: one HTTPS POST at a time, verified against a CA bundle.

Standard library only (``http.client`` and ``ssl``): no new dependency on the device. The server's
certificate is checked against the CA bundle the agent's config names
(``ssl.create_default_context(cafile=...)``: chain and host name), or the system's CAs when it names
none. Plain ``http://`` is accepted only to 127.0.0.1 or localhost (a server on the device itself,
or a tunnel); anything else is refused in one line. :data:`Transport` is the seam: the uploader
takes any callable of that shape, so tests plug in a Flask test client or a fake.
"""

from __future__ import annotations

import http.client
import json
import ssl
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Mapping, Optional
from urllib.parse import urlsplit

from edge_runtime.errors import ConfigError
from edge_runtime.fleet.errors import TransportError

LOOPBACK_HOSTS = ("127.0.0.1", "localhost")


@dataclass(frozen=True)
class Reply:
    """An HTTP answer: status, headers (names lower-case) and body."""

    status: int
    headers: Mapping[str, str] = field(default_factory=dict)
    body: bytes = b""

    def json(self) -> Any:
        """The body as JSON; None when it is not JSON."""
        try:
            return json.loads(self.body)
        except ValueError:
            return None


# (path, body, headers) -> Reply; raises TransportError when no HTTP answer came back.
Transport = Callable[[str, bytes, Mapping[str, str]], Reply]


def check_server_url(url: str, source: str = "server_url") -> None:
    """ConfigError unless ``url`` is https://HOST..., or http:// to 127.0.0.1/localhost."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"{source}: expected an https://HOST[:PORT] URL, got {url!r}")
    if parts.scheme == "http" and parts.hostname not in LOOPBACK_HOSTS:
        raise ConfigError(f"{source}: plain http is allowed only to 127.0.0.1 or localhost, not "
                          f"{parts.hostname!r}: use https:// (data and the device token would travel in clear)")


def tls_context(ca_bundle: Optional[str]) -> ssl.SSLContext:
    """The TLS context of every agent connection: the CA bundle's CAs (or the system's), chain and host name checked."""
    try:
        return ssl.create_default_context(cafile=ca_bundle)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"ca_bundle: cannot load {ca_bundle}: {exc}") from exc


class HttpTransport:
    """POSTs to the central server over HTTPS (or loopback HTTP); a new connection per request."""

    def __init__(self, server_url: str, ca_bundle: Optional[str] = None, timeout_s: float = 30.0) -> None:
        check_server_url(server_url)
        parts = urlsplit(server_url)
        self._https = parts.scheme == "https"
        self._host = parts.hostname or ""
        self._port = parts.port
        self._prefix = parts.path.rstrip("/")
        self._timeout_s = timeout_s
        self._context = tls_context(ca_bundle) if self._https else None

    def __call__(self, path: str, body: bytes, headers: Mapping[str, str]) -> Reply:
        """POST ``body`` to ``path`` under the server URL; the reply, whatever its status."""
        connection = self._connect()
        try:
            connection.request("POST", self._prefix + path, body=body, headers=dict(headers))
            response = connection.getresponse()
            reply_headers: Dict[str, str] = {key.lower(): value for key, value in response.getheaders()}
            return Reply(response.status, reply_headers, response.read())
        except ssl.SSLCertVerificationError as exc:
            raise TransportError(f"{self._host}: the server's certificate did not verify: "
                                 f"{exc.verify_message or exc}") from exc
        except (OSError, http.client.HTTPException) as exc:  # ssl.SSLError is an OSError
            raise TransportError(f"{self._host}: {type(exc).__name__}: {exc}") from exc
        finally:
            connection.close()

    def _connect(self) -> http.client.HTTPConnection:
        if self._https:
            return http.client.HTTPSConnection(self._host, self._port, timeout=self._timeout_s,
                                               context=self._context)
        return http.client.HTTPConnection(self._host, self._port, timeout=self._timeout_s)
