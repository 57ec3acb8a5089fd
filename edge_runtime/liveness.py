"""Progress, not presence: heartbeats that loops set, and the watchdog thread that pings systemd only while they move.

A loop owns a :class:`Heartbeat` and, each time round, says by when it will beat again
(:meth:`Heartbeat.beat`: one ``time.monotonic()`` and one attribute store, no lock). A heartbeat
whose promise has passed is overdue: its loop is wedged (stuck in a call, deadlocked, or its
thread died). The :class:`Watchdog` thread runs the process's checks every interval (half of
``WatchdogSec``) and sends ``WATCHDOG=1`` only when every check passes; otherwise it logs one
line naming what is wedged and sends ``STATUS=`` saying so, and systemd restarts the service once
``WatchdogSec`` passes without a ping. A timer that pinged regardless would hide a wedged server.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Callable, Iterable, List, Optional, Set

from edge_runtime import systemd_notify
from edge_runtime.systemd_notify import Notifier

log = logging.getLogger(__name__)

Check = Callable[[], List[str]]  # what is wedged now (empty: everything makes progress)


class Heartbeat:
    """One loop's promise: it beats again before ``deadline`` (time.monotonic())."""

    __slots__ = ("deadline", "name")

    def __init__(self, name: str, within_s: float) -> None:
        self.name = name
        self.deadline = time.monotonic() + within_s

    def beat(self, within_s: float) -> None:
        """Progress now; the next beat comes within ``within_s`` seconds."""
        self.deadline = time.monotonic() + within_s

    def overdue_s(self, now: float) -> float:
        """Seconds past the promised beat (0 when on time)."""
        return max(0.0, now - self.deadline)


class HeartbeatSet:
    """The heartbeats of a family of loops (e.g. every model worker); threads join and leave it."""

    def __init__(self) -> None:
        self._beats: Set[Heartbeat] = set()
        self._lock = threading.Lock()  # taken to join, leave and check: never per beat

    def add(self, heartbeat: Heartbeat) -> Heartbeat:
        """Watch ``heartbeat`` from now on; returns it."""
        with self._lock:
            self._beats.add(heartbeat)
        return heartbeat

    def discard(self, heartbeat: Heartbeat) -> None:
        """Stop watching ``heartbeat`` (its loop ended normally)."""
        with self._lock:
            self._beats.discard(heartbeat)

    def __len__(self) -> int:
        with self._lock:
            return len(self._beats)

    def overdue(self) -> List[str]:
        """The names of the overdue heartbeats (their loops made no progress in the time they promised)."""
        now = time.monotonic()
        with self._lock:
            return sorted(beat.name for beat in self._beats if beat.overdue_s(now) > 0)


def all_of(checks: Iterable[Check]) -> Check:
    """One check that reports what every one of ``checks`` reports."""
    listed = list(checks)
    return lambda: [problem for check in listed for problem in check()]


class Watchdog(threading.Thread):
    """Every ``interval_s``: WATCHDOG=1 when ``check`` finds nothing wedged, else one log line and STATUS=."""

    def __init__(self, notifier: Notifier, interval_s: float, check: Check,
                 healthy_status: Callable[[], str] = lambda: "") -> None:
        super().__init__(name="sd-watchdog", daemon=True)
        self._notifier, self._interval_s, self._check = notifier, interval_s, check
        self._healthy_status = healthy_status
        self._stop_event = threading.Event()
        self._wedged: Optional[List[str]] = None  # what was reported last (None: healthy)

    def run(self) -> None:
        while True:
            self.tick()
            if self._stop_event.wait(self._interval_s):
                return

    def tick(self) -> bool:
        """One check and its message; True when WATCHDOG=1 was sent."""
        try:
            wedged = self._check()
        except Exception as exc:  # a broken check must not pass for a healthy process
            log.exception("watchdog: the liveness check failed")
            wedged = [f"the liveness check ({type(exc).__name__})"]
        if not wedged:
            if self._wedged is not None:
                log.warning("watchdog: progress again; pinging systemd's watchdog")
                self._wedged = None
                text = self._healthy_status()
                if text:
                    self._notifier.send(systemd_notify.status(text))
            return self._notifier.send(systemd_notify.WATCHDOG)
        if wedged != self._wedged:
            log.error("watchdog: wedged: %s; not pinging systemd's watchdog (it restarts the service)",
                      "; ".join(wedged))
            self._notifier.send(systemd_notify.status("wedged: " + "; ".join(wedged)))
        self._wedged = wedged
        return False

    def stop(self) -> None:
        """End the thread (it sends nothing more)."""
        self._stop_event.set()
