"""What the HTTP layer needs at hand: the repository, shared-memory regions, limits, state."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

from flask import current_app

from edge_runtime.config import RuntimeSettings
from edge_runtime.server.limits import RequestLimits
from edge_runtime.server.shm import SystemSharedMemoryRegistry
from edge_runtime.serving.repository import ModelRepository

EXTENSION_KEY = "edge_runtime"  # where create_app() keeps the ServerContext in app.extensions


@dataclass
class ServerContext:
    """One per app: shared by every request thread (each member is thread-safe)."""

    repository: ModelRepository
    settings: RuntimeSettings
    limits: RequestLimits
    shm: SystemSharedMemoryRegistry = field(init=False)  # built from settings.shared_memory
    started: float = field(default_factory=time.time)
    draining: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        self.shm = SystemSharedMemoryRegistry(self.settings.shared_memory)

    @property
    def ready(self) -> bool:
        """Strict readiness, as Triton's default: not draining, and every model that should serve is ready.

        Not liveness: a model that failed to load makes this false while the process serves the others.
        """
        return not self.draining.is_set() and self.repository.ready()


def context() -> ServerContext:
    """The ServerContext of the app handling the current request."""
    ctx: ServerContext = current_app.extensions[EXTENSION_KEY]
    return ctx
