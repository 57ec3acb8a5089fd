"""The central server's tables (SQLAlchemy 2.x declarative); Alembic migrations create them.

Times are unix seconds (floats) as the devices send them. ``samples`` holds one row per record,
unique by (device, sequence) so that a replayed record is never stored twice; ``model_samples``
one row per model in a record. ``rollups`` / ``model_rollups`` hold per-minute and per-hour
aggregates of older data (counts, means, merged latency histograms). ``devices.summary`` keeps
the figures of the latest record, so the device list is one query.
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional

from sqlalchemy import JSON, BigInteger, Float, ForeignKey, Index, Integer, String, UniqueConstraint
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

ID = BigInteger().with_variant(Integer(), "sqlite")  # SQLite autoincrements INTEGER PRIMARY KEY only


class Base(DeclarativeBase):
    """Declarative base of every table."""

    type_annotation_map = {Dict[str, Any]: JSON, List[Any]: JSON}


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
