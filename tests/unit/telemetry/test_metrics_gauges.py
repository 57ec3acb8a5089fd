"""/metrics shows the system figures (read from the configured root) and a latency histogram per model."""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import pytest
from flask.testing import FlaskClient

from edge_runtime.backends.fake import FakeBackend
from edge_runtime.config import RuntimeSettings, load_device_config
from edge_runtime.config.runtime import TelemetrySettings
from edge_runtime.server.app import create_app
from edge_runtime.serving.repository import ModelRepository

BOARDS = Path(__file__).resolve().parents[2] / "fixtures" / "jetson"


def _client(device_configs_dir: Path, sysfs_root: Path) -> Iterator[FlaskClient]:
    settings = RuntimeSettings(device_config=str(device_configs_dir / "x86-cpu.yaml"), trusted_keys=(),
                               warmup_runs=0, telemetry=TelemetrySettings(sysfs_root=str(sysfs_root)))
    repository = ModelRepository(None, settings, load_device_config(settings.device_config), trusted_keys=[])
    repository.add_fake("fake", FakeBackend)
    repository.load_all()
    try:
        yield create_app(settings, repository).test_client()
    finally:
        repository.close()


@pytest.fixture()
def orin(device_configs_dir: Path) -> Iterator[FlaskClient]:
    yield from _client(device_configs_dir, BOARDS / "orin-agx")


def test_jetson_figures_are_gauges(orin: FlaskClient) -> None:
    text = orin.get("/metrics").get_data(as_text=True)
    for line in ('edge_runtime_nvmap_bytes 1.073741824e+09',
                 'edge_runtime_gpu_load 0.058',
                 'edge_runtime_clocks_locked 1.0',
                 'edge_runtime_temperature_celsius{zone="tj-thermal"} 48.5',
                 'edge_runtime_power_milliwatts{rail="VDD_GPU_SOC"} 3987.2',
                 'edge_runtime_power_mode_info{mode="MODE_30W"} 1.0'):
        assert line in text.splitlines(), line


def test_latency_histogram_per_model(orin: FlaskClient) -> None:
    body = {"inputs": [{"name": "INPUT0", "shape": [1, 16], "datatype": "FP32", "data": [0.0] * 16}]}
    for _ in range(3):
        assert orin.post("/v2/models/fake/infer", json=body).status_code == 200
    lines = orin.get("/metrics").get_data(as_text=True).splitlines()
    assert 'edge_runtime_request_duration_seconds_count{model="fake",version="1"} 3.0' in lines
    assert 'edge_runtime_request_duration_seconds_bucket{le="+Inf",model="fake",version="1"} 3.0' in lines
    assert any(line.startswith('edge_runtime_request_duration_seconds_bucket{le="0.00025"') for line in lines)


def test_a_host_without_jetson_files_has_no_jetson_gauges(device_configs_dir: Path, tmp_path: Path) -> None:
    for client in _client(device_configs_dir, tmp_path):
        response = client.get("/metrics")
        assert response.status_code == 200
        text = response.get_data(as_text=True)
        assert "edge_runtime_nvmap_bytes " not in text and "edge_runtime_gpu_load " not in text
        assert "nv_inference_request_success" in text
