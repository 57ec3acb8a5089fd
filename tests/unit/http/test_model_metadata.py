"""Model metadata and config say which backend serves a model and, for a fallback, why."""

from __future__ import annotations

from flask import Flask
from flask.testing import FlaskClient

from edge_runtime.server.context import context

NOTE = "device config 'agx-xavier' (agx-xavier.yaml) prefers TensorRT, which cannot be used here (...)"


def test_metadata_names_the_backend_and_no_note_when_there_is_none(client: FlaskClient) -> None:
    for path in ("/v2/models/fake", "/v2/models/fake/versions/1"):
        body = client.get(path).get_json()
        assert body["backend"] == "fake" and body["platform"] == "fake"
        assert "backend_note" not in body
    config = client.get("/v2/models/fake/config").get_json()
    assert config["backend"] == "fake" and "backend_note" not in config["parameters"]


def test_metadata_and_config_carry_the_backend_note(app: Flask, client: FlaskClient) -> None:
    with app.app_context():
        context().repository.get("fake").backend_note = NOTE
    for path in ("/v2/models/fake", "/v2/models/fake/versions/1"):
        body = client.get(path).get_json()
        assert body["backend_note"] == NOTE
        assert {"name", "versions", "platform", "inputs", "outputs"} <= set(body)  # the KServe fields stay
    config = client.get("/v2/models/fake/config").get_json()
    assert config["parameters"]["backend_note"] == {"string_value": NOTE}
    assert "artifact" in config["parameters"]
