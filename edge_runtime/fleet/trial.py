"""The grace period after a promotion: a version that crashes the runtime soon after it took over is rolled back.

The health gate proves a version serves a few probes; it cannot prove the runtime survives real
traffic on it. So after each ``promoted`` outcome a :class:`Trial` is written (atomically) to
``<staging>/trials.json``: the model, the new version, the ``previous`` one (the pointer's
last-good after the promotion), the target, and the runtime's ``process_start_time_seconds``
(its ``/metrics``, from prometheus-client's ProcessCollector) at that moment.

:meth:`TrialWatch.check`, called every few seconds while a trial is open, reads the start time again:
- same start time, and ``grace_s`` since the promotion: the trial is committed (removed);
- another start time (the runtime restarted: it crashed or was killed during the grace period), or
  no answer for more than ``max_silence_s``: roll back. When the runtime answers, the previous
  version is staged and promoted through its restricted repository API (the runtime writes the
  pointer and drains the new version); when it does not, the pointer file is written directly
  (``active = previous``), so the runtime serves the previous version when it starts, and the trial
  stays open as ``pointer_written`` until the runtime answers and the API confirms it.
A rolled-back target is remembered as refused (:mod:`edge_runtime.fleet.refused_targets`), so the
next pass does not take it again, and a ``rolled_back`` report saying why in one line is queued.
An agent killed mid-trial resumes the watch from the file.
"""

from __future__ import annotations

import json
import logging
import re
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Callable, List, Mapping, Optional, Sequence, Tuple
from urllib.parse import quote

from edge_runtime.atomic_io import write_bytes_atomic
from edge_runtime.errors import EdgeRuntimeError, PointerError
from edge_runtime.fleet.health_gate import RuntimeApi, RuntimeApiError
from edge_runtime.fleet.refused_targets import RefusedTarget, RefusedTargets
from edge_runtime.fleet.sync import PROMOTED, ROLLED_BACK, SyncOutcome
from edge_runtime.fleet.sync_reports import Report, make_report, one_line
from edge_runtime.serving.active_version import ActiveVersion, read_pointer, write_pointer

log = logging.getLogger(__name__)

TRIALS_NAME = "trials.json"
WATCHING = "watching"
POINTER_WRITTEN = "pointer_written"  # rolled back on disk; the runtime has not confirmed it yet
DEFAULT_MAX_SILENCE_S = 30.0
_START_TIME = re.compile(rb"^process_start_time_seconds\s+(\S+)\s*$", re.MULTILINE)

StartTime = Callable[[], Optional[float]]  # the runtime's start time (None: not exported); RuntimeApiError: no answer
Promote = Callable[[str, str], None]  # (model, version): stage and promote it through the runtime's API


@dataclass(frozen=True)
class Trial:
    """A promoted version in its grace period, and what to go back to."""

    model: str
    version: str
    previous: str
    target: str
    sha256: str
    rollout_id: Optional[int]
    promoted_at: float  # seconds since the epoch
    runtime_started: Optional[float]  # the runtime's process_start_time_seconds after the promotion
    state: str = WATCHING
    reason: str = ""  # the rollback's reason, once rolled back on disk


class TrialStore:
    """The open trials, in ``<staging>/trials.json`` (written atomically; missing: none)."""

    def __init__(self, staging: Path) -> None:
        self.path = Path(staging) / TRIALS_NAME

    def load(self) -> List[Trial]:
        """The open trials; none when the file is missing or unreadable (logged)."""
        try:
            document = json.loads(self.path.read_bytes())
            return [Trial(**item) for item in document["trials"]]
        except FileNotFoundError:
            return []
        except (OSError, ValueError, KeyError, TypeError) as exc:
            log.error("sync: %s: unreadable trials, none watched: %s", self.path, exc)
            return []

    def save(self, trials: Sequence[Trial]) -> None:
        """Replace the open trials (the file goes when there are none)."""
        if not trials:
            self.path.unlink(missing_ok=True)
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        write_bytes_atomic(self.path, json.dumps({"trials": [asdict(t) for t in trials]}, indent=1).encode())


def metrics_start_time(runtime_url: str, headers: Mapping[str, str], timeout_s: float = 5.0) -> StartTime:
    """Reads ``process_start_time_seconds`` from the runtime's ``/metrics`` (RuntimeApiError: no answer)."""

    def start_time() -> Optional[float]:
        api = RuntimeApi(runtime_url, headers, timeout_s)
        try:
            status, _, body = api.request("GET", "/metrics")
        finally:
            api.close()
        match = _START_TIME.search(body) if status == 200 else None
        if match is None:
            log.warning("sync: the runtime's /metrics (status %d) has no process_start_time_seconds: "
                        "restarts in a grace period go unseen", status)
            return None
        return float(match.group(1))

    return start_time


def api_promote(runtime_url: str, headers: Mapping[str, str], timeout_s: float = 600.0) -> Promote:
    """Stage then promote a version through the runtime's restricted repository API (both idempotent)."""

    def promote(model: str, version: str) -> None:
        api = RuntimeApi(runtime_url, headers, timeout_s)
        base = f"/v2/repository/models/{quote(model, safe='')}/versions/{quote(version, safe='')}"
        try:
            api.call("POST", base + "/stage", {})
            api.call("POST", base + "/promote", {})
        finally:
            api.close()

    return promote


def target_sha256(metadata_dir: Path, name: str) -> str:
    """The sha256 of image target ``name`` in the trusted (verified) top-level targets metadata; '' if unknown."""
    try:
        targets = json.loads((metadata_dir / "targets.json").read_bytes())["signed"]["targets"]
        return str(targets[name]["hashes"]["sha256"])
    except (OSError, ValueError, KeyError, TypeError):
        return ""


def open_trials(outcomes: Sequence[SyncOutcome], repository: Path, store: TrialStore, start_time: StartTime,
                sha256_of: Callable[[str], str]) -> List[Trial]:
    """Write a trial for each promoted outcome that has a version to go back to; the new trials."""
    promoted = [o for o in outcomes if o.status == PROMOTED]
    if not promoted:
        return []
    try:
        started = start_time()
    except RuntimeApiError:
        started = None  # a restart is then seen as a start time after the promotion
    trials = store.load()
    added: List[Trial] = []
    for outcome in promoted:
        try:
            pointer = read_pointer(repository / outcome.model)
        except PointerError as exc:
            log.warning("sync: %s %s: no grace period: %s", outcome.model, outcome.version, exc)
            continue
        if pointer is None or pointer.active != outcome.version or pointer.last_good is None:
            log.info("sync: %s %s: no grace period (no previous version to go back to)", outcome.model,
                     outcome.version)
            continue
        added.append(Trial(outcome.model, outcome.version, pointer.last_good, outcome.target,
                           sha256_of(outcome.target),
                           outcome.rollout_id, outcome.at, started))
    trials = [t for t in trials if t.model not in {a.model for a in added}] + added
    store.save(trials)
    return added


class TrialWatch:
    """Watches the open trials: commits them after the grace period, rolls them back when the runtime fails."""

    def __init__(self, store: TrialStore, repository: Path, refused: RefusedTargets, start_time: StartTime,
                 promote: Promote, grace_s: float, max_silence_s: float = DEFAULT_MAX_SILENCE_S,
                 now: Callable[[], float] = time.time) -> None:
        self.store = store
        self.repository = repository
        self.refused = refused
        self.grace_s = grace_s
        self.max_silence_s = max_silence_s
        self._start_time = start_time
        self._promote = promote
        self._now = now
        self._silent_since: Optional[float] = None

    def is_open(self) -> bool:
        """Whether a trial is open (passes wait until none is)."""
        return bool(self.store.load())

    def check(self) -> List[Report]:
        """Look at the runtime once and act on every open trial; the reports of the rollbacks decided now."""
        trials = self.store.load()
        if not trials:
            return []
        now = self._now()
        try:
            started: Optional[float] = self._start_time()
            reachable = True
            self._silent_since = None
        except RuntimeApiError:
            started, reachable = None, False
            self._silent_since = self._silent_since if self._silent_since is not None else now
        silence = now - self._silent_since if self._silent_since is not None else 0.0
        kept: List[Trial] = []
        reports: List[Report] = []
        for trial in trials:
            after, report = self._step(trial, now, reachable, started, silence)
            if after is not None:
                kept.append(after)
            if report is not None:
                reports.append(report)
        if kept != trials:
            self.store.save(kept)
        return reports

    def _step(self, trial: Trial, now: float, reachable: bool, started: Optional[float],
              silence: float) -> Tuple[Optional[Trial], Optional[Report]]:
        """One trial: (the trial still open or None, the report of a rollback decided now or None)."""
        if trial.state == POINTER_WRITTEN:  # one try once the runtime answers: the pointer already says it
            if reachable:
                self._confirm(trial)
                return None, None
            return trial, None
        where = f"{trial.model} {trial.version} was promoted (grace {self.grace_s:g} s)"
        if reachable and started is not None and _restarted(trial, started):
            after_s = max(0.0, started - trial.promoted_at)
            if after_s > self.grace_s:  # the agent was down through the grace period; the restart came later
                log.info("sync: %s %s: the runtime restarted after its grace period: kept", trial.model,
                         trial.version)
                return None, None
            cause = f"the runtime restarted {after_s:.0f} s after {where}"
        elif not reachable and silence > self.max_silence_s:
            cause = f"the runtime did not answer for {silence:.0f} s within the grace period after {where}"
        elif reachable and now - trial.promoted_at >= self.grace_s:
            log.info("sync: %s %s served through its grace period of %g s: kept", trial.model, trial.version,
                     self.grace_s)
            return None, None
        else:
            return trial, None
        return self._roll_back(trial, cause, reachable, now)

    def _roll_back(self, trial: Trial, cause: str, reachable: bool,
                   now: float) -> Tuple[Optional[Trial], Optional[Report]]:
        """Go back to the previous version (the API when the runtime answers, else the pointer file)."""
        reason = one_line(f"{cause}; rolled back to {trial.previous}")
        done = reachable and self._confirm(trial)
        if not done:
            try:
                write_pointer(self.repository / trial.model, ActiveVersion(trial.previous, None))
            except EdgeRuntimeError as exc:
                log.error("sync: %s: cannot roll back (%s): %s; trying again", trial.model, reason, exc)
                return trial, None
            reason += " (pointer written: the runtime serves it when it starts)"
        log.error("sync: %s", reason)
        self.refused.add(RefusedTarget(trial.target, trial.sha256, ROLLED_BACK, reason, now))
        report = make_report(trial.model, trial.version, trial.target, ROLLED_BACK, reason, trial.rollout_id, now)
        return (None if done else replace(trial, state=POINTER_WRITTEN, reason=reason)), report

    def _confirm(self, trial: Trial) -> bool:
        """Stage and promote the previous version through the runtime's API; whether it worked."""
        try:
            self._promote(trial.model, trial.previous)
        except EdgeRuntimeError as exc:
            log.warning("sync: %s: the runtime did not take back version %s: %s", trial.model, trial.previous, exc)
            return False
        return True


def _restarted(trial: Trial, started: float) -> bool:
    """Whether ``started`` is another runtime process than the one the promotion was watched on."""
    if trial.runtime_started is None:
        return started > trial.promoted_at
    return abs(started - trial.runtime_started) > 0.01
