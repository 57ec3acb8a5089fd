"""``POST /v2/models/<m>[/versions/<v>]/infer``: JSON tensors, binary tensors, shared memory."""

from __future__ import annotations

from typing import Optional

from flask import Blueprint, Response, request

from edge_runtime.errors import UnsupportedMediaTypeError
from edge_runtime.server import codec
from edge_runtime.server.context import context

blueprint = Blueprint("infer", __name__)


@blueprint.post("/v2/models/<name>/infer")
@blueprint.post("/v2/models/<name>/versions/<version>/infer")
def infer(name: str, version: Optional[str] = None) -> Response:
    """Decode, run through the model's queue (dynamic batching), encode."""
    ctx = context()
    model = ctx.repository.hold(name, version)  # 404/503 before reading the body; a swap waits for it
    try:
        encoding = request.headers.get("Content-Encoding", "identity").lower()
        if encoding != "identity":
            raise UnsupportedMediaTypeError(
                f"Content-Encoding '{encoding}' is not supported; send the body uncompressed")
        decoded = codec.decode_infer_request(
            request.get_data(cache=False),
            request.headers.get("Inference-Header-Content-Length"),
            model.inputs,
            [spec.name for spec in model.outputs],
            ctx.shm,
            ctx.limits,
        )
        try:  # the shared-memory regions of the outputs are held from decode until they are written
            outputs = model.infer(decoded.inputs)
            body, headers = codec.encode_infer_response(
                model_name=model.name, model_version=model.version, request=decoded, outputs=outputs
            )
        finally:
            decoded.release()
    finally:
        model.release()
    return Response(body, status=200, headers=headers)
