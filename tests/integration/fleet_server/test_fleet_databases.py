"""Ingest and history on both databases: SQLite (embedded) and a real PostgreSQL."""

from __future__ import annotations

import math
import threading
from typing import Any, Dict, List

from sqlalchemy import func, select

from fleet_server.models import ModelSample, Sample
from fleet_server.retention import run_retention
from fleet_server.testing import FleetHarness, make_batch, make_record


def _post(fleet: FleetHarness, batch: Dict[str, Any], token: str) -> Any:
    return fleet.client.post("/api/v1/ingest", json=batch, headers=fleet.auth(token))


def _count(fleet: FleetHarness, table: Any) -> int:
    with fleet.app.extensions["fleet"].engine.connect() as connection:
        return int(connection.execute(select(func.count()).select_from(table)).scalar_one())


def test_bad_inputs_and_replays(fleet_db: FleetHarness) -> None:
    now = fleet_db.clock()
    batch = make_batch("dev-a", [make_record(now - 30 + i) for i in range(3)])
    assert _post(fleet_db, batch, "wrong").status_code == 401
    assert _post(fleet_db, batch, fleet_db.tokens["dev-b"]).status_code == 403
    future = make_batch("dev-a", [make_record(now + 3600)])
    assert _post(fleet_db, future, fleet_db.tokens["dev-a"]).status_code == 400
    oversize = fleet_db.client.post("/api/v1/ingest", data=b"x" * (1024 * 1024 + 1), content_type="application/json",
                                    headers=fleet_db.auth(fleet_db.tokens["dev-a"]))
    assert oversize.status_code == 413 and "error" in oversize.get_json()
    assert _post(fleet_db, batch, fleet_db.tokens["dev-a"]).get_json() == {
        "accepted": 3, "duplicates": 0, "acked_through": 3}
    assert _post(fleet_db, batch, fleet_db.tokens["dev-a"]).get_json() == {
        "accepted": 0, "duplicates": 3, "acked_through": 3}
    assert _count(fleet_db, Sample) == 3 and _count(fleet_db, ModelSample) == 3
    fleet_db.client.delete("/api/v1/devices/dev-a/token", headers=fleet_db.auth(fleet_db.operator))
    assert _post(fleet_db, batch, fleet_db.tokens["dev-a"]).status_code == 401


def test_concurrent_replays_store_each_sequence_once(fleet_db: FleetHarness) -> None:
    now = fleet_db.clock()
    batch = make_batch("dev-a", [make_record(now - 100 + i) for i in range(50)])
    answers: List[Dict[str, int]] = []
    barrier = threading.Barrier(8)

    def replay() -> None:
        client = fleet_db.app.test_client()
        barrier.wait()
        reply = client.post("/api/v1/ingest", json=batch, headers=fleet_db.auth(fleet_db.tokens["dev-a"]))
        assert reply.status_code == 200, reply.get_json()
        answers.append(reply.get_json())

    threads = [threading.Thread(target=replay) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(answers) == 8
    assert sum(answer["accepted"] for answer in answers) == 50
    assert sum(answer["duplicates"] for answer in answers) == 7 * 50
    assert _count(fleet_db, Sample) == 50 and _count(fleet_db, ModelSample) == 50


def test_history_and_rollups(fleet_db: FleetHarness) -> None:
    context = fleet_db.app.extensions["fleet"]
    now = fleet_db.clock()
    _post(fleet_db, make_batch("dev-a", [make_record(now - 20, rss_mb=150.0, p99_ms=7.0)]), fleet_db.tokens["dev-a"])
    history = fleet_db.client.get(f"/api/v1/devices/dev-a/history?since={now - 60}&until={now}",
                                  headers=fleet_db.auth(fleet_db.operator)).get_json()
    assert history["resolution"] == "sample"
    assert history["points"][0]["rss_mb"] == 150.0 and history["points"][0]["models"]["digits"]["p99_ms"] == 7.0
    start = math.floor((now - 100 * 86400) / 3600) * 3600
    old = [make_record(start + 60 * i, rss_mb=100.0 + i) for i in range(4)]
    assert _post(fleet_db, make_batch("dev-a", old, first_sequence=100), fleet_db.tokens["dev-a"]).status_code == 200
    run_retention(context.engine, context.settings, now)
    run_retention(context.engine, context.settings, now)  # idempotent
    hours = fleet_db.client.get(f"/api/v1/devices/dev-a/history?since={start}&until={start + 3599}&resolution=hour",
                                headers=fleet_db.auth(fleet_db.operator)).get_json()["points"]
    assert len(hours) == 1 and hours[0]["samples"] == 4 and hours[0]["rss_mb"] == 101.5
    assert hours[0]["models"]["digits"]["requests"] == 400
    devices = fleet_db.client.get("/api/v1/devices", headers=fleet_db.auth(fleet_db.operator)).get_json()
    assert [d["device_id"] for d in devices] == ["dev-a", "dev-b"] and devices[0]["rss_mb"] == 100.0 + 3
