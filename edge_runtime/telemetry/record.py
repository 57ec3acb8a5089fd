"""One telemetry Record (the contract with the spool, the agent and the fleet server), built from the collectors.

A Record::

    {"time": unix seconds, "interval_s": seconds since the previous sample,
     "process": {"rss_mb", "rss_peak_mb", "cpu_percent"},
     "system": {"mem_total_mb", "mem_available_mb", "nvmap_mb", "gpu_load", "temperatures_c",
                "power_mw", "power_mode", "clocks_locked"},
     "models": [{"name", "version", "backend", "memory_mb", "requests", "failures",
                 "p50_ms", "p99_ms", "histogram": {"bounds_ms", "counts"}}]}

Every collector runs guarded: one that raises leaves its fields null (or empty) in this Record,
is logged once with its traceback, and is tried again next interval.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Set, TypeVar

from edge_runtime.telemetry import jetson
from edge_runtime.telemetry.model_stats import ModelIntervals, ServedModelView
from edge_runtime.telemetry.power_rails import read_power_rails

log = logging.getLogger(__name__)
T = TypeVar("T")

PROCESS_FIELDS = ("rss_mb", "rss_peak_mb", "cpu_percent")
MEMORY_FIELDS = ("mem_total_mb", "mem_available_mb", "nvmap_mb")


class Guard:
    """Runs collectors so that one failing never stops the others; logs each failing collector once."""

    def __init__(self) -> None:
        self._reported: Set[str] = set()

    def call(self, name: str, collector: Callable[[], T], fallback: T) -> T:
        """``collector()``, or ``fallback`` when it raises."""
        try:
            return collector()
        except Exception:  # a collector's bug or a driver's quirk must not end telemetry
            if name not in self._reported:
                self._reported.add(name)
                log.warning("telemetry collector %r failed; its figures are null until it works", name,
                            exc_info=True)
            return fallback


class RecordBuilder:
    """Builds Records from a sysfs/procfs root, a process reader and the loaded models."""

    def __init__(self, root: Path, models: Callable[[], Sequence[ServedModelView]],
                 process: Optional[Callable[[], Dict[str, Optional[float]]]] = None,
                 extra_system: Optional[Callable[[], Dict[str, Any]]] = None) -> None:
        self._root = root
        self._models = ModelIntervals(models)
        self._process = process
        self._extra_system = extra_system  # e.g. jetson-stats, filling what sysfs could not read
        self.guard = Guard()

    def build(self, time: float, interval_s: float) -> Dict[str, Any]:
        """The Record sampled at unix ``time``, ``interval_s`` after the previous one."""
        return {
            "time": time,
            "interval_s": round(interval_s, 3),
            "process": self._process_figures(),
            "system": self._system_figures(),
            "models": self.guard.call("models", self._models.sample, _no_models()),
        }

    def _process_figures(self) -> Dict[str, Optional[float]]:
        empty: Dict[str, Optional[float]] = dict.fromkeys(PROCESS_FIELDS)
        if self._process is None:
            return empty
        return {**empty, **self.guard.call("process", self._process, empty)}

    def _system_figures(self) -> Dict[str, Any]:
        return read_system(self._root, self.guard, self._extra_system)


def read_system(root: Path, guard: Guard,
                extra_system: Optional[Callable[[], Dict[str, Any]]] = None) -> Dict[str, Any]:
    """A Record's ``system`` block read under ``root``, each reader guarded (also what /metrics shows)."""
    call = guard.call
    empty: Dict[str, Optional[float]] = dict.fromkeys(MEMORY_FIELDS)
    figures: Dict[str, Any] = {**empty, **call("memory", lambda: jetson.read_memory(root), empty)}
    figures["gpu_load"] = call("gpu_load", lambda: jetson.read_gpu_load(root), None)
    figures["temperatures_c"] = call("temperatures", lambda: jetson.read_temperatures(root), _no_values())
    figures["power_mw"] = call("power", lambda: read_power_rails(root), _no_values())
    figures["power_mode"] = call("power_mode", lambda: jetson.read_power_mode(root), None)
    figures["clocks_locked"] = call("clocks_locked", lambda: jetson.read_clocks_locked(root), None)
    if extra_system is not None:
        extra: Dict[str, Any] = call("jetson_stats", extra_system, {})
        for key in _missing(figures, extra):
            figures[key] = extra[key]
    return figures


def _no_models() -> List[Dict[str, Any]]:
    return []


def _no_values() -> Dict[str, float]:
    return {}


def _missing(figures: Dict[str, Any], extra: Dict[str, Any]) -> List[str]:
    """The keys ``extra`` has a value for that ``figures`` lacks (None or empty)."""
    return [key for key, value in extra.items() if key in figures and figures[key] in (None, {}) and value]
