"""A bounded request queue that hands worker threads dynamic batches, as Triton's dynamic batcher.

A worker takes the oldest request, then keeps adding queued requests whose non-batch shapes
match, until the batch holds ``max_batch_size`` samples, reaches a preferred size, or the oldest
request has waited ``max_queue_delay_us``. The queue is bounded: a full queue refuses at once
(QueueFullError → 503) instead of letting callers pile up, and a closed queue refuses too.
"""

from __future__ import annotations

import collections
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Deque, Dict, List, Optional, Tuple

import numpy as np

from edge_runtime.config import BatchingSettings
from edge_runtime.errors import ModelNotReadyError, QueueFullError


@dataclass
class PendingRequest:
    """One request's inputs, its sample count, and the future its caller waits on."""

    inputs: Dict[str, np.ndarray]
    batch: int
    future: Future = field(default_factory=Future)  # resolves to Dict[str, np.ndarray]
    enqueued_ns: int = field(default_factory=time.perf_counter_ns)
    queue_ns: int = 0  # set by the worker when it picks the request up

    @property
    def shape_key(self) -> Tuple[Tuple[str, Tuple[int, ...]], ...]:
        """Requests batch together only when every input's non-batch shape matches."""
        return tuple((name, array.shape[1:]) for name, array in self.inputs.items())


class RequestQueue:
    """The queue between request threads and one model's worker threads."""

    def __init__(self, policy: BatchingSettings) -> None:
        self._policy = policy
        self._max_batch = 1
        self._delay_ns = policy.max_queue_delay_us * 1000
        self._preferred = set(policy.preferred_batch_sizes)
        self._items: Deque[PendingRequest] = collections.deque()
        self._cond = threading.Condition()
        self._closed = False

    def set_max_batch_size(self, max_batch_size: int) -> None:
        """The backend's batch limit (0: no batch axis); batching happens only when enabled and > 1."""
        with self._cond:
            self._max_batch = max_batch_size if self._policy.enabled and max_batch_size > 1 else 1

    def __len__(self) -> int:
        with self._cond:
            return len(self._items)

    def put(self, request: PendingRequest) -> None:
        """Queue ``request`` or refuse at once: QueueFullError when full, ModelNotReadyError when closed."""
        with self._cond:
            if self._closed:
                raise ModelNotReadyError("the model is unloading")
            if len(self._items) >= self._policy.max_queue_size:
                raise QueueFullError(f"the model's queue is full ({self._policy.max_queue_size} requests); retry later")
            self._items.append(request)
            self._cond.notify()

    def close(self) -> None:
        """Refuse new requests from now on; workers go on draining what is queued."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def abandon(self) -> List[PendingRequest]:
        """Remove and return every queued request (after a drain timed out)."""
        with self._cond:
            left = list(self._items)
            self._items.clear()
            return left

    def take_batch(self, idle_s: Optional[float] = None) -> Optional[List[PendingRequest]]:
        """Block for the next batch; None once the queue is closed and empty; [] after ``idle_s`` with none."""
        with self._cond:
            if not self._items and not self._closed:
                self._wait_for_work(idle_s)  # a worker wakes after idle_s to beat its heartbeat
            if not self._items:
                return None if self._closed else []
            first = self._items.popleft()
            batch, total = [first], first.batch
            if self._max_batch <= 1:
                return batch
            deadline = first.enqueued_ns + self._delay_ns
            while total < self._max_batch:
                total = self._take_compatible(first.shape_key, batch, total)
                if total >= self._max_batch or total in self._preferred or self._closed:
                    break
                remaining = deadline - time.perf_counter_ns()
                if remaining <= 0:
                    break
                self._cond.wait(remaining / 1e9)
            return batch

    def _wait_for_work(self, idle_s: Optional[float]) -> None:
        """Wait (lock held) until a request is queued, the queue closes, or ``idle_s`` passes."""
        deadline = None if idle_s is None else time.monotonic() + idle_s
        while not self._items and not self._closed:
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                return
            self._cond.wait(remaining)

    def _take_compatible(self, key: Tuple, batch: List[PendingRequest], total: int) -> int:
        kept: Deque[PendingRequest] = collections.deque()
        while self._items:
            item = self._items.popleft()
            if total < self._max_batch and item.shape_key == key and total + item.batch <= self._max_batch:
                batch.append(item)
                total += item.batch
            else:
                kept.append(item)
        self._items = kept
        return total
