"""`edge-fleet serve` keeps the TUF timestamp fresh: a thread on gunicorn's master re-signs it periodically.

Devices refuse a timestamp past its expiry (the anti-freeze check: ``tuf.timestamp_hours``, 6 h by
default), so something must re-sign it even when nothing is published. The master runs
:func:`fleet_server.tuf_repository.refresh_timestamp` every ``tuf.refresh_every_s`` (which also
renews targets, bins and snapshot close to their expiry). Several instances may run it: writers
serialize on the repository's lock, and an extra timestamp version costs nothing. Before
``edge-fleet tuf-init`` there is no repository: the thread waits for one, quietly.
"""

from __future__ import annotations

import logging
import threading

from fleet_server.settings import FleetSettings
from fleet_server.tuf_repository import refresh_timestamp

logger = logging.getLogger(__name__)


def refresh_once(settings: FleetSettings) -> int:
    """Re-sign the timestamp now; its new version (0: there is no repository yet)."""
    repo_dir = settings.resolve(settings.tuf.repository_dir)
    if not (repo_dir / "metadata" / "timestamp.json").is_file():
        return 0
    return refresh_timestamp(repo_dir, settings.resolve(settings.tuf.keys_dir), settings.tuf.expiry())


def start_periodic_refresh(settings: FleetSettings, stop: threading.Event) -> threading.Thread:
    """A daemon thread re-signing the timestamp every ``tuf.refresh_every_s`` until ``stop`` is set."""

    def loop() -> None:
        while not stop.wait(settings.tuf.refresh_every_s):
            try:
                version = refresh_once(settings)
                if version:
                    logger.info("TUF timestamp re-signed: version %d", version)
            except Exception:  # retried next period; it must not end the loop
                logger.exception("TUF timestamp refresh failed")

    thread = threading.Thread(target=loop, name="fleet-tuf-refresh", daemon=True)
    thread.start()
    return thread
