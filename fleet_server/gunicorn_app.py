"""`edge-fleet serve`: the app under gunicorn (worker processes, each with threads), plain HTTP or TLS.

Each worker builds its own app (and engine) after the fork; nothing is shared between workers
but the database and the secret file, which is what lets instances scale out. The master checks
the schema revision and creates the secret before any worker starts, prints
``edge-fleet: serving on http(s)://HOST:PORT`` once it listens (the real port when 0 was asked),
and runs retention every ``retention.run_every_s`` and the TUF timestamp refresh every
``tuf.refresh_every_s`` on threads of its own.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Optional, TextIO

from gunicorn.app.base import BaseApplication

from fleet_server.app import create_app
from fleet_server.db import make_engine
from fleet_server.retention import start_periodic_retention
from fleet_server.schema import require_current
from fleet_server.settings import FleetSettings
from fleet_server.tokens import load_or_create_secret
from fleet_server.tuf_refresher import start_periodic_refresh

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ServeOptions:
    """How `edge-fleet serve` listens."""

    host: str = "127.0.0.1"
    port: int = 8080
    workers: int = 2
    threads: int = 8
    tls_cert: Optional[Path] = None
    tls_key: Optional[Path] = None


class FleetGunicorn(BaseApplication):
    """gunicorn configured from code (no gunicorn.conf.py, no command-line parsing of its own)."""

    def __init__(self, settings: FleetSettings, options: ServeOptions, out: TextIO) -> None:
        self.settings = settings
        self.options = options
        self.out = out
        self.stop_retention = threading.Event()
        super().__init__()

    def load_config(self) -> None:
        """Hand gunicorn its settings."""
        options = self.options
        host = f"[{options.host}]" if ":" in options.host else options.host
        config: Dict[str, Any] = {
            "bind": [f"{host}:{options.port}"], "workers": options.workers, "threads": options.threads,
            "worker_class": "gthread", "timeout": 60, "graceful_timeout": 10, "keepalive": 5,
            "errorlog": "-", "loglevel": "info", "accesslog": None, "proc_name": "edge-fleet",
            "when_ready": self._when_ready, "on_exit": self._on_exit,
            "control_socket_disable": True,  # gunicorn 27+: no control socket left in $HOME
        }
        if options.tls_cert is not None and options.tls_key is not None:
            config.update(certfile=str(options.tls_cert), keyfile=str(options.tls_key))
        for key, value in config.items():
            if key in self.cfg.settings:  # settings this gunicorn version knows
                self.cfg.set(key, value)

    def load(self) -> Any:
        """The WSGI app (called in each worker after the fork)."""
        return create_app(self.settings)

    def _when_ready(self, server: Any) -> None:
        scheme = "https" if self.options.tls_cert is not None else "http"
        address = server.LISTENERS[0].sock.getsockname()
        print(f"edge-fleet: serving on {scheme}://{self.options.host}:{address[1]}", file=self.out, flush=True)
        if self.settings.retention.run_every_s > 0:
            start_periodic_retention(self.settings, make_engine(self.settings), time.time, self.stop_retention)
        if self.settings.tuf.refresh_every_s > 0:
            start_periodic_refresh(self.settings, self.stop_retention)

    def _on_exit(self, server: Any) -> None:
        self.stop_retention.set()


def serve(settings: FleetSettings, options: ServeOptions, out: TextIO = sys.stdout) -> int:
    """Check the database and the secret, then run gunicorn until it is stopped (SIGTERM/SIGINT)."""
    engine = make_engine(settings)
    try:
        require_current(engine)
    finally:
        engine.dispose()
    load_or_create_secret(settings.resolve(settings.secret_file))
    FleetGunicorn(settings, options, out).run()
    return 0

