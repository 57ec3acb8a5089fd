"""The dynamic batcher, worker threads and request lifecycle, with the fake backend."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable, List

import numpy as np
import pytest

from edge_runtime.backends.fake import FakeBackend
from edge_runtime.bundle.manifest import TensorSpec
from edge_runtime.config import BatchingSettings
from edge_runtime.errors import (
    InferenceError,
    ModelNotReadyError,
    QueueFullError,
    RequestError,
    RequestTimeoutError,
)
from edge_runtime.serving.batcher import PendingRequest, RequestQueue
from edge_runtime.serving.model import ServedModel


def _x(batch: int, width: int = 16, value: float = 1.0) -> dict:
    return {"INPUT0": np.full((batch, width), value, np.float32)}


def _concurrently(model: ServedModel, requests: List[dict]) -> List[object]:
    barrier = threading.Barrier(len(requests))

    def call(inputs: dict) -> object:
        barrier.wait()
        try:
            return model.infer(inputs)
        except Exception as exc:
            return exc

    with ThreadPoolExecutor(len(requests)) as pool:
        return list(pool.map(call, requests))


def test_concurrent_requests_are_batched_and_split_back(serve: Callable[..., ServedModel]) -> None:
    backend = FakeBackend(delay_s=0.05)
    model = serve(backend, batching={"max_batch_size": 8, "max_queue_delay_us": 20000})
    results = _concurrently(model, [_x(1, value=float(i)) for i in range(8)])
    for i, result in enumerate(results):
        assert isinstance(result, dict)
        np.testing.assert_array_equal(result["OUTPUT0"], np.full((1, 16), 2.0 * i + 1.0, np.float32))
    assert max(backend.batch_sizes[2:]) > 1  # after the two warm-up runs, requests were combined
    assert model.stats.snapshot("m", "1")["inference_count"] == 8


def test_batching_disabled_runs_requests_one_by_one(serve: Callable[..., ServedModel]) -> None:
    backend = FakeBackend(delay_s=0.02)
    model = serve(backend, batching={"enabled": False})
    _concurrently(model, [_x(1) for _ in range(4)])
    assert backend.batch_sizes[2:] == [1, 1, 1, 1]


def test_requests_with_different_shapes_are_not_mixed(serve: Callable[..., ServedModel]) -> None:
    spec_in = (TensorSpec(name="INPUT0", dtype="float32", shape=(-1, -1)),)
    spec_out = (TensorSpec(name="OUTPUT0", dtype="float32", shape=(-1, -1)),)
    backend = FakeBackend(spec_in, spec_out, delay_s=0.05)
    model = serve(backend, batching={"max_batch_size": 8, "max_queue_delay_us": 20000})
    results = _concurrently(model, [_x(1, width=4), _x(1, width=8), _x(1, width=4), _x(1, width=8)])
    assert [r["OUTPUT0"].shape for r in results] == [(1, 4), (1, 8), (1, 4), (1, 8)]  # type: ignore[index]


def test_full_queue_answers_at_once(serve: Callable[..., ServedModel]) -> None:
    model = serve(FakeBackend(delay_s=0.3), batching={"enabled": False, "max_queue_size": 1})
    results = _concurrently(model, [_x(1) for _ in range(4)])
    assert any(isinstance(r, QueueFullError) for r in results)
    assert any(isinstance(r, dict) for r in results)
    assert QueueFullError.http_status == 503


def test_request_timeout(serve: Callable[..., ServedModel]) -> None:
    backend = FakeBackend()
    model = serve(backend, request_timeout_s=0.05)
    backend.delay_s = 0.5  # slow it down after warm-up
    with pytest.raises(RequestTimeoutError, match=r"within 0\.05 s"):
        model.infer(_x(1))


def test_backend_failure_fails_the_request_and_the_worker_survives(serve: Callable[..., ServedModel]) -> None:
    backend = FakeBackend()
    model = serve(backend)
    backend.fail = True
    with pytest.raises(InferenceError):
        model.infer(_x(1))
    backend.fail = False
    assert model.infer(_x(1))["OUTPUT0"][0, 0] == 3.0
    stats = model.stats.snapshot("m", "1")["inference_stats"]
    assert stats["fail"]["count"] == 1 and stats["success"]["count"] == 1


@pytest.mark.parametrize(
    "inputs, message",
    [
        ({"INPUT0": np.zeros((1, 16), np.float64)}, "is float64"),
        ({"INPUT0": np.zeros((1, 15), np.float32)}, "has shape"),
        ({"INPUT0": np.zeros((9, 16), np.float32)}, "outside 1..8"),
        ({}, "missing input 'INPUT0'"),
        ({"INPUT0": np.zeros((1, 16), np.float32), "X": np.zeros(1)}, "unknown input 'X'"),
    ],
    ids=["dtype", "shape", "batch-over-max", "missing", "extra"],
)
def test_invalid_inputs_are_refused_before_queueing(serve: Callable[..., ServedModel], inputs: dict,
                                                    message: str) -> None:
    backend = FakeBackend()
    model = serve(backend)
    calls = backend.calls
    with pytest.raises(RequestError, match=message):
        model.infer(inputs)
    assert backend.calls == calls


def test_stop_drains_queued_requests_then_refuses(serve: Callable[..., ServedModel]) -> None:
    model = serve(FakeBackend(delay_s=0.05), batching={"enabled": False})
    with ThreadPoolExecutor(3) as pool:
        futures = [pool.submit(model.infer, _x(1)) for _ in range(3)]
        threading.Timer(0.02, model.stop, kwargs={"drain_timeout_s": 5.0}).start()
        results = [f.result() for f in futures]
    assert all(r["OUTPUT0"].shape == (1, 16) for r in results)
    with pytest.raises(ModelNotReadyError):
        model.infer(_x(1))


def test_a_model_that_cannot_load_raises_and_is_not_ready(serve: Callable[..., ServedModel]) -> None:
    backend = FakeBackend(fail=True)  # warm-up runs the backend, which fails
    with pytest.raises(InferenceError):
        serve(backend)


def test_a_backend_factory_that_raises_fails_the_load_instead_of_hanging(device_configs_dir: Path) -> None:
    from serving_support import settings

    from edge_runtime.backends.registry import create_backend
    from edge_runtime.config import load_device_config
    from edge_runtime.errors import ConfigError

    device = load_device_config(device_configs_dir / "x86-cpu.yaml")
    model = ServedModel("m", "1", lambda: create_backend("no-such-backend"), None, device, settings())
    with pytest.raises(ConfigError, match="unknown backend 'no-such-backend'"):
        model.start(timeout_s=5.0)  # the old worker died before resolving `ready`: a 5 s TimeoutError
    assert not model.ready


# --- requests of several samples: a batch never goes past max_batch_size ----------------------


def _queue(max_batch_size: int = 8) -> RequestQueue:
    queue = RequestQueue(BatchingSettings(max_batch_size=max_batch_size, max_queue_delay_us=1000))
    queue.set_max_batch_size(max_batch_size)
    return queue


def _batches(queue: RequestQueue, samples: List[int]) -> List[List[int]]:
    """Queue requests of ``samples`` samples each, then the sample counts of the batches taken."""
    for count in samples:
        queue.put(PendingRequest(_x(count), count))
    queue.close()
    taken = []
    batch = queue.take_batch()
    while batch is not None:
        taken.append([item.batch for item in batch])
        batch = queue.take_batch()
    return taken


def test_two_queued_five_sample_requests_are_not_merged_under_max_batch_8() -> None:
    assert _batches(_queue(8), [5, 5]) == [[5], [5]]


def test_a_request_that_fits_joins_the_batch_past_one_that_does_not() -> None:
    assert _batches(_queue(8), [5, 5, 3]) == [[5, 3], [5]]
    assert _batches(_queue(8), [4, 4, 4]) == [[4, 4], [4]]


def test_two_concurrent_five_sample_requests_under_max_batch_8_both_succeed(
    serve: Callable[..., ServedModel],
) -> None:
    backend = FakeBackend(delay_s=0.05)
    model = serve(backend, batching={"max_batch_size": 8, "max_queue_delay_us": 20000})
    results = _concurrently(model, [_x(5, value=1.0), _x(5, value=2.0)])
    for value, result in zip((1.0, 2.0), results):
        assert isinstance(result, dict), result
        np.testing.assert_array_equal(result["OUTPUT0"], np.full((5, 16), 2.0 * value + 1.0, np.float32))
    assert max(backend.batch_sizes) <= 8
