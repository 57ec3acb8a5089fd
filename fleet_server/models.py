"""The central server's tables (SQLAlchemy 2.x declarative); Alembic migrations create them.

Times are unix seconds (floats) as the devices send them. ``samples`` holds one row per record,
unique by (device, sequence) so that a replayed record is never stored twice; ``model_samples``
one row per model in a record. ``rollups`` / ``model_rollups`` hold per-minute and per-hour
aggregates of older data (counts, means, merged latency histograms). ``devices.summary`` keeps
the figures of the latest record, so the device list is one query.

Over-the-air updates: ``bundles`` are the signed bundles published as TUF image targets,
``rollouts`` assign one to a device class (canaries, then a percentage), ``sync_reports`` are what
devices said about installing them (unique by device and report id, so a resent report is stored
once), and ``devices.sync_state`` is the latest ``installed`` map a device reported.
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional

from sqlalchemy import (
    JSON,
    BigInteger,
    Connection,
    Executable,
    Float,
    ForeignKey,
    Index,
    Integer,
    Row,
    String,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

ID = BigInteger().with_variant(Integer(), "sqlite")  # SQLite autoincrements INTEGER PRIMARY KEY only


class Base(DeclarativeBase):
    """Declarative base of every table."""

    type_annotation_map = {Dict[str, Any]: JSON, List[Any]: JSON}


def entity_rows(connection: Connection, statement: Executable) -> List[Row[Any]]:
    """Run a ``select(Model, ...)`` on a Core connection, rows holding model objects (``row.Rollout``).

    The session joins the connection's transaction, if one is open, and leaves it to the caller.
    """
    with Session(bind=connection) as session:
        return list(session.execute(statement).all())


class Device(Base):
    """An enrolled device and what its latest record said."""

    __tablename__ = "devices"

    id: Mapped[int] = mapped_column(ID, primary_key=True, autoincrement=True)
    device_id: Mapped[str] = mapped_column(String(128), unique=True)
    created: Mapped[float] = mapped_column(Float)
    last_seen: Mapped[Optional[float]] = mapped_column(Float)  # server clock, last accepted batch
    dropped: Mapped[int] = mapped_column(BigInteger, default=0)  # cumulative, as the device reports it
    facts: Mapped[Optional[Dict[str, Any]]] = mapped_column(JSON)
    latest_sequence: Mapped[Optional[int]] = mapped_column(BigInteger)
    summary: Mapped[Optional[Dict[str, Any]]] = mapped_column(JSON)  # figures of latest_sequence's record
    device_class: Mapped[Optional[str]] = mapped_column(String(128), index=True)  # set at enrollment
    sync_state: Mapped[Optional[Dict[str, Any]]] = mapped_column(JSON)  # {model: {"active", "last_good"}}


class DeviceToken(Base):
    """A device's bearer token, stored only as its HMAC-SHA256 digest."""

    __tablename__ = "device_tokens"

    id: Mapped[int] = mapped_column(ID, primary_key=True, autoincrement=True)
    device_pk: Mapped[int] = mapped_column(ForeignKey("devices.id", ondelete="CASCADE"), index=True)
    digest: Mapped[str] = mapped_column(String(64), unique=True)
    created: Mapped[float] = mapped_column(Float)
    revoked: Mapped[Optional[float]] = mapped_column(Float)


class OperatorToken(Base):
    """An operator's bearer token for the admin and query routes (digest only)."""

    __tablename__ = "operator_tokens"

    id: Mapped[int] = mapped_column(ID, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(128))
    digest: Mapped[str] = mapped_column(String(64), unique=True)
    created: Mapped[float] = mapped_column(Float)
    revoked: Mapped[Optional[float]] = mapped_column(Float)


class Sample(Base):
    """One telemetry record of one device (raw resolution)."""

    __tablename__ = "samples"
    __table_args__ = (
        UniqueConstraint("device_pk", "sequence", name="uq_samples_device_sequence"),
        Index("ix_samples_device_time", "device_pk", "time"),
        Index("ix_samples_time", "time"),
    )

    id: Mapped[int] = mapped_column(ID, primary_key=True, autoincrement=True)
    device_pk: Mapped[int] = mapped_column(ForeignKey("devices.id", ondelete="CASCADE"))
    sequence: Mapped[int] = mapped_column(BigInteger)
    time: Mapped[float] = mapped_column(Float)
    received: Mapped[float] = mapped_column(Float)
    interval_s: Mapped[float] = mapped_column(Float)
    rss_mb: Mapped[Optional[float]] = mapped_column(Float)
    rss_peak_mb: Mapped[Optional[float]] = mapped_column(Float)
    cpu_percent: Mapped[Optional[float]] = mapped_column(Float)
    mem_total_mb: Mapped[Optional[float]] = mapped_column(Float)
    mem_available_mb: Mapped[Optional[float]] = mapped_column(Float)
    nvmap_mb: Mapped[Optional[float]] = mapped_column(Float)
    gpu_load: Mapped[Optional[float]] = mapped_column(Float)
    system: Mapped[Optional[Dict[str, Any]]] = mapped_column(JSON)  # temperatures, power rails, mode, clocks


class ModelSample(Base):
    """One model's figures in one record."""

    __tablename__ = "model_samples"
    __table_args__ = (Index("ix_model_samples_device_time", "device_pk", "time"),)

    id: Mapped[int] = mapped_column(ID, primary_key=True, autoincrement=True)
    sample_id: Mapped[int] = mapped_column(ForeignKey("samples.id", ondelete="CASCADE"), index=True)
    device_pk: Mapped[int] = mapped_column(ForeignKey("devices.id", ondelete="CASCADE"))
    time: Mapped[float] = mapped_column(Float)
    name: Mapped[str] = mapped_column(String(128))
    version: Mapped[str] = mapped_column(String(64))
    backend: Mapped[str] = mapped_column(String(64))
    memory_mb: Mapped[Optional[float]] = mapped_column(Float)
    requests: Mapped[int] = mapped_column(BigInteger)
    failures: Mapped[int] = mapped_column(BigInteger)
    p50_ms: Mapped[Optional[float]] = mapped_column(Float)
    p99_ms: Mapped[Optional[float]] = mapped_column(Float)
    histogram: Mapped[Optional[Dict[str, Any]]] = mapped_column(JSON)  # {"bounds_ms": [...], "counts": [...]}


class Rollup(Base):
    """A device's samples aggregated over one minute or one hour (means weighted by sample count)."""

    __tablename__ = "rollups"
    __table_args__ = (UniqueConstraint("device_pk", "resolution", "bucket", name="uq_rollups_bucket"),
                      Index("ix_rollups_resolution_bucket", "resolution", "bucket"))

    id: Mapped[int] = mapped_column(ID, primary_key=True, autoincrement=True)
    device_pk: Mapped[int] = mapped_column(ForeignKey("devices.id", ondelete="CASCADE"))
    resolution: Mapped[str] = mapped_column(String(8))  # "minute" | "hour"
    bucket: Mapped[float] = mapped_column(Float)  # start of the minute / hour
    samples: Mapped[int] = mapped_column(BigInteger)
    figures: Mapped[Dict[str, Any]] = mapped_column(JSON)  # {"rss_mb": [sum, n], ..., "rss_peak_mb_max": x}


class ModelRollup(Base):
    """One model's figures over one minute or hour: summed counts and a merged latency histogram."""

    __tablename__ = "model_rollups"
    __table_args__ = (UniqueConstraint("device_pk", "resolution", "bucket", "name", "version",
                                       name="uq_model_rollups_bucket"),)

    id: Mapped[int] = mapped_column(ID, primary_key=True, autoincrement=True)
    device_pk: Mapped[int] = mapped_column(ForeignKey("devices.id", ondelete="CASCADE"))
    resolution: Mapped[str] = mapped_column(String(8))
    bucket: Mapped[float] = mapped_column(Float)
    name: Mapped[str] = mapped_column(String(128))
    version: Mapped[str] = mapped_column(String(64))
    backend: Mapped[str] = mapped_column(String(64))
    samples: Mapped[int] = mapped_column(BigInteger)
    requests: Mapped[int] = mapped_column(BigInteger)
    failures: Mapped[int] = mapped_column(BigInteger)
    memory_mb_sum: Mapped[float] = mapped_column(Float)
    memory_mb_n: Mapped[int] = mapped_column(BigInteger)
    p99_ms_max: Mapped[Optional[float]] = mapped_column(Float)  # the tail the histogram's overflow bucket hides
    histogram: Mapped[Optional[Dict[str, Any]]] = mapped_column(JSON)


class Bundle(Base):
    """A signed bundle published as the TUF image target ``target`` (``<model>-<version>.tar``)."""

    __tablename__ = "bundles"
    __table_args__ = (UniqueConstraint("model", "version", name="uq_bundles_model_version"),)

    id: Mapped[int] = mapped_column(ID, primary_key=True, autoincrement=True)
    model: Mapped[str] = mapped_column(String(128))
    version: Mapped[str] = mapped_column(String(128))
    target: Mapped[str] = mapped_column(String(300))
    sha256: Mapped[str] = mapped_column(String(64))
    length: Mapped[int] = mapped_column(BigInteger)
    device_classes: Mapped[List[Any]] = mapped_column(JSON)
    fingerprints: Mapped[Dict[str, Any]] = mapped_column(JSON)  # device class -> engine fingerprint or null
    signer_key_id: Mapped[str] = mapped_column(String(64))
    uploaded: Mapped[float] = mapped_column(Float)


class Rollout(Base):
    """A bundle assigned to a device class: canary devices, then a stable percentage of the class."""

    __tablename__ = "rollouts"

    id: Mapped[int] = mapped_column(ID, primary_key=True, autoincrement=True)
    bundle_id: Mapped[int] = mapped_column(ForeignKey("bundles.id", ondelete="RESTRICT"), index=True)
    device_class: Mapped[str] = mapped_column(String(128), index=True)
    canary: Mapped[List[Any]] = mapped_column(JSON)  # device ids
    percent: Mapped[int] = mapped_column(Integer)
    state: Mapped[str] = mapped_column(String(16))  # active | paused | cancelled
    pause_reason: Mapped[Optional[str]] = mapped_column(String(1000))
    created: Mapped[float] = mapped_column(Float)
    updated: Mapped[float] = mapped_column(Float)


class SyncReport(Base):
    """One device's report about one target (promoted, refused, gate_failed, failed, rolled_back)."""

    __tablename__ = "sync_reports"
    __table_args__ = (UniqueConstraint("device_pk", "report_id", name="uq_sync_reports_device_report"),
                      Index("ix_sync_reports_device_at", "device_pk", "at"))

    id: Mapped[int] = mapped_column(ID, primary_key=True, autoincrement=True)
    device_pk: Mapped[int] = mapped_column(ForeignKey("devices.id", ondelete="CASCADE"))
    report_id: Mapped[str] = mapped_column(String(32))
    at: Mapped[float] = mapped_column(Float)  # device clock
    received: Mapped[float] = mapped_column(Float)  # server clock
    model: Mapped[str] = mapped_column(String(128))
    version: Mapped[str] = mapped_column(String(128))
    target: Mapped[str] = mapped_column(String(300))
    status: Mapped[str] = mapped_column(String(16))
    reason: Mapped[str] = mapped_column(String(500))
    rollout_id: Mapped[Optional[int]] = mapped_column(BigInteger, index=True)  # as reported; not a foreign key
