"""Per-model endpoints: metadata, readiness, config, statistics."""

from __future__ import annotations

from typing import Any, Dict, Optional

from flask import Blueprint, Response

from edge_runtime.bundle.manifest import TensorSpec
from edge_runtime.server.context import context
from edge_runtime.server.datatypes import numpy_to_kserve
from edge_runtime.server.responses import json_response
from edge_runtime.serving.model import ServedModel

blueprint = Blueprint("models", __name__)

PLATFORMS = {"onnxruntime": "onnxruntime_onnx", "tensorrt": "tensorrt_plan", "fake": "fake"}


def _tensor(spec: TensorSpec) -> Dict[str, Any]:
    return {"name": spec.name, "datatype": numpy_to_kserve(spec.dtype), "shape": list(spec.shape)}


def _config_tensor(spec: TensorSpec, batched: bool) -> Dict[str, Any]:
    dims = list(spec.shape[1:] if batched else spec.shape)
    return {"name": spec.name, "data_type": "TYPE_" + numpy_to_kserve(spec.dtype), "dims": dims}


@blueprint.get("/v2/models/<name>")
@blueprint.get("/v2/models/<name>/versions/<version>")
def metadata(name: str, version: Optional[str] = None) -> Response:
    """KServe v2 model metadata, plus which backend serves it and, for a fallback, why."""
    repository = context().repository
    model = repository.get(name, version)
    body: Dict[str, Any] = {
        "name": model.name,
        "versions": [model.version] if version else repository.loaded_versions(name),
        "platform": PLATFORMS.get(model.platform, model.platform),
        "inputs": [_tensor(spec) for spec in model.inputs],
        "outputs": [_tensor(spec) for spec in model.outputs],
        "backend": model.platform,  # which backend serves (Triton's model config has the same key)
    }
    if model.backend_note:
        body["backend_note"] = model.backend_note  # why it is not the device config's preferred one
    return json_response(body)


@blueprint.get("/v2/models/<name>/ready")
@blueprint.get("/v2/models/<name>/versions/<version>/ready")
def model_ready(name: str, version: Optional[str] = None) -> Response:
    """200 when the model (version) is ready; 404 unknown; 503 known but not serving."""
    model = context().repository.get(name, version)
    return json_response({"name": model.name, "version": model.version, "ready": True})


@blueprint.get("/v2/models/<name>/config")
@blueprint.get("/v2/models/<name>/versions/<version>/config")
def model_config(name: str, version: Optional[str] = None) -> Response:
    """The model's configuration in Triton's model-config shape (what the runtime actually uses)."""
    model = context().repository.get(name, version)
    return json_response(describe_config(model))


def describe_config(model: ServedModel) -> Dict[str, Any]:
    """Triton's model-config shape, from the settings this version is served with (override included)."""
    settings = model.settings
    batching = settings.batching.enabled
    batched = model.max_batch_size > 0
    config: Dict[str, Any] = {
        "name": model.name,
        "platform": PLATFORMS.get(model.platform, model.platform),
        "backend": model.platform,
        "max_batch_size": model.max_batch_size,
        "input": [_config_tensor(spec, batched) for spec in model.inputs],
        "output": [_config_tensor(spec, batched) for spec in model.outputs],
        "instance_group": [{"count": settings.instances, "kind": "KIND_CPU" if model.platform != "tensorrt"
                            else "KIND_GPU"}],
        "parameters": {"artifact": {"string_value": model.artifact}},
    }
    if model.backend_note:
        config["parameters"]["backend_note"] = {"string_value": model.backend_note}
    if batched and batching:
        config["dynamic_batching"] = {
            "preferred_batch_size": list(settings.batching.preferred_batch_sizes),
            "max_queue_delay_microseconds": settings.batching.max_queue_delay_us,
            "default_queue_policy": {"max_queue_size": settings.batching.max_queue_size},
        }
    return config


@blueprint.get("/v2/models/stats")
@blueprint.get("/v2/models/<name>/stats")
@blueprint.get("/v2/models/<name>/versions/<version>/stats")
def statistics(name: Optional[str] = None, version: Optional[str] = None) -> Response:
    """Triton's statistics extension: counts and cumulative durations per model version."""
    repository = context().repository
    models = [repository.get(name, version)] if name else repository.loaded()
    return json_response({"model_stats": [m.stats.snapshot(m.name, m.version) for m in models]})
