"""The device's ``memory_budget_mb`` across loaded models: refuse a model that would not fit.

A backend that knows what a model takes says so before it takes it: the TensorRT backend calls
``BackendOptions.memory_check`` with the engine's device memory plus its size before it creates an
execution context, and that figure is what counts for the model. Otherwise a bundle may record
what its model needs (``manifest.metadata["memory_mb"]``, written by the export from ONNX Runtime
on the CPU, so not for TensorRT devices); then a model that would not fit is refused before
anything is loaded. Otherwise the
model's resident memory is measured while it loads (the process' RSS before and after, from
``/proc/self/statm``; psutil is not a runtime dependency), and a model that does not fit is
unloaded and refused. Loads are serialized by the repository, but inference in other models
moves RSS too: a measurement is an estimate, not an accounting. Where ``/proc`` is absent
(not Linux), unrecorded models are not measured.
"""

from __future__ import annotations

import os
import threading
from typing import List, Optional

from edge_runtime.bundle.verify import VerifiedBundle
from edge_runtime.errors import MemoryBudgetError
from edge_runtime.serving.model import ServedModel

METADATA_KEY = "memory_mb"
_STATM = "/proc/self/statm"


__all__ = ["METADATA_KEY", "MemoryBudgetError", "check_fits", "recorded_mb", "resident_mb", "start_within_budget"]


def start_within_budget(model: ServedModel, label: str, used_mb: float, budget_mb: int,
                        drain_timeout_s: float) -> None:
    """Start ``model`` only if it fits: refused before loading when its bundle records its need, else measured.

    Sets ``model.memory_mb``; a measured model that does not fit is stopped, and MemoryBudgetError raised.
    """
    recorded = None if model.device.uses_tensorrt else recorded_mb(model.bundle)
    if recorded is not None:
        check_fits(label, recorded, used_mb, budget_mb, "recorded in the bundle")
    reported: List[float] = []
    lock = threading.Lock()

    def reserve(needed_mb: float) -> None:
        """Called by each instance's backend before it takes ``needed_mb``; instances add up."""
        with lock:
            check_fits(label, sum(reported) + needed_mb, used_mb, budget_mb, "reported by its TensorRT engine")
            reported.append(needed_mb)

    model.memory_check = reserve
    before = resident_mb()
    model.start()
    after = resident_mb()
    if reported:
        model.memory_mb = sum(reported)
        return
    measured = None if before is None or after is None else max(0.0, after - before)
    model.memory_mb = recorded if recorded is not None else (measured or 0.0)
    if recorded is None and measured is not None:
        try:
            check_fits(label, measured, used_mb, budget_mb, "measured while loading")
        except MemoryBudgetError:
            model.stop(drain_timeout_s)
            raise


def recorded_mb(bundle: Optional[VerifiedBundle]) -> Optional[float]:
    """The memory the bundle says its model needs, if it says so."""
    if bundle is None:
        return None
    value = bundle.manifest.metadata.get(METADATA_KEY)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
        return None
    return float(value)


def resident_mb() -> Optional[float]:
    """This process' resident memory in MiB, or None where /proc is not there."""
    try:
        with open(_STATM, "rb") as handle:
            pages = int(handle.read().split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return pages * os.sysconf("SC_PAGE_SIZE") / (1 << 20)


def check_fits(label: str, needed_mb: float, used_mb: float, budget_mb: int, how: str) -> None:
    """MemoryBudgetError unless ``used + needed`` stays within ``budget``; ``how`` says where ``needed`` comes from."""
    if used_mb + needed_mb <= budget_mb:
        return
    raise MemoryBudgetError(
        f"{label} needs {needed_mb:.0f} MiB ({how}); the loaded models use {used_mb:.0f} MiB "
        f"of the device's memory_budget_mb {budget_mb}"
    )
