"""Retention: roll old data up to a coarser resolution, then delete it (raw → minute → hour → gone).

Each chunk is one write transaction that aggregates the old rows, merges the aggregates into any
stored rollup of the same bucket (a device that was offline may deliver old samples late), writes
the merged rollups and deletes what was rolled up — so a crash leaves either the whole chunk done
or none of it, and running retention again never counts anything twice (idempotent). Runs are
mutually exclusive per transaction: SQLite's write lock (BEGIN IMMEDIATE), and a transaction-level
advisory lock on PostgreSQL, where several server instances may run it at once.

Cut-offs are floored to a whole minute / hour, so a bucket is only ever rolled up complete.
"""

from __future__ import annotations

import logging
import math
import threading
from collections import defaultdict
from dataclasses import dataclass
from typing import Any, Dict, List, Tuple

from sqlalchemy import Connection, Engine, bindparam, delete, insert, select, text

from fleet_server.aggregation import BUCKET_SECONDS, BucketAggregate, Row, bucket_start
from fleet_server.db import begin_write, database_errors
from fleet_server.models import ModelRollup, ModelSample, Rollup, Sample
from fleet_server.queries import MODEL_COLUMNS, SAMPLE_COLUMNS, stored_rollups
from fleet_server.settings import FleetSettings

logger = logging.getLogger(__name__)
DAY = 86400.0
CHUNK = 5000
ADVISORY_LOCK_KEY = 0x666C656574  # "fleet": one retention transaction at a time across instances
Key = Tuple[int, float]  # (device_pk, bucket start)


@dataclass(frozen=True)
class RetentionReport:
    """What one retention run did."""

    samples_rolled_up: int
    minutes_rolled_up: int
    hours_deleted: int


def run_retention(engine: Engine, settings: FleetSettings, now: float) -> RetentionReport:
    """Roll up and delete everything older than the retention settings say, as of ``now``."""
    retention = settings.retention
    raw_cutoff = _floor(now - retention.raw_days * DAY, "minute")
    minute_cutoff = _floor(now - retention.minute_days * DAY, "hour")
    samples = minutes = 0
    with database_errors():
        while (done := _in_transaction(engine, lambda c: _roll_samples(c, raw_cutoff))) > 0:
            samples += done
        while (done := _in_transaction(engine, lambda c: _roll_minutes(c, minute_cutoff))) > 0:
            minutes += done
        hours = _in_transaction(engine, lambda c: _delete_hours(c, now - retention.hour_days * DAY))
    return RetentionReport(samples, minutes, hours)


def start_periodic_retention(settings: FleetSettings, engine: Engine, clock: Any, stop: threading.Event
                             ) -> threading.Thread:
    """A daemon thread running retention every ``retention.run_every_s`` until ``stop`` is set."""

    def loop() -> None:
        while not stop.wait(settings.retention.run_every_s):
            try:
                report = run_retention(engine, settings, clock())
                logger.info("retention: %s", report)
            except Exception:  # a failed run is retried next period; it must not end the loop
                logger.exception("retention run failed")

    thread = threading.Thread(target=loop, name="fleet-retention", daemon=True)
    thread.start()
    return thread


def _in_transaction(engine: Engine, work: Any) -> int:
    with engine.connect() as connection:
        begin_write(connection, engine.dialect.name == "sqlite")
        if engine.dialect.name == "postgresql":
            connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": ADVISORY_LOCK_KEY})
        done = int(work(connection))
        connection.commit()
    return done


def _roll_samples(connection: Connection, cutoff: float) -> int:
    samples = list(connection.execute(select(Sample.device_pk, *SAMPLE_COLUMNS).where(Sample.time < cutoff)
                                      .order_by(Sample.id).limit(CHUNK)).mappings())
    if not samples:
        return 0
    ids = [int(sample["id"]) for sample in samples]
    by_sample: Dict[int, List[Row]] = defaultdict(list)
    for row in connection.execute(select(*MODEL_COLUMNS).where(ModelSample.sample_id.in_(ids))).mappings():
        by_sample[int(row["sample_id"])].append(row)
    aggregates: Dict[Key, BucketAggregate] = defaultdict(BucketAggregate)
    for sample in samples:
        key = (int(sample["device_pk"]), bucket_start(sample["time"], "minute"))
        aggregates[key].add_sample(sample, by_sample.get(int(sample["id"]), []))
    _merge_into_stored(connection, "minute", aggregates)
    connection.execute(delete(ModelSample).where(ModelSample.sample_id.in_(ids)))
    connection.execute(delete(Sample).where(Sample.id.in_(ids)))
    return len(samples)


def _roll_minutes(connection: Connection, cutoff: float) -> int:
    rows = list(connection.execute(select(Rollup.device_pk, Rollup.bucket).where(
        Rollup.resolution == "minute", Rollup.bucket < cutoff).order_by(Rollup.id).limit(CHUNK)))
    if not rows:
        return 0
    keys = [(int(device_pk), float(bucket)) for device_pk, bucket in rows]
    aggregates: Dict[Key, BucketAggregate] = defaultdict(BucketAggregate)
    for device_pk in {device_pk for device_pk, _ in keys}:
        starts = [bucket for pk, bucket in keys if pk == device_pk]
        for start, minute in stored_rollups(connection, device_pk, "minute", min(starts), max(starts)).items():
            if start in starts:
                aggregates[(device_pk, bucket_start(start, "hour"))].merge(minute)
    _merge_into_stored(connection, "hour", aggregates)
    _delete_rollups(connection, "minute", keys)
    return len(keys)


def _delete_hours(connection: Connection, cutoff: float) -> int:
    connection.execute(delete(ModelRollup).where(ModelRollup.resolution == "hour", ModelRollup.bucket < cutoff))
    result = connection.execute(delete(Rollup).where(Rollup.resolution == "hour", Rollup.bucket < cutoff))
    return int(result.rowcount or 0)


def _merge_into_stored(connection: Connection, resolution: str, aggregates: Dict[Key, BucketAggregate]) -> None:
    """Write ``aggregates`` as rollups of ``resolution``, merged with what is already stored for each bucket."""
    existing: List[Key] = []
    for device_pk in {device_pk for device_pk, _ in aggregates}:
        starts = [bucket for pk, bucket in aggregates if pk == device_pk]
        for start, stored in stored_rollups(connection, device_pk, resolution, min(starts), max(starts)).items():
            if (device_pk, start) in aggregates:
                aggregates[(device_pk, start)].merge(stored)
                existing.append((device_pk, start))
    _delete_rollups(connection, resolution, existing)
    connection.execute(insert(Rollup), [
        {"device_pk": pk, "resolution": resolution, "bucket": start, "samples": aggregate.samples,
         "figures": aggregate.figures_json()} for (pk, start), aggregate in aggregates.items()])
    model_rows = [
        {"device_pk": pk, "resolution": resolution, "bucket": start, "name": name, "version": version,
         "backend": model.backend, "samples": model.samples, "requests": model.requests,
         "failures": model.failures, "memory_mb_sum": model.memory_mb_sum, "memory_mb_n": model.memory_mb_n,
         "p99_ms_max": model.p99_ms_max, "histogram": model.histogram}
        for (pk, start), aggregate in aggregates.items() for (name, version), model in aggregate.models.items()]
    if model_rows:
        connection.execute(insert(ModelRollup), model_rows)


def _delete_rollups(connection: Connection, resolution: str, keys: List[Key]) -> None:
    if not keys:
        return
    params = [{"pk": pk, "start": start} for pk, start in keys]
    for table in (ModelRollup, Rollup):
        connection.execute(delete(table).where(table.device_pk == bindparam("pk"), table.resolution == resolution,
                                               table.bucket == bindparam("start")), params)


def _floor(time: float, resolution: str) -> float:
    size = BUCKET_SECONDS[resolution]
    return math.floor(time / size) * size
