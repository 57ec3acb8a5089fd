"""The model-repository extension: index, load, unload.

A load is an operator's explicit act: it makes a version the model's active one and records it
(the active-version pointer), so a restart serves the same. ``parameters`` may carry
``"version": "N"`` (an extension: Triton loads by its version policy; here the default is the
highest version on disk) and ``"config": "<json>"`` (Triton's config override, limited to how the
signed bundle is served: see :mod:`edge_runtime.serving.config_override`). ``file:`` overrides
are refused: what is served is always a signed bundle.

The health gate's steps (this runtime's extension, in the same restricted group):
``.../versions/<v>/stage`` loads a version beside the active one (reachable at
``/v2/models/<m>/versions/<v>``, the pointer untouched), ``.../versions/<v>/promote`` makes a
staged version the active one (pointer written, the one it replaces unloaded after draining),
``.../versions/<v>/unload`` stops one version (a failed gate's).
"""

from __future__ import annotations

from typing import Any, Dict

from flask import Blueprint, Response, request

from edge_runtime.errors import ModelNotReadyError, NotStagedError, RequestError
from edge_runtime.server.context import context
from edge_runtime.server.json_body import object_body
from edge_runtime.server.responses import json_response
from edge_runtime.serving.config_override import apply_config_override

_LOAD_PARAMETERS = ("config", "version")

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
    """Activate a model version (default: the highest on disk); a failure keeps what serves."""
    ctx = context()
    body = object_body(ctx.limits, request.get_data(cache=False), "load")
    parameters = _parameters(body)
    if any(key.startswith("file:") for key in parameters):
        raise RequestError(f"failed to load '{name}': file overrides are refused; ship a signed bundle")
    unknown = sorted(set(parameters) - set(_LOAD_PARAMETERS))
    if unknown:
        raise RequestError(f"failed to load '{name}': unknown parameter(s) {', '.join(map(repr, unknown))} "
                           f"(known: {', '.join(_LOAD_PARAMETERS)})")
    version = parameters.get("version")
    if version is not None and not isinstance(version, str):
        raise RequestError(f"failed to load '{name}': parameters.version must be a string such as \"2\"")
    settings = None
    if "config" in parameters:
        settings = apply_config_override(name, parameters["config"], ctx.settings)
    ctx.repository.load(name, version, settings)
    return json_response({})


@blueprint.post("/v2/repository/models/<name>/unload")
def unload(name: str) -> Response:
    """Stop serving a model after draining its queue."""
    ctx = context()
    body = object_body(ctx.limits, request.get_data(cache=False), "unload")
    _parameters(body)
    ctx.repository.unload(name)
    return json_response({})


@blueprint.post("/v2/repository/models/<name>/versions/<version>/stage")
def stage(name: str, version: str) -> Response:
    """Load a version beside the active one for probing; the active version and the pointer stay."""
    ctx = context()
    _parameters(object_body(ctx.limits, request.get_data(cache=False), "stage"))
    model = ctx.repository.stage(name, version)
    return json_response({"name": name, "version": model.version, "state": model.state})


@blueprint.post("/v2/repository/models/<name>/versions/<version>/promote")
def promote(name: str, version: str) -> Response:
    """Make a staged, ready version the active one (409 when it is not); the old one drains and stops."""
    ctx = context()
    _parameters(object_body(ctx.limits, request.get_data(cache=False), "promote"))
    try:
        ctx.repository.promote(name, version)
    except ModelNotReadyError as exc:  # retrying will not help until the version is staged
        raise NotStagedError(str(exc)) from exc
    return json_response({"name": name, "version": version, "state": "READY"})


@blueprint.post("/v2/repository/models/<name>/versions/<version>/unload")
def unload_version(name: str, version: str) -> Response:
    """Stop serving one version of a model (a failed gate's staged one) after draining its queue."""
    ctx = context()
    _parameters(object_body(ctx.limits, request.get_data(cache=False), "unload"))
    ctx.repository.unload(name, version)
    return json_response({})


def _parameters(body: Dict[str, Any]) -> Dict[str, Any]:
    """The request's ``parameters`` object ({} when absent); any other type is a bad request."""
    parameters = body.get("parameters", {})
    if not isinstance(parameters, dict):
        raise RequestError("'parameters' must be a JSON object")
    return parameters
