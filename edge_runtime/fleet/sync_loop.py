"""The agent's sync thread: a sync pass every ``poll_s``, the grace-period watch between passes, reports sent.

Each :meth:`SyncLoop.step` does what is due and says how long to wait before the next one:
- while a trial is open (:mod:`edge_runtime.fleet.trial`), the runtime is looked at every
  ``watch_every_s`` seconds, and no pass runs (a version on trial is not replaced until its grace
  period ends or it is rolled back);
- otherwise a pass (:func:`edge_runtime.fleet.sync_pass.run_once`) runs when due: every ``poll_s``
  after a pass that went well, sooner with backoff (full jitter, at most ``poll_s``) after one that
  failed (it raised, or an outcome is ``failed``: the server or the network, worth a retry);
- after each pass and each rollback the reports are queued (:mod:`edge_runtime.fleet.sync_reports`)
  and flushed; reports the server did not take are tried again with their own backoff.
:meth:`SyncLoop.run` repeats steps until the stop event is set, waiting on the event so a stop is
seen at once (a pass in flight finishes first; every step of a pass is safe to kill anyway).
"""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path
from typing import Callable, List, Optional

from edge_runtime.config import load_device_config
from edge_runtime.config.device import HealthGateSettings
from edge_runtime.errors import EdgeRuntimeError
from edge_runtime.fleet.agent_config import AgentSettings, read_token
from edge_runtime.fleet.backoff import Backoff
from edge_runtime.fleet.refused_targets import RECORD_NAME, RefusedTargets
from edge_runtime.fleet.sync import FAILED, SyncOutcome
from edge_runtime.fleet.sync_config import SyncSettings, runtime_headers
from edge_runtime.fleet.sync_reports import ReportQueue, ReportSender, outcome_report, report_sender, worth_reporting
from edge_runtime.fleet.transport import HttpTransport, Transport
from edge_runtime.fleet.trial import TrialStore, TrialWatch, api_promote, metrics_start_time, open_trials, target_sha256
from edge_runtime.liveness import Heartbeat

log = logging.getLogger(__name__)

WATCH_EVERY_S = 2.0
# How long one step may run before the agent's watchdog calls the sync thread wedged: a pass may
# build a TensorRT engine at stage (health_gate.stage_timeout_s) and download bundles (each read
# bounded by request_timeout_s, the whole download not), so it gets the stage time-out plus this.
PASS_ALLOWANCE_S = 3600.0
WAIT_SLACK_S = 30.0  # a wait of w seconds promises the next beat within w + this

RunPass = Callable[[], List[SyncOutcome]]
OpenTrials = Callable[[List[SyncOutcome]], object]


class SyncLoop:
    """Passes, the trial watch and report flushes, timed by one injected monotonic clock."""

    def __init__(self, run_pass: RunPass, open_trials_fn: OpenTrials, watch: TrialWatch, queue: ReportQueue,
                 sender: Optional[ReportSender], poll_s: float, backoff: Backoff, report_backoff: Backoff,
                 watch_every_s: float = WATCH_EVERY_S, clock: Callable[[], float] = time.monotonic) -> None:
        self.watch = watch
        self.queue = queue
        self.poll_s = poll_s
        self.backoff = backoff
        self.report_backoff = report_backoff
        self.watch_every_s = watch_every_s
        self._run_pass = run_pass
        self._open_trials = open_trials_fn
        self._sender = sender
        self._clock = clock
        self._next_pass = clock()
        self._next_flush: Optional[float] = clock()  # None: nothing left unsent
        self.step_limit_s = HealthGateSettings().stage_timeout_s + PASS_ALLOWANCE_S

    def run(self, stop: threading.Event, heartbeat: Optional[Heartbeat] = None) -> None:
        """Step until ``stop`` is set; ``heartbeat`` (the agent's watchdog) beats before each step and each wait."""
        while not stop.is_set():
            if heartbeat is not None:
                heartbeat.beat(self.step_limit_s)
            try:
                wait = self.step()
            except Exception:  # the thread must outlive any one step's surprise
                log.exception("sync: unexpected error in the sync loop; going on after %g s", self.poll_s)
                wait = self.poll_s
            if wait > 0:
                if heartbeat is not None:
                    heartbeat.beat(wait + WAIT_SLACK_S)
                stop.wait(wait)

    def step(self) -> float:
        """Do what is due now (watch, pass, flush); the seconds until something is due again."""
        trial_open = self.watch.is_open()
        if trial_open:
            rollbacks = self.watch.check()
            if rollbacks:
                self.queue.append(rollbacks)
                self.flush()
            trial_open = self.watch.is_open()
        if not trial_open and self._clock() >= self._next_pass:
            self._pass()
        elif self._next_flush is not None and self._clock() >= self._next_flush:
            self.flush()
        return self._wait()

    def flush(self) -> None:
        """Send the queued reports; on failure try again after the report backoff."""
        if self._sender is None:
            self._next_flush = None
            return
        result = self._sender.flush()
        if result.error:
            self._next_flush = self._clock() + self.report_backoff.next_delay()
        else:
            self.report_backoff.reset()
            self._next_flush = None

    def _pass(self) -> None:
        failed = False
        outcomes: List[SyncOutcome] = []
        try:
            outcomes = self._run_pass()
        except EdgeRuntimeError as exc:
            log.error("sync: the pass failed: %s", exc)
            failed = True
        except Exception:
            log.exception("sync: the pass failed")
            failed = True
        failed = failed or any(o.status == FAILED for o in outcomes)
        self.queue.append([outcome_report(o) for o in outcomes if worth_reporting(o)])
        try:
            self._open_trials(outcomes)
        except EdgeRuntimeError as exc:
            log.error("sync: cannot record the grace period of the promoted version(s): %s", exc)
        self.flush()
        if failed:
            delay = min(self.poll_s, self.backoff.next_delay())
        else:
            self.backoff.reset()
            delay = self.poll_s
        self._next_pass = self._clock() + delay

    def _wait(self) -> float:
        now = self._clock()
        due = [now + self.watch_every_s] if self.watch.is_open() else [self._next_pass]
        if self._next_flush is not None:
            due.append(self._next_flush)
        return max(0.0, min(due) - now)


def build_sender(agent: AgentSettings, queue: ReportQueue, repository: Path,
                 transport: Optional[Transport] = None) -> ReportSender:
    """The report sender the agent settings describe (server, device token, CA bundle); ``transport``: tests."""
    if transport is None:
        ca_bundle = str(agent.resolve(agent.ca_bundle)) if agent.ca_bundle else None
        transport = HttpTransport(agent.server_url, ca_bundle, agent.request_timeout_s)
    token_path = agent.resolve(agent.token_file)
    return report_sender(queue, transport, agent.device_id, lambda: read_token(token_path), repository)


def build_sync_loop(agent: AgentSettings, settings: SyncSettings, transport: Optional[Transport] = None,
                    run_pass: Optional[RunPass] = None) -> SyncLoop:
    """The agent's sync loop from its settings; ``transport`` and ``run_pass`` replace the real ones (tests)."""
    from edge_runtime.fleet import sync_pass

    staging = settings.resolve(settings.staging_dir)
    repository = settings.resolve(settings.repository)
    headers = runtime_headers(settings)
    start_time = metrics_start_time(settings.runtime_url, headers)
    store = TrialStore(staging)
    queue = ReportQueue(staging)
    metadata_dir = settings.resolve(settings.metadata_dir)
    watch = TrialWatch(store, repository, RefusedTargets(staging / RECORD_NAME), start_time,
                       api_promote(settings.runtime_url, headers), settings.grace_s)

    def trials(outcomes: List[SyncOutcome]) -> object:
        return open_trials(outcomes, repository, store, start_time, lambda name: target_sha256(metadata_dir, name))

    loop = SyncLoop(run_pass or (lambda: sync_pass.run_once(settings)), trials, watch, queue,
                    build_sender(agent, queue, repository, transport), settings.poll_s,
                    Backoff(agent.backoff_initial_s, settings.poll_s),
                    Backoff(agent.backoff_initial_s, agent.backoff_max_s))
    loop.step_limit_s = _stage_timeout_s(settings) + PASS_ALLOWANCE_S
    return loop


def _stage_timeout_s(settings: SyncSettings) -> float:
    """The device config's health_gate.stage_timeout_s (its default when the file cannot be read: the pass says why)."""
    try:
        return load_device_config(settings.resolve(settings.device_config)).health_gate.stage_timeout_s
    except EdgeRuntimeError:
        return HealthGateSettings().stage_timeout_s


def report_once(agent: Optional[AgentSettings], settings: SyncSettings, outcomes: List[SyncOutcome],
                transport: Optional[Transport] = None) -> None:
    """``sync --once``: queue the pass's reports and try to send the queue once (kept when the server is down)."""
    staging = settings.resolve(settings.staging_dir)
    queue = ReportQueue(staging)
    queue.append([outcome_report(o) for o in outcomes if worth_reporting(o)])
    if agent is None or not queue.pending():
        return
    build_sender(agent, queue, settings.resolve(settings.repository), transport).flush()
