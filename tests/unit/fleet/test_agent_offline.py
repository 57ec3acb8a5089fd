"""Offline for 72 h: the server is down for 25 920 samples (one per 10 s), then back (simulated clock).

Every record the spool's cap kept arrives exactly once, the dropped counter is exactly what the cap
forced out (and the server is told so), and nothing is stored or delivered twice.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any, Dict, List, Mapping

from fake_ingest import FakeIngest

from edge_runtime.fleet.backoff import Backoff
from edge_runtime.fleet.errors import TransportError
from edge_runtime.fleet.transport import Reply
from edge_runtime.fleet.uploader import Uploader
from edge_runtime.telemetry.spool import Spool

T0 = 1764086400.0
INTERVAL_S = 10.0
SAMPLES = 72 * 3600 // 10  # 25 920
CAP_BYTES = 2 * 1024 * 1024


class SimClock:
    """Simulated unix time."""

    def __init__(self, start: float) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now


def sample(index: int) -> Dict[str, Any]:
    """A contract-shaped record whose size varies a little (as real figures do)."""
    return {"time": T0 + INTERVAL_S * index, "interval_s": INTERVAL_S,
            "process": {"rss_mb": 140.0 + (index % 97) / 10, "rss_peak_mb": 160.1, "cpu_percent": index % 13},
            "system": {"mem_total_mb": 31920.0, "mem_available_mb": 20000.0 - index % 1000, "nvmap_mb": 812.0,
                       "gpu_load": (index % 100) / 100, "temperatures_c": {"CPU-therm": 45.5},
                       "power_mw": {"VDD_IN": 5120.0}, "power_mode": "MAXN", "clocks_locked": True},
            "models": [{"name": "digits", "version": "1", "backend": "onnxruntime", "memory_mb": 13.3,
                        "requests": index % 500, "failures": 0, "p50_ms": 2.1, "p99_ms": 5.3,
                        "histogram": {"bounds_ms": [0.5, 1, 2, 5, 10], "counts": [0, 1, 2, 3, 4, index % 7]}}]}


def kept_by_cap(sizes: List[int], cap: int) -> int:
    """How many of the newest records fit under the cap: what drop-oldest after each append leaves."""
    total, kept = 0, 0
    for size in reversed(sizes):
        if total + size > cap:
            break
        total, kept = total + size, kept + 1
    return kept


def test_72_hours_offline_then_back(tmp_path: Path) -> None:
    clock = SimClock(T0)
    back_at = T0 + SAMPLES * INTERVAL_S
    server = FakeIngest()
    attempts: List[float] = []

    def network(path: str, body: bytes, headers: Mapping[str, str]) -> Reply:
        attempts.append(clock.now)
        if clock.now < back_at:
            raise TransportError("fleet.example.com: ConnectionRefusedError: [Errno 111] Connection refused")
        return server.transport(path, body, headers)

    spool = Spool(tmp_path / "spool.sqlite", CAP_BYTES, clock=clock)
    uploader = Uploader(spool, network, "dev-1", lambda: "device-token", {"board": "sim"},
                        Backoff(1.0, 300.0, uniform=random.Random(16).random), 500, poll_s=INTERVAL_S)
    sizes: List[int] = []
    waits: List[float] = []
    next_sample, next_upload, index = T0, T0, 0
    while True:
        if index < SAMPLES and next_sample <= next_upload:
            clock.now = next_sample
            record = sample(index)
            sizes.append(len(json.dumps(record, separators=(",", ":")).encode()))
            assert spool.append(record) == index + 1
            index, next_sample = index + 1, next_sample + INTERVAL_S
            continue
        clock.now = next_upload
        outcome = uploader.step()
        if outcome.idle and index == SAMPLES:
            break
        waits.append(outcome.wait_s)
        next_upload += outcome.wait_s

    kept = kept_by_cap(sizes, CAP_BYTES)
    assert 0 < kept < SAMPLES  # the cap really forced records out
    assert spool.dropped == SAMPLES - kept
    assert sorted(server.stored) == list(range(SAMPLES - kept + 1, SAMPLES + 1))
    assert all(count == 1 for count in server.deliveries.values())  # nothing sent twice, nothing stored twice
    assert server.stored[SAMPLES] == sample(SAMPLES - 1)
    assert server.dropped_reported and set(server.dropped_reported) == {SAMPLES - kept}
    assert spool.pending(1) == [] and spool.stored_bytes == 0
    assert max(waits) <= 300.0
    first_after = min(t for t in attempts if t >= back_at)
    assert first_after - back_at <= 300.0  # back within one maximal backoff
    spool.close()
