"""Honest clients for abuse_bench.py, each side in a process of its own (the bench's hostile threads hold no GIL there).

The inference clients are the unmodified tritonclient (a subclass only keeps the last response,
to read Retry-After); the health poller is plain http.client on one kept-alive connection.
Each process puts "ready" on its queue when it starts, and its results when the stop event is set.
"""

from __future__ import annotations

import http.client
import threading
import time
from dataclasses import dataclass, field
from typing import Any, List

import numpy as np
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

HONEST_CLIENTS = 4
HEALTH_PERIOD_S = 0.05


class HeaderKeepingClient(httpclient.InferenceServerClient):
    """tritonclient's HTTP client, unchanged on the wire, keeping the last POST's response to read Retry-After."""

    last_response: Any = None

    def _post(self, request_uri: str, request_body: Any, headers: Any, query_params: Any) -> Any:
        self.last_response = super()._post(request_uri, request_body, headers, query_params)
        return self.last_response


@dataclass
class Honest:
    """What the honest clients, the health poller and the resource sampler saw."""

    latencies_ms: List[float] = field(default_factory=list)
    retry_503: int = 0
    failures: List[str] = field(default_factory=list)
    health_ms: List[float] = field(default_factory=list)
    health_failures: List[str] = field(default_factory=list)
    health_reconnects: int = 0
    rss_kib: List[int] = field(default_factory=list)
    fds: List[int] = field(default_factory=list)


def honest_client(url: str, stop: Any, seen: Honest) -> None:
    """Binary batch-1 inference on the tiny model, as an app would, until stopped."""
    sample = np.arange(4, dtype=np.float32).reshape(1, 4)
    client = HeaderKeepingClient(url, network_timeout=30.0)
    given = httpclient.InferInput("input", [1, 4], "FP32")
    given.set_data_from_numpy(sample, binary_data=True)
    wanted = [httpclient.InferRequestedOutput("output", binary_data=True)]
    while not stop.is_set():
        start = time.perf_counter()
        try:
            client.infer("tiny", [given], outputs=wanted)
            seen.latencies_ms.append((time.perf_counter() - start) * 1e3)
        except InferenceServerException as exc:
            reply = client.last_response
            if exc.status() == "503" and reply is not None and reply.get("retry-after") is not None:
                seen.retry_503 += 1
                stop.wait(0.05)
            else:
                seen.failures.append(f"{exc.status()}: {exc.message()[:120]}")
        except Exception as exc:
            seen.failures.append(f"{type(exc).__name__}: {str(exc)[:120]}")
            client = HeaderKeepingClient(url, network_timeout=30.0)


def honest_process(url: str, stop: Any, results: Any) -> None:
    """The honest clients' threads, in a process of their own (the bench's other threads hold no GIL here)."""
    seen = [Honest() for _ in range(HONEST_CLIENTS)]
    threads = [threading.Thread(target=honest_client, args=(url, stop, part)) for part in seen]
    results.put("ready")
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    results.put(("honest", [v for part in seen for v in part.latencies_ms], sum(part.retry_503 for part in seen),
                 [v for part in seen for v in part.failures]))


# A kept-alive connection the server closed between two requests (HTTP allows it: clients reconnect).
STALE_CONNECTION = (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError)


def _get(connection: http.client.HTTPConnection, path: str) -> int:
    connection.request("GET", path)
    reply = connection.getresponse()
    reply.read()
    return reply.status


def health_process(port: int, stop: Any, results: Any) -> None:
    """GET /v2/health/ready and /live every 50 ms on a kept-alive connection, in a process of its own.

    When the server has closed the kept-alive connection, the poll reconnects and asks again (as
    HTTP clients do), counted apart; any other error, or a second one, is a failure.
    """
    seen = Honest()
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    results.put("ready")
    while not stop.is_set():
        for path in ("/v2/health/ready", "/v2/health/live"):
            start = time.perf_counter()
            try:
                try:
                    status = _get(connection, path)
                except STALE_CONNECTION:
                    seen.health_reconnects += 1
                    connection.close()
                    status = _get(connection, path)
                if status != 200:
                    seen.health_failures.append(f"{path} {status}")
            except (OSError, http.client.HTTPException) as exc:
                seen.health_failures.append(f"{path} {type(exc).__name__}")
                connection.close()
            seen.health_ms.append((time.perf_counter() - start) * 1e3)
        stop.wait(HEALTH_PERIOD_S)
    connection.close()
    results.put(("health", seen.health_ms, seen.health_failures, seen.health_reconnects))
