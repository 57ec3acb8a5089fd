"""The transport, against the real `edge-runtime serve` on 127.0.0.1: descriptors, connections, errors, admission."""

from __future__ import annotations

import json
import os
import resource
import socket
import threading
import time
from pathlib import Path
from typing import Callable, Dict, Iterator, List, Tuple

import pytest
from runtime_support import RunningServer, get, raw_exchange, start_server, write_runtime_config

INFER_BODY = json.dumps({"inputs": [{"name": "INPUT0", "shape": [1, 16], "datatype": "FP32",
                                     "data": [0.5] * 16}]}).encode()


def _config(tmp_path: Path, device_configs_dir: Path, keypair: Tuple[Path, Path], extra: str = "") -> Path:
    return write_runtime_config(tmp_path / "runtime.yaml", device_configs_dir, keypair[1], extra)


@pytest.fixture()
def serve(tmp_path: Path, device_configs_dir: Path,
          keypair: Tuple[Path, Path]) -> Iterator[Callable[..., RunningServer]]:
    """Start servers with ``--fake fake`` and extra settings YAML; stopped after the test."""
    running: List[RunningServer] = []

    def start(extra: str = "", fake: str = "fake", **popen: object) -> RunningServer:
        config = _config(tmp_path, device_configs_dir, keypair, extra)
        server = start_server(["--config", str(config), "--fake", fake], tmp_path / f"server{len(running)}.log",
                              **popen)  # type: ignore[arg-type]
        running.append(server)
        return server

    yield start
    for server in running:
        if server.process.poll() is None:
            server.stop()


def _connections(port: int, count: int, first_bytes: bytes = b"") -> List[socket.socket]:
    sockets = []
    for _ in range(count):
        sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        if first_bytes:
            sock.sendall(first_bytes)
        sockets.append(sock)
    return sockets


def _close_all(sockets: List[socket.socket]) -> None:
    for sock in sockets:
        sock.close()


# --- defect 1: select() and descriptors ------------------------------------------------------

HELD_FDS = 1100


def _hold_many_descriptors() -> None:
    """In the server's process before exec: nofile 4096, and descriptors 3..1100 taken (inherited)."""
    resource.setrlimit(resource.RLIMIT_NOFILE, (4096, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))
    null = os.open(os.devnull, os.O_RDONLY)
    for fd in range(3, HELD_FDS + 1):
        if fd != null:
            os.dup2(null, fd, inheritable=True)


def test_serves_with_descriptors_above_1024(serve: Callable[..., RunningServer]) -> None:
    if resource.getrlimit(resource.RLIMIT_NOFILE)[1] < 4096:
        pytest.skip("needs a hard nofile limit of at least 4096")
    # select() fails on any descriptor >= 1024 ("filedescriptor out of range") and the server exits:
    # here every socket the server opens (listener, clients) is above 1100.
    server = serve(preexec_fn=_hold_many_descriptors, close_fds=False)
    clients = _connections(server.port, 20, b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\n\r\n")
    try:
        for sock in clients:
            assert sock.recv(4096).startswith(b"HTTP/1.1 200")
        assert get(server.port, "/v2/health/ready")[0] == 200
        assert server.process.poll() is None
    finally:
        _close_all(clients)


def _low_nofile() -> None:
    resource.setrlimit(resource.RLIMIT_NOFILE, (64, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))


def test_out_of_descriptors_backs_off_and_recovers(serve: Callable[..., RunningServer]) -> None:
    server = serve(preexec_fn=_low_nofile)
    log_before = server.log.stat().st_size
    clients = _connections(server.port, 150)  # more than the server can hold: accept() fails with EMFILE
    try:
        time.sleep(3)  # before the fix: a busy loop wrote megabytes of log lines here
        assert server.process.poll() is None
        assert server.log.stat().st_size - log_before < 16 * 1024
    finally:
        _close_all(clients)
    deadline = time.monotonic() + 20
    status = 0
    while time.monotonic() < deadline and status != 200:
        try:
            status = get(server.port, "/v2/health/live", timeout=2)[0]
        except OSError:
            time.sleep(0.2)
    assert status == 200


# --- defect 2: connection limit, idle timeout --------------------------------------------------

def test_idle_and_half_open_connections_do_not_lock_out_clients(serve: Callable[..., RunningServer]) -> None:
    server = serve("http: {connection_limit: 20, channel_timeout_s: 20}\n")
    # waitress' default (limit 100, 2 min idle timeout) stops accepting at the limit: locked out.
    idle = _connections(server.port, 60)
    half_open = _connections(server.port, 60, b"POST /v2/models/fake/infer HTTP/1.1\r\nHost: x\r\n")
    try:
        time.sleep(0.5)
        status, _, body = raw_exchange(
            server.port, b"POST /v2/models/fake/infer HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: " + str(len(INFER_BODY)).encode() + b"\r\n\r\n" + INFER_BODY)
        assert status == 200, body
        assert json.loads(body)["outputs"][0]["data"] == [2.0] * 16
        assert get(server.port, "/v2/health/ready")[0] == 200
    finally:
        _close_all(idle + half_open)


def test_idle_connection_is_closed_after_channel_timeout(serve: Callable[..., RunningServer]) -> None:
    server = serve("http: {channel_timeout_s: 1}\n")
    (sock,) = _connections(server.port, 1)
    try:
        sock.settimeout(30)  # waitress' default idle timeout was 120 s
        assert sock.recv(1) == b""  # closed by the server
    finally:
        sock.close()


# --- defect 3: every answer is JSON -------------------------------------------------------------

SMALL_LIMITS = ("limits: {max_request_bytes: 4096, max_json_bytes: 4096}\n"
                "http: {max_header_bytes: 2048}\n")
REQUEST = b"POST /v2/models/fake/infer HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
TRANSPORT_ERRORS: Dict[str, Tuple[bytes, int]] = {
    "body-over-cap": (REQUEST + b"Content-Length: 100000\r\n\r\n", 413),
    "chunked-over-cap": (REQUEST + b"Transfer-Encoding: chunked\r\n\r\n" + b"1388\r\n" + b"x" * 5000 + b"\r\n0\r\n\r\n",
                         413),
    "headers-over-cap": (b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\nX-Big: " + b"y" * 4000 + b"\r\n\r\n", 431),
    "malformed-request-line": (b"GARBAGE\r\n\r\n", 400),
    "malformed-header": (b"GET /v2 HTTP/1.1\r\nHost: x\r\nno colon here\r\n\r\n", 400),
}


@pytest.mark.parametrize("case", sorted(TRANSPORT_ERRORS))
def test_transport_errors_are_json(serve: Callable[..., RunningServer], case: str) -> None:
    server = serve(SMALL_LIMITS)
    data, expected = TRANSPORT_ERRORS[case]
    status, headers, body = raw_exchange(server.port, data)
    assert status == expected
    assert headers["content-type"] == "application/json"
    assert isinstance(json.loads(body)["error"], str)
    assert get(server.port, "/v2/health/live")[0] == 200


# --- defect 4: bounded admission ----------------------------------------------------------------

def _post_infer(port: int) -> Tuple[int, Dict[str, str], bytes]:
    import http.client

    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        connection.request("POST", "/v2/models/slow/infer", body=INFER_BODY,
                           headers={"Content-Type": "application/json"})
        response = connection.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        connection.close()


def test_overload_is_answered_503_with_retry_after(serve: Callable[..., RunningServer]) -> None:
    server = serve("http: {threads: 6, max_in_flight: 3, retry_after_s: 2}\n"
                   "batching: {enabled: false}\n", fake="slow:delay_ms=200")
    results: List[Tuple[int, Dict[str, str], bytes]] = []
    lock = threading.Lock()

    def client() -> None:
        answer = _post_infer(server.port)
        with lock:
            results.append(answer)

    threads = [threading.Thread(target=client) for _ in range(40)]
    for thread in threads:
        thread.start()
    health = get(server.port, "/v2/health/ready", timeout=30)  # while the 40 are in flight
    for thread in threads:
        thread.join(60)
    assert health[0] == 200
    statuses = [status for status, _, _ in results]
    assert len(statuses) == 40 and set(statuses) <= {200, 503}, statuses
    refused = [(headers, body) for status, headers, body in results if status == 503]
    assert refused and statuses.count(200) >= 3
    for headers, body in refused:
        assert headers["retry-after"] == "2" and headers["content-type"] == "application/json"
        assert "busy" in json.loads(body)["error"]
    assert get(server.port, "/v2/health/ready")[0] == 200
