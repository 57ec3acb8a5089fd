"""GET /metrics after requests that succeed and requests that fail at the model: each is counted where it belongs."""

from __future__ import annotations

from pathlib import Path
from typing import Dict, Iterator, Tuple

import pytest
from flask.testing import FlaskClient
from prometheus_client.parser import text_string_to_metric_families

from edge_runtime.backends.fake import FakeBackend
from edge_runtime.config import RuntimeSettings, load_device_config
from edge_runtime.server.app import create_app
from edge_runtime.serving.repository import ModelRepository

INFER = "/v2/models/fake/infer"
BODY = {"inputs": [{"name": "INPUT0", "shape": [1, 16], "datatype": "FP32", "data": [0.0] * 16}]}


@pytest.fixture()
def served(device_configs_dir: Path) -> Iterator[Tuple[FlaskClient, FakeBackend]]:
    """An app serving ``fake``, and its backend (set ``fail`` to make the model fail)."""
    settings = RuntimeSettings(device_config=str(device_configs_dir / "x86-cpu.yaml"), trusted_keys=(), warmup_runs=0)
    repository = ModelRepository(None, settings, load_device_config(settings.device_config), trusted_keys=[])
    backend = FakeBackend()
    repository.add_fake("fake", lambda: backend)
    repository.load_all()
    try:
        yield create_app(settings, repository).test_client(), backend
    finally:
        repository.close()


def fake_samples(client: FlaskClient) -> Dict[str, float]:
    """Every /metrics sample labelled model="fake", by sample name."""
    text = client.get("/metrics").get_data(as_text=True)
    return {
        sample.name: sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.labels.get("model") == "fake" and "le" not in sample.labels
    }


def test_a_request_that_fails_at_the_model_counts_as_a_failure_not_a_success(
    served: Tuple[FlaskClient, FakeBackend],
) -> None:
    client, backend = served
    for _ in range(2):
        assert client.post(INFER, json=BODY).status_code == 200
    backend.fail = True
    response = client.post(INFER, json=BODY)
    assert response.status_code >= 400 and "the fake backend was told to fail" in response.get_json()["error"]
    samples = fake_samples(client)
    assert samples["nv_inference_request_success"] == 2
    assert samples["nv_inference_request_failure"] == 1
    assert samples["nv_inference_count"] == 2  # inferences performed: the failed one produced none
    # the latency histogram holds successful requests only
    assert samples["edge_runtime_request_duration_seconds_count"] == 2


def test_a_failure_before_any_success_shows_no_success(served: Tuple[FlaskClient, FakeBackend]) -> None:
    client, backend = served
    backend.fail = True
    assert client.post(INFER, json=BODY).status_code >= 400
    samples = fake_samples(client)
    assert samples["nv_inference_request_success"] == 0
    assert samples["nv_inference_request_failure"] == 1
