"""Per-model figures over one sampling interval, from the serving statistics' cumulative counters.

Each sample takes every loaded model's ``latency_snapshot`` (one short lock per model: the
inference path's lock is held only to copy 17 integers) and subtracts the previous one. A model
version that was reloaded has a new statistics object: its counts start again from zero.
Percentiles are estimated from the histogram as Prometheus' ``histogram_quantile`` does: linear
within the bucket that holds the rank; a rank in the overflow bucket reports the last bound.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, List, Optional, Protocol, Sequence, Tuple

from edge_runtime.serving.stats import LATENCY_BOUNDS_MS, LatencySnapshot, ModelStats


class ServedModelView(Protocol):
    """What the sampler reads of a loaded model version (``ServedModel`` has all of it)."""

    name: str
    version: str
    platform: str  # the backend serving it
    memory_mb: float
    stats: ModelStats


def percentile(bounds: Sequence[float], counts: Sequence[int], quantile: float) -> Optional[float]:
    """The ``quantile`` (0..1) of a bucketed distribution, in the bounds' unit; None when it is empty."""
    total = sum(counts)
    if total == 0:
        return None
    rank = quantile * total
    seen = 0
    for index, count in enumerate(counts):
        if count and seen + count >= rank:
            if index >= len(bounds):
                return float(bounds[-1])  # the overflow bucket: all we know is "more than the last bound"
            lower = float(bounds[index - 1]) if index else 0.0
            return lower + (float(bounds[index]) - lower) * (rank - seen) / count
        seen += count
    return float(bounds[-1])


class ModelIntervals:
    """Turns the cumulative statistics of the loaded models into per-interval figures."""

    def __init__(self, models: Callable[[], Sequence[ServedModelView]]) -> None:
        self._models = models
        self._previous: Dict[Tuple[str, str], Tuple[int, LatencySnapshot]] = {}

    def sample(self) -> List[Dict[str, Any]]:
        """One entry per loaded model version: requests, failures, p50/p99 and histogram of the interval."""
        entries: List[Dict[str, Any]] = []
        current: Dict[Tuple[str, str], Tuple[int, LatencySnapshot]] = {}
        for model in self._models():
            key = (model.name, model.version)
            now = model.stats.latency_snapshot()
            current[key] = (id(model.stats), now)
            entries.append(self._entry(model, now, self._baseline(key, model.stats, now)))
        self._previous = current  # models unloaded since the last sample are forgotten
        return entries

    def _baseline(self, key: Tuple[str, str], stats: ModelStats, now: LatencySnapshot) -> LatencySnapshot:
        previous = self._previous.get(key)
        if previous is None or previous[0] != id(stats) or previous[1].requests > now.requests:
            return LatencySnapshot(0, 0, (0,) * len(now.counts), 0)
        return previous[1]

    @staticmethod
    def _entry(model: ServedModelView, now: LatencySnapshot, before: LatencySnapshot) -> Dict[str, Any]:
        counts = [after - earlier for after, earlier in zip(now.counts, before.counts)]
        p50, p99 = (percentile(LATENCY_BOUNDS_MS, counts, q) for q in (0.5, 0.99))
        return {
            "name": model.name,
            "version": model.version,
            "backend": model.platform,
            "memory_mb": round(float(model.memory_mb), 1),
            "requests": now.requests - before.requests,
            "failures": now.failures - before.failures,
            "p50_ms": None if p50 is None else round(p50, 3),
            "p99_ms": None if p99 is None else round(p99, 3),
            "histogram": {"bounds_ms": list(LATENCY_BOUNDS_MS), "counts": counts},
        }
