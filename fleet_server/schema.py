"""The database schema's revision: `edge-fleet migrate` (Alembic ``upgrade head``) and the start-up check.

The migrations live in ``fleet_server/migrations`` (an Alembic script directory shipped in the
package); they run over the server's own engine, so the same URL rules apply as when serving.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory
from sqlalchemy import Engine

from fleet_server.db import database_errors, schema_revision
from fleet_server.errors import DatabaseError

MIGRATIONS = Path(__file__).resolve().parent / "migrations"


def alembic_config() -> Config:
    """Alembic's configuration pointing at the package's migrations (no alembic.ini needed)."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    return config


def head_revision() -> str:
    """The newest revision the code knows."""
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    if head is None:
        raise DatabaseError("no migrations found in the package")
    return head


def upgrade_to_head(engine: Engine) -> str:
    """Bring the database to the newest revision (idempotent); return it."""
    config = alembic_config()
    with database_errors(), engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, "head")
    return head_revision()


def current_revision(engine: Engine) -> Optional[str]:
    """The revision the database is at (None: never migrated)."""
    with database_errors(), engine.connect() as connection:
        return schema_revision(connection)


def require_current(engine: Engine) -> None:
    """DatabaseError unless the database is at the newest revision (checked before serving)."""
    current, head = current_revision(engine), head_revision()
    if current != head:
        raise DatabaseError(f"the database is at revision {current or 'none'}, the server needs {head}: "
                            "run `edge-fleet migrate`")
