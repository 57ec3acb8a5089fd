"""Heartbeats and the watchdog thread's decision: WATCHDOG=1 only while every check finds progress."""

from __future__ import annotations

import logging
import socket
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, List

import pytest
from served_in_thread import served_in_thread

from edge_runtime.liveness import Heartbeat, HeartbeatSet, Watchdog, all_of
from edge_runtime.server.live_probe import http_loop_check, probe_host
from edge_runtime.server.service_notify import serving_status
from edge_runtime.systemd_notify import Notifier


class Recorder(Notifier):
    """A notifier that keeps what it would send."""

    def __init__(self) -> None:
        super().__init__("@unused")
        self.sent: List[str] = []

    def send(self, *lines: str) -> bool:
        self.sent.append("\n".join(lines))
        return True


def test_a_heartbeat_is_overdue_only_past_its_promise() -> None:
    beats = HeartbeatSet()
    on_time = beats.add(Heartbeat("waiting", 60.0))
    late = beats.add(Heartbeat("stuck", 60.0))
    late.deadline = time.monotonic() - 1.0
    assert beats.overdue() == ["stuck"]
    late.beat(60.0)
    assert beats.overdue() == []
    beats.discard(on_time)
    assert len(beats) == 1


def test_the_watchdog_pings_only_while_nothing_is_wedged_and_says_what_is(caplog: pytest.LogCaptureFixture) -> None:
    wedged: List[str] = []
    notifier = Recorder()
    watchdog = Watchdog(notifier, 1.0, lambda: list(wedged), lambda: "serving 1 model(s)")
    assert watchdog.tick() and notifier.sent == ["WATCHDOG=1"]
    wedged.append("model worker m-1-0")
    with caplog.at_level(logging.ERROR, logger="edge_runtime.liveness"):
        assert not watchdog.tick()
        assert not watchdog.tick()  # still wedged: no second line, no ping
    assert notifier.sent[1:] == ["STATUS=wedged: model worker m-1-0"]
    assert [r.getMessage() for r in caplog.records if "wedged" in r.getMessage()] != []
    assert len([r for r in caplog.records if r.levelno == logging.ERROR]) == 1
    wedged.clear()
    assert watchdog.tick()
    assert notifier.sent[2:] == ["STATUS=serving 1 model(s)", "WATCHDOG=1"]


def test_a_check_that_raises_counts_as_wedged() -> None:
    def broken() -> List[str]:
        raise RuntimeError("boom")

    notifier = Recorder()
    assert not Watchdog(notifier, 1.0, all_of([list, broken])).tick()
    assert "WATCHDOG=1" not in notifier.sent


class _Live(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


def test_the_http_check_passes_when_the_server_answers_and_names_the_loop_when_it_does_not() -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Live)
    with served_in_thread(server) as port:
        assert http_loop_check("127.0.0.1", port, 5.0)() == []
    with socket.socket() as silent:  # listens (connections queue) but never answers: a wedged loop
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        problems = http_loop_check("127.0.0.1", silent.getsockname()[1], 0.2)()
    assert len(problems) == 1 and problems[0].startswith("HTTP loop")


def test_a_wildcard_bind_is_probed_over_loopback() -> None:
    assert probe_host("0.0.0.0") == "127.0.0.1"
    assert probe_host("::") == "::1"
    assert probe_host("192.0.2.7") == "192.0.2.7"


def test_the_ready_status_counts_serving_models_and_names_failed_ones() -> None:
    index = [
        {"name": "bad", "version": "1", "state": "UNAVAILABLE", "reason": "the fake backend was told to fail"},
        {"name": "good", "version": "1", "state": "UNAVAILABLE", "reason": "not loaded"},
        {"name": "good", "version": "2", "state": "READY", "reason": ""},
        {"name": "other", "version": "3", "state": "READY", "reason": ""},
    ]
    assert serving_status(index) == "serving 2 model(s); failed: bad (the fake backend was told to fail)"
    assert serving_status([]) == "serving 0 model(s)"
