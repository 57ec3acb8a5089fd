"""`POST /api/v1/ingest`: a device's batch of telemetry records, stored idempotently.

Order of checks: the declared size (413 before anything is read), the device token (401), the
body read with a hard cap (413), strict validation (400, :mod:`fleet_server.batch`), the token's
device against the batch's (403). Records are inserted with ``INSERT ... ON CONFLICT (device,
sequence) DO NOTHING RETURNING`` on both SQLite and PostgreSQL, so a replayed record — even one
replayed concurrently by another worker or instance — is stored once and counted as a duplicate;
the unique constraint, not a read-then-write check, is what decides.

Cost per batch (the fleet-scale bench, scripts/bench/ingest_bench.py): the body (at most the cap
+ 1 bytes, which the server would have to drain anyway to keep the connection alive) is read
before a database connection is taken, so a slow upload holds none; then one pooled connection
from the token check to the commit, and statements built once per dialect with bound parameters
(SQLAlchemy caches their compiled form): the token lookup, one insert into ``samples``, one into
``model_samples`` and one update of the device row. The answers and their order are as above.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any, Dict, cast

from flask import request
from sqlalchemy import JSON, BigInteger, Connection, Float, Insert, Table, Update, bindparam, case, insert, or_, update
from sqlalchemy.dialects import postgresql, sqlite

from fleet_server.batch import Batch, Record, parse_batch
from fleet_server.context import FleetContext, bearer_token
from fleet_server.db import begin_write, database_errors
from fleet_server.errors import BadBatchError, ForbiddenError, PayloadTooLargeError
from fleet_server.models import Device, ModelSample, Sample
from fleet_server.tokens import authenticate_device


@dataclass(frozen=True)
class IngestResult:
    """What the server answers for a stored batch."""

    accepted: int
    duplicates: int
    acked_through: int

    def as_json(self) -> Dict[str, int]:
        """The 200 answer's body."""
        return {"accepted": self.accepted, "duplicates": self.duplicates, "acked_through": self.acked_through}


def handle_ingest(context: FleetContext) -> IngestResult:
    """Check, parse and store the current request's batch (one database connection, one transaction)."""
    settings = context.settings
    cap = settings.max_ingest_bytes
    if request.content_length is not None and request.content_length > cap:
        raise PayloadTooLargeError(f"body of {request.content_length} bytes is over the cap of {cap}")
    body = request.stream.read(cap + 1)  # before taking a database connection: a slow upload holds none
    with database_errors(), context.engine.connect() as connection:
        identity = authenticate_device(connection, context.secret, bearer_token())
        if request.mimetype != "application/json":
            raise BadBatchError("expected Content-Type: application/json")
        if len(body) > cap:
            raise PayloadTooLargeError(f"body is over the cap of {cap} bytes")
        now = context.clock()
        batch = parse_batch(body, now, settings.max_batch_records, settings.max_future_s)
        if batch.device_id != identity.device_id:
            raise ForbiddenError(f"this token belongs to device {identity.device_id!r}, not {batch.device_id!r}")
        begin_write(connection, context.is_sqlite)
        result = store_batch(connection, identity.device_pk, batch, now)
        connection.commit()
    return result


@dataclass(frozen=True)
class _Statements:
    """The ingest statements, built once per dialect (bound parameters; executed with each batch's values)."""

    samples: Insert
    model_samples: Insert
    device: Update


@functools.lru_cache(maxsize=None)
def _statements(dialect_name: str) -> _Statements:
    samples, models, devices = (cast(Table, row.__table__) for row in (Sample, ModelSample, Device))
    dialect = postgresql if dialect_name == "postgresql" else sqlite
    newer = or_(devices.c.latest_sequence.is_(None), devices.c.latest_sequence < bindparam("latest", type_=BigInteger))
    return _Statements(
        samples=(dialect.insert(samples).on_conflict_do_nothing(index_elements=["device_pk", "sequence"])
                 .returning(samples.c.id, samples.c.sequence)),
        # RETURNING makes SQLAlchemy send the rows as one multi-row INSERT (insertmanyvalues): one
        # round trip, where psycopg's executemany would pipeline one statement per row.
        model_samples=insert(models).returning(models.c.id),
        # One statement for the device row: last seen, facts, the highest dropped count, and the
        # latest record's figures only when this batch holds a newer sequence than the row has.
        device=update(devices).where(devices.c.id == bindparam("pk", type_=BigInteger)).values(
            last_seen=bindparam("received", type_=Float), facts=bindparam("facts", type_=JSON),
            dropped=case((devices.c.dropped < bindparam("dropped", type_=BigInteger),
                          bindparam("dropped", type_=BigInteger)), else_=devices.c.dropped),
            latest_sequence=case((newer, bindparam("latest", type_=BigInteger)), else_=devices.c.latest_sequence),
            summary=case((newer, bindparam("summary", type_=JSON)), else_=devices.c.summary)),
    )


def store_batch(connection: Connection, device_pk: int, batch: Batch, received: float) -> IngestResult:
    """Insert the batch's new records (duplicates skipped by the unique constraint); update the device."""
    statements = _statements(connection.dialect.name)
    rows = [_sample_row(device_pk, record, received) for record in batch.records]
    inserted = {int(sequence): int(sample_id) for sample_id, sequence in connection.execute(statements.samples, rows)}
    model_rows = [_model_row(device_pk, inserted[record.sequence], record, model)
                  for record in batch.records if record.sequence in inserted for model in record.models]
    if model_rows:
        connection.execute(statements.model_samples, model_rows)
    latest = batch.records[-1]
    connection.execute(statements.device, {"pk": device_pk, "received": received, "facts": batch.facts,
                                           "dropped": batch.dropped, "latest": latest.sequence,
                                           "summary": record_summary(latest)})
    return IngestResult(len(inserted), len(batch.records) - len(inserted), latest.sequence)


def record_summary(record: Record) -> Dict[str, Any]:
    """The latest record's figures the device list shows (kept on the device row)."""
    return {
        "time": record.time, "interval_s": record.interval_s, "rss_mb": record.process["rss_mb"],
        "mem_available_mb": record.system["mem_available_mb"], "nvmap_mb": record.system["nvmap_mb"],
        "gpu_load": record.system["gpu_load"],
        "models": [{"name": m.name, "version": m.version, "backend": m.backend, "memory_mb": m.memory_mb,
                    "p50_ms": m.p50_ms, "p99_ms": m.p99_ms} for m in record.models],
    }


def _sample_row(device_pk: int, record: Record, received: float) -> Dict[str, Any]:
    system = record.system
    return {
        "device_pk": device_pk, "sequence": record.sequence, "time": record.time, "received": received,
        "interval_s": record.interval_s, "rss_mb": record.process["rss_mb"],
        "rss_peak_mb": record.process["rss_peak_mb"], "cpu_percent": record.process["cpu_percent"],
        "mem_total_mb": system["mem_total_mb"], "mem_available_mb": system["mem_available_mb"],
        "nvmap_mb": system["nvmap_mb"], "gpu_load": system["gpu_load"],
        "system": {key: system[key] for key in ("temperatures_c", "power_mw", "power_mode", "clocks_locked")},
    }


def _model_row(device_pk: int, sample_id: int, record: Record, model: Any) -> Dict[str, Any]:
    return {
        "sample_id": sample_id, "device_pk": device_pk, "time": record.time, "name": model.name,
        "version": model.version, "backend": model.backend, "memory_mb": model.memory_mb,
        "requests": model.requests, "failures": model.failures, "p50_ms": model.p50_ms, "p99_ms": model.p99_ms,
        "histogram": model.histogram,
    }
