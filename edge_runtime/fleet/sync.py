"""One sync pass: which signed bundles are for this device, and taking each through download, install and gate.

:func:`sync_once` refreshes the TUF metadata and takes this device's targets from the director
(``TufClient.device_targets``: the verified bin entries for this device id, each agreeing with its
image target); for every one whose custom fields name a model version above the model's active one
(the highest such version per model), it downloads the tar into the staging directory (resumably,
checked against the target's length and sha256), installs it (unpack, verify, atomic rename:
:mod:`edge_runtime.fleet.install`) and asks the health gate, which loads it beside the active
version, probes it, and promotes it or unloads it. Each target ends as one :class:`SyncOutcome`:
``promoted``, ``refused`` (a SyncError's one line: the bundle or its metadata is wrong; the same
bytes would be refused again), ``gate_failed`` (the gate's reason) or ``failed`` (transport, disk,
anything else: worth a retry), carrying the director's ``rollout_id`` so the server can pause the
rollout. A director target for another device class is refused (the server assigned it wrongly; the
install would refuse it too).
An error in one target never stops the others, and nothing here writes the active-version pointer:
only a passing gate does, so the active version serves whatever happens.

A target whose verified bytes were refused at install, or which failed its gate, is remembered by
image name and sha256 (:mod:`edge_runtime.fleet.refused_targets`, in the staging directory): later
passes skip it with one log line instead of fetching and gating it again. Failures while downloading
and ``failed`` outcomes are not remembered (retried next pass); a re-published target (another
sha256) is tried.

Every step is a parameter (the seams the tests fill with fakes); :mod:`edge_runtime.fleet.sync_pass`
builds the real ones from :class:`~edge_runtime.fleet.sync_config.SyncSettings`.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional, Protocol, Tuple

from edge_runtime.config import DeviceConfig, load_device_config
from edge_runtime.errors import ConfigError, EdgeRuntimeError
from edge_runtime.fleet.errors import SyncError
from edge_runtime.fleet.install import InstalledVersion, active_floor
from edge_runtime.fleet.refused_targets import RECORD_NAME, RefusedTarget, RefusedTargets
from edge_runtime.fleet.sync_config import SyncSettings
from edge_runtime.fleet.tuf_client import TufTarget
from edge_runtime.serving.active_version import is_version_name, version_key
from edge_runtime.serving.repository_layout import is_model_name

log = logging.getLogger(__name__)

PROMOTED = "promoted"
REFUSED = "refused"
GATE_FAILED = "gate_failed"
FAILED = "failed"
ROLLED_BACK = "rolled_back"  # promoted, then the runtime crashed or restarted within the grace period
METADATA = "(metadata)"  # the outcome's target when the refresh itself failed


class TargetSource(Protocol):
    """The TUF client as a sync pass uses it (:class:`edge_runtime.fleet.tuf_client.TufClient`)."""

    def refresh(self) -> None:
        """Fetch and verify the newest metadata."""

    def device_targets(self, device_id: str) -> List[TufTarget]:
        """The director's verified targets for this device (named for their image)."""


class GateVerdict(Protocol):
    """What the health gate answers (``health_gate.GateResult`` has these two fields)."""

    passed: bool
    reason: str


DownloadFn = Callable[[TufTarget, Path], Path]  # (target, destination file) -> the verified file
# (tar, model name, the target's version: the bundle must be it) -> the version now on disk
InstallFn = Callable[[Path, str, str], InstalledVersion]
GateFn = Callable[[InstalledVersion], GateVerdict]  # loads, probes, promotes or unloads


@dataclass(frozen=True)
class SyncOutcome:
    """What became of one target in one pass; ``reason`` is one line (empty when promoted)."""

    target: str
    model: str
    version: str
    status: str  # PROMOTED, REFUSED, GATE_FAILED, FAILED (or ROLLED_BACK, by the agent's grace watch)
    reason: str
    at: float  # seconds since the epoch
    rollout_id: Optional[int] = None  # the director's rollout for this target (reported to the server)

    def line(self) -> str:
        """The outcome as one log line."""
        what = f"{self.model} {self.version}" if self.model else self.target
        return f"{what} ({self.target}): {self.status}" + (f": {self.reason}" if self.reason else "")


@dataclass(frozen=True)
class _Wanted:
    """A target this device should take: its model, version and the verified target."""

    model: str
    version: str
    target: TufTarget

    @property
    def rollout_id(self) -> Optional[int]:
        """The director's ``rollout_id`` custom field (None when absent or not an integer)."""
        return _rollout_id(self.target)


def _rollout_id(target: TufTarget) -> Optional[int]:
    value = target.custom.get("rollout_id")
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def sync_once(settings: SyncSettings, tuf_client: TargetSource, download_fn: DownloadFn, install_fn: InstallFn,
              gate_fn: GateFn, now: Callable[[], float] = time.time,
              device: Optional[DeviceConfig] = None, memory: Optional[RefusedTargets] = None) -> List[SyncOutcome]:
    """One pass: refresh, then each newer target for this device, not refused before, through every step."""
    if not settings.device_id:
        raise ConfigError(f"{settings.source or 'sync settings'}: device_id: empty: a sync pass needs this "
                          "device's id (the director lists its targets under it)")
    staging = settings.resolve(settings.staging_dir)
    refused_before = memory if memory is not None else RefusedTargets(staging / RECORD_NAME)
    used = device if device is not None else load_device_config(settings.resolve(settings.device_config))
    outcomes: List[SyncOutcome] = []
    try:
        tuf_client.refresh()
        targets = tuf_client.device_targets(settings.device_id)
    except Exception as exc:  # a refused refresh is an outcome, like any other failure
        outcomes.append(_failure(METADATA, "", "", exc, now))
        targets = []
    repository = settings.resolve(settings.repository)
    wanted, refused = _select(targets, used, repository, now, refused_before)
    outcomes.extend(refused)
    for item in wanted:
        outcome, lasting = _take(item, staging, download_fn, install_fn, gate_fn, now)
        if lasting and outcome.status in (REFUSED, GATE_FAILED):
            refused_before.add(RefusedTarget(item.target.name, item.target.sha256, outcome.status, outcome.reason,
                                             outcome.at))
        outcomes.append(outcome)
    for outcome in outcomes:
        (log.info if outcome.status == PROMOTED else log.warning)("sync: %s", outcome.line())
    return outcomes


def _select(targets: List[TufTarget], device: DeviceConfig, repository: Path, now: Callable[[], float],
            refused_before: RefusedTargets) -> Tuple[List[_Wanted], List[SyncOutcome]]:
    """The highest version per model above its active one, among the device's targets not refused before."""
    best: Dict[str, _Wanted] = {}
    refused: List[SyncOutcome] = []
    newest = _newest_listed(targets)
    for target in sorted(targets, key=lambda t: t.name):
        name, custom = target.name, target.custom
        model, version = custom.get("model"), custom.get("version")
        before = refused_before.find(name, target.sha256)
        if before is not None:
            log.info("sync: %s: skipped: refused before: %s", name, before.reason)
            continue
        problem = _custom_problem(name, model, version) or _class_problem(name, custom, device)
        floor = _floor(repository / model) if not problem and isinstance(model, str) else None
        # Only the model's newest listed version can be a rollback: older ones beside it are history.
        if not problem and floor is not None and version_key(str(version)) < version_key(floor) \
                and newest.get(str(model)) == version:
            problem = f"TUF target '{name}': version {version} is older than the active version {floor} " \
                      "(rollback refused)"
        if problem:
            refused.append(SyncOutcome(name, str(model or ""), str(version or ""), REFUSED, problem, now(),
                                       _rollout_id(target)))
            refused_before.add(RefusedTarget(name, target.sha256, REFUSED, problem, now()))  # reported once
            continue
        assert isinstance(model, str) and isinstance(version, str)
        if floor is not None and version_key(version) <= version_key(floor):
            log.debug("sync: %s: %s %s is the active version: up to date", name, model, version)
            continue
        if model not in best or version_key(version) > version_key(best[model].version):
            best[model] = _Wanted(model, version, target)
    return [best[model] for model in sorted(best)], refused


def _newest_listed(targets: List[TufTarget]) -> Dict[str, str]:
    """Per model, the highest version the director lists for this device (well-formed targets only)."""
    newest: Dict[str, str] = {}
    for target in targets:
        model, version = target.custom.get("model"), target.custom.get("version")
        if isinstance(model, str) and isinstance(version, str) and is_version_name(version) \
                and (model not in newest or version_key(version) > version_key(newest[model])):
            newest[model] = version
    return newest


def _custom_problem(name: str, model: object, version: object) -> str:
    """Why a target's custom fields cannot be acted on ('' when they can)."""
    if not isinstance(model, str) or not is_model_name(model) or "/" in model or model in (".", ".."):
        return f"TUF target '{name}': custom field 'model' is not a model name: {model!r}"
    if not isinstance(version, str) or not is_version_name(version):
        return f"TUF target '{name}': custom field 'version' is not a version number (ASCII digits): {version!r}"
    if "/" in name or name.startswith(".") or not name.endswith(".tar"):
        return f"TUF target '{name}': a bundle target is a '<name>-<version>.tar' file name"
    return ""


def _class_problem(name: str, custom: Dict[str, object], device: DeviceConfig) -> str:
    """Why a director target is not for this device's class ('' when it is)."""
    if custom.get("device_class") == device.device_class:
        return ""
    return (f"TUF target '{name}': for device class {custom.get('device_class')!r}, "
            f"this device is {device.device_class!r}")


def _floor(model_dir: Path) -> Optional[str]:
    """The model's active version (the one a new version must be above); None for a model not on disk."""
    return active_floor(model_dir) if model_dir.is_dir() else None


def _take(item: _Wanted, staging: Path, download_fn: DownloadFn, install_fn: InstallFn, gate_fn: GateFn,
          now: Callable[[], float]) -> Tuple[SyncOutcome, bool]:
    """Download, install and gate one target: its outcome, and whether it says something about the bytes.

    The second item is False for a download's failure (the bytes were never verified against the
    target's sha256: the next pass may fetch good ones) and True once they were.
    """
    name = item.target.name
    tar = staging / name
    try:
        staging.mkdir(parents=True, exist_ok=True)
        download_fn(item.target, tar)
    except Exception as exc:  # one target's failure never stops the others
        return _failure(name, item.model, item.version, exc, now, item.rollout_id), False
    return _install_and_gate(item, tar, install_fn, gate_fn, now), True


def _install_and_gate(item: _Wanted, tar: Path, install_fn: InstallFn, gate_fn: GateFn,
                      now: Callable[[], float]) -> SyncOutcome:
    """Install the verified tar and gate the version; its outcome (errors included)."""
    name = item.target.name
    try:
        try:
            installed = install_fn(tar, item.model, item.version)
        finally:
            tar.unlink(missing_ok=True)  # installed, or refused (the same bytes would be refused again)
        if installed.version != item.version:
            return SyncOutcome(name, item.model, item.version, REFUSED,
                               f"the bundle is version {installed.version}, its TUF target says {item.version}",
                               now(), item.rollout_id)
        verdict = gate_fn(installed)
    except Exception as exc:  # one target's failure never stops the others
        return _failure(name, item.model, item.version, exc, now, item.rollout_id)
    if not verdict.passed:
        # A runtime that did not answer never judged the version: FAILED (retried), not GATE_FAILED (remembered).
        status = FAILED if getattr(verdict, "retry", False) else GATE_FAILED
        return SyncOutcome(name, item.model, item.version, status, _one_line(verdict.reason), now(),
                           item.rollout_id)
    return SyncOutcome(name, item.model, item.version, PROMOTED, "", now(), item.rollout_id)


def _failure(target: str, model: str, version: str, exc: BaseException, now: Callable[[], float],
             rollout_id: Optional[int] = None) -> SyncOutcome:
    """An exception as an outcome: REFUSED for a SyncError the bundle or metadata caused, else FAILED."""
    if isinstance(exc, SyncError) and exc.http_status in (404, 422):
        status = REFUSED
    else:
        status = FAILED
        if not isinstance(exc, EdgeRuntimeError):
            log.error("sync: %s: unexpected error", target, exc_info=exc)
    reason = _one_line(str(exc)) or type(exc).__name__
    return SyncOutcome(target, model, version, status, reason, now(), rollout_id)


def _one_line(message: str) -> str:
    return " ".join(message.split())
