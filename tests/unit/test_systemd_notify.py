"""The sd_notify writer: path and abstract sockets, WATCHDOG_USEC/WATCHDOG_PID, no socket, a failing send."""

from __future__ import annotations

import logging
import os
import socket
import tempfile
import uuid
from pathlib import Path
from typing import Iterator, Tuple

import pytest

from edge_runtime import systemd_notify
from edge_runtime.systemd_notify import Notifier, notifier_from_env, watchdog_interval


@pytest.fixture()
def path_socket() -> Iterator[Tuple[str, socket.socket]]:
    """A bound datagram socket at a short path (AF_UNIX paths are limited to 107 bytes)."""
    with tempfile.TemporaryDirectory(prefix="sdn") as folder, \
            socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        path = str(Path(folder) / "notify")
        sock.bind(path)
        sock.settimeout(5)
        yield path, sock


def test_a_message_is_one_datagram_of_lines_on_a_path_socket(path_socket: Tuple[str, socket.socket]) -> None:
    path, sock = path_socket
    notifier = notifier_from_env({"NOTIFY_SOCKET": path})
    assert notifier.enabled
    assert notifier.send(systemd_notify.READY, systemd_notify.status("serving 1 model(s)\nsecond line"))
    assert sock.recv(4096) == b"READY=1\nSTATUS=serving 1 model(s) second line"


def test_an_at_sign_names_an_abstract_socket() -> None:
    name = f"edge-runtime-test-{os.getpid()}-{uuid.uuid4().hex}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        sock.settimeout(5)
        assert Notifier("@" + name).send(systemd_notify.WATCHDOG)
        assert sock.recv(4096) == b"WATCHDOG=1"


def test_without_notify_socket_every_send_is_a_no_op(caplog: pytest.LogCaptureFixture) -> None:
    notifier = notifier_from_env({})
    assert not notifier.enabled
    assert notifier_from_env({"NOTIFY_SOCKET": ""}).enabled is False
    assert notifier.send(systemd_notify.READY) is False
    assert not caplog.records


def test_a_failed_send_never_raises_and_is_logged_once(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    notifier = Notifier(str(tmp_path / "nobody-listens"))
    with caplog.at_level(logging.WARNING, logger="edge_runtime.systemd_notify"):
        assert notifier.send(systemd_notify.READY) is False
        assert notifier.send(systemd_notify.WATCHDOG) is False
    assert len(caplog.records) == 1
    assert "nobody-listens" in caplog.records[0].getMessage()


@pytest.mark.parametrize(("env", "expected"), [
    ({"WATCHDOG_USEC": "30000000"}, 15.0),
    ({"WATCHDOG_USEC": "1000000", "WATCHDOG_PID": "4242"}, 0.5),
    ({"WATCHDOG_USEC": "1000000", "WATCHDOG_PID": "4243"}, None),  # another process's watchdog
    ({"WATCHDOG_USEC": "1000000", "WATCHDOG_PID": "x"}, None),
    ({}, None),
    ({"WATCHDOG_USEC": ""}, None),
    ({"WATCHDOG_USEC": "0"}, None),
    ({"WATCHDOG_USEC": "-5"}, None),
    ({"WATCHDOG_USEC": "thirty"}, None),
])
def test_the_ping_interval_is_half_of_watchdog_usec_for_our_pid_only(env: dict, expected: object) -> None:
    assert watchdog_interval(env, pid=4242) == expected


def test_watchdog_pid_is_compared_with_our_own_pid_by_default() -> None:
    assert watchdog_interval({"WATCHDOG_USEC": "2000000", "WATCHDOG_PID": str(os.getpid())}) == 1.0
