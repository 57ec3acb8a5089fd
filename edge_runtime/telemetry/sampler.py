"""The sampling thread: one Record per interval, handed to a sink (the spool), never in the inference path.

The thread reads files and copies counters; the only lock it shares with inference is each
model's statistics lock, held for one snapshot copy. A slow or failing sink or collector delays
or nulls telemetry only: it is logged once and sampling goes on. If a sample runs late (a
suspended device, a stalled disk), the missed ticks are skipped rather than caught up in a burst.
``clock`` (monotonic, for scheduling), ``wall_clock`` (the Record's ``time``) and ``wait`` are
injectable, so tests drive the loop through simulated hours without sleeping.
"""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path
from typing import Any, Callable, Dict, Optional, Sequence

from edge_runtime.config import RuntimeSettings
from edge_runtime.telemetry.model_stats import ServedModelView
from edge_runtime.telemetry.record import Guard, RecordBuilder

log = logging.getLogger(__name__)

Record = Dict[str, Any]
Sink = Callable[[Record], object]  # e.g. Spool.append (its return value is ignored)


class Sampler:
    """Calls ``build(time, interval_s)`` every ``interval_s`` on its own thread and passes the Record to ``sink``."""

    def __init__(self, build: Callable[[float, float], Record], sink: Sink, interval_s: float,
                 clock: Callable[[], float] = time.monotonic, wall_clock: Callable[[], float] = time.time,
                 wait: Optional[Callable[[float], bool]] = None, on_close: Optional[Callable[[], None]] = None) -> None:
        if interval_s <= 0:
            raise ValueError(f"interval_s must be positive, got {interval_s}")
        self._build, self._sink, self._interval = build, sink, float(interval_s)
        self._clock, self._wall_clock = clock, wall_clock
        self._stop = threading.Event()
        self._wait = wait or self._stop.wait  # returns True once closed
        self._on_close = on_close
        self._guard = Guard()
        self._thread: Optional[threading.Thread] = None
        self._latest: Optional[Record] = None

    @property
    def stopped(self) -> bool:
        """True once ``close`` was called."""
        return self._stop.is_set()

    def latest(self) -> Optional[Record]:
        """The last Record sampled (what /metrics shows), None before the first."""
        return self._latest

    def start(self) -> None:
        """Start the sampling thread (a daemon thread: it never holds up the process's exit)."""
        if self._thread is not None:
            return
        self._thread = threading.Thread(target=self.run, name="telemetry-sampler", daemon=True)
        self._thread.start()

    def run(self) -> None:
        """The sampling loop, until ``close`` (the thread's body; tests call it directly with a fake clock)."""
        previous = self._clock()
        due = previous + self._interval
        while not self._wait(max(0.0, due - self._clock())):
            now = self._clock()
            if now < due:
                continue  # woken early
            self.sample_once(now - previous)
            previous = now
            due += self._interval
            finished = self._clock()
            while due <= finished:  # ran late: skip the ticks that are already past
                due += self._interval

    def sample_once(self, interval_s: float) -> Record:
        """Build one Record now and hand it to the sink (a sink that raises is logged once)."""
        record = self._build(self._wall_clock(), interval_s)
        self._latest = record
        self._guard.call("sink", lambda: self._sink(record), None)
        return record

    def close(self, timeout_s: float = 5.0) -> None:
        """Stop sampling and wait for the thread to finish its current sample."""
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout_s)
        if self._on_close is not None:
            self._on_close()
            self._on_close = None


def start_sampler(settings: RuntimeSettings, models: Callable[[], Sequence[ServedModelView]],
                  sink: Sink) -> Optional[Sampler]:
    """Start sampling as ``settings.telemetry`` says; None when telemetry is disabled.

    ``models``: the loaded model versions (``repository.loaded``); ``sink``: where Records go
    (``spool.append``). Close the returned sampler on shutdown.
    """
    telemetry = settings.telemetry
    if not telemetry.enabled:
        return None
    from edge_runtime.telemetry.jetson_stats import open_jtop
    from edge_runtime.telemetry.process import ProcessReader

    root = settings.resolve(telemetry.sysfs_root)
    jtop = open_jtop() if root == Path("/") else None  # jtop reads this host, never a recorded tree
    builder = RecordBuilder(root, models, ProcessReader().read,
                            extra_system=jtop.read if jtop is not None else None)
    sampler = Sampler(builder.build, sink, telemetry.interval_s, on_close=jtop.close if jtop is not None else None)
    sampler.start()
    log.info("telemetry: sampling every %.1f s from %s%s", telemetry.interval_s, root,
             " and jetson-stats" if jtop is not None else "")
    return sampler
