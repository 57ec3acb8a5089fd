"""Initial schema: devices, tokens, samples (+ per model), rollups (+ per model).

Revision ID: 0001
Revises:
Create Date: 2026-11-25
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def _id() -> sa.Column:
    return sa.Column("id", ID, primary_key=True, autoincrement=True)


def _device_fk() -> sa.Column:
    return sa.Column("device_pk", ID, sa.ForeignKey("devices.id", ondelete="CASCADE"), nullable=False)


def upgrade() -> None:
    """Create every table."""
    op.create_table(
        "devices", _id(),
        sa.Column("device_id", sa.String(128), nullable=False, unique=True),
        sa.Column("created", sa.Float, nullable=False), sa.Column("last_seen", sa.Float),
        sa.Column("dropped", sa.BigInteger, nullable=False), sa.Column("facts", sa.JSON),
        sa.Column("latest_sequence", sa.BigInteger), sa.Column("summary", sa.JSON))
    op.create_table(
        "device_tokens", _id(),
        sa.Column("device_pk", ID, sa.ForeignKey("devices.id", ondelete="CASCADE"), nullable=False, index=True),
        sa.Column("digest", sa.String(64), nullable=False, unique=True),
        sa.Column("created", sa.Float, nullable=False), sa.Column("revoked", sa.Float))
    op.create_table(
        "operator_tokens", _id(),
        sa.Column("name", sa.String(128), nullable=False),
        sa.Column("digest", sa.String(64), nullable=False, unique=True),
        sa.Column("created", sa.Float, nullable=False), sa.Column("revoked", sa.Float))
    op.create_table(
        "samples", _id(), _device_fk(),
        *[sa.Column(name, sa.BigInteger if name == "sequence" else sa.Float, nullable=False)
          for name in ("sequence", "time", "received", "interval_s")],
        *[sa.Column(name, sa.Float) for name in ("rss_mb", "rss_peak_mb", "cpu_percent", "mem_total_mb",
                                                  "mem_available_mb", "nvmap_mb", "gpu_load")],
        sa.Column("system", sa.JSON),
        sa.UniqueConstraint("device_pk", "sequence", name="uq_samples_device_sequence"))
    op.create_index("ix_samples_device_time", "samples", ["device_pk", "time"])
    op.create_index("ix_samples_time", "samples", ["time"])
    op.create_table(
        "model_samples", _id(),
        sa.Column("sample_id", ID, sa.ForeignKey("samples.id", ondelete="CASCADE"), nullable=False, index=True),
        _device_fk(), sa.Column("time", sa.Float, nullable=False), *_model_columns(),
        sa.Column("memory_mb", sa.Float), sa.Column("requests", sa.BigInteger, nullable=False),
        sa.Column("failures", sa.BigInteger, nullable=False), sa.Column("p50_ms", sa.Float),
        sa.Column("p99_ms", sa.Float), sa.Column("histogram", sa.JSON))
    op.create_index("ix_model_samples_device_time", "model_samples", ["device_pk", "time"])
    op.create_table(
        "rollups", _id(), _device_fk(), *_bucket_columns(), sa.Column("figures", sa.JSON, nullable=False),
        sa.UniqueConstraint("device_pk", "resolution", "bucket", name="uq_rollups_bucket"))
    op.create_index("ix_rollups_resolution_bucket", "rollups", ["resolution", "bucket"])
    op.create_table(
        "model_rollups", _id(), _device_fk(), sa.Column("resolution", sa.String(8), nullable=False),
        sa.Column("bucket", sa.Float, nullable=False), *_model_columns(),
        *[sa.Column(name, sa.BigInteger, nullable=False) for name in ("samples", "requests", "failures")],
        sa.Column("memory_mb_sum", sa.Float, nullable=False), sa.Column("memory_mb_n", sa.BigInteger, nullable=False),
        sa.Column("p99_ms_max", sa.Float), sa.Column("histogram", sa.JSON),
        sa.UniqueConstraint("device_pk", "resolution", "bucket", "name", "version", name="uq_model_rollups_bucket"))


def _model_columns() -> list:
    return [sa.Column("name", sa.String(128), nullable=False), sa.Column("version", sa.String(64), nullable=False),
            sa.Column("backend", sa.String(64), nullable=False)]


def _bucket_columns() -> list:
    return [sa.Column("resolution", sa.String(8), nullable=False), sa.Column("bucket", sa.Float, nullable=False),
            sa.Column("samples", sa.BigInteger, nullable=False)]


def downgrade() -> None:
    """Drop every table."""
    for table in ("model_rollups", "rollups", "model_samples", "samples", "operator_tokens", "device_tokens",
                  "devices"):
        op.drop_table(table)
