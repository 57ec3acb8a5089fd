"""Triton's load-time config override: how a model is served may change, what is served may not."""

from __future__ import annotations

import json

import pytest
from serving_support import settings

from edge_runtime.errors import RequestError
from edge_runtime.serving.config_override import apply_config_override


def test_partial_override_keeps_the_rest() -> None:
    base = settings()
    out = apply_config_override("m", json.dumps({"instance_group": [{"count": 3, "kind": "KIND_CPU"}]}), base)
    assert out.instances == 3 and out.batching == base.batching


def test_batching_keys_map_to_the_settings() -> None:
    config = {"name": "m", "max_batch_size": "4", "dynamic_batching": {
        "max_queue_delay_microseconds": 500, "preferred_batch_size": [2, 4],
        "default_queue_policy": {"max_queue_size": 16}}}
    out = apply_config_override("m", json.dumps(config), settings()).batching
    assert (out.enabled, out.max_batch_size, out.max_queue_delay_us, out.preferred_batch_sizes, out.max_queue_size) \
        == (True, 4, 500, (2, 4), 16)
    assert not apply_config_override("m", '{"max_batch_size": 0}', settings()).batching.enabled


@pytest.mark.parametrize("config, message", [
    ("not json", "not valid JSON"),
    (json.dumps([1]), "must be a JSON object"),
    (json.dumps({"backend": "python"}), "'backend' cannot be overridden"),
    (json.dumps({"input": []}), "what is served is the signed bundle"),
    (json.dumps({"name": "other"}), "is not the model being loaded"),
    (json.dumps({"max_batch_size": -1}), "max_batch_size must be an integer >= 0"),
    (json.dumps({"dynamic_batching": {"priority_levels": 2}}), "'priority_levels' cannot be overridden"),
    (json.dumps({"instance_group": [{"count": 1}, {"count": 1}]}), "a list of one group"),
    (json.dumps({"dynamic_batching": {"preferred_batch_size": [16]}}), "preferred_batch_sizes"),
    # an HTTP request must not be a way to exhaust the device
    (json.dumps({"instance_group": [{"count": 1000}]}), r"instance_group\[0\].count must be at most 8"),
    (json.dumps({"dynamic_batching": {"max_queue_delay_microseconds": 10**12}}), "must be at most 1000000"),
    (json.dumps({"max_batch_size": "9" * 4000}), "max_batch_size must be an integer"),
])
def test_refused_overrides(config: str, message: str) -> None:
    with pytest.raises(RequestError, match=message) as raised:
        apply_config_override("m", config, settings())
    assert "test-settings" not in str(raised.value)
