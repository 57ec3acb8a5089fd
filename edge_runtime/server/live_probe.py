"""The runtime asks itself ``/v2/health/live`` over its own socket: proof that the serving loop accepts and answers.

The watchdog (:mod:`edge_runtime.liveness`) runs this check: a thread that is merely alive
proves nothing about waitress' event loop or its worker threads, a real request does. Any HTTP
answer counts (a restricted ``health`` group answers 401, which still proves the loop turns).
A wildcard bind address is reached over loopback.
"""

from __future__ import annotations

import http.client
from typing import List

from edge_runtime.liveness import Check

LIVE_PATH = "/v2/health/live"
_WILDCARDS = {"": "127.0.0.1", "0.0.0.0": "127.0.0.1", "::": "::1", "[::]": "::1"}


def probe_host(host: str) -> str:
    """The address to reach a server bound to ``host`` (loopback for a wildcard)."""
    return _WILDCARDS.get(host, host.strip("[]"))


def answers(host: str, port: int, timeout_s: float) -> bool:
    """Whether ``GET /v2/health/live`` on ``host:port`` gets an HTTP answer within ``timeout_s`` per step."""
    connection = http.client.HTTPConnection(probe_host(host), port, timeout=timeout_s)
    try:
        connection.request("GET", LIVE_PATH, headers={"Connection": "close"})
        connection.getresponse().read()
        return True
    except (OSError, http.client.HTTPException):
        return False
    finally:
        connection.close()


def http_loop_check(host: str, port: int, timeout_s: float) -> Check:
    """A liveness check naming the HTTP loop when it does not answer."""
    def check() -> List[str]:
        if answers(host, port, timeout_s):
            return []
        return [f"HTTP loop (no answer to {LIVE_PATH} within {timeout_s:g} s)"]
    return check
