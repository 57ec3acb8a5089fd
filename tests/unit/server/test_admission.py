"""Bounded admission: a counter of requests doing work, 503 + Retry-After past it, slots freed on close."""

from __future__ import annotations

import json
from typing import Any, Iterable, List, Tuple

import pytest

from edge_runtime.config import HttpSettings
from edge_runtime.server.admission import AdmissionMiddleware, always_admitted

HTTP = HttpSettings(threads=4, max_in_flight=2, retry_after_s=3)


class _Answer:
    """What the middleware answered one request: status, headers, body iterable."""

    def __init__(self) -> None:
        self.status = ""
        self.headers: List[Tuple[str, str]] = []

    def start_response(self, status: str, headers: List[Tuple[str, str]]) -> None:
        self.status, self.headers = status, headers


class _Body:
    """A response iterable that records its close()."""

    def __init__(self) -> None:
        self.closed = 0

    def __iter__(self) -> Any:
        return iter([b"{}"])

    def close(self) -> None:
        self.closed += 1


def _app(environ: dict, start_response: Any) -> _Body:
    if environ["PATH_INFO"] == "/boom":
        raise RuntimeError("the app failed")
    start_response("200 OK", [("Content-Type", "application/json")])
    return _Body()


def _call(middleware: AdmissionMiddleware, path: str = "/v2/models/m/infer") -> Tuple[_Answer, Iterable[bytes]]:
    answer = _Answer()
    return answer, middleware({"PATH_INFO": path}, answer.start_response)


def test_past_the_limit_is_503_with_retry_after() -> None:
    middleware = AdmissionMiddleware(_app, HTTP)
    held = [_call(middleware) for _ in range(2)]
    assert all(answer.status == "200 OK" for answer, _ in held)
    answer, body = _call(middleware)
    assert answer.status == "503 Service Unavailable"
    assert ("Retry-After", "3") in answer.headers and ("Content-Type", "application/json") in answer.headers
    assert "busy" in json.loads(b"".join(body))["error"]
    # closing a response (the server does, once it is written) frees its slot
    held[0][1].close()  # type: ignore[attr-defined]
    assert _call(middleware)[0].status == "200 OK"


@pytest.mark.parametrize("path", ["/v2/health/live", "/v2/health/ready", "/v2", "/metrics", "/v2/models/m/ready",
                                  "/v2/models/m/versions/2/ready"])
def test_health_metadata_and_metrics_are_never_refused(path: str) -> None:
    assert always_admitted(path)
    middleware = AdmissionMiddleware(_app, HTTP)
    held = [_call(middleware) for _ in range(2)]
    assert _call(middleware)[0].status.startswith("503")
    assert _call(middleware, path)[0].status == "200 OK"
    assert len(held) == 2


@pytest.mark.parametrize("path", ["/v2/models/m/infer", "/v2/repository/index", "/v2/models/stats", "/nowhere",
                                  "/v2/systemsharedmemory/status", "/v2/models/ready/config"])
def test_work_is_counted(path: str) -> None:
    assert not always_admitted(path)


def test_a_failing_app_frees_its_slot() -> None:
    middleware = AdmissionMiddleware(_app, HttpSettings(threads=2, max_in_flight=1))
    for _ in range(3):
        with pytest.raises(RuntimeError):
            _call(middleware, "/boom")
    assert _call(middleware)[0].status == "200 OK"


def test_close_closes_the_app_response_and_frees_once() -> None:
    middleware = AdmissionMiddleware(_app, HttpSettings(threads=2, max_in_flight=1))
    _, body = _call(middleware)
    assert list(body) == [b"{}"]
    body.close()  # type: ignore[attr-defined]
    body.close()  # type: ignore[attr-defined]  # a second close must not free a second slot
    assert body._result.closed == 2  # type: ignore[attr-defined]
    _, second = _call(middleware)
    assert _call(middleware)[0].status.startswith("503")
    second.close()  # type: ignore[attr-defined]
