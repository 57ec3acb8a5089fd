"""This process's resident memory, its peak, and its CPU use since the previous sample, through psutil.

psutil has no peak RSS (``memory_full_info`` lacks it), so the peak is the kernel's ``VmHWM`` from
``/proc/self/status``, falling back to ``getrusage``'s ``ru_maxrss`` where there is no procfs.
"""

from __future__ import annotations

import resource
import sys
from pathlib import Path
from typing import Any, Dict, Optional

from edge_runtime.errors import BackendUnavailableError

_MIB = 1024.0 * 1024.0


class ProcessReader:
    """Reads the running process; ``cpu_percent`` is over the time since the previous ``read``."""

    def __init__(self, status_path: Path = Path("/proc/self/status")) -> None:
        try:
            import psutil
        except ImportError as exc:
            raise BackendUnavailableError.missing_module("psutil", "server") from exc
        self._process = psutil.Process()
        self._process.cpu_percent(None)  # the first call only sets the baseline
        self._status_path = status_path

    def read(self) -> Dict[str, Optional[float]]:
        """``rss_mb``, ``rss_peak_mb`` and ``cpu_percent`` (100 = one core busy) of this process."""
        rss = self._process.memory_info().rss / _MIB
        peak = peak_rss_mb(self._status_path)
        return {
            "rss_mb": round(rss, 1),
            "rss_peak_mb": round(max(peak, rss), 1) if peak is not None else None,
            "cpu_percent": round(float(self._process.cpu_percent(None)), 1),
        }


def peak_rss_mb(status_path: Path = Path("/proc/self/status")) -> Optional[float]:
    """The process's peak resident set size in MiB (``VmHWM``, else ``ru_maxrss``)."""
    try:
        text = status_path.read_text()
    except OSError:
        text = ""
    for line in text.splitlines():
        if line.startswith("VmHWM:"):
            return _kib_field(line)
    return _rusage_peak_mb()


def _kib_field(line: str) -> Optional[float]:
    parts = line.split()
    try:
        return int(parts[1]) / 1024.0
    except (IndexError, ValueError):
        return None


def _rusage_peak_mb() -> Optional[float]:
    peak: Any = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return float(peak) / (_MIB if sys.platform == "darwin" else 1024.0)  # macOS reports bytes, Linux KiB
