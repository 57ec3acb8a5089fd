"""The model-repository extension: index, load, unload."""

from __future__ import annotations

from typing import Any, Dict

from flask import Blueprint, Response, request

from edge_runtime.errors import RequestError
from edge_runtime.server.context import context
from edge_runtime.server.json_body import object_body
from edge_runtime.server.responses import json_response

blueprint = Blueprint("repository", __name__)


@blueprint.post("/v2/repository/index")
def index() -> Response:
    """Every model in the repository with its state; ``{"ready": true}`` lists only ready ones."""
    ctx = context()
    body = object_body(ctx.limits, request.get_data(cache=False), "index")
    ready = body.get("ready", False)
    if not isinstance(ready, bool):
        raise RequestError("'ready' must be a boolean")
    entries = ctx.repository.index()
    if ready:
        entries = [e for e in entries if e["state"] == "READY"]
    return json_response(entries)


@blueprint.post("/v2/repository/models/<name>/load")
def load(name: str) -> Response:
    """(Re)load a model at its highest version; a failure keeps the serving version."""
    ctx = context()
    body = object_body(ctx.limits, request.get_data(cache=False), "load")
    parameters = _parameters(body)
    if "config" in parameters or any(key.startswith("file:") for key in parameters):
        raise RequestError("loading with a config override or files is not supported: ship a signed bundle")
    ctx.repository.load(name)
    return json_response({})


@blueprint.post("/v2/repository/models/<name>/unload")
def unload(name: str) -> Response:
    """Stop serving a model after draining its queue."""
    ctx = context()
    body = object_body(ctx.limits, request.get_data(cache=False), "unload")
    _parameters(body)
    ctx.repository.unload(name)
    return json_response({})


def _parameters(body: Dict[str, Any]) -> Dict[str, Any]:
    """The request's ``parameters`` object ({} when absent); any other type is a bad request."""
    parameters = body.get("parameters", {})
    if not isinstance(parameters, dict):
        raise RequestError("'parameters' must be a JSON object")
    return parameters
