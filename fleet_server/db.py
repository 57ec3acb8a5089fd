"""The database connection: one SQLAlchemy 2.x engine per process, SQLite or PostgreSQL.

SQLite (the embedded default) runs in WAL mode with a busy timeout, so readers never block the
writer and concurrent writers (gunicorn workers, threads) wait for each other instead of failing.
PostgreSQL (a fleet) goes through psycopg 3 with a bounded pool; several server instances share it.
A pool that stays exhausted, or a lock that is not granted in time, is :class:`OverloadedError`
(503 with Retry-After), never a 500.
"""

from __future__ import annotations

import contextlib
import sqlite3
from typing import Any, Iterator

from sqlalchemy import Connection, Engine, create_engine, event, exc, text

from fleet_server.errors import DatabaseError, OverloadedError
from fleet_server.settings import FleetSettings

SQLITE_BUSY_TIMEOUT_MS = 10_000


def make_engine(settings: FleetSettings) -> Engine:
    """An engine for ``settings.database_url`` (a relative SQLite path is relative to the settings file)."""
    url = settings.resolved_database_url
    try:
        if settings.is_sqlite:
            engine = create_engine(url, pool_size=settings.pool_size, max_overflow=0,
                                   pool_timeout=settings.pool_timeout_s,
                                   connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000, "check_same_thread": False})
            event.listen(engine, "connect", _sqlite_pragmas)
        else:
            engine = create_engine(url, pool_size=settings.pool_size, max_overflow=settings.pool_size,
                                   pool_timeout=settings.pool_timeout_s, pool_pre_ping=True)
    except (exc.ArgumentError, exc.NoSuchModuleError, ImportError) as error:
        raise DatabaseError(f"database_url: {error}") from error
    return engine


def _sqlite_pragmas(dbapi_connection: sqlite3.Connection, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL: durable across process crashes
    cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


@contextlib.contextmanager
def database_errors() -> Iterator[None]:
    """Turn SQLAlchemy's operational failures into the server's errors (503 when retrying helps)."""
    try:
        yield
    except exc.TimeoutError as error:  # the pool stayed exhausted for pool_timeout_s
        raise OverloadedError("the database is busy: retry later") from error
    except exc.OperationalError as error:
        message = str(error.orig) if error.orig is not None else str(error)
        if "locked" in message or "busy" in message or "could not serialize" in message:
            raise OverloadedError("the database is busy: retry later") from error
        raise DatabaseError(f"database error: {message.splitlines()[0] if message else 'unknown'}") from error


def begin_write(connection: Connection, is_sqlite: bool) -> None:
    """Start a transaction that will write: on SQLite take the write lock at once (BEGIN IMMEDIATE).

    A deferred SQLite transaction that reads first and writes later fails at once (SQLITE_BUSY,
    no waiting) when another writer committed in between; taking the lock up front makes it wait.
    A connection that has only read so far (ingest authenticates first) is fine: on SQLite its
    read transaction, which holds no lock, is ended first; on PostgreSQL the writes join it.
    """
    if is_sqlite:
        if connection.in_transaction():
            connection.rollback()
        connection.exec_driver_sql("BEGIN IMMEDIATE")
    elif not connection.in_transaction():
        connection.begin()


def schema_revision(connection: Connection) -> str | None:
    """The Alembic revision the database is at, or None when it was never migrated."""
    try:
        row = connection.execute(text("SELECT version_num FROM alembic_version")).first()
    except exc.DBAPIError:
        connection.rollback()
        return None
    return None if row is None else str(row[0])
