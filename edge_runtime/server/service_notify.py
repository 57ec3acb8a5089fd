"""What ``edge-runtime serve`` tells systemd: READY once it serves, WATCHDOG while it makes progress, STOPPING.

READY=1 is sent once the models that can load are loaded and warm and the socket listens; a
model that failed does not hold it back (systemd would restart the service in a loop) and is
named in ``STATUS=``. With ``WatchdogSec=``, a :class:`edge_runtime.liveness.Watchdog` then
pings every half interval only while the HTTP loop answers a real request on the runtime's own
socket and every model worker beats (:mod:`edge_runtime.serving.liveness`). A stop signal sends
STOPPING=1 and ends the pings (the drain that follows is not a hang).
"""

from __future__ import annotations

from typing import Callable, Dict, List, Optional

from edge_runtime import systemd_notify
from edge_runtime.liveness import Watchdog, all_of
from edge_runtime.server.live_probe import http_loop_check
from edge_runtime.serving import liveness
from edge_runtime.systemd_notify import Notifier

PROBE_TIMEOUT_MAX_S = 5.0  # the self-probe's socket time-out: half the ping interval, at most this


def serving_status(index: List[Dict[str, str]]) -> str:
    """``serving N model(s); failed: name (reason), ...`` from the repository index."""
    serving = sorted({entry["name"] for entry in index if entry["state"] == "READY"})
    failed: Dict[str, str] = {}
    for entry in index:
        if entry["name"] not in serving and entry.get("reason", "not loaded") != "not loaded":
            failed.setdefault(entry["name"], entry["reason"])
    text = f"serving {len(serving)} model(s)"
    if failed:
        text += "; failed: " + ", ".join(f"{name} ({reason})" for name, reason in sorted(failed.items()))
    return text


class RuntimeNotifications:
    """The runtime's sd_notify messages; every method is a no-op without ``NOTIFY_SOCKET``."""

    def __init__(self, notifier: Notifier, interval_s: Optional[float], host: str,
                 status: Callable[[], str]) -> None:
        self._notifier, self._interval_s, self._host, self._status = notifier, interval_s, host, status
        self._watchdog: Optional[Watchdog] = None

    def ready(self, port: int) -> None:
        """The socket listens on ``port`` and the models are warm: READY=1, then the watchdog (if asked)."""
        if not self._notifier.enabled:
            return
        self._notifier.send(systemd_notify.READY, systemd_notify.status(self._status()))
        if self._interval_s is None:
            return
        timeout_s = min(self._interval_s / 2.0, PROBE_TIMEOUT_MAX_S)
        check = all_of([http_loop_check(self._host, port, timeout_s), liveness.WORKERS.overdue])
        self._watchdog = Watchdog(self._notifier, self._interval_s, check, self._status)
        self._watchdog.start()

    def stopping(self) -> None:
        """A stop signal: no more pings (draining is not a hang), STOPPING=1. Safe in a signal handler."""
        if self._watchdog is not None:
            self._watchdog.stop()
        self._notifier.send(systemd_notify.STOPPING, systemd_notify.status("stopping: draining requests"))
