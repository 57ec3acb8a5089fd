"""The agent's HTTPS: it trusts the server only through the CA bundle its config names.

The test makes its own CA and server certificate (``cryptography``) and serves the fake ingest over
TLS from a small Python HTTPS server on 127.0.0.1.
"""

from __future__ import annotations

import contextlib
import ssl
from pathlib import Path
from typing import Iterator
from wsgiref.simple_server import WSGIServer, make_server

import pytest
from fake_ingest import FakeIngest, _QuietHandler

pytest.importorskip("cryptography")
from served_in_thread import served_in_thread
from tls_support import TestPki, write_test_pki

from edge_runtime.fleet.errors import TransportError
from edge_runtime.fleet.transport import HttpTransport


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> TestPki:
    """The server's certificate and key, the CA that signed it, and an unrelated CA, as PEM files."""
    return write_test_pki(tmp_path_factory.mktemp("pki"))


@contextlib.contextmanager
def tls_server(app: object, cert: Path, key: Path) -> Iterator[int]:
    server = make_server("127.0.0.1", 0, app, server_class=WSGIServer, handler_class=_QuietHandler)  # type: ignore[arg-type]
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(str(cert), str(key))
    server.socket = context.wrap_socket(server.socket, server_side=True)
    with served_in_thread(server) as port:
        yield port


BODY = b'{"device_id": "dev-1", "dropped": 0, "facts": {}, "records": [{"sequence": 1, "record": {"time": 1.0}}]}'
HEADERS = {"Authorization": "Bearer device-token", "Content-Type": "application/json"}


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
def test_the_right_ca_bundle_is_trusted(pki: TestPki, host: str) -> None:
    ingest = FakeIngest()
    with tls_server(ingest.wsgi, pki.cert, pki.key) as port:
        reply = HttpTransport(f"https://{host}:{port}", str(pki.ca), timeout_s=10)("/api/v1/ingest", BODY, HEADERS)
    assert reply.status == 200 and reply.json()["acked_through"] == 1
    assert list(ingest.stored) == [1]


def test_a_ca_bundle_that_did_not_sign_the_server_is_refused(pki: TestPki) -> None:
    ingest = FakeIngest()
    with tls_server(ingest.wsgi, pki.cert, pki.key) as port:
        transport = HttpTransport(f"https://127.0.0.1:{port}", str(pki.other_ca), timeout_s=10)
        with pytest.raises(TransportError, match="certificate did not verify"):
            transport("/api/v1/ingest", BODY, HEADERS)
    assert ingest.stored == {}  # nothing reached the application


def test_the_system_cas_do_not_trust_a_private_ca(pki: TestPki) -> None:
    with tls_server(FakeIngest().wsgi, pki.cert, pki.key) as port, pytest.raises(TransportError):
        HttpTransport(f"https://127.0.0.1:{port}", None, timeout_s=10)("/api/v1/ingest", BODY, HEADERS)


def test_an_unreadable_ca_bundle_is_a_config_error(tmp_path: Path) -> None:
    from edge_runtime.errors import ConfigError

    with pytest.raises(ConfigError, match="ca_bundle"):
        HttpTransport("https://fleet.example.com", str(tmp_path / "missing.pem"))
