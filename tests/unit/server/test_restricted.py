"""Restricted API groups: route → group mapping, secrets, the header check, the non-loopback rule."""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import pytest

from edge_runtime.config import RuntimeSettings, load_device_config
from edge_runtime.config.runtime import RESTRICTABLE_GROUPS, RestrictedApi, SharedMemorySettings
from edge_runtime.errors import ConfigError
from edge_runtime.server.restricted import (
    RestrictedApiMiddleware,
    Restriction,
    api_group,
    check_remote_binding,
    load_restrictions,
)

# Every route of the app and its Triton group (Triton's http_server.cc; /metrics: see restricted.py).
EXPECTED_GROUPS = {
    "/v2/health/live": "health",
    "/v2/health/ready": "health",
    "/v2": "metadata",
    "/v2/models/<name>": "metadata",
    "/v2/models/<name>/versions/<version>": "metadata",
    "/v2/models/<name>/ready": "health",
    "/v2/models/<name>/versions/<version>/ready": "health",
    "/v2/models/<name>/config": "model-config",
    "/v2/models/<name>/versions/<version>/config": "model-config",
    "/v2/models/<name>/infer": "inference",
    "/v2/models/<name>/versions/<version>/infer": "inference",
    "/v2/models/stats": "statistics",
    "/v2/models/<name>/stats": "statistics",
    "/v2/models/<name>/versions/<version>/stats": "statistics",
    "/metrics": "statistics",
    "/v2/repository/index": "model-repository",
    "/v2/repository/models/<name>/load": "model-repository",
    "/v2/repository/models/<name>/unload": "model-repository",
    "/v2/repository/models/<name>/versions/<version>/stage": "model-repository",
    "/v2/repository/models/<name>/versions/<version>/promote": "model-repository",
    "/v2/repository/models/<name>/versions/<version>/unload": "model-repository",
    "/v2/systemsharedmemory/status": "shared-memory",
    "/v2/systemsharedmemory/region/<name>/status": "shared-memory",
    "/v2/systemsharedmemory/region/<name>/register": "shared-memory",
    "/v2/systemsharedmemory/unregister": "shared-memory",
    "/v2/systemsharedmemory/region/<name>/unregister": "shared-memory",
    "/v2/cudasharedmemory/status": "shared-memory",
    "/v2/cudasharedmemory/region/<name>/status": "shared-memory",
    "/v2/cudasharedmemory/region/<name>/register": "shared-memory",
    "/v2/cudasharedmemory/unregister": "shared-memory",
    "/v2/cudasharedmemory/region/<name>/unregister": "shared-memory",
}


@pytest.fixture()
def settings(device_configs_dir: Path, tmp_path: Path) -> RuntimeSettings:
    return RuntimeSettings(device_config=str(device_configs_dir / "x86-cpu.yaml"), trusted_keys=("unused.pub",),
                           source=str(tmp_path / "runtime.yaml"))


def _example_path(rule: str) -> str:
    return rule.replace("<name>", "m").replace("<version>", "1")


def test_every_route_has_its_group(settings: RuntimeSettings) -> None:
    pytest.importorskip("flask")
    from edge_runtime.server.app import create_app
    from edge_runtime.serving.repository import ModelRepository

    repository = ModelRepository(None, settings, load_device_config(settings.device_config), trusted_keys=[])
    try:
        rules = {rule.rule for rule in create_app(settings, repository).url_map.iter_rules()
                 if rule.endpoint != "static"}
    finally:
        repository.close()
    unmapped = rules - set(EXPECTED_GROUPS)
    assert not unmapped, f"routes with no expected group: {sorted(unmapped)}"
    for rule in rules:
        assert api_group(_example_path(rule)) == EXPECTED_GROUPS[rule], rule
    assert set(EXPECTED_GROUPS.values()) <= set(RESTRICTABLE_GROUPS)


@pytest.mark.parametrize(("path", "group"), [
    ("//v2//repository/index", "model-repository"),  # werkzeug redirects it to the real route
    ("/v2/models/infer", "metadata"),  # a model named "infer"
    ("/v2/models/versions/versions/3/infer", "inference"),
    ("/v2/models/stats/stats", "statistics"),
    ("/v2/models/m/versions/1/config", "model-config"),
    ("/nowhere", None),
    ("", None),
])
def test_odd_paths(path: str, group: Optional[str]) -> None:
    assert api_group(path) == group


def _with_rules(settings: RuntimeSettings, *rules: RestrictedApi) -> RuntimeSettings:
    return dataclasses.replace(settings, restricted_api=tuple(rules))


def test_secret_from_file_first_line(settings: RuntimeSettings, tmp_path: Path) -> None:
    (tmp_path / "key").write_text("  s3cret \nsecond line\n")
    (tmp_path / "key").chmod(0o600)
    (rule,) = load_restrictions(_with_rules(settings, RestrictedApi(("model-repository",), "admin-key", "key")))
    assert rule.secret == b"s3cret" and rule.groups == frozenset({"model-repository"})
    assert rule.environ_key == "HTTP_ADMIN_KEY"
    assert "s3cret" not in repr(rule)


def test_secret_from_environment(settings: RuntimeSettings, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EDGE_TEST_SECRET", "from-env")
    rule = RestrictedApi(("statistics",), "k", value_env="EDGE_TEST_SECRET")
    assert load_restrictions(_with_rules(settings, rule))[0].secret == b"from-env"


def test_file_readable_by_others_is_warned(settings: RuntimeSettings, tmp_path: Path,
                                           caplog: pytest.LogCaptureFixture) -> None:
    (tmp_path / "key").write_text("s3cret-value\n")
    (tmp_path / "key").chmod(0o644)
    with caplog.at_level(logging.WARNING):
        load_restrictions(_with_rules(settings, RestrictedApi(("inference",), "k", "key")))
    assert "other users" in caplog.text and "s3cret-value" not in caplog.text


@pytest.mark.parametrize(("rule", "message"), [
    (RestrictedApi(("inference",), "k", value_file="missing"), "no such file"),
    (RestrictedApi(("inference",), "k", value_env="EDGE_TEST_UNSET"), "EDGE_TEST_UNSET is not set"),
    (RestrictedApi(("inference",), "k", value_file="empty"), "empty"),
    (RestrictedApi(("inference",), "k", value_file="fifo"), "not a regular file"),
    (RestrictedApi(("inference",), "admin_key", value_file="empty"), "'_'"),
])
def test_bad_secrets_are_one_line_errors(settings: RuntimeSettings, tmp_path: Path, rule: RestrictedApi,
                                         message: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("EDGE_TEST_UNSET", raising=False)
    (tmp_path / "empty").write_text("\n")
    os.mkfifo(tmp_path / "fifo")  # opening it would block: it must be refused before any open
    with pytest.raises(ConfigError, match=message) as raised:
        load_restrictions(_with_rules(settings, rule))
    assert "\n" not in str(raised.value)


def test_a_group_in_two_rules_is_refused(settings: RuntimeSettings, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EDGE_TEST_SECRET", "x")
    rules = (RestrictedApi(("inference", "statistics"), "a", value_env="EDGE_TEST_SECRET"),
             RestrictedApi(("statistics",), "b", value_env="EDGE_TEST_SECRET"))
    with pytest.raises(ConfigError, match="'statistics' is already restricted"):
        load_restrictions(_with_rules(settings, *rules))


ADMIN = RestrictedApi(("model-repository", "shared-memory"), "k", value_env="X")


@pytest.mark.parametrize(("host", "changes", "allowed"), [
    ("127.0.0.1", {}, True),
    ("127.0.0.2", {}, True),
    ("::1", {}, True),
    ("localhost", {}, True),
    ("0.0.0.0", {}, False),
    ("192.0.2.1", {}, False),
    ("", {}, False),
    ("device.example", {}, False),
    ("0.0.0.0", {"allow_unrestricted_remote": True}, True),
    ("0.0.0.0", {"restricted_api": (ADMIN,)}, True),
    ("0.0.0.0", {"restricted_api": (RestrictedApi(("model-repository",), "k", value_env="X"),)}, False),
    ("0.0.0.0", {"restricted_api": (RestrictedApi(("model-repository",), "k", value_env="X"),),
                 "shared_memory": SharedMemorySettings(enabled=False)}, True),
])
def test_remote_binding_needs_restrictions(settings: RuntimeSettings, host: str, changes: Dict[str, Any],
                                           allowed: bool) -> None:
    settings = dataclasses.replace(settings, **changes)
    if allowed:
        check_remote_binding(settings, host)
    else:
        with pytest.raises(ConfigError, match="refusing to serve"):
            check_remote_binding(settings, host)


class _Recorder:
    """A WSGI app that records that it ran, and a start_response that records the answer."""

    def __init__(self) -> None:
        self.called = 0
        self.status = ""
        self.headers: List[Tuple[str, str]] = []

    def app(self, environ: dict, start_response: Any) -> List[bytes]:
        self.called += 1
        start_response("200 OK", [("Content-Type", "application/json")])
        return [b"{}"]

    def start_response(self, status: str, headers: List[Tuple[str, str]]) -> None:
        self.status, self.headers = status, headers


RULE = Restriction(frozenset({"model-repository"}), "Admin-Key", b"s3cret")


@pytest.mark.parametrize(("path", "header", "passes"), [
    ("/v2/repository/index", None, False),
    ("/v2/repository/index", "wrong", False),
    ("/v2/repository/index", "s3cre", False),
    ("/v2/repository/index", "s3cret ", False),
    ("/v2/repository/index", "s\u20acret", False),  # not latin-1: refused, not an exception
    ("/v2/repository/index", "s3cret", True),
    ("/v2/models/m/infer", None, True),
    ("/v2/health/ready", None, True),
])
def test_middleware_checks_the_header(path: str, header: Optional[str], passes: bool) -> None:
    recorder = _Recorder()
    middleware = RestrictedApiMiddleware(recorder.app, [RULE])
    environ = {"PATH_INFO": path, **({"HTTP_ADMIN_KEY": header} if header is not None else {})}
    body = b"".join(middleware(environ, recorder.start_response))
    assert recorder.called == int(passes)
    if not passes:
        assert recorder.status == "403 Forbidden"
        assert ("Content-Type", "application/json") in recorder.headers
        assert json.loads(body) == {"error": "This API is restricted, expecting header 'Admin-Key'"}
