"""The model-repository extension: index, load, unload."""

from __future__ import annotations

from flask import Blueprint, Response, request

from edge_runtime.errors import RequestError
from edge_runtime.server.app import context, json_response, optional_body

blueprint = Blueprint("repository", __name__)


@blueprint.post("/v2/repository/index")
def index() -> Response:
    """Every model in the repository with its state; ``{"ready": true}`` lists only ready ones."""
    ctx = context()
    body = optional_body(ctx.limits, request.get_data(cache=False)) or {}
    if not isinstance(body, dict):
        raise RequestError("the index request body must be a JSON object")
    entries = ctx.repository.index()
    if body.get("ready") is True:
        entries = [e for e in entries if e["state"] == "READY"]
    return json_response(entries)


@blueprint.post("/v2/repository/models/<name>/load")
def load(name: str) -> Response:
    """(Re)load a model at its highest version; a failure keeps the serving version."""
    ctx = context()
    body = optional_body(ctx.limits, request.get_data(cache=False)) or {}
    if not isinstance(body, dict):
        raise RequestError("the load request body must be a JSON object")
    parameters = body.get("parameters") or {}
    if not isinstance(parameters, dict):
        raise RequestError("'parameters' must be a JSON object")
    if "config" in parameters or any(key.startswith("file:") for key in parameters):
        raise RequestError("loading with a config override or files is not supported: ship a signed bundle")
    ctx.repository.load(name)
    return json_response({})


@blueprint.post("/v2/repository/models/<name>/unload")
def unload(name: str) -> Response:
    """Stop serving a model after draining its queue."""
    ctx = context()
    body = optional_body(ctx.limits, request.get_data(cache=False))
    if body is not None and not isinstance(body, dict):
        raise RequestError("the unload request body must be a JSON object")
    ctx.repository.unload(name)
    return json_response({})
