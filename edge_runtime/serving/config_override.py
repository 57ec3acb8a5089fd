"""A Triton model-config override on a load request: how a model is served, never what is served.

``POST /v2/repository/models/<m>/load`` may carry ``{"parameters": {"config": "<json>"}}``. The
runtime accepts the parts that change how the signed bundle is served: ``max_batch_size``,
``dynamic_batching`` (``max_queue_delay_microseconds``, ``preferred_batch_size``,
``default_queue_policy.max_queue_size``) and ``instance_group`` (``count``). Any other key is
refused with a clear error (a different model, inputs, backend or files would change what is
served). Keys not given keep the runtime settings: an override is partial, unlike Triton's, and it
lasts until the model's next load (it is not persisted).
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any, Dict, Optional

from edge_runtime.config import RuntimeSettings, runtime_settings_from_mapping
from edge_runtime.errors import ConfigError, RequestError

_TOP_KEYS = ("name", "max_batch_size", "dynamic_batching", "instance_group")
_BATCHING_KEYS = ("max_queue_delay_microseconds", "preferred_batch_size", "default_queue_policy")
_SOURCE = "config override"  # names the override in validation messages (never a file path)
# A load request comes over HTTP: its override must not be a way to exhaust the device. Each
# instance is a worker thread with its own loaded model (memory), and a long queue delay holds
# every request of the model; Jetsons have 6 to 12 CPU cores and one GPU.
MAX_INSTANCES = 8
MAX_QUEUE_DELAY_US = 1_000_000


def apply_config_override(name: str, text: Any, settings: RuntimeSettings) -> RuntimeSettings:
    """``settings`` with the override's batching and instance count; RequestError for anything else."""
    if not isinstance(text, str):
        raise RequestError("parameters.config must be a string holding a JSON model config")
    try:
        config = json.loads(text)
    except ValueError as exc:
        raise RequestError(f"parameters.config is not valid JSON: {exc}") from None
    if not isinstance(config, dict):
        raise RequestError("parameters.config must be a JSON object")
    _refuse_unknown("parameters.config", config, _TOP_KEYS)
    if config.get("name", name) != name:
        raise RequestError(f"parameters.config: name {config['name']!r} is not the model being loaded ({name!r})")
    batching: Dict[str, Any] = {}
    if "max_batch_size" in config:
        size = _int(config["max_batch_size"], "max_batch_size", 0)
        batching.update(enabled=size > 0, max_batch_size=max(size, 1))
    if "dynamic_batching" in config:
        batching.update(_dynamic_batching(config["dynamic_batching"]))
    mapping = _as_mapping(settings)
    mapping["batching"].update(batching)
    if "instance_group" in config:
        mapping["instances"] = _instance_count(config["instance_group"])
    try:
        checked = runtime_settings_from_mapping(mapping, _SOURCE)
    except ConfigError as exc:
        raise RequestError(str(exc)) from None
    return dataclasses.replace(settings, batching=checked.batching, instances=checked.instances)


def _dynamic_batching(block: Any) -> Dict[str, Any]:
    if not isinstance(block, dict):
        raise RequestError("parameters.config: dynamic_batching must be an object")
    _refuse_unknown("dynamic_batching", block, _BATCHING_KEYS)
    out: Dict[str, Any] = {"enabled": True}
    if "max_queue_delay_microseconds" in block:
        out["max_queue_delay_us"] = _int(block["max_queue_delay_microseconds"], "max_queue_delay_microseconds", 0,
                                         MAX_QUEUE_DELAY_US)
    if "preferred_batch_size" in block:
        sizes = block["preferred_batch_size"]
        if not isinstance(sizes, list):
            raise RequestError("parameters.config: dynamic_batching.preferred_batch_size must be a list")
        out["preferred_batch_sizes"] = [_int(s, "preferred_batch_size", 1) for s in sizes]
    if "default_queue_policy" in block:
        policy = block["default_queue_policy"]
        if not isinstance(policy, dict):
            raise RequestError("parameters.config: default_queue_policy must be an object")
        _refuse_unknown("default_queue_policy", policy, ("max_queue_size",))
        if "max_queue_size" in policy:
            out["max_queue_size"] = _int(policy["max_queue_size"], "max_queue_size", 1)
    return out


def _instance_count(groups: Any) -> int:
    if not isinstance(groups, list) or len(groups) != 1 or not isinstance(groups[0], dict):
        raise RequestError("parameters.config: instance_group must be a list of one group")
    _refuse_unknown("instance_group[0]", groups[0], ("count", "kind"))
    kind = groups[0].get("kind")
    if kind is not None and kind not in ("KIND_CPU", "KIND_GPU", "KIND_AUTO"):
        raise RequestError(f"parameters.config: instance_group[0].kind {kind!r} is not served here")
    return _int(groups[0].get("count", 1), "instance_group[0].count", 1, MAX_INSTANCES)


def _refuse_unknown(where: str, block: Dict[str, Any], allowed: Any) -> None:
    unknown = sorted(set(block) - set(allowed))
    if unknown:
        raise RequestError(
            f"{where}: {', '.join(map(repr, unknown))} cannot be overridden (allowed: {', '.join(allowed)}); "
            "what is served is the signed bundle"
        )


def _int(value: Any, key: str, minimum: int, maximum: Optional[int] = None) -> int:
    # Triton's JSON config writes 64-bit integers as strings as well.
    if isinstance(value, str) and value.isascii() and value.isdigit() and len(value) <= 20:
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise RequestError(f"parameters.config: {key} must be an integer >= {minimum}, got {value!r}")
    if maximum is not None and value > maximum:
        raise RequestError(f"parameters.config: {key} must be at most {maximum}, got {value}")
    return value


def _as_mapping(settings: RuntimeSettings) -> Dict[str, Any]:
    mapping = dataclasses.asdict(settings)
    mapping.pop("source", None)
    for key, value in list(mapping.items()):
        if isinstance(value, tuple):
            mapping[key] = list(value)
    return mapping

