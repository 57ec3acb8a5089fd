"""Alembic's environment for the central server: run by `edge-fleet migrate` (fleet_server.schema)."""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection, create_engine

from fleet_server.models import Base


def _run(connection: Connection) -> None:
    context.configure(connection=connection, target_metadata=Base.metadata,
                      render_as_batch=connection.dialect.name == "sqlite")  # SQLite alters tables by copy
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    """Migrate over the connection handed in by fleet_server.schema, or one to ``sqlalchemy.url``."""
    connection = context.config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    engine = create_engine(context.config.get_main_option("sqlalchemy.url") or "")
    with engine.connect() as own:
        _run(own)
    engine.dispose()


run_migrations_online()
