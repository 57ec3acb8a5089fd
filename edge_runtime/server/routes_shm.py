"""The shared-memory extensions: system (register, unregister, status) and CUDA (answered as a CPU-only Triton).

System shared memory gives local apps zero-copy-over-HTTP tensors (:mod:`edge_runtime.server.shm`
holds the policy and caps). CUDA shared memory (``cudaIpcMemHandle_t``) does not exist on a
Jetson's unified memory in a form this runtime serves, so these routes answer as Triton built
without GPU support does: status lists nothing, unregister succeeds (tritonclient's examples
unregister everything before they start), register is refused with Triton's own message.
"""

from __future__ import annotations

from typing import Any, Dict, Optional

from flask import Blueprint, Response, request

from edge_runtime.errors import RequestError, SharedMemoryError, SharedMemoryNotFoundError
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
    """Open the POSIX shared-memory object ``key`` as region ``name`` (policy and caps: settings)."""
    ctx = context()
    if not ctx.shm.enabled:  # before reading the body: the answer does not depend on it
        raise SharedMemoryError("system shared memory is not supported: it is disabled on this server")
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


@blueprint.get("/v2/cudasharedmemory/status")
@blueprint.get("/v2/cudasharedmemory/region/<name>/status")
def cuda_status(name: Optional[str] = None) -> Response:
    """No CUDA region is ever registered: ``[]``, or Triton's 404 for a named one."""
    if name is not None:
        raise SharedMemoryNotFoundError(f"Unable to find cuda shared memory region: '{name}'")
    return json_response([])


@blueprint.post("/v2/cudasharedmemory/unregister")
@blueprint.post("/v2/cudasharedmemory/region/<name>/unregister")
def cuda_unregister(name: Optional[str] = None) -> Response:
    """Nothing to forget: succeeds, as in Triton."""
    return json_response({})


@blueprint.post("/v2/cudasharedmemory/region/<name>/register")
def cuda_register(name: str) -> Response:
    """Refused with the message of a Triton built without GPU support."""
    raise SharedMemoryError(f"failed to register CUDA shared memory region: '{name}', GPUs not supported")


def _integer(body: Dict[str, Any], field: str, default: Optional[int] = None) -> int:
    value = body.get(field, default)
    if not isinstance(value, int) or isinstance(value, bool):
        raise RequestError(f"'{field}' must be an integer")
    return value
