"""The agent process (``edge-runtime agent``): uploads the telemetry spool, and syncs models, until told to stop.

It runs beside the runtime, which writes the spool and never touches the network. When the agent
file has a ``sync:`` block, a second thread runs the sync loop (:mod:`edge_runtime.fleet.sync_loop`:
passes, the grace-period watch, sync reports) beside the uploader. SIGTERM (systemd's stop) and
SIGINT set one stop event: the batch in flight finishes (at most ``request_timeout_s``), its
acknowledgement is written, the sync thread is given :data:`SYNC_JOIN_S` to finish its step, and the
process exits 0. A SIGKILL at any moment loses nothing: a record leaves the spool only after the
server acknowledged it, and a batch sent again is stored once; every step of a sync pass is safe to
kill, and reports and trials are on disk. Under systemd it sends READY=1 once the loops run,
WATCHDOG=1 while both loops beat (:mod:`edge_runtime.liveness`) and STOPPING=1 at the signal.
"""

from __future__ import annotations

import logging
import platform
import signal
import threading
from typing import Any, Callable, Dict, Optional

from edge_runtime import __version__, systemd_notify
from edge_runtime.fleet.agent_config import AgentSettings, read_token
from edge_runtime.fleet.backoff import Backoff
from edge_runtime.fleet.transport import HttpTransport, Transport
from edge_runtime.fleet.uploader import Uploader
from edge_runtime.host_info import host_fingerprint
from edge_runtime.liveness import Heartbeat, HeartbeatSet, Watchdog
from edge_runtime.telemetry.spool import Spool

log = logging.getLogger(__name__)

SYNC_JOIN_S = 10.0  # a pass in flight past this is cut by the exit (it resumes at the next start)
UPLOAD_SLACK_S = 30.0  # beyond a step's socket time-outs or a wait, before the watchdog calls the loop wedged

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


def upload_step_limit_s(settings: AgentSettings) -> float:
    """How long one upload step may take: its POST's connect, send and read each have ``request_timeout_s``."""
    return 3 * settings.request_timeout_s + UPLOAD_SLACK_S


def run_loop(uploader: Uploader, stop: threading.Event, wait: Optional[Callable[[float], Any]] = None,
             heartbeat: Optional[Heartbeat] = None, step_limit_s: float = 0.0) -> None:
    """Upload until ``stop`` is set; ``wait(seconds)`` pauses between steps (default: ``stop.wait``).

    ``heartbeat`` (the watchdog's) beats before each step (promising ``step_limit_s``) and each wait.
    """
    pause = wait or stop.wait
    while not stop.is_set():
        if heartbeat is not None:
            heartbeat.beat(step_limit_s)
        outcome = uploader.step()
        if outcome.wait_s > 0 and not stop.is_set():
            if heartbeat is not None:
                heartbeat.beat(outcome.wait_s + UPLOAD_SLACK_S)
            pause(outcome.wait_s)


def run(settings: AgentSettings, transport: Optional[Transport] = None) -> int:
    """The ``edge-runtime agent`` process: upload (and sync) until SIGTERM or SIGINT; exit status 0.

    Under systemd (``NOTIFY_SOCKET``): READY=1 once the loops run, WATCHDOG=1 while both beat, STOPPING=1.
    """
    stop = threading.Event()
    notifier = systemd_notify.notifier_from_env()
    interval_s = systemd_notify.watchdog_interval()
    beats = HeartbeatSet()
    watchdog = Watchdog(notifier, interval_s, beats.overdue) if interval_s and notifier.enabled else None

    def request_stop(signum: int, frame: Any) -> None:
        log.info("signal %d: stopping after the batch in flight", signum)
        stop.set()
        if watchdog is not None:
            watchdog.stop()
        notifier.send(systemd_notify.STOPPING)

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    uploader = build_uploader(settings, transport)
    log.info("agent uploading %s to %s as %s", uploader.spool.path, settings.server_url, settings.device_id)
    sync_thread: Optional[threading.Thread] = None
    try:
        step_limit_s = upload_step_limit_s(settings)
        uploading = beats.add(Heartbeat("uploader loop", step_limit_s))
        sync_thread = start_sync(settings, stop, transport, beats)
        notifier.send(systemd_notify.READY, systemd_notify.status(
            "uploading telemetry" + ("; syncing models" if sync_thread is not None else "")))
        if watchdog is not None:
            watchdog.start()
        run_loop(uploader, stop, heartbeat=uploading, step_limit_s=step_limit_s)
    finally:
        stop.set()
        if watchdog is not None:
            watchdog.stop()
        uploader.spool.close()
        if sync_thread is not None:
            sync_thread.join(SYNC_JOIN_S)
            if sync_thread.is_alive():
                log.warning("sync: a step still running after %g s is cut by the exit", SYNC_JOIN_S)
    log.info("agent stopped")
    return 0


def start_sync(settings: AgentSettings, stop: threading.Event, transport: Optional[Transport] = None,
               beats: Optional[HeartbeatSet] = None) -> Optional[threading.Thread]:
    """The sync loop's thread when the settings have a ``sync:`` block (started), else None; it beats in ``beats``."""
    if settings.sync is None:
        return None
    from edge_runtime.fleet.sync_loop import build_sync_loop

    loop = build_sync_loop(settings, settings.sync, transport)
    heartbeat = beats.add(Heartbeat("sync loop", loop.step_limit_s)) if beats is not None else None
    thread = threading.Thread(target=loop.run, args=(stop, heartbeat), name="sync", daemon=True)
    thread.start()
    log.info("agent syncing models from %s every %g s", settings.sync.metadata_url, settings.sync.poll_s)
    return thread
