"""Over-the-air updates: bundles, rollouts, sync reports; devices get a class and their sync state.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-26
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def _id() -> sa.Column:
    return sa.Column("id", ID, primary_key=True, autoincrement=True)


def upgrade() -> None:
    """Add the OTA tables and the two device columns (nullable: enrolled devices keep working)."""
    op.add_column("devices", sa.Column("device_class", sa.String(128)))
    op.add_column("devices", sa.Column("sync_state", sa.JSON))
    op.create_index("ix_devices_device_class", "devices", ["device_class"])
    op.create_table(
        "bundles", _id(),
        sa.Column("model", sa.String(128), nullable=False), sa.Column("version", sa.String(128), nullable=False),
        sa.Column("target", sa.String(300), nullable=False), sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("length", sa.BigInteger, nullable=False), sa.Column("device_classes", sa.JSON, nullable=False),
        sa.Column("fingerprints", sa.JSON, nullable=False), sa.Column("signer_key_id", sa.String(64), nullable=False),
        sa.Column("uploaded", sa.Float, nullable=False),
        sa.UniqueConstraint("model", "version", name="uq_bundles_model_version"))
    op.create_table(
        "rollouts", _id(),
        sa.Column("bundle_id", ID, sa.ForeignKey("bundles.id", ondelete="RESTRICT"), nullable=False),
        sa.Column("device_class", sa.String(128), nullable=False), sa.Column("canary", sa.JSON, nullable=False),
        sa.Column("percent", sa.Integer, nullable=False), sa.Column("state", sa.String(16), nullable=False),
        sa.Column("pause_reason", sa.String(1000)),
        sa.Column("created", sa.Float, nullable=False), sa.Column("updated", sa.Float, nullable=False))
    op.create_index("ix_rollouts_bundle_id", "rollouts", ["bundle_id"])
    op.create_index("ix_rollouts_device_class", "rollouts", ["device_class"])
    op.create_table(
        "sync_reports", _id(),
        sa.Column("device_pk", ID, sa.ForeignKey("devices.id", ondelete="CASCADE"), nullable=False),
        sa.Column("report_id", sa.String(32), nullable=False), sa.Column("at", sa.Float, nullable=False),
        sa.Column("received", sa.Float, nullable=False), sa.Column("model", sa.String(128), nullable=False),
        sa.Column("version", sa.String(128), nullable=False), sa.Column("target", sa.String(300), nullable=False),
        sa.Column("status", sa.String(16), nullable=False), sa.Column("reason", sa.String(500), nullable=False),
        sa.Column("rollout_id", sa.BigInteger),
        sa.UniqueConstraint("device_pk", "report_id", name="uq_sync_reports_device_report"))
    op.create_index("ix_sync_reports_device_at", "sync_reports", ["device_pk", "at"])
    op.create_index("ix_sync_reports_rollout_id", "sync_reports", ["rollout_id"])


def downgrade() -> None:
    """Drop the OTA tables and the device columns."""
    for table in ("sync_reports", "rollouts", "bundles"):
        op.drop_table(table)
    op.drop_index("ix_devices_device_class", table_name="devices")
    with op.batch_alter_table("devices") as batch:  # SQLite drops columns by copying the table
        batch.drop_column("sync_state")
        batch.drop_column("device_class")
