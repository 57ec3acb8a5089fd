"""A served model version: its worker instances, its request queue, its statistics and state."""

from __future__ import annotations

import concurrent.futures
import logging
import threading
import time
from typing import Any, Callable, Dict, List, Mapping, Optional, Tuple

import numpy as np

from edge_runtime.backends.base import Backend, BackendOptions, check_inputs
from edge_runtime.bundle.manifest import TensorSpec
from edge_runtime.bundle.verify import VerifiedBundle
from edge_runtime.config import DeviceConfig, RuntimeSettings
from edge_runtime.errors import ModelNotReadyError, RequestTimeoutError
from edge_runtime.serving.batcher import PendingRequest, RequestQueue
from edge_runtime.serving.instance import ModelInstance
from edge_runtime.serving.stats import ModelStats

log = logging.getLogger(__name__)

LOADING, READY, UNLOADING, UNAVAILABLE = "LOADING", "READY", "UNLOADING", "UNAVAILABLE"


class ServedModel:
    """One version of one model, served by ``settings.instances`` worker threads."""

    def __init__(
        self,
        name: str,
        version: str,
        backend_factory: Callable[[], Backend],
        bundle: Optional[VerifiedBundle],
        device: DeviceConfig,
        settings: RuntimeSettings,
    ) -> None:
        self.name, self.version, self.bundle = name, version, bundle
        self._factory, self._device, self._settings = backend_factory, device, settings
        self.state = LOADING
        self.stats = ModelStats()
        self.inputs: Tuple[TensorSpec, ...] = ()
        self.outputs: Tuple[TensorSpec, ...] = ()
        self.max_batch_size = 0
        self.platform = ""
        self.artifact = ""
        self.memory_mb = 0.0  # counted against the device's memory budget (set by the repository)
        # Which backend serves and why, when it is not simply the device config's (e.g. a fallback).
        self.backend_note = ""
        # Set by the memory budget before start: backends that know their need call it before taking it.
        self.memory_check: Optional[Callable[[float], None]] = None
        self._queue: Optional[RequestQueue] = None
        self._instances: List[ModelInstance] = []
        self._lock = threading.Lock()
        # Requests that got this model from the table and have not finished: stop() waits for them,
        # so a request that found the old version just before a swap is still answered by it.
        self._holders = 0
        self._released = threading.Condition(self._lock)

    @property
    def ready(self) -> bool:
        return self.state == READY

    @property
    def device(self) -> DeviceConfig:
        """The device config this version is served for."""
        return self._device

    @property
    def settings(self) -> RuntimeSettings:
        """The settings this version is served with (the runtime's, or a load request's override)."""
        return self._settings

    def start(self, timeout_s: float = 600.0) -> None:
        """Load and warm up every instance; READY only when all are. Raises the first load error."""
        wanted = min(self._settings.batching.max_batch_size, self._device.batch.max)
        options = BackendOptions(max_batch_size=wanted, intra_op_threads=self._settings.intra_op_threads,
                                 spinning=self._settings.intra_op_spinning,
                                 engine_cache_dir=self._settings.resolve(self._settings.engine_cache_dir),
                                 memory_check=self.memory_check, progress=self._progress)
        self._queue = RequestQueue(self._settings.batching)
        self._instances = [
            ModelInstance(f"{self.name}-{self.version}-{i}", self._factory, self.bundle, self._device, options,
                          self._queue, self.stats, self._settings.warmup_runs, self._settings.request_timeout_s)
            for i in range(self._settings.instances)
        ]
        for instance in self._instances:
            instance.start()
        try:
            backends = [instance.ready.result(timeout=timeout_s) for instance in self._instances]
        except BaseException:
            self.stop(drain_timeout_s=1.0)
            raise
        first = backends[0]
        self.inputs, self.outputs, self.max_batch_size = first.inputs, first.outputs, first.max_batch_size
        self.platform, self.artifact = first.name, first.artifact
        self._queue.set_max_batch_size(self.max_batch_size)  # known only once a backend has loaded
        self.state = READY

    def _progress(self, message: str) -> None:
        log.info("model %s version %s: %s", self.name, self.version, message)

    def infer(self, inputs: Mapping[str, np.ndarray], timeout_s: Optional[float] = None) -> Dict[str, np.ndarray]:
        """Validate, queue, wait for the result; records statistics for success and failure."""
        start = time.perf_counter_ns()
        ok = False
        request: Optional[PendingRequest] = None
        try:
            if self.state != READY or self._queue is None:
                raise ModelNotReadyError(f"model '{self.name}' version {self.version} is not ready ({self.state})")
            check_inputs(self.inputs, inputs, self.max_batch_size)
            batch = len(next(iter(inputs.values()))) if self.max_batch_size else 1
            request = PendingRequest(dict(inputs), batch)
            self._queue.put(request)
            outputs = self._wait(request, timeout_s or self._settings.request_timeout_s)
            ok = True
            return outputs
        finally:
            queue_ns = request.queue_ns if request is not None else 0
            self.stats.record_request(ok, time.perf_counter_ns() - start, queue_ns)

    def _wait(self, request: PendingRequest, timeout_s: float) -> Dict[str, np.ndarray]:
        try:
            return request.future.result(timeout=timeout_s)
        except concurrent.futures.TimeoutError:
            request.future.cancel()  # the worker skips it if it has not started it yet
            raise RequestTimeoutError(f"no result from model '{self.name}' within {timeout_s:g} s") from None

    def hold(self) -> None:
        """A request got this model (under the table's lock): stop() waits for its release."""
        with self._lock:
            self._holders += 1

    def release(self) -> None:
        """The request that held this model has finished."""
        with self._lock:
            self._holders -= 1
            if self._holders == 0:
                self._released.notify_all()

    def stop(self, drain_timeout_s: float) -> None:
        """Wait for the requests holding this model, refuse new ones, drain the queue, close the backends."""
        deadline = time.monotonic() + drain_timeout_s
        with self._lock:
            if self.state in (UNLOADING, UNAVAILABLE):
                return
            self._released.wait_for(lambda: self._holders == 0, timeout=drain_timeout_s)
            self.state = UNLOADING
        if self._queue is not None:
            self._queue.close()
        for instance in self._instances:
            instance.join(max(0.0, deadline - time.monotonic()))
        if self._queue is not None:
            for request in self._queue.abandon():
                request.future.set_exception(ModelNotReadyError(f"model '{self.name}' was unloaded"))
        alive = [i.name for i in self._instances if i.is_alive()]
        if alive:
            log.warning("model %s: %d worker(s) still busy after %.1f s", self.name, len(alive), drain_timeout_s)
        self.state = UNAVAILABLE

    def describe(self) -> Dict[str, Any]:
        """Facts for metadata/config endpoints."""
        return {"name": self.name, "version": self.version, "platform": self.platform, "artifact": self.artifact,
                "max_batch_size": self.max_batch_size, "state": self.state}

