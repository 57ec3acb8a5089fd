"""Device list and history after ingest; retention rolls samples up per minute, then per hour (SQLite)."""

from __future__ import annotations

import math
from typing import Any, Dict, List

from sqlalchemy import func, select

from fleet_server.histograms import merge_histogram, quantile
from fleet_server.models import Rollup, Sample
from fleet_server.retention import run_retention
from fleet_server.testing import FleetHarness, make_batch, make_record

DAY = 86400.0


def _ingest(fleet: FleetHarness, device: str, records: List[Dict[str, Any]], first: int = 1) -> None:
    reply = fleet.client.post("/api/v1/ingest", json=make_batch(device, records, first_sequence=first),
                              headers=fleet.auth(fleet.tokens[device]))
    assert reply.status_code == 200, reply.get_json()


def _history(fleet: FleetHarness, device: str, since: float, until: float, resolution: str = "") -> Dict[str, Any]:
    query = f"since={since}&until={until}" + (f"&resolution={resolution}" if resolution else "")
    reply = fleet.client.get(f"/api/v1/devices/{device}/history?{query}", headers=fleet.auth(fleet.operator))
    assert reply.status_code == 200, reply.get_json()
    return reply.get_json()


def test_history_shows_latency_and_memory_after_ingest(fleet: FleetHarness) -> None:
    now = fleet.clock()
    _ingest(fleet, "dev-a", [make_record(now - 30, rss_mb=150.0, p50_ms=2.5, p99_ms=7.0),
                             make_record(now - 20, rss_mb=151.0, p50_ms=2.6, p99_ms=7.5)])
    history = _history(fleet, "dev-a", now - 3600, now)
    assert history["device_id"] == "dev-a" and history["resolution"] == "sample"
    assert [point["rss_mb"] for point in history["points"]] == [150.0, 151.0]
    assert history["points"][0]["mem_available_mb"] == 20000.0 and history["points"][0]["nvmap_mb"] == 812.0
    latest = history["points"][-1]["models"]["digits"]
    assert latest == {"version": "1", "p50_ms": 2.6, "p99_ms": 7.5, "requests": 100, "memory_mb": 13.3}
    assert _history(fleet, "dev-b", now - 3600, now)["points"] == []


def test_history_needs_an_operator_token_and_a_known_device(fleet: FleetHarness) -> None:
    now = fleet.clock()
    reply = fleet.client.get("/api/v1/devices/dev-a/history", headers=fleet.auth(fleet.tokens["dev-a"]))
    assert reply.status_code == 401
    reply = fleet.client.get("/api/v1/devices/nope/history", headers=fleet.auth(fleet.operator))
    assert reply.status_code == 404 and "error" in reply.get_json()
    reply = fleet.client.get(f"/api/v1/devices/dev-a/history?since=x&until={now}", headers=fleet.auth(fleet.operator))
    assert reply.status_code == 400


def test_device_list_shows_latest_figures_and_online(fleet: FleetHarness) -> None:
    now = fleet.clock()
    _ingest(fleet, "dev-a", [make_record(now - 20, rss_mb=140.0), make_record(now - 10, rss_mb=141.0)])
    reply = fleet.client.get("/api/v1/devices", headers=fleet.auth(fleet.operator))
    devices = {device["device_id"]: device for device in reply.get_json()}
    assert set(devices) == {"dev-a", "dev-b"}
    dev_a = devices["dev-a"]
    assert dev_a["online"] is True and dev_a["rss_mb"] == 141.0 and dev_a["facts"]["l4t"] == "35.4.1"
    assert dev_a["models"][0]["name"] == "digits" and dev_a["models"][0]["p99_ms"] == 5.3
    assert devices["dev-b"]["online"] is False and devices["dev-b"]["last_seen"] is None
    fleet.clock.now += 31  # three 10 s intervals and a bit
    listed = fleet.client.get("/api/v1/devices", headers=fleet.auth(fleet.operator)).get_json()
    devices = {device["device_id"]: device for device in listed}
    assert devices["dev-a"]["online"] is False


def test_device_list_keeps_the_highest_sequence_and_dropped(fleet: FleetHarness) -> None:
    now = fleet.clock()
    _ingest(fleet, "dev-a", [make_record(now - 10, rss_mb=200.0)], first=10)
    late = make_batch("dev-a", [make_record(now - 50, rss_mb=100.0)], first_sequence=5, dropped=7)
    fleet.client.post("/api/v1/ingest", json=late, headers=fleet.auth(fleet.tokens["dev-a"]))
    dev_a = fleet.client.get("/api/v1/devices", headers=fleet.auth(fleet.operator)).get_json()[0]
    assert dev_a["rss_mb"] == 200.0 and dev_a["dropped"] == 7


def _counts(bucket: int, n: int = 100) -> List[int]:
    counts = [0] * 9
    counts[bucket] = n
    return counts


def test_rollups_minute_then_hour_keep_counts_and_merge_histograms(fleet: FleetHarness) -> None:
    context = fleet.app.extensions["fleet"]
    start = math.floor((fleet.clock() - 100 * DAY) / 3600) * 3600 + 60  # minute 1 of an hour, 100 days ago
    fast = [make_record(start + i * 10, rss_mb=100.0, counts=_counts(2), p99_ms=2.0) for i in range(6)]
    slow = [make_record(start + 60 + i * 10, rss_mb=200.0, counts=_counts(7), p99_ms=100.0) for i in range(6)]
    _ingest(fleet, "dev-a", fast + slow)
    assert run_retention(context.engine, context.settings, start + 8 * DAY).samples_rolled_up == 12
    minutes = _history(fleet, "dev-a", start - 60, start + 3600, "minute")["points"]
    assert [(p["time"], p["samples"], p["models"]["digits"]["requests"]) for p in minutes] == [
        (start, 6, 600), (start + 60, 6, 600)]
    assert minutes[0]["rss_mb"] == 100.0 and 1.0 <= minutes[0]["models"]["digits"]["p99_ms"] <= 2.0
    assert 50.0 < minutes[1]["models"]["digits"]["p50_ms"] <= 100.0

    report = run_retention(context.engine, context.settings, fleet.clock())
    assert (report.samples_rolled_up, report.minutes_rolled_up) == (0, 2)
    hours = _history(fleet, "dev-a", start - 3600, start + 3600, "hour")["points"]
    assert len(hours) == 1
    hour = hours[0]
    digits = hour["models"]["digits"]
    assert hour["samples"] == 12 and digits["requests"] == 1200 and hour["rss_mb"] == 150.0
    assert 1.0 <= digits["p50_ms"] <= 2.0  # half the requests were fast...
    assert 50.0 < digits["p99_ms"] <= 100.0  # ...and the tail is the slow minute's, not an average of p99s

    again = run_retention(context.engine, context.settings, fleet.clock())
    assert (again.samples_rolled_up, again.minutes_rolled_up) == (0, 0)
    assert _history(fleet, "dev-a", start - 3600, start + 3600, "hour")["points"] == hours
    with context.engine.connect() as connection:
        assert connection.execute(select(func.count()).select_from(Sample)).scalar_one() == 0
        assert connection.execute(select(func.count()).select_from(Rollup)).scalar_one() == 1


def test_a_late_sample_merges_into_its_rolled_up_minute(fleet: FleetHarness) -> None:
    context = fleet.app.extensions["fleet"]
    start = math.floor((fleet.clock() - 10 * DAY) / 60) * 60
    _ingest(fleet, "dev-a", [make_record(start + i * 10) for i in range(3)])
    run_retention(context.engine, context.settings, fleet.clock())
    _ingest(fleet, "dev-a", [make_record(start + 45)], first=4)  # arrives after its minute was rolled up
    run_retention(context.engine, context.settings, fleet.clock())
    run_retention(context.engine, context.settings, fleet.clock())
    points = _history(fleet, "dev-a", start, start + 59, "minute")["points"]
    assert [(p["samples"], p["models"]["digits"]["requests"]) for p in points] == [(4, 400)]


def test_old_hours_are_deleted(fleet: FleetHarness) -> None:
    context = fleet.app.extensions["fleet"]
    start = math.floor((fleet.clock() - 800 * DAY) / 3600) * 3600
    _ingest(fleet, "dev-a", [make_record(start + 5)])
    report = run_retention(context.engine, context.settings, fleet.clock())
    assert (report.samples_rolled_up, report.minutes_rolled_up, report.hours_deleted) == (1, 1, 1)
    assert _history(fleet, "dev-a", start - DAY, start + DAY, "hour")["points"] == []


def test_quantiles_of_merged_histograms() -> None:
    bounds = [1.0, 2.0, 5.0]
    fast, slow = {"bounds_ms": bounds, "counts": [10, 0, 0, 0]}, {"bounds_ms": bounds, "counts": [0, 0, 10, 0]}
    merged = merge_histogram(fast, slow)
    assert merged == {"bounds_ms": bounds, "counts": [10, 0, 10, 0]}
    assert quantile(merged, 0.5) == 1.0 and 2.0 < (quantile(merged, 0.99) or 0) <= 5.0
    assert quantile({"bounds_ms": bounds, "counts": [0, 0, 0, 5]}, 0.99, overflow_ms=42.0) == 42.0
    assert quantile({"bounds_ms": bounds, "counts": [0, 0, 0, 0]}, 0.5) is None
    rebinned = merge_histogram(merged, {"bounds_ms": [2.0, 4.0], "counts": [1, 1, 1]})
    assert rebinned is not None and rebinned["counts"] == [10, 1, 11, 1]
