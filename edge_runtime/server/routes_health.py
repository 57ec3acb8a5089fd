"""Health and server metadata: ``/v2/health/live``, ``/v2/health/ready``, ``/v2``."""

from __future__ import annotations

from flask import Blueprint, Response

from edge_runtime import __version__
from edge_runtime.server.context import context
from edge_runtime.server.responses import error_response, json_response

blueprint = Blueprint("health", __name__)

EXTENSIONS = ("binary_tensor_data", "system_shared_memory", "model_repository", "statistics")
SHARED_MEMORY_EXTENSION = "system_shared_memory"  # listed only while shared_memory.enabled


@blueprint.get("/v2/health/live")
def live() -> Response:
    """200 while the process serves HTTP at all."""
    return json_response({"live": True})


@blueprint.get("/v2/health/ready")
def ready() -> Response:
    """200 when not draining and every loaded model is ready; 503 otherwise."""
    if context().ready:
        return json_response({"ready": True})
    return error_response("not ready (draining or a model is not ready)", 503)


@blueprint.get("/v2")
def server_metadata() -> Response:
    """KServe v2 server metadata: the extensions listed are the ones this server answers."""
    ctx = context()
    extensions = [name for name in EXTENSIONS if name != SHARED_MEMORY_EXTENSION or ctx.shm.enabled]
    return json_response({"name": ctx.settings.server_name, "version": __version__, "extensions": extensions})
