"""Helpers shared by the serving tests."""

from __future__ import annotations

from typing import Any

from edge_runtime.config import RuntimeSettings, runtime_settings_from_mapping


def settings(**overrides: Any) -> RuntimeSettings:
    """Runtime settings for tests: one warm-up run, overrides applied on top."""
    data = {"device_config": "unused.yaml", "trusted_keys": ["unused.pub"], "warmup_runs": 1,
            "drain_timeout_s": 5.0}
    data.update(overrides)
    return runtime_settings_from_mapping(data, "test-settings")
