"""The sampler: one Record per interval on an injected clock, survives failing collectors and sinks,
holds the inference path's statistics lock for a snapshot only, and stops on close."""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Dict, List, Optional

import pytest

from edge_runtime.config.runtime import RuntimeSettings, TelemetrySettings
from edge_runtime.serving.stats import ModelStats
from edge_runtime.telemetry.record import RecordBuilder
from edge_runtime.telemetry.sampler import Sampler, start_sampler

BOARDS = Path(__file__).resolve().parents[2] / "fixtures" / "jetson"
START = 1_764_086_400.0
RECORD_KEYS = {"time", "interval_s", "process", "system", "models"}


class FakeTime:
    """A clock that moves only when the sampler waits (or a collector says it took time)."""

    def __init__(self, stop_at: float) -> None:
        self.now = START
        self.stop_at = stop_at

    def clock(self) -> float:
        return self.now

    def wait(self, seconds: float) -> bool:
        self.now += seconds
        return self.now >= self.stop_at


class WatchedLock:
    """A lock that says whether it is held and how often it was taken."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.acquisitions = 0

    def __enter__(self) -> None:
        self._lock.acquire()
        self.acquisitions += 1

    def __exit__(self, *exc: Any) -> None:
        self._lock.release()

    def locked(self) -> bool:
        return self._lock.locked()


def _model(stats: Optional[ModelStats] = None) -> Any:
    return SimpleNamespace(name="digits", version="1", platform="onnxruntime", memory_mb=13.3,
                           stats=stats or ModelStats())


def _process() -> Dict[str, Optional[float]]:
    return {"rss_mb": 100.0, "rss_peak_mb": 120.0, "cpu_percent": 5.0}


def _sampler(time: FakeTime, sink: Any, builder: Optional[RecordBuilder] = None, interval_s: float = 10.0) -> Sampler:
    builder = builder or RecordBuilder(BOARDS / "agx-xavier", lambda: [_model()], _process)
    return Sampler(builder.build, sink, interval_s, clock=time.clock, wall_clock=time.clock, wait=time.wait)


def test_one_record_per_interval_on_an_injected_clock() -> None:
    time = FakeTime(stop_at=START + 3600 + 1)  # a simulated hour
    records: List[Dict[str, Any]] = []
    _sampler(time, records.append).run()
    assert len(records) == 360
    assert [r["time"] for r in records[:3]] == [START + 10, START + 20, START + 30]
    assert {r["interval_s"] for r in records} == {10.0}
    first = records[0]
    assert set(first) == RECORD_KEYS
    assert first["process"] == _process()
    assert first["system"]["nvmap_mb"] == 812.0 and first["system"]["clocks_locked"] is True
    assert [m["name"] for m in first["models"]] == ["digits"]


def test_a_late_sample_skips_the_missed_ticks_instead_of_bursting() -> None:
    time = FakeTime(stop_at=START + 75)
    slow = RecordBuilder(BOARDS / "agx-xavier", list, _process)

    def build(now: float, interval_s: float) -> Dict[str, Any]:
        record = slow.build(now, interval_s)
        time.now += 25.0 if now == START + 10 else 0.0  # the first sample takes 25 s (a stalled disk)
        return record

    records: List[Dict[str, Any]] = []
    Sampler(build, records.append, 10.0, clock=time.clock, wall_clock=time.clock, wait=time.wait).run()
    assert [(r["time"] - START, r["interval_s"]) for r in records] == [(10, 10.0), (40, 30.0), (50, 10.0),
                                                                        (60, 10.0), (70, 10.0)]


def test_a_collector_that_raises_nulls_its_fields_and_sampling_goes_on(caplog: pytest.LogCaptureFixture) -> None:
    def broken_process() -> Dict[str, Optional[float]]:
        raise RuntimeError("psutil went away")

    def broken_models() -> List[Any]:
        raise OSError("repository busy")

    time = FakeTime(stop_at=START + 51)
    records: List[Dict[str, Any]] = []
    builder = RecordBuilder(BOARDS / "orin-agx", broken_models, broken_process)
    with caplog.at_level(logging.WARNING, logger="edge_runtime.telemetry"):
        _sampler(time, records.append, builder).run()
    assert len(records) == 5
    assert all(r["process"] == {"rss_mb": None, "rss_peak_mb": None, "cpu_percent": None} for r in records)
    assert all(r["models"] == [] for r in records)
    assert all(r["system"]["gpu_load"] == 0.058 for r in records)  # the collectors that work still report
    failures = [r.getMessage() for r in caplog.records]
    assert len(failures) == 2 and "'process'" in failures[0] and "'models'" in failures[1]  # once each


def test_a_sink_that_raises_is_logged_once_and_sampling_goes_on(caplog: pytest.LogCaptureFixture) -> None:
    calls: List[float] = []

    def full_disk(record: Dict[str, Any]) -> None:
        calls.append(record["time"])
        raise OSError(28, "No space left on device")

    time = FakeTime(stop_at=START + 31)
    with caplog.at_level(logging.WARNING, logger="edge_runtime.telemetry"):
        sampler = _sampler(time, full_disk)
        sampler.run()
    assert len(calls) == 3
    assert len(caplog.records) == 1 and "'sink'" in caplog.records[0].getMessage()
    latest = sampler.latest()
    assert latest is not None and latest["time"] == START + 30


def test_the_inference_lock_is_held_only_for_a_snapshot() -> None:
    """While the sampler reads files, builds and sinks a Record, the statistics lock is free."""
    lock = WatchedLock()
    stats = ModelStats(_lock=lock)  # type: ignore[arg-type]
    seen_held: List[str] = []

    def process() -> Dict[str, Optional[float]]:
        if lock.locked():
            seen_held.append("process")
        return _process()

    def sink(record: Dict[str, Any]) -> None:
        if lock.locked():
            seen_held.append("sink")
        stats.record_request(True, 1_000_000)  # the inference path, right while the sampler works

    time = FakeTime(stop_at=START + 31)
    builder = RecordBuilder(BOARDS / "xavier-nx", lambda: [_model(stats)], process)
    before = lock.acquisitions
    _sampler(time, sink, builder).run()
    assert seen_held == []
    # per sample: one snapshot by the sampler and one request by the sink, nothing else
    assert lock.acquisitions - before == 3 * 2
    assert not lock.locked()


def test_the_thread_samples_and_stops_on_close() -> None:
    three = threading.Event()
    records: List[Dict[str, Any]] = []

    def sink(record: Dict[str, Any]) -> None:
        records.append(record)
        if len(records) >= 3:
            three.set()

    builder = RecordBuilder(BOARDS / "orin-agx", list, _process)
    sampler = Sampler(builder.build, sink, interval_s=0.01)
    sampler.start()
    try:
        assert three.wait(30.0)
    finally:
        sampler.close()
    assert sampler.stopped
    assert not any(t.name == "telemetry-sampler" and t.is_alive() for t in threading.enumerate())
    count = len(records)
    assert three.wait(0) and len(records) == count  # nothing sampled after close returned


def test_start_sampler_follows_the_settings(tmp_path: Path) -> None:
    disabled = RuntimeSettings(device_config="unused.yaml", trusted_keys=(),
                               telemetry=TelemetrySettings(enabled=False))
    assert start_sampler(disabled, list, lambda record: None) is None

    first = threading.Event()
    records: List[Dict[str, Any]] = []

    def sink(record: Dict[str, Any]) -> None:
        records.append(record)
        first.set()

    settings = RuntimeSettings(device_config="unused.yaml", trusted_keys=(),
                               telemetry=TelemetrySettings(interval_s=0.01, sysfs_root=str(BOARDS / "orin-agx")))
    sampler = start_sampler(settings, lambda: [_model()], sink)
    assert sampler is not None
    try:
        assert first.wait(30.0)
    finally:
        sampler.close()
    record = records[0]
    assert set(record) == RECORD_KEYS
    assert record["system"]["power_mode"] == "MODE_30W" and record["system"]["nvmap_mb"] == 1024.0
    assert record["process"]["rss_mb"] > 0 and record["process"]["rss_peak_mb"] >= record["process"]["rss_mb"]
    assert record["models"][0]["backend"] == "onnxruntime"


def test_a_non_positive_interval_is_refused() -> None:
    with pytest.raises(ValueError, match="interval_s"):
        Sampler(lambda now, interval: {}, lambda record: None, 0.0)
