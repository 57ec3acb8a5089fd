"""Rollouts: a published bundle assigned to a device class, canaries first, then a growing percentage.

States: ``active`` → ``paused`` (by an operator, or by a device reporting ``gate_failed``,
``refused`` or ``rolled_back``) → ``active`` again (resume); ``cancelled`` is final. Only
``advance`` adds members, and it is refused while paused or cancelled; the percent never goes
down. Every change that alters membership (create, advance, cancel) re-signs the class's
assignments in the TUF repository (:mod:`fleet_server.director`) inside the same transaction, so
a failed signing leaves the database unchanged.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, List, Optional, Sequence, TypeVar

from sqlalchemy import Connection, Engine, func, insert, select, update

from fleet_server.batch import DEVICE_ID
from fleet_server.db import begin_write, database_errors
from fleet_server.director import ACTIVE, CANCELLED, PAUSED, is_member, lock_director, plan_of, push_class
from fleet_server.errors import BadBatchError, ConflictError, NotFoundError
from fleet_server.models import Bundle, Device, Rollout, SyncReport, entity_rows
from fleet_server.settings import FleetSettings

T = TypeVar("T")
MAX_CANARIES = 1000
MAX_REASON = 1000


def rollout_json(rollout: Any, bundle: Any) -> Dict[str, Any]:
    """A rollout row and its bundle as the API shows them."""
    return {"id": int(rollout.id), "model": bundle.model, "version": bundle.version, "target": bundle.target,
            "bundle_id": int(bundle.id), "device_class": rollout.device_class, "canary": list(rollout.canary),
            "percent": int(rollout.percent), "state": rollout.state, "pause_reason": rollout.pause_reason,
            "created": rollout.created, "updated": rollout.updated}


def check_percent(value: Any) -> int:
    """A percent 0..100 (an int, not a bool); BadBatchError naming the field otherwise."""
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 100:
        raise BadBatchError(f"percent: expected an integer 0..100, got {value!r}")
    return value


def _write(engine: Engine, work: Callable[[Connection], T]) -> T:
    """Run ``work`` in one write transaction holding the director lock."""
    with database_errors(), engine.connect() as connection:
        begin_write(connection, engine.dialect.name == "sqlite")
        lock_director(connection)
        result = work(connection)
        connection.commit()
    return result


def create_rollout(engine: Engine, settings: FleetSettings, model: str, version: str, device_class: str,
                   canary: Sequence[str], percent: int, now: float) -> Dict[str, Any]:
    """A new active rollout of a published bundle to ``device_class``; its members get the bundle at once."""
    percent = check_percent(percent)
    if not isinstance(device_class, str) or not DEVICE_ID.match(device_class):
        raise BadBatchError("device_class: expected 1-128 letters, digits, '.', '_', ':' or '-'")
    if len(canary) > MAX_CANARIES or len(set(canary)) != len(canary):
        raise BadBatchError(f"canary: expected at most {MAX_CANARIES} distinct device ids")

    def work(connection: Connection) -> Dict[str, Any]:
        bundle = _bundle(connection, model, version)
        if device_class not in bundle.device_classes:
            raise ConflictError(f"{model} {version} has no target for device class {device_class!r} "
                                f"(it targets {', '.join(bundle.device_classes)})")
        _check_canaries(connection, canary, device_class)
        busy = connection.execute(select(Rollout.id).where(
            Rollout.bundle_id == bundle.id, Rollout.device_class == device_class, Rollout.state != CANCELLED)).first()
        if busy is not None:
            raise ConflictError(f"rollout {busy[0]} already rolls out {model} {version} to {device_class}: "
                                "advance it instead")
        rollout_id = connection.execute(insert(Rollout).values(
            bundle_id=bundle.id, device_class=device_class, canary=list(canary), percent=percent, state=ACTIVE,
            pause_reason=None, created=now, updated=now).returning(Rollout.id)).scalar_one()
        push_class(connection, settings, device_class)
        return _show(connection, int(rollout_id))

    return _write(engine, work)


def advance_rollout(engine: Engine, settings: FleetSettings, rollout_id: int, percent: Any,
                    now: float) -> Dict[str, Any]:
    """Raise an active rollout's percent (never lower it); the newly drawn devices get the bundle."""
    percent = check_percent(percent)

    def work(connection: Connection) -> Dict[str, Any]:
        rollout = _rollout(connection, rollout_id)
        if rollout.state != ACTIVE:
            raise ConflictError(f"rollout {rollout_id} is {rollout.state}"
                                + (f" ({rollout.pause_reason})" if rollout.pause_reason else "")
                                + (": resume it first" if rollout.state == PAUSED else ": it cannot advance"))
        if percent < rollout.percent:
            raise ConflictError(f"rollout {rollout_id} is at {rollout.percent}%: a rollout never shrinks "
                                "(pause or cancel it instead)")
        connection.execute(update(Rollout).where(Rollout.id == rollout_id).values(percent=percent, updated=now))
        push_class(connection, settings, rollout.device_class)
        return _show(connection, rollout_id)

    return _write(engine, work)


def pause_rollout(engine: Engine, rollout_id: int, reason: str, now: float) -> Dict[str, Any]:
    """Stop an active rollout from growing (its members keep the bundle); a paused one keeps its first reason."""
    if not isinstance(reason, str) or len(reason) > MAX_REASON:
        raise BadBatchError(f"reason: expected a string of at most {MAX_REASON} characters")

    def work(connection: Connection) -> Dict[str, Any]:
        rollout = _rollout(connection, rollout_id)
        if rollout.state == CANCELLED:
            raise ConflictError(f"rollout {rollout_id} is cancelled")
        if rollout.state == ACTIVE:
            set_paused(connection, rollout_id, " ".join(reason.split()) or "paused by an operator", now)
        return _show(connection, rollout_id)

    return _write(engine, work)


def set_paused(connection: Connection, rollout_id: int, reason: str, now: float) -> bool:
    """Pause the rollout if it is active (membership unchanged: nothing to sign); whether it was."""
    result = connection.execute(update(Rollout).where(Rollout.id == rollout_id, Rollout.state == ACTIVE)
                                .values(state=PAUSED, pause_reason=reason[:MAX_REASON], updated=now))
    return bool(result.rowcount)


def resume_rollout(engine: Engine, rollout_id: int, now: float) -> Dict[str, Any]:
    """Let a paused rollout advance again (membership unchanged)."""
    def work(connection: Connection) -> Dict[str, Any]:
        rollout = _rollout(connection, rollout_id)
        if rollout.state == CANCELLED:
            raise ConflictError(f"rollout {rollout_id} is cancelled: create a new one")
        connection.execute(update(Rollout).where(Rollout.id == rollout_id)
                           .values(state=ACTIVE, pause_reason=None, updated=now))
        return _show(connection, rollout_id)

    return _write(engine, work)


def cancel_rollout(engine: Engine, settings: FleetSettings, rollout_id: int, now: float) -> Dict[str, Any]:
    """End a rollout for good: its members fall back to what their other rollouts assign (or nothing)."""
    def work(connection: Connection) -> Dict[str, Any]:
        rollout = _rollout(connection, rollout_id)
        if rollout.state != CANCELLED:
            connection.execute(update(Rollout).where(Rollout.id == rollout_id).values(state=CANCELLED, updated=now))
            push_class(connection, settings, rollout.device_class)
        return _show(connection, rollout_id)

    return _write(engine, work)


def list_rollouts(engine: Engine) -> List[Dict[str, Any]]:
    """Every rollout with its bundle, newest first."""
    with database_errors(), engine.connect() as connection:
        rows = entity_rows(connection, select(Rollout, Bundle).join(Bundle, Bundle.id == Rollout.bundle_id)
                           .order_by(Rollout.id.desc()))
    return [rollout_json(row.Rollout, row.Bundle) for row in rows]


def show_rollout(engine: Engine, rollout_id: int) -> Dict[str, Any]:
    """The rollout and, per device of its class: member or not, installed active version, latest report."""
    with database_errors(), engine.connect() as connection:
        return _show(connection, rollout_id)


def _show(connection: Connection, rollout_id: int) -> Dict[str, Any]:
    rows = entity_rows(connection, select(Rollout, Bundle).join(Bundle, Bundle.id == Rollout.bundle_id)
                       .where(Rollout.id == rollout_id))
    if not rows:
        raise NotFoundError(f"no rollout {rollout_id}")
    rollout, bundle = rows[0].Rollout, rows[0].Bundle
    plan = plan_of(rollout, bundle)
    reports = _latest_reports(connection, rollout_id)
    devices = []
    for device in connection.execute(select(Device.id, Device.device_id, Device.sync_state)
                                     .where(Device.device_class == rollout.device_class)
                                     .order_by(Device.device_id)):
        installed = (device.sync_state or {}).get(bundle.model) or {}
        report = reports.get(int(device.id))
        devices.append({"device_id": device.device_id, "member": is_member(plan, device.device_id, plan.device_class),
                        "active": installed.get("active"), "last_good": installed.get("last_good"),
                        "report": report})
    return {**rollout_json(rollout, bundle), "devices": devices}


def _latest_reports(connection: Connection, rollout_id: int) -> Dict[int, Dict[str, Any]]:
    """Per device, its newest report naming this rollout."""
    newest = (select(SyncReport.device_pk, func.max(SyncReport.id).label("id"))
              .where(SyncReport.rollout_id == rollout_id).group_by(SyncReport.device_pk).subquery())
    rows = entity_rows(connection, select(SyncReport).join(newest, newest.c.id == SyncReport.id))
    return {int(r.SyncReport.device_pk): {"status": r.SyncReport.status, "reason": r.SyncReport.reason,
                                          "at": r.SyncReport.at, "version": r.SyncReport.version} for r in rows}


def _bundle(connection: Connection, model: str, version: str) -> Any:
    rows = entity_rows(connection, select(Bundle).where(Bundle.model == model, Bundle.version == version))
    if not rows:
        raise NotFoundError(f"no published bundle {model} version {version}: publish it first")
    return rows[0].Bundle


def _rollout(connection: Connection, rollout_id: int) -> Any:
    rows = entity_rows(connection, select(Rollout).where(Rollout.id == rollout_id))
    if not rows:
        raise NotFoundError(f"no rollout {rollout_id}")
    return rows[0].Rollout


def _check_canaries(connection: Connection, canary: Sequence[str], device_class: str) -> None:
    if not canary:
        return
    for device_id in canary:
        if not isinstance(device_id, str) or not DEVICE_ID.match(device_id):
            raise BadBatchError(f"canary: {device_id!r} is not a device id")
    found: Dict[str, Optional[str]] = {
        str(row[0]): row[1] for row in connection.execute(
            select(Device.device_id, Device.device_class).where(Device.device_id.in_(list(canary))))}
    for device_id in canary:
        if device_id not in found:
            raise NotFoundError(f"canary: no enrolled device {device_id!r}")
        if found[device_id] != device_class:
            raise ConflictError(f"canary: device {device_id!r} is of class {found[device_id]!r}, not {device_class!r}")
