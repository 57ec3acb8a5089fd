"""A small sd_notify writer: tells systemd (``Type=notify``) the service is ready, alive, stopping.

systemd passes ``NOTIFY_SOCKET`` (a path, or ``@name`` for an abstract socket) and, when the
unit has ``WatchdogSec=``, ``WATCHDOG_USEC`` (and ``WATCHDOG_PID``: the process it expects the
pings from). Each message is one AF_UNIX datagram of ``KEY=VALUE`` lines (sd_notify(3)). With no
``NOTIFY_SOCKET`` every call is a no-op, so the same code runs under systemd, in a shell and in
tests. A send never raises into the server: the first failure is logged, later ones are not.
No dependency: the protocol is one ``sendto()`` (the ``sdnotify`` package is unmaintained).
"""

from __future__ import annotations

import logging
import os
import socket
from typing import Mapping, Optional

log = logging.getLogger(__name__)

READY = "READY=1"
WATCHDOG = "WATCHDOG=1"
STOPPING = "STOPPING=1"


def status(text: str) -> str:
    """The ``STATUS=`` line systemd shows in ``systemctl status`` (one line: newlines become spaces)."""
    return "STATUS=" + " ".join(text.splitlines())


def socket_address(value: str) -> str:
    """``NOTIFY_SOCKET`` as an AF_UNIX address: ``@name`` is the abstract socket ``\\0name``."""
    return "\0" + value[1:] if value.startswith("@") else value


def watchdog_interval(environ: Optional[Mapping[str, str]] = None, pid: Optional[int] = None) -> Optional[float]:
    """Seconds between WATCHDOG=1 pings (half of ``WATCHDOG_USEC``), or None when no watchdog is asked of us.

    None when ``WATCHDOG_USEC`` is unset, not a positive integer, or ``WATCHDOG_PID`` names
    another process (a child that inherited the environment must not ping for its parent).
    """
    env = os.environ if environ is None else environ
    try:
        usec = int(env.get("WATCHDOG_USEC", ""))
    except ValueError:
        return None
    if usec <= 0:
        return None
    wanted_pid = env.get("WATCHDOG_PID")
    if wanted_pid:
        try:
            if int(wanted_pid) != (os.getpid() if pid is None else pid):
                return None
        except ValueError:
            return None
    return usec / 1e6 / 2.0


class Notifier:
    """Sends sd_notify messages to one socket; ``address`` None makes every send a no-op."""

    def __init__(self, address: Optional[str]) -> None:
        self.address = socket_address(address) if address else None
        self._failed_once = False

    @property
    def enabled(self) -> bool:
        """Whether a notify socket was given (the service runs under systemd with Type=notify)."""
        return self.address is not None

    def send(self, *lines: str) -> bool:
        """Send ``lines`` as one datagram; False (logged once per Notifier) when it could not be sent."""
        if self.address is None:
            return False
        data = "\n".join(lines).encode("utf-8")
        try:
            # No lock: a signal handler sends STOPPING=1, and each send is its own socket anyway.
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
                sock.sendto(data, self.address)
        except OSError as exc:
            if not self._failed_once:
                self._failed_once = True
                log.warning("sd_notify: cannot send to %r: %s (further failures are not logged)",
                            self.address.replace("\0", "@"), exc)
            return False
        return True


def notifier_from_env(environ: Optional[Mapping[str, str]] = None) -> Notifier:
    """The Notifier for ``NOTIFY_SOCKET`` (a no-op one when it is unset or empty)."""
    env = os.environ if environ is None else environ
    return Notifier(env.get("NOTIFY_SOCKET") or None)
