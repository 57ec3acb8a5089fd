"""The agent's HTTPS: it trusts the server only through the CA bundle its config names.

The test makes its own CA and server certificate (``cryptography``) and serves the fake ingest over
TLS from a small Python HTTPS server on 127.0.0.1.
"""

from __future__ import annotations

import contextlib
import datetime
import ipaddress
import ssl
import threading
from pathlib import Path
from typing import Iterator, Tuple
from wsgiref.simple_server import WSGIServer, make_server

import pytest
from fake_ingest import FakeIngest, _QuietHandler

pytest.importorskip("cryptography")
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from edge_runtime.fleet.errors import TransportError
from edge_runtime.fleet.transport import HttpTransport

NOW = datetime.datetime.now(datetime.timezone.utc)


def make_ca(name: str) -> Tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(NOW - datetime.timedelta(days=1)).not_valid_after(NOW + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                         content_commitment=False, key_encipherment=False, data_encipherment=False,
                                         key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA256()))
    return key, cert


def make_server_cert(ca_key: ec.EllipticCurvePrivateKey, ca: x509.Certificate
                     ) -> Tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "fleet test server")]))
            .issuer_name(ca.subject).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(NOW - datetime.timedelta(days=1)).not_valid_after(NOW + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost"),
                                                        x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256()))
    return key, cert


def pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Tuple[Path, Path, Path, Path]:
    """(server cert chain, server key, the CA that signed it, an unrelated CA) as PEM files."""
    folder = tmp_path_factory.mktemp("pki")
    ca_key, ca = make_ca("fleet test CA")
    server_key, server_cert = make_server_cert(ca_key, ca)
    _, other_ca = make_ca("some other CA")
    paths = (folder / "server.pem", folder / "server.key", folder / "ca.pem", folder / "other-ca.pem")
    paths[0].write_bytes(pem(server_cert))
    paths[1].write_bytes(server_key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                  serialization.NoEncryption()))
    paths[2].write_bytes(pem(ca))
    paths[3].write_bytes(pem(other_ca))
    return paths


@contextlib.contextmanager
def tls_server(app: object, cert: Path, key: Path) -> Iterator[int]:
    server = make_server("127.0.0.1", 0, app, server_class=WSGIServer, handler_class=_QuietHandler)  # type: ignore[arg-type]
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(str(cert), str(key))
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield server.server_port
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


BODY = b'{"device_id": "dev-1", "dropped": 0, "facts": {}, "records": [{"sequence": 1, "record": {"time": 1.0}}]}'
HEADERS = {"Authorization": "Bearer device-token", "Content-Type": "application/json"}


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
def test_the_right_ca_bundle_is_trusted(pki: Tuple[Path, Path, Path, Path], host: str) -> None:
    ingest = FakeIngest()
    with tls_server(ingest.wsgi, pki[0], pki[1]) as port:
        reply = HttpTransport(f"https://{host}:{port}", str(pki[2]), timeout_s=10)("/api/v1/ingest", BODY, HEADERS)
    assert reply.status == 200 and reply.json()["acked_through"] == 1
    assert list(ingest.stored) == [1]


def test_a_ca_bundle_that_did_not_sign_the_server_is_refused(pki: Tuple[Path, Path, Path, Path]) -> None:
    ingest = FakeIngest()
    with tls_server(ingest.wsgi, pki[0], pki[1]) as port:
        transport = HttpTransport(f"https://127.0.0.1:{port}", str(pki[3]), timeout_s=10)
        with pytest.raises(TransportError, match="certificate did not verify"):
            transport("/api/v1/ingest", BODY, HEADERS)
    assert ingest.stored == {}  # nothing reached the application


def test_the_system_cas_do_not_trust_a_private_ca(pki: Tuple[Path, Path, Path, Path]) -> None:
    with tls_server(FakeIngest().wsgi, pki[0], pki[1]) as port, pytest.raises(TransportError):
        HttpTransport(f"https://127.0.0.1:{port}", None, timeout_s=10)("/api/v1/ingest", BODY, HEADERS)


def test_an_unreadable_ca_bundle_is_a_config_error(tmp_path: Path) -> None:
    from edge_runtime.errors import ConfigError

    with pytest.raises(ConfigError, match="ca_bundle"):
        HttpTransport("https://fleet.example.com", str(tmp_path / "missing.pem"))
