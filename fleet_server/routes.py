"""The HTTP API's routes (thin: check the caller, call ingest / tokens / queries, answer JSON).

Device routes take a device token; every other route takes an operator token.
"""

from __future__ import annotations

import math
from typing import Any, Dict, Optional, Tuple

from flask import Blueprint, Response, jsonify, request

from fleet_server.batch import DEVICE_ID
from fleet_server.context import FleetContext, bearer_token, current_context
from fleet_server.db import begin_write, database_errors
from fleet_server.director import assign_enrolled
from fleet_server.errors import BadBatchError, PayloadTooLargeError
from fleet_server.ingest import handle_ingest
from fleet_server.json_objects import object_body
from fleet_server.queries import RESOLUTIONS, choose_resolution, device_history, list_devices
from fleet_server.tokens import authenticate_operator, enroll_device, revoke_device_tokens, rotate_device_token

api = Blueprint("fleet_api", __name__, url_prefix="/api/v1")
HISTORY_DEFAULT_S = 3600.0
MAX_ADMIN_BODY = 64 * 1024


@api.post("/ingest")
def ingest() -> Tuple[Response, int]:
    """A device's batch of records (device token)."""
    return jsonify(handle_ingest(current_context()).as_json()), 200


@api.post("/devices")
def enroll() -> Tuple[Response, int]:
    """Enroll a device; its token is in the answer, once."""
    context = require_operator()
    body = json_body()
    device_id, device_class = body.get("device_id"), body.get("device_class")
    if not isinstance(device_id, str) or not DEVICE_ID.match(device_id):
        raise BadBatchError("device_id: expected 1-128 letters, digits, '.', '_', ':' or '-'")
    if device_class is not None and (not isinstance(device_class, str) or not DEVICE_ID.match(device_class)):
        raise BadBatchError("device_class: expected 1-128 letters, digits, '.', '_', ':' or '-', or null")
    with database_errors(), context.engine.connect() as connection:
        begin_write(connection, context.is_sqlite)
        token = enroll_device(connection, context.secret, device_id, context.clock(), device_class)
        assign_enrolled(connection, context.settings, device_id, device_class)
        connection.commit()
    return jsonify({"device_id": device_id, "device_class": device_class, "token": token}), 201


@api.post("/devices/<device_id>/token")
def rotate(device_id: str) -> Tuple[Response, int]:
    """Issue a new token for the device; the old one stops working."""
    context = require_operator()
    with database_errors(), context.engine.connect() as connection:
        begin_write(connection, context.is_sqlite)
        token = rotate_device_token(connection, context.secret, device_id, context.clock())
        connection.commit()
    return jsonify({"token": token}), 200


@api.delete("/devices/<device_id>/token")
def revoke(device_id: str) -> Tuple[str, int]:
    """Revoke the device's tokens: it can no longer report until a rotate."""
    context = require_operator()
    with database_errors(), context.engine.connect() as connection:
        begin_write(connection, context.is_sqlite)
        revoke_device_tokens(connection, device_id, context.clock())
        connection.commit()
    return "", 204


@api.get("/devices")
def devices() -> Tuple[Response, int]:
    """Every device with its latest figures."""
    context = require_operator()
    with database_errors(), context.engine.connect() as connection:
        rows = list_devices(connection, context.clock(), context.settings.online_after_s)
    return jsonify(rows), 200


@api.get("/devices/<device_id>/history")
def history(device_id: str) -> Tuple[Response, int]:
    """A device's figures over time: ``since``/``until`` (unix seconds), optional ``resolution``."""
    context = require_operator()
    now = context.clock()
    until = _time_arg("until", now)
    since = _time_arg("since", until - HISTORY_DEFAULT_S)
    resolution = request.args.get("resolution") or choose_resolution(context.settings, since, until, now)
    if resolution not in RESOLUTIONS:
        raise BadBatchError(f"resolution: expected one of {', '.join(RESOLUTIONS)}")
    with database_errors(), context.engine.connect() as connection:
        answer = device_history(connection, device_id, since, until, resolution, context.settings.max_history_points)
    return jsonify(answer), 200


def require_operator() -> FleetContext:
    """The app's context once the request's operator token checked out (401 otherwise)."""
    context = current_context()
    with database_errors(), context.engine.connect() as connection:
        authenticate_operator(connection, context.secret, bearer_token())
    return context


def json_body() -> Dict[str, Any]:
    """The request's JSON object body, at most MAX_ADMIN_BODY bytes (413 beyond, 400 if not an object)."""
    data = request.stream.read(MAX_ADMIN_BODY + 1)
    if len(data) > MAX_ADMIN_BODY:
        raise PayloadTooLargeError(f"body is over the cap of {MAX_ADMIN_BODY} bytes")
    return object_body(data)


def _time_arg(name: str, default: float) -> float:
    raw: Optional[str] = request.args.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except ValueError as exc:
        raise BadBatchError(f"{name}: expected unix seconds") from exc
    if not math.isfinite(value):
        raise BadBatchError(f"{name}: expected unix seconds")
    return value
