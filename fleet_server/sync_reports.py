"""`POST /api/v1/sync-reports`: what devices say about the bundles they tried, stored idempotently.

Body (device token, as /api/v1/ingest)::

    {"device_id": "dev-1",
     "reports": [{"id": "<32 hex>", "at": 1764100000.0, "model": "digits", "version": "3",
                  "target": "digits-3.tar", "status": "gate_failed", "reason": "...", "rollout_id": 7}],
     "installed": {"digits": {"active": "2", "last_good": "1"}}}

Order of checks as ingest: declared size (413), token (401), body read with a cap (413), strict
validation (400 naming the field; unknown keys are errors), the token's device (403). Reports are
inserted with ``ON CONFLICT (device, report id) DO NOTHING``, so a resent report is stored once
and acts once: a new ``gate_failed``, ``refused`` or ``rolled_back`` report naming a rollout the
device is a member of pauses it with the reason ``"<device>: <status>: <reason>"`` (a device
cannot pause a rollout it is not part of). ``installed`` replaces the device's ``sync_state``.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any, Dict, List, Optional

from flask import request
from sqlalchemy import Connection, select, update
from sqlalchemy.dialects import postgresql, sqlite

from fleet_server.batch import DEVICE_ID
from fleet_server.context import FleetContext, bearer_token
from fleet_server.db import begin_write, database_errors
from fleet_server.director import is_member, plan_of
from fleet_server.errors import BadBatchError, ForbiddenError, PayloadTooLargeError
from fleet_server.json_objects import checked_object, object_body
from fleet_server.models import Bundle, Device, Rollout, SyncReport, entity_rows
from fleet_server.rollouts import set_paused
from fleet_server.tokens import authenticate_device

MAX_REPORTS = 100
MAX_REASON = 500
MAX_MODELS = 64
STATUSES = ("promoted", "refused", "gate_failed", "failed", "rolled_back")
PAUSING = ("gate_failed", "refused", "rolled_back")
_BODY_KEYS = ("device_id", "reports", "installed")
_REQUIRED_REPORT_KEYS = ("id", "at", "model", "version", "target", "status", "reason")
_REPORT_KEYS = (*_REQUIRED_REPORT_KEYS, "rollout_id")
_INSTALLED_KEYS = ("active", "last_good")
_REPORT_ID = re.compile(r"[0-9a-f]{32}")
_TEXT_CAPS = {"model": 128, "version": 128, "target": 300}


@dataclass(frozen=True)
class Report:
    """One validated report."""

    report_id: str
    at: float
    model: str
    version: str
    target: str
    status: str
    reason: str
    rollout_id: Optional[int]


@dataclass(frozen=True)
class ReportBatch:
    """A validated request body."""

    device_id: str
    reports: List[Report]
    installed: Optional[Dict[str, Dict[str, Optional[str]]]]


def handle_sync_reports(context: FleetContext) -> Dict[str, int]:
    """Check, parse and store the current request's reports; the 200 answer's body."""
    cap = context.settings.max_ingest_bytes
    if request.content_length is not None and request.content_length > cap:
        raise PayloadTooLargeError(f"body of {request.content_length} bytes is over the cap of {cap}")
    body = request.stream.read(cap + 1)
    with database_errors(), context.engine.connect() as connection:
        identity = authenticate_device(connection, context.secret, bearer_token())
        if len(body) > cap:
            raise PayloadTooLargeError(f"body is over the cap of {cap} bytes")
        batch = parse_reports(body)
        if batch.device_id != identity.device_id:
            raise ForbiddenError(f"this token belongs to device {identity.device_id!r}, not {batch.device_id!r}")
        begin_write(connection, context.is_sqlite)
        accepted = store_reports(connection, identity.device_pk, identity.device_id, batch, context.clock())
        connection.commit()
    return {"accepted": accepted}


def store_reports(connection: Connection, device_pk: int, device_id: str, batch: ReportBatch, now: float) -> int:
    """Insert the new reports, pause the rollouts new failures name, record ``installed``; how many were new."""
    unique = {report.report_id: report for report in batch.reports}
    new: List[Report] = []
    if unique:
        dialect = postgresql if connection.dialect.name == "postgresql" else sqlite
        statement = (dialect.insert(SyncReport).on_conflict_do_nothing(index_elements=["device_pk", "report_id"])
                     .returning(SyncReport.report_id))
        rows = [{"device_pk": device_pk, "report_id": r.report_id, "at": r.at, "received": now, "model": r.model,
                 "version": r.version, "target": r.target, "status": r.status, "reason": r.reason,
                 "rollout_id": r.rollout_id} for r in unique.values()]
        inserted = {str(row[0]) for row in connection.execute(statement, rows)}
        new = [report for report_id, report in unique.items() if report_id in inserted]
    for report in new:
        if report.status in PAUSING and report.rollout_id is not None:
            _pause_for(connection, device_id, report, now)
    if batch.installed is not None:
        connection.execute(update(Device).where(Device.id == device_pk).values(sync_state=batch.installed))
    return len(new)


def _pause_for(connection: Connection, device_id: str, report: Report, now: float) -> None:
    """Pause the report's rollout when the device takes part in it."""
    rows = entity_rows(connection, select(Rollout, Bundle).join(Bundle, Bundle.id == Rollout.bundle_id)
                       .where(Rollout.id == report.rollout_id))
    if not rows:
        return
    row = rows[0]
    device_class = connection.execute(select(Device.device_class).where(Device.device_id == device_id)).scalar()
    if is_member(plan_of(row.Rollout, row.Bundle), device_id, device_class):
        set_paused(connection, int(row.Rollout.id), f"{device_id}: {report.status}: {report.reason}", now)


def parse_reports(body: bytes) -> ReportBatch:
    """Validate a request body strictly; BadBatchError naming the field at fault."""
    data = checked_object(object_body(body), "body", _BODY_KEYS, ("device_id", "reports"))
    device_id = data["device_id"]
    if not isinstance(device_id, str) or not DEVICE_ID.match(device_id):
        raise BadBatchError("device_id: expected 1-128 letters, digits, '.', '_', ':' or '-'")
    reports = data["reports"]
    if not isinstance(reports, list) or len(reports) > MAX_REPORTS:
        raise BadBatchError(f"reports: expected a list of at most {MAX_REPORTS} reports")
    parsed = [_report(item, f"reports[{index}]") for index, item in enumerate(reports)]
    installed = data.get("installed")
    return ReportBatch(device_id, parsed, None if installed is None else _installed(installed))


def _report(item: Any, where: str) -> Report:
    data = checked_object(item, where, _REPORT_KEYS, _REQUIRED_REPORT_KEYS)
    if not isinstance(data["id"], str) or not _REPORT_ID.fullmatch(data["id"]):
        raise BadBatchError(f"{where}.id: expected 32 lowercase hex digits")
    at = data["at"]
    if isinstance(at, bool) or not isinstance(at, (int, float)) or not math.isfinite(at) or at < 0:
        raise BadBatchError(f"{where}.at: expected unix seconds")
    for key, cap in _TEXT_CAPS.items():
        if not isinstance(data[key], str) or len(data[key]) > cap:
            raise BadBatchError(f"{where}.{key}: expected a string of at most {cap} characters")
    if data["status"] not in STATUSES:
        raise BadBatchError(f"{where}.status: expected one of {', '.join(STATUSES)}")
    reason = data["reason"]
    if not isinstance(reason, str) or len(reason) > MAX_REASON:
        raise BadBatchError(f"{where}.reason: expected a string of at most {MAX_REASON} characters")
    rollout_id = data.get("rollout_id")
    if rollout_id is not None and (isinstance(rollout_id, bool) or not isinstance(rollout_id, int)
                                   or not 1 <= rollout_id < 2**63):
        raise BadBatchError(f"{where}.rollout_id: expected a rollout id (an integer >= 1) or null")
    return Report(data["id"], float(at), data["model"], data["version"], data["target"], data["status"],
                  " ".join(reason.split()), rollout_id)


def _installed(value: Any) -> Dict[str, Dict[str, Optional[str]]]:
    if not isinstance(value, dict) or len(value) > MAX_MODELS:
        raise BadBatchError(f"installed: expected an object of at most {MAX_MODELS} models")
    state: Dict[str, Dict[str, Optional[str]]] = {}
    for model, entry in value.items():
        where = f"installed.{model}"
        if not DEVICE_ID.match(model):
            raise BadBatchError(f"{where}: not a model name")
        data = checked_object(entry, where, _INSTALLED_KEYS, ("active",))
        for key, version in data.items():
            if version is not None and (not isinstance(version, str) or len(version) > 128):
                raise BadBatchError(f"{where}.{key}: expected a version string or null")
        state[model] = {"active": data["active"], "last_good": data.get("last_good")}
    return state
