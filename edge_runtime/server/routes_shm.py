"""The system shared-memory extension: register, unregister, status (zero-copy I/O for local apps)."""

from __future__ import annotations

from typing import Any, Dict, Optional

from flask import Blueprint, Response, request

from edge_runtime.errors import RequestError
from edge_runtime.server.context import context
from edge_runtime.server.json_body import object_body
from edge_runtime.server.responses import json_response

blueprint = Blueprint("shm", __name__)


@blueprint.get("/v2/systemsharedmemory/status")
@blueprint.get("/v2/systemsharedmemory/region/<name>/status")
def status(name: Optional[str] = None) -> Response:
    """Registered regions (all, or one)."""
    return json_response(context().shm.status(name))


@blueprint.post("/v2/systemsharedmemory/region/<name>/register")
def register(name: str) -> Response:
    """Map the POSIX shared-memory object ``key`` as region ``name``."""
    ctx = context()
    body = object_body(ctx.limits, request.get_data(cache=False), "register")
    if not body:
        raise RequestError("register needs a JSON object: {\"key\": ..., \"offset\": ..., \"byte_size\": ...}")
    key = body.get("key")
    if not isinstance(key, str):
        raise RequestError("'key' must be a string (the shared-memory object's name)")
    ctx.shm.register(name, key, _integer(body, "offset", 0), _integer(body, "byte_size"))
    return json_response({})


@blueprint.post("/v2/systemsharedmemory/unregister")
@blueprint.post("/v2/systemsharedmemory/region/<name>/unregister")
def unregister(name: Optional[str] = None) -> Response:
    """Forget one region, or all."""
    context().shm.unregister(name)
    return json_response({})


def _integer(body: Dict[str, Any], field: str, default: Optional[int] = None) -> int:
    value = body.get(field, default)
    if not isinstance(value, int) or isinstance(value, bool):
        raise RequestError(f"'{field}' must be an integer")
    return value
