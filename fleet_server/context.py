"""What every request handler needs: settings, the database engine, the token secret, the clock.

One :class:`FleetContext` per app (per worker process), built by ``create_app`` and kept in
``app.extensions["fleet"]``; nothing lives at module level, so instances stay stateless and
tests can run several apps side by side.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

from flask import current_app, request
from sqlalchemy import Engine

from fleet_server.settings import FleetSettings

Clock = Callable[[], float]


@dataclass(frozen=True)
class FleetContext:
    """The app's shared, read-only state."""

    settings: FleetSettings
    engine: Engine
    secret: bytes
    clock: Clock

    @property
    def is_sqlite(self) -> bool:
        """Whether the engine is SQLite (write transactions take the lock up front there)."""
        return self.engine.dialect.name == "sqlite"


def current_context() -> FleetContext:
    """The context of the app handling the current request."""
    context: FleetContext = current_app.extensions["fleet"]
    return context


def bearer_token() -> Optional[str]:
    """The request's ``Authorization: Bearer <token>``, or None."""
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()
