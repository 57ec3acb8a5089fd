"""The model workers' heartbeats: how the watchdog tells a worker that waits from one that is stuck.

A worker beats at the top of each turn of its loop, promising the next beat within
``IDLE_WAKE_S`` (an idle worker's wait for work wakes after that long and goes round again)
plus its stall limit, the longest one batch may run: the model's ``request_timeout_s`` (past it,
every request in the batch has been answered with a time-out, so the worker serves nobody). A
worker stuck in one batch longer than that, or whose thread died, is overdue and named by
:data:`WORKERS`. A worker joins once its backend is loaded and warm (a TensorRT build at load
can take tens of minutes and is bounded by the load's own time-out), and leaves when its queue
closes and its loop ends normally.
"""

from __future__ import annotations

from edge_runtime.liveness import HeartbeatSet

IDLE_WAKE_S = 1.0  # an idle worker's wait for work wakes this often to beat

WORKERS = HeartbeatSet()  # every serving worker of this process


def worker_promise_s(stall_limit_s: float) -> float:
    """How soon a worker at the top of its loop promises its next beat."""
    return IDLE_WAKE_S + stall_limit_s
