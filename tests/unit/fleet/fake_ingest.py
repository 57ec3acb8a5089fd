"""A small in-test central server: the ingest endpoint of the contract, idempotent by (device_id, sequence).

Used where the real fleet_server is not the point (uploader and agent tests): it answers exactly as
the contract says (200 with accepted/duplicates/acked_through; 400/401/403/413 JSON errors) and
records every delivery, so a test can tell a replay (a duplicate delivery) from a double store.
Served in process (``transport``) or over a socket (``serve`` with wsgiref on 127.0.0.1).
"""

from __future__ import annotations

import contextlib
import json
import threading
from collections import Counter
from socketserver import ThreadingMixIn
from typing import Any, Callable, Dict, Iterator, List, Mapping, Optional, Tuple
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from served_in_thread import served_in_thread

from edge_runtime.fleet.transport import Reply

MAX_BODY = 1024 * 1024
Answer = Tuple[int, Dict[str, str], bytes]


class FakeIngest:
    """The contract's ``POST /api/v1/ingest`` for one device, in memory."""

    def __init__(self, device_id: str = "dev-1", token: str = "device-token") -> None:
        self.device_id = device_id
        self.token = token
        self.stored: Dict[int, Dict[str, Any]] = {}
        self.deliveries: Counter = Counter()  # sequence -> times received in a 200 batch
        self.dropped_reported: List[int] = []
        self.facts: Optional[Dict[str, Any]] = None
        self.bodies: List[int] = []  # body sizes received
        self.before_store: Optional[Callable[[], None]] = None  # hooks for the kill test
        self.before_reply: Optional[Callable[[], None]] = None
        self.overload: Optional[Tuple[int, str]] = None  # (status, Retry-After) to answer instead
        self._lock = threading.Lock()

    def handle(self, path: str, body: bytes, headers: Mapping[str, str]) -> Answer:
        """One request: the status, headers and JSON body the contract prescribes."""
        lower = {key.lower(): value for key, value in headers.items()}
        if path != "/api/v1/ingest":
            return _error(404, "not found")
        if self.overload is not None:
            status, retry_after = self.overload
            return status, {"Content-Type": "application/json", "Retry-After": retry_after}, b'{"error": "busy"}'
        if lower.get("authorization") != f"Bearer {self.token}":
            return _error(401, "unknown or revoked token")
        if len(body) > MAX_BODY:
            return _error(413, "body over 1 MiB")
        try:
            batch = json.loads(body)
            records = [(int(item["sequence"]), dict(item["record"])) for item in batch["records"]]
        except (ValueError, KeyError, TypeError):
            return _error(400, "malformed batch")
        if batch.get("device_id") != self.device_id:
            return _error(403, "token of another device")
        if not 1 <= len(records) <= 500 or any(sequence < 1 for sequence, _ in records):
            return _error(400, "bad records")
        return self._store(batch, records)

    def _store(self, batch: Dict[str, Any], records: List[Tuple[int, Dict[str, Any]]]) -> Answer:
        if self.before_store:
            self.before_store()
        with self._lock:
            accepted = 0
            for sequence, record in records:
                self.deliveries[sequence] += 1
                if sequence not in self.stored:
                    self.stored[sequence] = record
                    accepted += 1
            self.dropped_reported.append(int(batch["dropped"]))
            self.facts = batch.get("facts")
        if self.before_reply:
            self.before_reply()
        answer = {"accepted": accepted, "duplicates": len(records) - accepted,
                  "acked_through": max(sequence for sequence, _ in records)}
        return 200, {"Content-Type": "application/json"}, json.dumps(answer).encode()

    def transport(self, path: str, body: bytes, headers: Mapping[str, str]) -> Reply:
        """The uploader's transport seam, in process."""
        self.bodies.append(len(body))
        status, reply_headers, reply_body = self.handle(path, body, headers)
        return Reply(status, {key.lower(): value for key, value in reply_headers.items()}, reply_body)

    def wsgi(self, environ: Dict[str, Any], start_response: Callable[..., Any]) -> List[bytes]:
        """The same as a WSGI application."""
        length = int(environ.get("CONTENT_LENGTH") or 0)
        body = environ["wsgi.input"].read(length) if length else b""
        headers = {key[5:].replace("_", "-"): value for key, value in environ.items() if key.startswith("HTTP_")}
        status, reply_headers, reply_body = self.handle(environ.get("PATH_INFO", ""), body, headers)
        start_response(f"{status} X", list(reply_headers.items()))
        return [reply_body]


def _error(status: int, message: str) -> Answer:
    return status, {"Content-Type": "application/json"}, json.dumps({"error": message}).encode()


class _ThreadingServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


@contextlib.contextmanager
def serve(app: Callable[..., Any]) -> Iterator[int]:
    """Serve WSGI ``app`` on 127.0.0.1 (a free port) in a thread; yield the port."""
    server = make_server("127.0.0.1", 0, app, server_class=_ThreadingServer, handler_class=_QuietHandler)
    with served_in_thread(server) as port:
        yield port
