"""One model instance: a worker thread that owns its backend from load to close.

The thread that loads the backend is the one that runs it and closes it: TensorRT's CUDA
context is per thread, and ONNX Runtime sessions are simplest kept to one caller. The worker
takes batches from the model's queue, concatenates compatible requests, runs the backend,
splits the outputs, and resolves each request's future.
"""

from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import Future
from typing import Callable, Dict, List, Optional

import numpy as np

from edge_runtime.backends.base import Backend, BackendOptions
from edge_runtime.bundle.verify import VerifiedBundle
from edge_runtime.config import DeviceConfig
from edge_runtime.errors import EdgeRuntimeError, InferenceError
from edge_runtime.liveness import Heartbeat
from edge_runtime.serving import liveness
from edge_runtime.serving.batcher import PendingRequest, RequestQueue
from edge_runtime.serving.stats import ModelStats

log = logging.getLogger(__name__)


def warm_up(backend: Backend, runs: int) -> None:
    """Run zeros through the backend at batch 1 and at its largest batch, ``runs`` times each."""
    if any(-1 in spec.shape[1 if backend.max_batch_size else 0 :] for spec in backend.inputs):
        log.info("warm-up skipped: the model has dynamic non-batch dimensions")
        return
    sizes = sorted({1, backend.max_batch_size}) if backend.max_batch_size else [0]
    for size in sizes:
        feed = {
            spec.name: np.zeros((size, *spec.shape[1:]) if size else spec.shape, dtype=spec.dtype)
            for spec in backend.inputs
        }
        for _ in range(runs):
            backend.infer(feed)


class ModelInstance(threading.Thread):
    """A worker thread: load → warm up → report ready → serve batches → close."""

    def __init__(
        self,
        label: str,
        backend_factory: Callable[[], Backend],
        bundle: Optional[VerifiedBundle],
        device: DeviceConfig,
        options: BackendOptions,
        queue: RequestQueue,
        stats: ModelStats,
        warmup_runs: int,
        stall_limit_s: float = 30.0,
    ) -> None:
        super().__init__(name=f"model-{label}", daemon=True)
        self._label, self._stall_limit_s = label, stall_limit_s
        self._factory, self._bundle, self._device, self._options = backend_factory, bundle, device, options
        self._queue, self._stats, self._warmup_runs = queue, stats, warmup_runs
        self.ready: Future = Future()  # resolves to the loaded Backend, or to the load error

    def run(self) -> None:
        backend: Optional[Backend] = None
        try:
            backend = self._factory()  # may raise too (e.g. an unknown backend): the load must fail, not hang
            backend.load(self._bundle, self._device, self._options)
            warm_up(backend, self._warmup_runs)
        except BaseException as exc:
            if backend is not None:
                backend.close()
            self.ready.set_exception(exc)
            return
        self.ready.set_result(backend)
        try:
            self._serve(backend)
        finally:
            backend.close()

    def _serve(self, backend: Backend) -> None:
        """Batches until the queue closes, beating each turn (a worker whose thread dies stays overdue)."""
        promise_s = liveness.worker_promise_s(self._stall_limit_s)
        heartbeat = liveness.WORKERS.add(Heartbeat(f"model worker {self._label}", promise_s))
        while True:
            heartbeat.beat(promise_s)  # the hot path's whole cost: one clock read and one attribute store
            batch = self._queue.take_batch(liveness.IDLE_WAKE_S)
            if batch is None:
                break
            if batch:
                self._execute(backend, batch)
        liveness.WORKERS.discard(heartbeat)

    def _execute(self, backend: Backend, batch: List[PendingRequest]) -> None:
        start = time.perf_counter_ns()
        batch = [r for r in batch if r.future.set_running_or_notify_cancel()]  # drop timed-out ones
        if not batch:
            return
        for request in batch:
            request.queue_ns = start - request.enqueued_ns
        try:
            inputs = _concatenate(batch)
            gathered = time.perf_counter_ns()
            outputs = backend.infer(inputs)
            computed = time.perf_counter_ns()
            _split(batch, outputs, batched=backend.max_batch_size > 0)
        except EdgeRuntimeError as exc:
            for request in batch:
                request.future.set_exception(exc)
            return
        except Exception as exc:  # a backend bug must fail the requests, not kill the worker
            log.exception("inference failed")
            error = InferenceError(f"inference failed: {type(exc).__name__}: {exc}")
            for request in batch:
                request.future.set_exception(error)
            return
        samples = sum(r.batch for r in batch)
        self._stats.record_execution(samples, len(batch), gathered - start, computed - gathered,
                                     time.perf_counter_ns() - computed)


def _concatenate(batch: List[PendingRequest]) -> Dict[str, np.ndarray]:
    if len(batch) == 1:
        return batch[0].inputs
    return {name: np.concatenate([r.inputs[name] for r in batch]) for name in batch[0].inputs}


def _split(batch: List[PendingRequest], outputs: Dict[str, np.ndarray], batched: bool) -> None:
    if len(batch) == 1 or not batched:
        batch[0].future.set_result(outputs)
        return
    start = 0
    for request in batch:
        end = start + request.batch
        request.future.set_result({name: array[start:end] for name, array in outputs.items()})
        start = end
