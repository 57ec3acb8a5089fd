"""The agent process (``edge-runtime agent``): uploads the telemetry spool, and syncs models, until told to stop.

It runs beside the runtime, which writes the spool and never touches the network. When the agent
file has a ``sync:`` block, a second thread runs the sync loop (:mod:`edge_runtime.fleet.sync_loop`:
passes, the grace-period watch, sync reports) beside the uploader. SIGTERM (systemd's stop) and
SIGINT set one stop event: the batch in flight finishes (at most ``request_timeout_s``), its
acknowledgement is written, the sync thread is given :data:`SYNC_JOIN_S` to finish its step, and the
process exits 0. A SIGKILL at any moment loses nothing: a record leaves the spool only after the
server acknowledged it, and a batch sent again is stored once; every step of a sync pass is safe to
kill, and reports and trials are on disk.
"""

from __future__ import annotations

import logging
import platform
import signal
import threading
from typing import Any, Callable, Dict, Optional

from edge_runtime import __version__
from edge_runtime.fleet.agent_config import AgentSettings, read_token
from edge_runtime.fleet.backoff import Backoff
from edge_runtime.fleet.transport import HttpTransport, Transport
from edge_runtime.fleet.uploader import Uploader
from edge_runtime.host_info import host_fingerprint
from edge_runtime.telemetry.spool import Spool

log = logging.getLogger(__name__)

SYNC_JOIN_S = 10.0  # a pass in flight past this is cut by the exit (it resumes at the next start)

# The agent only reads and acknowledges: the bound is the runtime's (telemetry.spool_max_bytes).
_READER_MAX_BYTES = 1 << 62


def device_facts() -> Dict[str, Any]:
    """What the server shows about this device: board, L4T and JetPack release, runtime version."""
    fingerprint = host_fingerprint(probe_gpu=False)
    return {"board": fingerprint.device_model or platform.machine(), "l4t": fingerprint.l4t,
            "jetpack": fingerprint.jetpack, "runtime_version": __version__}


def build_uploader(settings: AgentSettings, transport: Optional[Transport] = None) -> Uploader:
    """The uploader the settings describe; ``transport`` replaces HTTPS (tests)."""
    token_path = settings.resolve(settings.token_file)
    read_token(token_path)  # a missing or empty token file is a start-up error, not a retry loop
    if transport is None:
        ca_bundle = str(settings.resolve(settings.ca_bundle)) if settings.ca_bundle else None
        transport = HttpTransport(settings.server_url, ca_bundle, settings.request_timeout_s)
    return Uploader(
        Spool(settings.resolve(settings.spool_path), _READER_MAX_BYTES),
        transport,
        settings.device_id,
        lambda: read_token(token_path),
        device_facts(),
        Backoff(settings.backoff_initial_s, settings.backoff_max_s),
        settings.batch_max_records,
        settings.poll_s,
    )


def run_loop(uploader: Uploader, stop: threading.Event,
             wait: Optional[Callable[[float], Any]] = None) -> None:
    """Upload until ``stop`` is set; ``wait(seconds)`` pauses between steps (default: ``stop.wait``)."""
    pause = wait or stop.wait
    while not stop.is_set():
        outcome = uploader.step()
        if outcome.wait_s > 0 and not stop.is_set():
            pause(outcome.wait_s)


def run(settings: AgentSettings, transport: Optional[Transport] = None) -> int:
    """The ``edge-runtime agent`` process: upload (and sync) until SIGTERM or SIGINT; exit status 0."""
    stop = threading.Event()

    def request_stop(signum: int, frame: Any) -> None:
        log.info("signal %d: stopping after the batch in flight", signum)
        stop.set()

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    uploader = build_uploader(settings, transport)
    log.info("agent uploading %s to %s as %s", uploader.spool.path, settings.server_url, settings.device_id)
    sync_thread: Optional[threading.Thread] = None
    try:
        sync_thread = start_sync(settings, stop, transport)
        run_loop(uploader, stop)
    finally:
        stop.set()
        uploader.spool.close()
        if sync_thread is not None:
            sync_thread.join(SYNC_JOIN_S)
            if sync_thread.is_alive():
                log.warning("sync: a step still running after %g s is cut by the exit", SYNC_JOIN_S)
    log.info("agent stopped")
    return 0


def start_sync(settings: AgentSettings, stop: threading.Event,
               transport: Optional[Transport] = None) -> Optional[threading.Thread]:
    """The sync loop's thread when the settings have a ``sync:`` block (started), else None."""
    if settings.sync is None:
        return None
    from edge_runtime.fleet.sync_loop import build_sync_loop

    loop = build_sync_loop(settings, settings.sync, transport)
    thread = threading.Thread(target=loop.run, args=(stop,), name="sync", daemon=True)
    thread.start()
    log.info("agent syncing models from %s every %g s", settings.sync.metadata_url, settings.sync.poll_s)
    return thread
