"""``edge-runtime serve``: build the repository, load models, serve with waitress, drain on SIGTERM.

Shutdown order on SIGTERM/SIGINT (as Triton does it): stop accepting connections, let in-flight
requests finish, then drain each model's queue and close its backends.
"""

from __future__ import annotations

import logging
import signal
import sys
import threading
import time
from pathlib import Path
from types import FrameType
from typing import Any, Dict, Optional, Sequence

from edge_runtime.backends.fake import FakeBackend
from edge_runtime.bundle.signing import load_public_key
from edge_runtime.config import RuntimeSettings, load_device_config
from edge_runtime.errors import BackendUnavailableError
from edge_runtime.serving.repository import ModelRepository

log = logging.getLogger(__name__)
LOOP_TIMEOUT_S = 0.5  # how soon the serve loop notices a stop signal
RECV_BYTES = 256 * 1024  # bytes per socket read (waitress' default: 8 KiB)


def build_repository(settings: RuntimeSettings, repository_dir: Optional[Path],
                     fakes: Sequence[str] = ()) -> ModelRepository:
    """The repository described by ``settings`` over ``repository_dir``, plus fake models by name."""
    device = load_device_config(settings.resolve(settings.device_config))
    keys = [load_public_key(settings.resolve(path)) for path in settings.trusted_keys]
    repository = ModelRepository(repository_dir, settings, device, keys)
    for name in fakes:
        repository.add_fake(name, FakeBackend)
    return repository


def serve(settings: RuntimeSettings, repository_dir: Optional[Path], host: str, port: int,
          fakes: Sequence[str] = ()) -> int:
    """Serve until SIGTERM/SIGINT; returns the exit status."""
    try:
        import waitress
        from waitress import wasyncore
    except ImportError as exc:
        raise BackendUnavailableError.missing_module("waitress", "server") from exc
    from edge_runtime.server.app import EXTENSION_KEY, create_app

    repository = build_repository(settings, repository_dir, fakes)
    if settings.load_models_at_start:
        repository.load_all()
    app = create_app(settings, repository)
    context = app.extensions[EXTENSION_KEY]
    socket_map: Dict[int, Any] = {}  # ours, so the drain below can watch the open connections
    body_cap = settings.limits.max_request_bytes
    # waitress spools bodies over 512 KiB (inbuf_overflow) and responses over 1 MiB to temp files;
    # a 600 KB image tensor then costs a disk round trip. Within the body cap, keep them in memory.
    # It also reads 8 KiB per recv(), one event-loop turn each: 256 KiB per read took 0.7 ms off a
    # 600 KB request + response here (docs/benchmarks.md).
    server = waitress.create_server(app, map=socket_map, host=host, port=port, threads=settings.http.threads,
                                    max_request_body_size=body_cap + 1, inbuf_overflow=body_cap + 1,
                                    outbuf_overflow=body_cap + 1, recv_bytes=RECV_BYTES)
    stopping = threading.Event()

    def stop(signum: int, frame: Optional[FrameType]) -> None:
        log.info("signal %d: draining", signum)
        context.draining.set()
        stopping.set()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    ready = [f"{e['name']} v{e['version']}: {e['state']}" for e in repository.index()]
    print(f"edge-runtime: serving on http://{host}:{server.effective_port} ({'; '.join(ready) or 'no models'})",
          file=sys.stderr, flush=True)
    try:
        while not stopping.is_set():
            wasyncore.loop(timeout=LOOP_TIMEOUT_S, map=socket_map, count=1)
        _drain(server, wasyncore, socket_map, settings.drain_timeout_s)
    finally:
        server.task_dispatcher.shutdown(timeout=settings.drain_timeout_s)
        repository.close()
        context.shm.close()
    print("edge-runtime: stopped", file=sys.stderr, flush=True)
    return 0


def _drain(server: Any, wasyncore: Any, socket_map: Dict[int, Any], timeout_s: float) -> None:
    """Stop accepting; keep the loop turning until open requests are answered or time is up."""
    server.accepting = False  # waitress polls the listener only while accepting
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and any(_busy(channel) for channel in list(socket_map.values())):
        wasyncore.loop(timeout=0.05, map=socket_map, count=1)
    server.close()


def _busy(channel: Any) -> bool:
    """A connection with a request in progress or a response not yet written."""
    return bool(getattr(channel, "requests", None)) or bool(getattr(channel, "total_outbufs_len", 0))
