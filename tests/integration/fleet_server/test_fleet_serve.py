"""A real `edge-fleet serve` (gunicorn, 2 workers) on 127.0.0.1: over a socket, over TLS, on both databases."""

from __future__ import annotations

import http.client
import json
import ssl
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Dict, Iterator, List

import pytest
from fleet_support import Served, fleet_cli, make_ca_and_server_cert, start_fleet, stop_fleet

from fleet_server.schema import head_revision
from fleet_server.testing import make_batch, make_record


@pytest.fixture()
def config(tmp_path: Path, database_url: str) -> Path:
    path = tmp_path / "fleet.yaml"
    path.write_text(f"database_url: {database_url}\nsecret_file: secret.key\n")
    return path


@pytest.fixture()
def served(config: Path, tmp_path: Path) -> Iterator[Served]:
    running = start_fleet(config, tmp_path / "serve.log", [], None)
    yield running
    stop_fleet(running)


def test_serve_ingests_over_a_socket_and_replays_concurrently_once(served: Served) -> None:
    now = time.time()
    batch = json.dumps(make_batch("dev-a", [make_record(now - 200 + i, rss_mb=150.0 + i) for i in range(40)])).encode()
    status, _, body = served.request("POST", "/api/v1/ingest", batch, token="wrong")
    assert status == 401 and "error" in json.loads(body)
    answers: List[Dict[str, int]] = []
    barrier = threading.Barrier(8)

    def replay() -> None:
        barrier.wait()
        status, _, body = served.request("POST", "/api/v1/ingest", batch, token=served.device_token)
        assert status == 200, body
        answers.append(json.loads(body))

    threads = [threading.Thread(target=replay) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(answers) == 8
    assert sum(a["accepted"] for a in answers) == 40 and sum(a["duplicates"] for a in answers) == 7 * 40
    status, _, body = served.request("GET", f"/api/v1/devices/dev-a/history?since={now - 300}&until={now}",
                                     token=served.operator_token)
    points = json.loads(body)["points"]
    assert status == 200 and len(points) == 40
    assert [p["rss_mb"] for p in points] == [150.0 + i for i in range(40)]
    assert all(p["models"]["digits"]["p99_ms"] == 5.3 for p in points)


def test_serve_refuses_oversize_bodies_with_json(served: Served) -> None:
    status, headers, body = served.request("POST", "/api/v1/ingest", b"{" + b" " * (1024 * 1024) + b"}",
                                           token=served.device_token)
    assert status == 413 and headers["content-type"] == "application/json" and "error" in json.loads(body)
    # no declared length (chunked): the cap holds while reading
    connection = http.client.HTTPConnection("127.0.0.1", served.port, timeout=30)
    connection.putrequest("POST", "/api/v1/ingest")
    for key, value in {"Authorization": f"Bearer {served.device_token}", "Content-Type": "application/json",
                       "Transfer-Encoding": "chunked"}.items():
        connection.putheader(key, value)
    connection.endheaders()
    chunk = b" " * 65536
    for _ in range(20):
        connection.send(b"%x\r\n%s\r\n" % (len(chunk), chunk))
    connection.send(b"0\r\n\r\n")
    reply = connection.getresponse()
    answer = reply.read()
    assert reply.status == 413 and "error" in json.loads(answer), answer
    connection.close()
    status, headers, body = served.request("GET", "/no/such/page")
    assert status == 404 and headers["content-type"] == "application/json"


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_serve_over_tls_verified_against_a_test_ca(config: Path, tmp_path: Path) -> None:
    ca, cert, key = make_ca_and_server_cert(tmp_path)
    context = ssl.create_default_context(cafile=str(ca))
    running = start_fleet(config, tmp_path / "serve.log", ["--tls-cert", str(cert), "--tls-key", str(key)], context)
    try:
        batch = json.dumps(make_batch("dev-a", [make_record(time.time() - 5)])).encode()
        status, _, body = running.request("POST", "/api/v1/ingest", batch, token=running.device_token)
        assert status == 200 and json.loads(body)["accepted"] == 1
        untrusting = Served(running.process, running.port, "", "", ssl.create_default_context())
        with pytest.raises(ssl.SSLCertVerificationError):
            untrusting.request("GET", "/api/v1/devices")
        plain = Served(running.process, running.port, "", "", None)
        with pytest.raises((ConnectionError, http.client.HTTPException)):
            plain.request("GET", "/api/v1/devices")
    finally:
        stop_fleet(running)


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_cli_errors_are_one_line(config: Path, tmp_path: Path) -> None:
    result = fleet_cli(config, "serve", "--port", "0")
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        f"edge-fleet: error: the database is at revision none, the server needs {head_revision()}: "
        "run `edge-fleet migrate`"]
    bad = tmp_path / "bad.yaml"
    bad.write_text("database_url: mysql://x\n")
    result = fleet_cli(bad, "migrate")
    assert result.returncode == 1 and len(result.stderr.strip().splitlines()) == 1
    assert "database_url" in result.stderr and "Traceback" not in result.stderr
    result = fleet_cli(config, "serve", "--host", "0.0.0.0")
    assert result.returncode == 1 and "plain HTTP" in result.stderr
    assert fleet_cli(config, "migrate").returncode == 0
    assert fleet_cli(config, "enroll", "dev-a").returncode == 0
    again = fleet_cli(config, "enroll", "dev-a")
    assert again.returncode == 1 and again.stderr.strip().splitlines() == [
        "edge-fleet: error: device 'dev-a' is already enrolled: rotate its token instead"]
    debug = subprocess.run([sys.executable, "-m", "fleet_server.cli", "enroll", "dev-a", "--config", str(config),
                            "--debug"], capture_output=True, text=True, timeout=60, check=False)
    assert debug.returncode != 0 and "Traceback" in debug.stderr
