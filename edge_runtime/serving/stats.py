"""Per-model inference statistics, shaped like Triton's (the /stats endpoint and /metrics read them).

Counters only go up; durations are cumulative nanoseconds, as Triton reports them. One lock per
model: updates are a handful of integer additions per batch, far below inference cost.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any, Dict


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
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def record_request(self, ok: bool, duration_ns: int, queue_ns: int = 0) -> None:
        """One request finished (successfully or not) after ``duration_ns``, ``queue_ns`` of it queued."""
        with self._lock:
            (self.success if ok else self.fail).add(duration_ns)
            if ok:
                self.queue.add(queue_ns)

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
