"""Serving fixtures: runtime settings and a device config, models served by the public fake backend."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Iterator, List

import pytest
from serving_support import settings

from edge_runtime.backends.fake import FakeBackend
from edge_runtime.config import load_device_config
from edge_runtime.serving.model import ServedModel


@pytest.fixture()
def serve(device_configs_dir: Path) -> Iterator[Callable[..., ServedModel]]:
    """Start a ServedModel over a fake backend; every model started is stopped at teardown."""
    started: List[ServedModel] = []
    device = load_device_config(device_configs_dir / "x86-cpu.yaml")

    def start(backend: FakeBackend, **overrides: Any) -> ServedModel:
        model = ServedModel("m", "1", lambda: backend, None, device, settings(**overrides))
        model.start()
        started.append(model)
        return model

    yield start
    for model in started:
        model.stop(drain_timeout_s=5.0)
