"""Progress lines while TensorRT builds an engine (minutes on a Xavier): phases on 10.x, elapsed time on 8.5.

TensorRT 10.x reports the builder's phases through ``IProgressMonitor`` (absent from 8.5); on 8.5
nothing is reported from inside ``build_serialized_network``, so a small timer thread says
"building <label>… N s" every ``interval_s`` until the build returns or raises. Both call
``report`` from threads other than the caller's: it must be thread-safe (appending to a list or
logging is).
"""

from __future__ import annotations

import threading
from types import TracebackType
from typing import TYPE_CHECKING, Callable, Dict, Optional, Type

from edge_runtime.backends.tensorrt.api import TrtModule

if TYPE_CHECKING:
    import tensorrt

Report = Callable[[str], None]
Clock = Callable[[], float]

# Phases nested deeper than this (per-layer tactic timing) would flood the log.
MAX_PHASE_DEPTH = 1


class ElapsedTicker:
    """A context manager whose timer thread reports "building <label>… N s" until the block ends, however it ends."""

    def __init__(self, report: Report, label: str, clock: Clock, start: float, interval_s: float) -> None:
        self._report = report
        self._label = label
        self._clock = clock
        self._start = start
        self._interval_s = interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"trt-build-ticker {label}", daemon=True)

    def __enter__(self) -> ElapsedTicker:
        self._thread.start()
        return self

    def __exit__(self, exc_type: Optional[Type[BaseException]], exc: Optional[BaseException],
                 traceback: Optional[TracebackType]) -> None:
        self._stop.set()
        self._thread.join()

    @property
    def running(self) -> bool:
        """Whether the timer thread is still alive (for tests: it must stop on failure too)."""
        return self._thread.is_alive()

    def _run(self) -> None:
        while not self._stop.wait(self._interval_s):
            self._report(f"building {self._label}… {self._clock() - self._start:.0f} s")


def make_progress_monitor(trt: TrtModule, report: Report, label: str, clock: Clock,
                          start: float) -> tensorrt.IProgressMonitor:
    """A 10.x ``IProgressMonitor`` reporting the builder's outer phases with elapsed time; never cancels the build."""
    depths: Dict[str, int] = {}
    lock = threading.Lock()

    class _PhaseMonitor(trt.IProgressMonitor):
        def __init__(self) -> None:
            trt.IProgressMonitor.__init__(self)

        def phase_start(self, phase_name: str, parent_phase: Optional[str], num_steps: int) -> None:
            with lock:
                depth = 0 if parent_phase is None else depths.get(parent_phase, 0) + 1
                depths[phase_name] = depth
            if depth <= MAX_PHASE_DEPTH:
                steps = f" ({num_steps} steps)" if num_steps > 1 else ""
                report(f"building {label}: {phase_name}{steps}… {clock() - start:.0f} s")

        def step_complete(self, phase_name: str, step: int) -> bool:
            return True  # False would cancel the build

        def phase_finish(self, phase_name: str) -> None:
            with lock:
                depths.pop(phase_name, None)

    monitor: tensorrt.IProgressMonitor = _PhaseMonitor()
    return monitor
