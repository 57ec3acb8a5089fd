"""Model workers beat while they wait for work and go overdue when stuck in one batch (the watchdog's input)."""

from __future__ import annotations

import contextlib
import threading
import time
from typing import Callable, List

import numpy as np

from edge_runtime.backends.fake import FakeBackend
from edge_runtime.config import BatchingSettings
from edge_runtime.serving import liveness
from edge_runtime.serving.batcher import RequestQueue
from edge_runtime.serving.model import ServedModel

WORKER = "model worker m-1-0"


def eventually(condition: Callable[[], bool], timeout_s: float = 20.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return False


def test_an_idle_worker_keeps_beating_and_one_stuck_in_a_batch_goes_overdue(
        serve: Callable[..., ServedModel]) -> None:
    backend = FakeBackend()
    model = serve(backend, warmup_runs=0, request_timeout_s=0.3)  # a batch may run 0.3 s (+ 1 s idle wake)
    # Idle longer than the promise (1.3 s): the wait for work wakes and beats, so never overdue.
    checked: List[bool] = []
    deadline = time.monotonic() + 2.5
    while time.monotonic() < deadline:
        checked.append(WORKER in liveness.WORKERS.overdue())
        time.sleep(0.1)
    assert not any(checked)
    backend.delay_s = 3.0  # the next batch runs ten times the request time-out
    requester = threading.Thread(target=lambda: _infer_ignoring_timeout(model), daemon=True)
    requester.start()
    assert eventually(lambda: WORKER in liveness.WORKERS.overdue())
    assert eventually(lambda: WORKER not in liveness.WORKERS.overdue())  # the batch ended: progress again
    requester.join(10)


def _infer_ignoring_timeout(model: ServedModel) -> None:
    with contextlib.suppress(Exception):  # it times out: only the worker's heartbeat is looked at
        model.infer({"INPUT0": np.zeros((1, 16), dtype=np.float32)})


def test_a_worker_leaves_the_watch_when_its_model_stops(serve: Callable[..., ServedModel]) -> None:
    model = serve(FakeBackend(), warmup_runs=0)
    before = len(liveness.WORKERS)
    model.stop(drain_timeout_s=5.0)
    assert len(liveness.WORKERS) == before - 1


def test_take_batch_returns_an_empty_batch_after_the_idle_wait_and_none_once_closed() -> None:
    queue = RequestQueue(BatchingSettings())
    assert queue.take_batch(idle_s=0.05) == []
    queue.close()
    assert queue.take_batch(idle_s=0.05) is None
