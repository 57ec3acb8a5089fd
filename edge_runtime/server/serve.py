"""Run a WSGI app on the transport until SIGTERM/SIGINT, then drain.

Shutdown order on SIGTERM/SIGINT (as Triton does it): stop accepting connections, let in-flight
requests finish, then stop the worker threads. What the app serves (the repository, the models)
is built and closed by the composition root, :mod:`edge_runtime.daemon`.
"""

from __future__ import annotations

import logging
import signal
import sys
import threading
import time
from types import FrameType
from typing import Any, Callable, Dict, Optional

from edge_runtime.config import RuntimeSettings
from edge_runtime.errors import BackendUnavailableError

log = logging.getLogger(__name__)
LOOP_TIMEOUT_S = 0.5  # how soon the serve loop notices a stop signal


def _nothing() -> None:
    pass


def _listening(port: int) -> None:
    pass


def serve(app: Callable[..., Any], settings: RuntimeSettings, host: str, port: int, *,
          summary: Callable[[], str] = lambda: "", on_stop: Callable[[], None] = _nothing,
          on_ready: Callable[[int], None] = _listening) -> int:
    """Serve ``app`` on ``host:port`` until SIGTERM/SIGINT; returns the exit status.

    ``summary`` is printed in the start line; ``on_ready(port)`` runs once the socket listens, just
    before the loop answers (sd_notify READY=1); ``on_stop`` runs when a stop signal arrives (the app
    then answers not-ready while open requests finish).
    """
    try:
        from edge_runtime.server import transport
    except ImportError as exc:
        raise BackendUnavailableError.missing_module("waitress", "server") from exc

    socket_map: Dict[int, Any] = {}  # ours, so the drain below can watch the open connections
    server = transport.create_server(app, settings, host, port, socket_map)
    stopping = threading.Event()

    def stop(signum: int, frame: Optional[FrameType]) -> None:
        log.info("signal %d: draining", signum)
        on_stop()
        stopping.set()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    print(f"edge-runtime: serving on http://{host}:{server.effective_port} ({summary() or 'no models'})",
          file=sys.stderr, flush=True)
    on_ready(server.effective_port)  # connections made from now on wait in the listen backlog for the loop
    try:
        while not stopping.is_set():
            transport.loop_once(socket_map, LOOP_TIMEOUT_S)
        _drain(server, transport, socket_map, settings.drain_timeout_s)
    finally:
        server.task_dispatcher.shutdown(timeout=settings.drain_timeout_s)
    return 0


def _drain(server: Any, transport: Any, socket_map: Dict[int, Any], timeout_s: float) -> None:
    """Stop accepting; keep the loop turning until open requests are answered or time is up."""
    server.accepting = False  # the listener is polled only while accepting
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and transport.any_busy(socket_map):
        transport.loop_once(socket_map, 0.05)
    server.close()
