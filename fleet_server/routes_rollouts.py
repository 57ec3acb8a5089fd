"""The over-the-air routes: bundles and rollouts (operator token), sync reports (device token).

Thin, as routes.py: check the caller, call publishing / rollouts / sync_reports, answer JSON.
"""

from __future__ import annotations

from typing import Any, Dict, Tuple

from flask import Blueprint, Response, jsonify, request

from fleet_server.context import current_context
from fleet_server.db import database_errors
from fleet_server.errors import BadBatchError, PayloadTooLargeError
from fleet_server.publishing import list_bundles, publish_tar, receive_tar, staging_area
from fleet_server.rollouts import (
    advance_rollout,
    cancel_rollout,
    create_rollout,
    list_rollouts,
    pause_rollout,
    resume_rollout,
    show_rollout,
)
from fleet_server.routes import json_body, require_operator
from fleet_server.sync_reports import handle_sync_reports

ota_api = Blueprint("fleet_ota_api", __name__, url_prefix="/api/v1")


@ota_api.post("/sync-reports")
def sync_reports() -> Tuple[Response, int]:
    """A device's reports about the bundles it tried, and what it runs now (device token)."""
    return jsonify(handle_sync_reports(current_context())), 200


@ota_api.post("/bundles")
def upload_bundle() -> Tuple[Response, int]:
    """Publish a signed bundle; the body is its tar (201 when new, 200 when already published)."""
    context = require_operator()
    cap = context.settings.tuf.max_bundle_bytes
    if request.content_length is not None and request.content_length > cap:
        raise PayloadTooLargeError(f"body of {request.content_length} bytes is over the cap of {cap} "
                                   "(tuf.max_bundle_bytes)")
    with staging_area(context.settings) as work:
        tar_path = receive_tar(request.stream, work, cap)
        published = publish_tar(context.engine, context.settings, tar_path, context.clock())
    return jsonify(published.row), 201 if published.new else 200


@ota_api.get("/bundles")
def bundles() -> Tuple[Response, int]:
    """Every published bundle."""
    context = require_operator()
    with database_errors(), context.engine.connect() as connection:
        return jsonify(list_bundles(connection)), 200


@ota_api.post("/rollouts")
def create() -> Tuple[Response, int]:
    """Start a rollout: {"model", "version", "device_class", "canary": [ids], "percent"}."""
    context = require_operator()
    body = json_body()
    for key in ("model", "version", "device_class"):
        if not isinstance(body.get(key), str):
            raise BadBatchError(f"{key}: expected a string")
    canary = body.get("canary", [])
    if not isinstance(canary, list) or not all(isinstance(item, str) for item in canary):
        raise BadBatchError("canary: expected a list of device ids")
    unknown = set(body) - {"model", "version", "device_class", "canary", "percent"}
    if unknown:
        raise BadBatchError(f"{sorted(unknown)[0]}: unknown key")
    rollout = create_rollout(context.engine, context.settings, body["model"], body["version"], body["device_class"],
                             canary, body.get("percent", 0), context.clock())
    return jsonify(rollout), 201


@ota_api.get("/rollouts")
def rollouts() -> Tuple[Response, int]:
    """Every rollout, newest first."""
    context = require_operator()
    return jsonify(list_rollouts(context.engine)), 200


@ota_api.get("/rollouts/<int:rollout_id>")
def show(rollout_id: int) -> Tuple[Response, int]:
    """A rollout and each device of its class: member or not, installed version, latest report."""
    context = require_operator()
    return jsonify(show_rollout(context.engine, rollout_id)), 200


@ota_api.post("/rollouts/<int:rollout_id>/advance")
def advance(rollout_id: int) -> Tuple[Response, int]:
    """Raise the rollout's percent: {"percent": N} (409 while paused or cancelled, or lower than now)."""
    context = require_operator()
    body = _body_with(("percent",))
    if "percent" not in body:
        raise BadBatchError("percent: missing")
    return jsonify(advance_rollout(context.engine, context.settings, rollout_id, body["percent"],
                                   context.clock())), 200


@ota_api.post("/rollouts/<int:rollout_id>/pause")
def pause(rollout_id: int) -> Tuple[Response, int]:
    """Stop the rollout from growing: {"reason": "..."} (optional)."""
    context = require_operator()
    reason = _body_with(("reason",)).get("reason", "")
    return jsonify(pause_rollout(context.engine, rollout_id, reason, context.clock())), 200


@ota_api.post("/rollouts/<int:rollout_id>/resume")
def resume(rollout_id: int) -> Tuple[Response, int]:
    """Let a paused rollout advance again."""
    context = require_operator()
    return jsonify(resume_rollout(context.engine, rollout_id, context.clock())), 200


@ota_api.post("/rollouts/<int:rollout_id>/cancel")
def cancel(rollout_id: int) -> Tuple[Response, int]:
    """End the rollout; its devices fall back to what other rollouts assign them."""
    context = require_operator()
    return jsonify(cancel_rollout(context.engine, context.settings, rollout_id, context.clock())), 200


def _body_with(keys: Tuple[str, ...]) -> Dict[str, Any]:
    """The JSON object body (empty allowed), refusing keys other than ``keys``."""
    if not request.content_length and request.headers.get("Transfer-Encoding") is None:
        return {}
    body = json_body()
    for key in body:
        if key not in keys:
            raise BadBatchError(f"{key}: unknown key")
    return body
