"""Per-model inference statistics, shaped like Triton's (the /stats endpoint and /metrics read them).

Counters only go up; durations are cumulative nanoseconds, as Triton reports them. One lock per
model: updates are a handful of integer additions per batch, far below inference cost.
Successful requests are also counted in a fixed-bucket latency histogram (one ``bisect`` over 14
integer bounds per request), from which telemetry takes p50/p99 per interval and ``/metrics`` a
Prometheus histogram; failures are left out of it (a rejected request's speed says nothing).
"""

from __future__ import annotations

import threading
import time
from bisect import bisect_left
from dataclasses import dataclass, field
from typing import Any, Dict, List, NamedTuple, Tuple

# Upper bounds (inclusive) of the latency buckets in milliseconds; one more bucket counts the rest.
LATENCY_BOUNDS_MS: Tuple[float, ...] = (0.25, 0.5, 1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000)
_BOUNDS_NS: Tuple[int, ...] = tuple(int(bound * 1_000_000) for bound in LATENCY_BOUNDS_MS)


class LatencySnapshot(NamedTuple):
    """Cumulative request counts and the latency histogram of one model version, taken at once."""

    requests: int  # finished requests, successful or not
    failures: int
    counts: Tuple[int, ...]  # successful requests per bucket of LATENCY_BOUNDS_MS, the last one the overflow
    sum_ns: int  # total duration of the successful requests


@dataclass
class _Duration:
    count: int = 0
    ns: int = 0

    def add(self, ns: int, count: int = 1) -> None:
        self.count += count
        self.ns += ns


@dataclass
class ModelStats:
    """Counters of one model version."""

    success: _Duration = field(default_factory=_Duration)  # whole request, received → answered
    fail: _Duration = field(default_factory=_Duration)
    queue: _Duration = field(default_factory=_Duration)
    compute_input: _Duration = field(default_factory=_Duration)
    compute_infer: _Duration = field(default_factory=_Duration)
    compute_output: _Duration = field(default_factory=_Duration)
    inference_count: int = 0  # samples (batch elements) inferred
    execution_count: int = 0  # backend executions (batches)
    last_inference_ms: int = 0
    batches: Dict[int, _Duration] = field(default_factory=dict)
    latency_counts: List[int] = field(default_factory=lambda: [0] * (len(_BOUNDS_NS) + 1))
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def record_request(self, ok: bool, duration_ns: int, queue_ns: int = 0) -> None:
        """One request finished (successfully or not) after ``duration_ns``, ``queue_ns`` of it queued."""
        with self._lock:
            (self.success if ok else self.fail).add(duration_ns)
            if ok:
                self.queue.add(queue_ns)
                self.latency_counts[bisect_left(_BOUNDS_NS, duration_ns)] += 1

    def record_execution(self, batch: int, requests: int, input_ns: int, infer_ns: int, output_ns: int) -> None:
        """One backend execution of ``batch`` samples gathered from ``requests`` requests."""
        with self._lock:
            self.execution_count += 1
            self.inference_count += batch
            self.last_inference_ms = int(time.time() * 1000)
            self.compute_input.add(input_ns, requests)
            self.compute_infer.add(infer_ns, requests)
            self.compute_output.add(output_ns, requests)
            self.batches.setdefault(batch, _Duration()).add(infer_ns)

    def histogram(self) -> Dict[str, List[Any]]:
        """The latency histogram of successful requests so far: bucket bounds (ms) and counts (+ overflow)."""
        with self._lock:
            counts = list(self.latency_counts)
        return {"bounds_ms": list(LATENCY_BOUNDS_MS), "counts": counts}

    def latency_snapshot(self) -> LatencySnapshot:
        """Request and failure counts with the histogram, read under one lock (telemetry takes deltas)."""
        with self._lock:
            return LatencySnapshot(self.success.count + self.fail.count, self.fail.count,
                                   tuple(self.latency_counts), self.success.ns)

    def snapshot(self, name: str, version: str) -> Dict[str, Any]:
        """Triton's ``model_stats`` entry for this model version."""
        with self._lock:
            def pair(d: _Duration) -> Dict[str, int]:
                return {"count": d.count, "ns": d.ns}

            return {
                "name": name,
                "version": version,
                "last_inference": self.last_inference_ms,
                "inference_count": self.inference_count,
                "execution_count": self.execution_count,
                "inference_stats": {
                    "success": pair(self.success),
                    "fail": pair(self.fail),
                    "queue": pair(self.queue),
                    "compute_input": pair(self.compute_input),
                    "compute_infer": pair(self.compute_infer),
                    "compute_output": pair(self.compute_output),
                    "cache_hit": {"count": 0, "ns": 0},
                    "cache_miss": {"count": 0, "ns": 0},
                },
                "batch_stats": [
                    {"batch_size": size, "compute_infer": pair(d)} for size, d in sorted(self.batches.items())
                ],
            }
