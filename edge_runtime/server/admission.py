"""Bounded admission: past ``http.max_in_flight`` requests doing work, answer 503 at once.

Without it, requests wait in waitress' unbounded task queue behind a slow model, and so does
every health check. Requests that do no work (liveness, readiness, server metadata, /metrics)
are never counted nor refused: waitress runs ``http.threads`` worker threads and at most
``max_in_flight`` (< threads, validated) of them hold a counted request, so the others stay free
for those. A refused request gets ``Retry-After``; it cost one counter check.
"""

from __future__ import annotations

import json
import threading
from http import HTTPStatus
from typing import Any, Callable, Iterable, Iterator, List, Optional, Sequence, Tuple

from edge_runtime.config import HttpSettings

WsgiApp = Callable[..., Any]
StartResponse = Callable[..., Any]

# Paths that never wait for a model: answered whatever the load.
ALWAYS_ADMITTED = frozenset({"/v2/health/live", "/v2/health/ready", "/v2", "/metrics"})


def always_admitted(path: str) -> bool:
    """Liveness, readiness (server and model), server metadata and metrics."""
    return path in ALWAYS_ADMITTED or (path.startswith("/v2/models/") and path.endswith("/ready"))


def json_refusal(start_response: StartResponse, status: int, message: str,
                 headers: Sequence[Tuple[str, str]] = ()) -> List[bytes]:
    """Answer a WSGI request with ``{"error": message}`` and ``status``, before the app sees it."""
    body = json.dumps({"error": message}).encode("utf-8")
    start_response(f"{status} {HTTPStatus(status).phrase}",
                   [("Content-Type", "application/json"), ("Content-Length", str(len(body))), *headers])
    return [body]


class AdmissionMiddleware:
    """WSGI middleware: at most ``max_in_flight`` counted requests at once; one more gets 503 + Retry-After."""

    def __init__(self, app: WsgiApp, http: HttpSettings) -> None:
        self._app = app
        self._slots = threading.BoundedSemaphore(http.max_in_flight)
        self._retry_after = (("Retry-After", str(http.retry_after_s)),)
        self._message = f"server busy: {http.max_in_flight} requests in flight; retry after {http.retry_after_s} s"

    def __call__(self, environ: dict, start_response: StartResponse) -> Iterable[bytes]:
        if always_admitted(environ.get("PATH_INFO", "")):
            return self._app(environ, start_response)
        if not self._slots.acquire(blocking=False):
            return json_refusal(start_response, 503, self._message, self._retry_after)
        try:
            result = self._app(environ, start_response)
        except BaseException:
            self._slots.release()
            raise
        return _ReleasingIterable(result, self._slots.release)


class _ReleasingIterable:
    """The app's response iterable: the slot is freed once it is consumed or closed, whichever comes first.

    A WSGI server closes it after writing (PEP 3333); a client that reads the body but never
    closes it (some in-process test clients) must not keep the slot either.
    """

    def __init__(self, result: Iterable[bytes], release: Callable[[], None]) -> None:
        self._result = result
        self._release: Optional[Callable[[], None]] = release
        self._lock = threading.Lock()

    def __iter__(self) -> Iterator[bytes]:
        yield from self._result
        self._free()

    def close(self) -> None:
        try:
            close = getattr(self._result, "close", None)
            if close is not None:
                close()
        finally:
            self._free()

    def _free(self) -> None:
        with self._lock:
            release, self._release = self._release, None
        if release is not None:
            release()
