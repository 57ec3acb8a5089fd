"""Hostile local clients for abuse_bench.py: each worker loops until told to stop, counting outcomes.

Every worker talks to 127.0.0.1 only, over raw sockets or http.client (a hostile client does not
use tritonclient), and cleans up what it creates (shm objects, sockets) before it returns.
Outcomes are labels such as ``"infer(read) 400"`` or ``"CL over cap: 413 text/plain"``: a status
with a non-JSON content type shows a transport answer the app did not write.
"""

from __future__ import annotations

import http.client
import json
import os
import select
import socket
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, List, Optional, Tuple

SHM_DIR = Path("/dev/shm")
TIMEOUT_S = 10.0


class Tally:
    """Attempts and outcome counts of one worker (thread-safe)."""

    def __init__(self) -> None:
        self.outcomes: Counter = Counter()
        self._lock = threading.Lock()

    def record(self, outcome: str) -> None:
        with self._lock:
            self.outcomes[outcome] += 1

    @property
    def attempts(self) -> int:
        return sum(self.outcomes.values())


# (port, stop event: threading's or multiprocessing's, tally)
Worker = Callable[[int, Any, Tally], None]


def request(port: int, method: str, path: str, body: bytes = b"", headers: Optional[Dict[str, str]] = None
            ) -> Tuple[int, str, Dict[str, str]]:
    """One request on a fresh connection: (status, content type, headers); status 0 for no answer."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=TIMEOUT_S)
    try:
        connection.request(method, path, body=body, headers=headers or {})
        reply = connection.getresponse()
        reply.read()
        return reply.status, reply.getheader("Content-Type", ""), dict(reply.getheaders())
    finally:
        connection.close()


def outcome(port: int, label: str, method: str, path: str, body: bytes = b"",
            headers: Optional[Dict[str, str]] = None) -> str:
    """``label status`` (with the content type when it is not JSON), or ``label ExceptionName``."""
    try:
        status, ctype, _ = request(port, method, path, body, headers)
    except (OSError, http.client.HTTPException) as exc:
        return f"{label} {type(exc).__name__}"
    return f"{label} {status}" + ("" if "json" in ctype or status == 200 else f" {ctype or 'no type'}")


def shm_object(name: str, size: int) -> int:
    """A POSIX shm object /dev/shm/NAME of ``size`` bytes, mode 0660, as an app shares one; its descriptor."""
    fd = os.open(SHM_DIR / name, os.O_CREAT | os.O_RDWR | os.O_TRUNC, 0o660)
    os.fchmod(fd, 0o660)  # the umask may have taken the group bits
    os.ftruncate(fd, size)
    return fd


def remove_shm_objects(prefix: str) -> List[str]:
    """Unlink every /dev/shm object whose name starts with ``prefix``; the names removed."""
    removed = []
    for path in SHM_DIR.glob(prefix + "*"):
        path.unlink()
        removed.append(path.name)
    return removed


def register(port: int, region: str, key: str, size: int) -> str:
    """Register a system shm region; its outcome label."""
    body = json.dumps({"key": key, "offset": 0, "byte_size": size}).encode()
    return outcome(port, "register", "POST", f"/v2/systemsharedmemory/region/{region}/register", body,
                   {"Content-Type": "application/json"})


def unregister(port: int, region: str) -> str:
    return outcome(port, "unregister", "POST", f"/v2/systemsharedmemory/region/{region}/unregister")


def shm_truncation(prefix: str, model: str) -> Worker:
    """Register an object, shrink it to 0 bytes, infer reading from it / writing to it; re-create; loop."""
    shm_input = {"name": "input", "shape": [1, 4], "datatype": "FP32"}

    def run(port: int, stop: Any, tally: Tally) -> None:
        name, region = f"{prefix}trunc", "abuse-trunc"
        read = {"parameters": {"shared_memory_region": region, "shared_memory_byte_size": 16}}
        write = {"name": "output", "parameters": {"shared_memory_region": region, "shared_memory_byte_size": 12,
                                                  "shared_memory_offset": 64}}
        bodies = {"infer(read)": {"inputs": [dict(shm_input, **read)], "outputs": [write]},
                  "infer(write)": {"inputs": [dict(shm_input, data=[1.0, 2.0, 3.0, 4.0])], "outputs": [write]}}
        while not stop.is_set():
            fd = shm_object(name, 4096)
            try:
                tally.record(register(port, region, "/" + name, 4096))
                os.ftruncate(fd, 0)
                for label, body in bodies.items():
                    tally.record(outcome(port, label, "POST", f"/v2/models/{model}/infer", json.dumps(body).encode(),
                                         {"Content-Type": "application/json"}))
                tally.record(unregister(port, region))
            finally:
                os.close(fd)
                os.unlink(SHM_DIR / name)

    return run


def registration_flood(prefix: str, regions: int) -> Worker:
    """Register one object under ``regions`` names (past the cap), then unregister them all; loop."""

    def run(port: int, stop: Any, tally: Tally) -> None:
        name = f"{prefix}flood"
        fd = shm_object(name, 4096)
        try:
            while not stop.is_set():
                for index in range(regions):
                    tally.record(register(port, f"abuse-flood-{index}", "/" + name, 4096))
                for index in range(regions):
                    tally.record(unregister(port, f"abuse-flood-{index}"))
        finally:
            os.close(fd)
            os.unlink(SHM_DIR / name)

    return run


def amplifying_bodies(json_cap: int) -> Dict[str, bytes]:
    """JSON inference bodies whose data list holds one 10 000-character string and many short ones."""
    bodies = {}
    for short in (30_000, 300_000, (json_cap - 12_000) // 4):
        body = ('{"inputs":[{"name":"input","shape":[1,4],"datatype":"FP32","data":["' + "x" * 10_000 + '"'
                + ',"1"' * short + "]}]}").encode()
        bodies[f"JSON {len(body) // 1024} KiB"] = body
    return bodies


def amplifying_json(model: str, json_cap: int) -> Worker:
    """POST each amplifying body in turn."""
    bodies = amplifying_bodies(json_cap)

    def run(port: int, stop: Any, tally: Tally) -> None:
        while not stop.is_set():
            for label, body in bodies.items():
                tally.record(outcome(port, label, "POST", f"/v2/models/{model}/infer", body,
                                     {"Content-Type": "application/json"}))

    return run


def half_open(count: int) -> Worker:
    """Keep ``count`` connections open, each holding a partial request; reopen what the server closes.

    At most 50 new connections per quarter second: past the server's connection limit this churns
    (each new one makes the server close an idle one) without turning the bench into a CPU hog.
    """
    partial = (b"POST /v2/models/tiny/infer HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 100000\r\n\r\n{\"in",
               b"GET /v2/health/live HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")

    def run(port: int, stop: Any, tally: Tally) -> None:
        sockets: Dict[int, socket.socket] = {}
        poller = select.poll()
        next_refill = 0.0
        try:
            while not stop.is_set():
                if time.monotonic() >= next_refill:
                    next_refill = time.monotonic() + 0.25
                    _refill(port, partial, min(50, count - len(sockets)), sockets, poller, tally)
                for fd, _ in poller.poll(100):
                    poller.unregister(fd)
                    tally.record(_server_end(sockets.pop(fd)))
        finally:
            for sock in sockets.values():
                sock.close()

    return run


def _refill(port: int, partial: Tuple[bytes, bytes], new: int, sockets: Dict[int, socket.socket],
            poller: Any, tally: Tally) -> None:
    """Open ``new`` connections, each sending one of the partial requests."""
    for _ in range(new):
        try:
            sock = socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT_S)
        except OSError as exc:
            tally.record(f"connect {type(exc).__name__}")
            return
        try:
            sock.sendall(partial[len(sockets) % 2])
        except OSError as exc:
            sock.close()
            tally.record(f"send {type(exc).__name__}")
            continue
        sockets[sock.fileno()] = sock
        poller.register(sock, select.POLLIN | select.POLLHUP | select.POLLERR)
        tally.record("opened")


def _server_end(sock: socket.socket) -> str:
    """What the server did to a half-open connection: closed it, reset it, or answered (status)."""
    try:
        data = sock.recv(4096)
    except OSError as exc:
        return f"closed by server ({type(exc).__name__})"
    finally:
        sock.close()
    return f"answered {data.split(b' ', 2)[1].decode(errors='replace')}" if data else "closed by server"


def raw_exchange(port: int, head: bytes, chunks: Iterable[bytes]) -> str:
    """Send ``head`` and then ``chunks`` (stopping when the server answers or closes); the answer's status."""
    with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT_S) as sock:
        try:
            sock.sendall(head)
            for chunk in chunks:
                if select.select([sock], [], [], 0)[0]:
                    break  # the server answered (or closed) before the body ended
                sock.sendall(chunk)
        except OSError as exc:
            if not select.select([sock], [], [], 1.0)[0]:
                return type(exc).__name__
        try:
            data = sock.recv(65536)
        except OSError as exc:
            return type(exc).__name__
    if not data:
        return "closed without an answer"
    status_line, _, rest = data.partition(b"\r\n")
    ctype = next((line.split(b":", 1)[1].strip().decode() for line in rest.split(b"\r\n")
                  if line.lower().startswith(b"content-type:")), "no type")
    status = status_line.split(b" ", 2)[1].decode(errors="replace") if b" " in status_line else "?"
    return status + ("" if "json" in ctype else f" {ctype}")


def over_cap(model: str, body_cap: int, json_cap: int, header_cap: int) -> Worker:
    """Content-Length over the cap, chunked over the cap, JSON over its cap, headers over their cap; loop."""
    path = f"/v2/models/{model}/infer"
    mib = b"\0" * (1 << 20)

    def chunked() -> Iterable[bytes]:
        for _ in range(body_cap // len(mib) + 2):
            yield b"%x\r\n" % len(mib) + mib + b"\r\n"
        yield b"0\r\n\r\n"

    def head(extra: str) -> bytes:
        return f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{extra}\r\n".encode()

    variants: List[Tuple[str, bytes, Callable[[], Iterable[bytes]]]] = [
        ("Content-Length over cap", head(f"Inference-Header-Content-Length: 2\r\nContent-Length: {body_cap + 1}\r\n"),
         lambda: iter([b"{}"])),
        ("chunked over cap", head("Inference-Header-Content-Length: 2\r\nTransfer-Encoding: chunked\r\n"), chunked),
        ("JSON over its cap", head(f"Content-Type: application/json\r\nContent-Length: {json_cap + 1}\r\n"),
         lambda: iter([b" " * (json_cap + 1)])),
        ("headers over cap", head(f"X-Pad: {'a' * (2 * header_cap)}\r\nContent-Length: 0\r\n"), lambda: iter([])),
    ]

    def run(port: int, stop: Any, tally: Tally) -> None:
        while not stop.is_set():
            for label, first, body in variants:
                tally.record(f"{label}: {raw_exchange(port, first, body())}")
            stop.wait(0.5)

    return run


def overload(model: str, burst: int) -> Worker:
    """Bursts of ``burst`` concurrent small inferences on a slow model; 503s are told apart by Retry-After."""
    body = json.dumps({"inputs": [{"name": "INPUT0", "shape": [1, 16], "datatype": "FP32", "data": [0.5] * 16}]})

    def one(port: int) -> str:
        try:
            status, _, headers = request(port, "POST", f"/v2/models/{model}/infer", body.encode(),
                                         {"Content-Type": "application/json"})
        except (OSError, http.client.HTTPException) as exc:
            return type(exc).__name__
        if status == 503:
            return "503 with Retry-After" if "Retry-After" in headers else "503 without Retry-After"
        return str(status)

    def run(port: int, stop: Any, tally: Tally) -> None:
        with ThreadPoolExecutor(burst) as pool:
            while not stop.is_set():
                for label in pool.map(lambda _: one(port), range(burst)):
                    tally.record(label)
                stop.wait(1.0)

    return run

