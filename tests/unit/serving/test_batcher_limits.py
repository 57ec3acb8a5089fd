"""The request queue's limits: its size, the batch limit, preferred sizes, and how long a batch waits."""

from __future__ import annotations

import threading
import time
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import pytest

from edge_runtime.config import BatchingSettings
from edge_runtime.errors import ModelNotReadyError, QueueFullError
from edge_runtime.serving.batcher import PendingRequest, RequestQueue

LONG_DELAY_US = 10_000_000  # 10 s: far more than a test takes to queue its late requests


def request(samples: int = 1, waited_s: float = 0.0) -> PendingRequest:
    """A request of ``samples`` rows of the same shape as every other, queued ``waited_s`` ago."""
    inputs: Dict[str, np.ndarray] = {"x": np.zeros((samples, 4), np.float32)}
    return PendingRequest(inputs, samples, enqueued_ns=time.perf_counter_ns() - int(waited_s * 1e9))


def queue_of(max_batch_size: int, *, delay_us: int = 0, preferred: Sequence[int] = (), size: int = 64,
             enabled: bool = True, backend_limit: bool = True) -> RequestQueue:
    """A queue whose backend allows ``max_batch_size`` (unless ``backend_limit`` is false: not yet known)."""
    queue = RequestQueue(BatchingSettings(enabled=enabled, max_batch_size=max_batch_size, max_queue_delay_us=delay_us,
                                          preferred_batch_sizes=tuple(preferred), max_queue_size=size))
    if backend_limit:
        queue.set_max_batch_size(max_batch_size)
    return queue


def take_while_queueing(queue: RequestQueue, late: List[PendingRequest]) -> Tuple[List[PendingRequest], int]:
    """take_batch() in a worker; once it holds what was queued, queue ``late`` and close: (its batch, requests left).

    The worker holds the queue's lock from taking the queued requests until it waits for more (or returns), so
    the queue reads empty only then: ``late`` always arrives after the first requests were taken.
    """
    taken: List[List[PendingRequest]] = []
    worker = threading.Thread(target=lambda: taken.append(queue.take_batch() or []))
    worker.start()
    while len(queue):
        pass
    for item in late:
        queue.put(item)
    queue.close()
    worker.join()
    return taken[0], len(queue)


def test_until_the_backend_states_its_limit_requests_are_taken_one_at_a_time() -> None:
    queue = queue_of(8, backend_limit=False)
    first, second = request(), request()
    queue.put(first)
    queue.put(second)
    assert queue.take_batch() == [first]
    assert queue.take_batch() == [second]


def test_a_backend_limit_of_two_batches_two_requests() -> None:
    queue = queue_of(2)
    first, second = request(), request()
    queue.put(first)
    queue.put(second)
    assert queue.take_batch() == [first, second]


@pytest.mark.parametrize("limit", [0, 1])
def test_a_backend_limit_below_two_takes_requests_one_at_a_time(limit: int) -> None:
    queue = queue_of(8, backend_limit=False)
    queue.set_max_batch_size(limit)
    first, second = request(0), request()  # even a request of no rows is a batch of its own
    queue.put(first)
    queue.put(second)
    assert queue.take_batch() == [first]


def test_with_batching_disabled_requests_are_taken_one_at_a_time() -> None:
    queue = queue_of(8, enabled=False)
    first, second = request(0), request()
    queue.put(first)
    queue.put(second)
    assert queue.take_batch() == [first]


def test_a_full_batch_takes_no_more_requests_not_even_empty_ones() -> None:
    queue = queue_of(2)
    items = [request(), request(), request(0)]
    for item in items:
        queue.put(item)
    assert queue.take_batch() == items[:2]
    assert queue.take_batch() == items[2:]


def test_a_full_batch_is_handed_over_without_waiting_out_the_delay() -> None:
    queue = queue_of(2, delay_us=3600 * 1_000_000)  # an hour: a worker that waited it out would still be waiting
    items = [request(), request()]
    for item in items:
        queue.put(item)
    taken: List[List[PendingRequest]] = []
    worker = threading.Thread(target=lambda: taken.append(queue.take_batch() or []))
    worker.start()
    worker.join(30)  # a bound on a hang, not a timing: the batch is full, nothing is left to wait for
    waiting = worker.is_alive()
    queue.close()  # wakes a worker that is waiting, so that the test leaves no thread behind
    worker.join()
    assert not waiting, "a full batch waited for more requests"
    assert taken == [items]


def test_a_batch_waits_for_more_requests_until_its_oldest_has_waited_the_delay() -> None:
    queue = queue_of(4, delay_us=LONG_DELAY_US)
    first = request(waited_s=1.0)  # 1 s of the 10 s delay already spent: the batch still waits
    queue.put(first)
    late = [request(), request(), request()]
    assert take_while_queueing(queue, late) == ([first, *late], 0)


def test_a_batch_whose_oldest_request_waited_the_delay_is_handed_over_as_it_is() -> None:
    queue = queue_of(4, delay_us=1_000_000)
    first = request(waited_s=2.0)
    queue.put(first)
    late = [request()]
    assert take_while_queueing(queue, late) == ([first], 1)


def test_a_batch_of_a_preferred_size_is_handed_over_without_waiting_for_more() -> None:
    queue = queue_of(4, delay_us=LONG_DELAY_US, preferred=[2])
    items = [request(), request()]
    for item in items:
        queue.put(item)
    late = [request()]
    assert take_while_queueing(queue, late) == (items, 1)


def test_a_full_queue_refuses_the_next_request_at_once() -> None:
    queue = queue_of(8, size=2)
    queue.put(request())
    queue.put(request())
    with pytest.raises(QueueFullError) as info:
        queue.put(request())
    assert str(info.value) == "the model's queue is full (2 requests); retry later"
    assert len(queue) == 2


def test_a_closed_queue_refuses_new_requests_and_hands_over_the_queued_ones() -> None:
    queue = queue_of(8)
    queued = request()
    queue.put(queued)
    queue.close()
    with pytest.raises(ModelNotReadyError) as info:
        queue.put(request())
    assert str(info.value) == "the model is unloading"
    assert queue.take_batch() == [queued]
    assert queue.take_batch() is None


@pytest.mark.parametrize("idle_s", [None, 10.0])
def test_a_worker_on_an_empty_queue_waits_for_the_next_request(idle_s: Optional[float]) -> None:
    queue = queue_of(4)
    item = request()
    taken: List[Optional[List[PendingRequest]]] = []
    started = threading.Event()

    def work() -> None:
        started.set()
        taken.append(queue.take_batch(idle_s))

    worker = threading.Thread(target=work)
    worker.start()
    started.wait()
    queue.put(item)  # usually after the worker started waiting; either way the worker gets it
    worker.join()
    assert taken == [[item]]


def test_an_idle_worker_gets_an_empty_batch_and_a_closed_queue_none() -> None:
    queue = queue_of(4)
    assert queue.take_batch(0.0) == []
    queue.close()
    assert queue.take_batch(0.0) is None


def test_an_idle_worker_waits_its_whole_idle_time_before_an_empty_batch() -> None:
    # The worker's heartbeat period: an empty queue must not make it return early and spin. A lower bound
    # only (Condition.wait never returns before its time-out without a notify), so it cannot be flaky.
    queue = queue_of(4)
    started = time.monotonic()
    assert queue.take_batch(0.3) == []
    assert time.monotonic() - started >= 0.3
