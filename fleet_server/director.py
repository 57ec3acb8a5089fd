"""The director: which bundles each device should run, from the rollouts, signed into the TUF repository.

Membership is stable and monotone: a device of the rollout's class is in it when it is a canary or
when its bucket, ``int(sha256(f"{rollout_id}:{device_id}")[:8], 16) % 100``, is below the
rollout's percent — raising the percent only adds devices, and each rollout draws its own sample.
A device's desired targets are, per model, the highest bundle version among the non-cancelled
rollouts it is in (a paused rollout keeps its members; only ``advance`` adds any). After every
change the assignments of every device of the affected class are recomputed from the database and
handed to :func:`fleet_server.tuf_repository.set_device_targets`, which re-signs only the bins whose
content changed; so the repository is always a function of the database, and a change that failed
half-way is repaired by the next one.

Writers serialize on the director lock (:func:`lock_director`): the database write lock on SQLite
(``BEGIN IMMEDIATE``), a transaction-scoped advisory lock on PostgreSQL, held from reading the
rollouts to the commit, so two server instances never sign assignments computed from stale rows.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

from sqlalchemy import Connection, select, text

from edge_runtime.serving.active_version import version_key
from fleet_server.errors import ConflictError
from fleet_server.models import Bundle, Device, Rollout, entity_rows
from fleet_server.settings import FleetSettings
from fleet_server.tuf_repository import DeviceTarget, set_device_targets

ACTIVE, PAUSED, CANCELLED = "active", "paused", "cancelled"
STATES = (ACTIVE, PAUSED, CANCELLED)
_ADVISORY_LOCK_KEY = 0x65646765_666C7401  # "edgefl" + 1: the director's PostgreSQL advisory lock


@dataclass(frozen=True)
class RolloutPlan:
    """What the director needs of one rollout and its bundle."""

    rollout_id: int
    device_class: str
    canary: Tuple[str, ...]
    percent: int
    state: str
    model: str
    version: str
    image: str
    fingerprint: Optional[Dict[str, Any]]


def bucket(rollout_id: int, device_id: str) -> int:
    """The device's stable draw for this rollout, 0..99."""
    digest = hashlib.sha256(f"{rollout_id}:{device_id}".encode()).hexdigest()
    return int(digest[:8], 16) % 100


def is_member(plan: RolloutPlan, device_id: str, device_class: Optional[str]) -> bool:
    """Whether the device takes part in the rollout (canary, or drawn within its percent)."""
    if device_class != plan.device_class:
        return False
    return device_id in plan.canary or bucket(plan.rollout_id, device_id) < plan.percent


def desired_targets(device_id: str, device_class: Optional[str], plans: Iterable[RolloutPlan],
                    installed: Optional[Mapping[str, Any]] = None) -> List[DeviceTarget]:
    """Per model, the highest version among the non-cancelled rollouts the device is in.

    ``installed`` is the device's last reported state (``{model: {"active": version}}``): a version
    below the one it runs is never assigned (cancelling a rollout never asks devices to downgrade,
    which they would refuse as a rollback), so such a model gets no target and keeps its version.
    """
    best: Dict[str, RolloutPlan] = {}
    for plan in plans:
        if plan.state == CANCELLED or not is_member(plan, device_id, device_class):
            continue
        if _below_active(plan, installed):
            continue
        held = best.get(plan.model)
        if held is None or version_key(plan.version) > version_key(held.version):
            best[plan.model] = plan
    return [DeviceTarget(plan.image, _custom(plan)) for _, plan in sorted(best.items())]


def _below_active(plan: RolloutPlan, installed: Optional[Mapping[str, Any]]) -> bool:
    state = (installed or {}).get(plan.model)
    active = state.get("active") if isinstance(state, dict) else None
    if not isinstance(active, str) or not active.isdigit() or not active.isascii():
        return False
    return version_key(plan.version) < version_key(active)


def _custom(plan: RolloutPlan) -> Dict[str, Any]:
    return {"image": plan.image, "model": plan.model, "version": plan.version, "device_class": plan.device_class,
            "fingerprint": plan.fingerprint, "rollout_id": plan.rollout_id}


def repository_paths(settings: FleetSettings) -> Tuple[Path, Path]:
    """The TUF repository and online keys directories; ConflictError until `edge-fleet tuf-init` ran."""
    repo_dir = settings.resolve(settings.tuf.repository_dir)
    keys_dir = settings.resolve(settings.tuf.keys_dir)
    if not (repo_dir / "metadata" / "timestamp.json").is_file():
        raise ConflictError(f"no TUF repository at {repo_dir}: run `edge-fleet tuf-init` first")
    return repo_dir, keys_dir


def lock_director(connection: Connection) -> None:
    """Serialize director writers until the transaction ends (SQLite: BEGIN IMMEDIATE already does)."""
    if connection.dialect.name == "postgresql":
        connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _ADVISORY_LOCK_KEY})


def class_plans(connection: Connection, device_class: str) -> List[RolloutPlan]:
    """The non-cancelled rollouts of a device class with their bundles."""
    rows = entity_rows(connection,
        select(Rollout, Bundle).join(Bundle, Bundle.id == Rollout.bundle_id)
        .where(Rollout.device_class == device_class, Rollout.state != CANCELLED).order_by(Rollout.id))
    return [plan_of(row.Rollout, row.Bundle) for row in rows]


def plan_of(rollout: Any, bundle: Any) -> RolloutPlan:
    """A rollout row and its bundle row as a plan."""
    fingerprints: Mapping[str, Any] = bundle.fingerprints or {}
    return RolloutPlan(int(rollout.id), rollout.device_class, tuple(rollout.canary), int(rollout.percent),
                       rollout.state, bundle.model, bundle.version, bundle.target,
                       fingerprints.get(rollout.device_class))


def class_assignments(connection: Connection, device_class: str,
                      device_ids: Optional[Sequence[str]] = None) -> Dict[str, List[DeviceTarget]]:
    """Every device of the class (or only ``device_ids``) → its desired targets (empty list: none)."""
    plans = class_plans(connection, device_class)
    query = select(Device.device_id, Device.sync_state).where(Device.device_class == device_class)
    if device_ids is not None:
        query = query.where(Device.device_id.in_(list(device_ids)))
    return {str(row.device_id): desired_targets(str(row.device_id), device_class, plans, row.sync_state)
            for row in connection.execute(query)}


def push_class(connection: Connection, settings: FleetSettings, device_class: str,
               device_ids: Optional[Sequence[str]] = None) -> int:
    """Sign the class's assignments into the repository (under the director lock); the timestamp version."""
    repo_dir, keys_dir = repository_paths(settings)
    assignments = class_assignments(connection, device_class, device_ids)
    try:
        return set_device_targets(repo_dir, keys_dir, assignments, settings.tuf.expiry())
    except ValueError as exc:  # an assigned image missing from the repository: it was not published here
        raise ConflictError(f"cannot sign the assignments of {device_class}: {exc}") from exc


def assign_enrolled(connection: Connection, settings: FleetSettings, device_id: str,
                    device_class: Optional[str]) -> None:
    """Give a just-enrolled device what the rollouts of its class draw for it (in the enrolling transaction)."""
    if device_class is None:
        return
    lock_director(connection)
    if class_plans(connection, device_class):
        push_class(connection, settings, device_class, [device_id])
