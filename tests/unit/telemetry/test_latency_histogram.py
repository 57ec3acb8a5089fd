"""The serving statistics' latency histogram, percentiles from buckets, and per-interval model figures."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any, List

import pytest

from edge_runtime.serving.stats import LATENCY_BOUNDS_MS, ModelStats
from edge_runtime.telemetry.model_stats import ModelIntervals, percentile

MS = 1_000_000  # ns


def _model(name: str = "digits", version: str = "1", stats: Any = None) -> Any:
    return SimpleNamespace(name=name, version=version, platform="onnxruntime", memory_mb=13.25,
                           stats=stats if stats is not None else ModelStats())


def test_each_request_lands_in_the_bucket_whose_bound_it_does_not_exceed() -> None:
    stats = ModelStats()
    for ms in (0.1, 0.25, 0.26, 1.0, 4.9, 5000.0, 5000.1, 60_000.0):
        stats.record_request(True, int(ms * MS))
    stats.record_request(False, 3 * MS)  # failures are counted, but not in the latency histogram
    histogram = stats.histogram()
    assert histogram["bounds_ms"] == list(LATENCY_BOUNDS_MS)
    expected = [0] * (len(LATENCY_BOUNDS_MS) + 1)
    for index in (0, 0, 1, 2, 4, 13, 14, 14):
        expected[index] += 1
    assert histogram["counts"] == expected
    snapshot = stats.latency_snapshot()
    assert (snapshot.requests, snapshot.failures, list(snapshot.counts)) == (9, 1, expected)
    assert snapshot.sum_ns == stats.success.ns


def test_percentiles_on_known_data() -> None:
    bounds = [1.0, 2.0, 5.0, 10.0]
    # 100 requests: 50 in (0, 1], 40 in (1, 2], 9 in (2, 5], 1 in (5, 10]
    counts = [50, 40, 9, 1, 0]
    assert percentile(bounds, counts, 0.5) == pytest.approx(1.0)
    assert percentile(bounds, counts, 0.9) == pytest.approx(2.0)
    assert percentile(bounds, counts, 0.99) == pytest.approx(5.0)
    assert percentile(bounds, counts, 0.25) == pytest.approx(0.5)  # linear within the first bucket from 0
    assert percentile(bounds, counts, 0.95) == pytest.approx(2.0 + 3.0 * 5 / 9)
    assert percentile(bounds, [0, 0, 0, 0, 0], 0.5) is None
    assert percentile(bounds, [0, 0, 0, 0, 3], 0.5) == 10.0  # overflow: "at least the last bound"


def test_interval_figures_are_deltas_of_the_cumulative_counters() -> None:
    model = _model()
    intervals = ModelIntervals(lambda: [model])
    for _ in range(100):
        model.stats.record_request(True, 3 * MS)
    first = intervals.sample()
    assert [(e["requests"], e["failures"]) for e in first] == [(100, 0)]
    assert first[0]["p50_ms"] == pytest.approx(3.5) and first[0]["p99_ms"] == pytest.approx(4.97)
    assert {k: first[0][k] for k in ("name", "version", "backend", "memory_mb")} == {
        "name": "digits", "version": "1", "backend": "onnxruntime", "memory_mb": 13.2}

    for _ in range(98):
        model.stats.record_request(True, int(0.2 * MS))
    model.stats.record_request(True, 150 * MS)
    model.stats.record_request(False, 1 * MS)
    second = intervals.sample()[0]
    assert (second["requests"], second["failures"]) == (100, 1)
    assert sum(second["histogram"]["counts"]) == 99
    assert second["histogram"]["counts"][0] == 98 and second["histogram"]["counts"][9] == 1  # 150 ms: (100, 200]
    assert second["p50_ms"] == pytest.approx(0.25 * 49.5 / 98, abs=1e-3)
    assert second["p99_ms"] == pytest.approx(100.0 + 100.0 * (0.99 * 99 - 98))

    third = intervals.sample()[0]
    assert (third["requests"], third["failures"], third["p50_ms"], third["p99_ms"]) == (0, 0, None, None)
    assert third["histogram"]["counts"] == [0] * (len(LATENCY_BOUNDS_MS) + 1)


def test_a_reloaded_version_starts_from_zero_and_an_unloaded_one_is_forgotten() -> None:
    loaded: List[Any] = [_model()]
    intervals = ModelIntervals(lambda: loaded)
    for _ in range(10):
        loaded[0].stats.record_request(True, 1 * MS)
    assert intervals.sample()[0]["requests"] == 10

    loaded[0] = _model()  # reloaded: a new statistics object with fewer requests than before
    loaded[0].stats.record_request(True, 1 * MS)
    assert intervals.sample()[0]["requests"] == 1

    loaded.clear()
    assert intervals.sample() == []
    loaded.append(_model(stats=ModelStats()))
    loaded[0].stats.record_request(True, 1 * MS)
    assert intervals.sample()[0]["requests"] == 1
