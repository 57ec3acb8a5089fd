"""The HTTP transport: waitress, adjusted for a device that hostile local clients can reach.

What differs from ``waitress.create_server``:

- the event loop uses ``poll()``, not ``select()``: ``select()`` fails on any descriptor >= 1024
  ("filedescriptor out of range") and the server would exit;
- at ``http.connection_limit`` open connections the longest-idle one with no request being served
  is closed, so idle or half-open connections cannot lock honest clients out (waitress stops
  accepting instead); idle connections are closed after ``http.channel_timeout_s``;
- when ``accept()`` fails for lack of descriptors (EMFILE/ENFILE) the server stops accepting for
  a moment and logs once per interval, instead of spinning at 100 % CPU writing log lines;
- waitress' own error answers (400 malformed, 413 body over the cap, 431 headers over the cap,
  500) are JSON ``{"error": "..."}`` like every other answer of the API.
"""

from __future__ import annotations

import errno
import json
import logging
import time
from typing import Any, Callable, Dict, Optional

from waitress import wasyncore
from waitress.adjustments import Adjustments
from waitress.channel import HTTPChannel
from waitress.server import TcpWSGIServer
from waitress.task import ErrorTask, ThreadedTaskDispatcher

from edge_runtime.config import RuntimeSettings
from edge_runtime.errors import ConfigError

log = logging.getLogger(__name__)

RECV_BYTES = 256 * 1024  # bytes per socket read (waitress' default: 8 KiB)
ACCEPT_BACKOFF_S = 0.25  # no accept() for this long after it ran out of descriptors
LOG_INTERVAL_S = 10.0  # at most one line per interval about refused accepts or evictions
_OUT_OF_DESCRIPTORS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})

WsgiApp = Callable[..., Any]


class JsonErrorTask(ErrorTask):
    """waitress' transport-level error answer, as the API's JSON ``{"error": "..."}``."""

    def execute(self) -> None:
        error, adj = self.request.error, self.channel.adj
        if error.code == 413:
            message = f"request body too large (limit {adj.max_request_body_size - 1} bytes)"
        elif error.code == 431:
            message = f"request line and headers too large (limit {adj.max_request_header_size} bytes)"
        else:
            message = f"{error.reason}: {error.body}" if error.body else error.reason
        body = json.dumps({"error": message}).encode("utf-8")
        self.status = f"{error.code} {error.reason}"
        self.response_headers.append(("Content-Type", "application/json"))
        self.set_close_on_finish()
        self.content_length = len(body)
        self.write(body)


class EdgeChannel(HTTPChannel):
    """One client connection; its transport errors are answered by :class:`JsonErrorTask`."""

    error_task_class = JsonErrorTask


class _RateLimitedLog:
    """Logs one warning per interval and counts the ones it held back."""

    def __init__(self, interval_s: float = LOG_INTERVAL_S) -> None:
        self.interval_s = interval_s
        self._next = 0.0
        self._held = 0

    def warning(self, message: str, *args: Any) -> None:
        now = time.monotonic()
        if now < self._next:
            self._held += 1
            return
        suffix = f" ({self._held} more like this in the last {self.interval_s:.0f} s)" if self._held else ""
        log.warning(message + suffix, *args)
        self._next, self._held = now + self.interval_s, 0


class EdgeServer(TcpWSGIServer):
    """A TCP WSGI server that evicts idle connections at its limit and backs off when out of descriptors."""

    channel_class = EdgeChannel
    next_channel_cleanup = 0.0  # when readable() next sweeps idle connections (time.time())

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._accept_paused_until = 0.0
        self._accept_log = _RateLimitedLog()
        self._evict_log = _RateLimitedLog()
        self.evicted = 0
        super().__init__(*args, **kwargs)

    def readable(self) -> bool:
        now = time.time()
        if now >= self.next_channel_cleanup:  # waitress' idle sweep (channel_timeout)
            self.next_channel_cleanup = now + self.adj.cleanup_interval
            self.maintenance(now)
        if not self.accepting or time.monotonic() < self._accept_paused_until:
            return False
        if len(self.active_channels) < self.adj.connection_limit:
            return True
        self._evict_idle()
        return False  # accept again once the evicted connection is closed

    def _evict_idle(self) -> None:
        """Close the longest-idle connection with nothing in progress, unless one is already closing."""
        victim: Optional[HTTPChannel] = None
        for channel in self.active_channels.values():
            if channel.will_close or channel.close_when_flushed:
                return  # a slot is on its way
            if channel.requests or channel.total_outbufs_len:
                continue  # a request is being served or its answer written
            if victim is None or channel.last_activity < victim.last_activity:
                victim = channel
        if victim is None:
            return  # every connection is busy: wait (waitress' own behaviour)
        victim.will_close = True  # closed by the loop on its next turn
        self.evicted += 1
        self._evict_log.warning("connection limit (%d) reached: closing the longest-idle connection",
                                self.adj.connection_limit)

    def handle_accept(self) -> None:
        try:
            pair = self.accept()
        except OSError as exc:
            if exc.errno in _OUT_OF_DESCRIPTORS:
                self._accept_paused_until = time.monotonic() + ACCEPT_BACKOFF_S
                self._accept_log.warning("accept() failed (%s): not accepting for %.2f s",
                                         exc.strerror, ACCEPT_BACKOFF_S)
            else:
                self._accept_log.warning("accept() failed: %s", exc)
            return
        if pair is None:
            return
        conn, addr = pair
        try:
            self.set_socket_options(conn)
        except OSError:  # the client left before we got to it
            conn.close()
            return
        self.channel_class(self, conn, addr, self.adj, map=self._map)


def create_server(app: WsgiApp, settings: RuntimeSettings, host: str, port: int,
                  socket_map: Dict[int, Any]) -> EdgeServer:
    """A listening :class:`EdgeServer` for ``app`` on ``host:port``, its limits from ``settings``."""
    http, body_cap = settings.http, settings.limits.max_request_bytes
    # waitress spools bodies over 512 KiB (inbuf_overflow) and responses over 1 MiB to temp files;
    # a 600 KB image tensor then costs a disk round trip. Within the body cap, keep them in memory.
    # It also reads 8 KiB per recv(), one event-loop turn each: 256 KiB per read took 0.7 ms off a
    # 600 KB request + response here (docs/benchmarks.md).
    adj = Adjustments(
        host=host, port=port, threads=http.threads, connection_limit=http.connection_limit,
        channel_timeout=http.channel_timeout_s, cleanup_interval=max(1, min(http.channel_timeout_s // 2, 5)),
        max_request_header_size=http.max_header_bytes, max_request_body_size=body_cap + 1,
        inbuf_overflow=body_cap + 1, outbuf_overflow=body_cap + 1, recv_bytes=RECV_BYTES,
        asyncore_use_poll=True, ident="edge-runtime",
        log_socket_errors=False,  # a client resetting connections must not grow the log with tracebacks
    )
    dispatcher = ThreadedTaskDispatcher()
    dispatcher.set_thread_count(adj.threads)
    try:
        return EdgeServer(app, map=socket_map, dispatcher=dispatcher, adj=adj)
    except OSError as exc:  # address in use, not an address of this host, a port below 1024, ...
        dispatcher.shutdown(timeout=1)
        raise ConfigError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from exc


def loop_once(socket_map: Dict[int, Any], timeout_s: float) -> None:
    """One turn of the event loop, with poll() (no descriptor limit)."""
    wasyncore.loop(timeout=timeout_s, map=socket_map, use_poll=True, count=1)


def any_busy(socket_map: Dict[int, Any]) -> bool:
    """Whether a connection has a request in progress or an answer not yet written."""
    return any(getattr(channel, "requests", None) or getattr(channel, "total_outbufs_len", 0)
               for channel in list(socket_map.values()))
