"""The composition root of ``edge-runtime serve``: settings → repository → app → transport.

The one place that knows every piece: the HTTP layer (``server/``) never builds the model layer,
and the telemetry sampler (its own thread) is started here, writing into the spool that the agent
process (``edge-runtime agent``) uploads; the runtime itself never touches the network.
Start-up checks that can refuse (a non-loopback bind without restrictions, a missing secret)
run before any model is loaded, so a wrong setting fails in a second with one line.
Under systemd (``Type=notify``) it sends READY=1 once the models that can load are warm and the
socket listens, WATCHDOG=1 while the HTTP loop and every model worker make progress, and
STOPPING=1 at a stop signal (:mod:`edge_runtime.server.service_notify`).
"""

from __future__ import annotations

import contextlib
import functools
import logging
import sys
from pathlib import Path
from typing import Any, Callable, Dict, Optional, Sequence, Tuple

from edge_runtime.backends.base import Backend
from edge_runtime.backends.fake import FakeBackend
from edge_runtime.bundle.signing import load_public_key
from edge_runtime.config import RuntimeSettings, load_device_config
from edge_runtime.errors import BackendUnavailableError, ConfigError
from edge_runtime.serving.repository import ModelRepository
from edge_runtime.systemd_notify import notifier_from_env, watchdog_interval

log = logging.getLogger(__name__)
FakeModel = Tuple[str, Callable[[], Backend]]


def parse_fake(spec: str) -> FakeModel:
    """``NAME`` or ``NAME:delay_ms=200,scale=2,offset=1,fail=0``: a fake model and its backend factory."""
    name, _, options = spec.partition(":")
    if not name:
        raise ConfigError(f"--fake {spec!r}: expected NAME[:delay_ms=N,scale=X,offset=X,fail=0|1]")
    kwargs: Dict[str, Any] = {}
    for option in filter(None, options.split(",")):
        key, _, value = option.partition("=")
        try:
            if key == "delay_ms":
                kwargs["delay_s"] = float(value) / 1000.0
            elif key in ("scale", "offset"):
                kwargs[key] = float(value)
            elif key == "fail":
                kwargs[key] = value.lower() in ("1", "true", "yes")
            else:
                raise ConfigError(f"--fake {spec!r}: unknown option {key!r} (delay_ms, scale, offset, fail)")
        except ValueError as exc:
            raise ConfigError(f"--fake {spec!r}: {key}: expected a number, got {value!r}") from exc
    return name, functools.partial(FakeBackend, **kwargs)


def build_repository(settings: RuntimeSettings, repository_dir: Optional[Path],
                     fakes: Sequence[FakeModel] = ()) -> ModelRepository:
    """The repository described by ``settings`` over ``repository_dir``, plus fake models."""
    device = load_device_config(settings.resolve(settings.device_config))
    keys = [load_public_key(settings.resolve(path)) for path in settings.trusted_keys]
    repository = ModelRepository(repository_dir, settings, device, keys)
    for name, factory in fakes:
        repository.add_fake(name, factory)
    return repository


def run(settings: RuntimeSettings, repository_dir: Optional[Path], host: str, port: int,
        fakes: Sequence[str] = ()) -> int:
    """Check, build, load, serve until SIGTERM/SIGINT, close; returns the exit status."""
    try:
        from edge_runtime.server.app import EXTENSION_KEY, create_app
        from edge_runtime.server.restricted import check_remote_binding, load_restrictions
        from edge_runtime.server.serve import serve
        from edge_runtime.server.service_notify import RuntimeNotifications, serving_status
    except ImportError as exc:
        raise BackendUnavailableError.missing_module(exc.name or "flask", "server") from exc

    check_remote_binding(settings, host)
    restrictions = load_restrictions(settings)
    fake_models = [parse_fake(spec) for spec in fakes]
    repository = build_repository(settings, repository_dir, fake_models)
    with contextlib.ExitStack() as stack:
        stack.callback(repository.close)
        if settings.load_models_at_start:
            repository.load_all()
        start_telemetry(settings, repository, stack)
        app = create_app(settings, repository, restrictions)
        context = app.extensions[EXTENSION_KEY]
        stack.callback(context.shm.close)
        notify = RuntimeNotifications(notifier_from_env(), watchdog_interval(), host,
                                      lambda: serving_status(repository.index()))

        def on_stop() -> None:
            context.draining.set()
            notify.stopping()

        status = serve(app, settings, host, port, summary=lambda: _summary(repository),
                       on_stop=on_stop, on_ready=notify.ready)
    print("edge-runtime: stopped", file=sys.stderr, flush=True)
    return status


def start_telemetry(settings: RuntimeSettings, repository: ModelRepository, stack: contextlib.ExitStack) -> None:
    """Open the spool and start the sampler (closed by ``stack``); a spool that cannot open costs telemetry only."""
    if not settings.telemetry.enabled:
        return
    from edge_runtime.telemetry.sampler import start_sampler
    from edge_runtime.telemetry.spool import Spool, SpoolError

    path = settings.resolve(settings.telemetry.spool_path)
    try:
        spool = Spool(path, settings.telemetry.spool_max_bytes)
    except SpoolError as exc:
        log.error("telemetry is off: %s", exc)
        return
    stack.callback(spool.close)
    sampler = start_sampler(settings, repository.loaded, spool.append)
    if sampler is not None:
        stack.callback(sampler.close)  # runs before spool.close: callbacks run last in, first out


def _summary(repository: ModelRepository) -> str:
    return "; ".join(f"{e['name']} v{e['version']}: {e['state']}" for e in repository.index())
