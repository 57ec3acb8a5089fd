"""Builders of contract-shaped telemetry records and ingest batches, for tests and benchmarks.

Public on purpose (as httpx ships its test transport): the agent's tests, the ingest benchmark and
the server's own tests build batches the same way, so they all speak the same contract.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Iterable, Iterator, List, Mapping, Optional

from flask import Flask
from flask.testing import FlaskClient

DEFAULT_BOUNDS_MS = [0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0]


def make_record(time: float, *, rss_mb: float = 145.0, mem_available_mb: float = 20000.0,
                nvmap_mb: Optional[float] = 812.0, interval_s: float = 10.0, model: str = "digits",
                version: str = "1", requests: int = 100, counts: Optional[List[int]] = None,
                p50_ms: Optional[float] = 2.1, p99_ms: Optional[float] = 5.3, memory_mb: float = 13.3
                ) -> Dict[str, Any]:
    """One record as the device's sampler writes it (one model; ``counts`` over DEFAULT_BOUNDS_MS)."""
    histogram_counts = counts if counts is not None else [0, 0, 50, 49, 1, 0, 0, 0, 0]
    return {
        "time": time, "interval_s": interval_s,
        "process": {"rss_mb": rss_mb, "rss_peak_mb": rss_mb + 15.0, "cpu_percent": 12.5},
        "system": {"mem_total_mb": 31920.0, "mem_available_mb": mem_available_mb, "nvmap_mb": nvmap_mb,
                   "gpu_load": 0.42, "temperatures_c": {"CPU-therm": 45.5}, "power_mw": {"VDD_IN": 5120.0},
                   "power_mode": "MAXN", "clocks_locked": True},
        "models": [{"name": model, "version": version, "backend": "onnxruntime", "memory_mb": memory_mb,
                    "requests": requests, "failures": 0, "p50_ms": p50_ms, "p99_ms": p99_ms,
                    "histogram": {"bounds_ms": list(DEFAULT_BOUNDS_MS), "counts": list(histogram_counts)}}],
    }


def make_batch(device_id: str, records: Iterable[Dict[str, Any]], first_sequence: int = 1, dropped: int = 0
               ) -> Dict[str, Any]:
    """A batch of ``records`` numbered from ``first_sequence``."""
    return {
        "device_id": device_id, "dropped": dropped,
        "facts": {"board": "test board", "l4t": "35.4.1", "jetpack": "5.1.2", "runtime_version": "0.x"},
        "records": [{"sequence": first_sequence + index, "record": record} for index, record in enumerate(records)],
    }


NOW = 1_764_086_400.0  # 2025-11-25T16:00:00Z: the fake clock's start


class FakeClock:
    """A settable clock (unix seconds) to hand ``create_app``."""

    def __init__(self, now: float = NOW) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@dataclass
class FleetHarness:
    """A migrated app on a fake clock, with an operator token and enrolled devices' tokens."""

    app: Flask
    client: FlaskClient
    clock: FakeClock
    operator: str
    tokens: Dict[str, str]

    @staticmethod
    def auth(token: str) -> Dict[str, str]:
        """The Authorization header for ``token``."""
        return {"Authorization": f"Bearer {token}"}


@contextlib.contextmanager
def fleet_harness(database_url: str, directory: Path, devices: Iterable[str] = ("dev-a", "dev-b"),
                  settings: Optional[Mapping[str, Any]] = None) -> Iterator[FleetHarness]:
    """Migrate ``database_url``, build the app (settings file in ``directory``), enroll ``devices``."""
    from fleet_server.app import create_app
    from fleet_server.db import begin_write
    from fleet_server.schema import upgrade_to_head
    from fleet_server.settings import fleet_settings_from_mapping
    from fleet_server.tokens import create_operator_token, enroll_device

    fleet_settings = fleet_settings_from_mapping({"database_url": database_url, **(settings or {})},
                                                 str(directory / "fleet.yaml"))
    clock = FakeClock()
    app = create_app(fleet_settings, clock=clock)
    context = app.extensions["fleet"]
    upgrade_to_head(context.engine)
    with context.engine.connect() as connection:
        begin_write(connection, context.is_sqlite)
        tokens = {name: enroll_device(connection, context.secret, name, clock()) for name in devices}
        operator = create_operator_token(connection, context.secret, "ops", clock())
        connection.commit()
    try:
        yield FleetHarness(app, app.test_client(), clock, operator, tokens)
    finally:
        context.engine.dispose()
