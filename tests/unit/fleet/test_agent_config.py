"""Agent settings: the example loads, plain http only to loopback, one-line errors, the CLI command."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from edge_runtime.errors import ConfigError
from edge_runtime.fleet.agent_config import AgentSettings, agent_settings_from_mapping, load_agent_settings, read_token
from edge_runtime.fleet.transport import HttpTransport

BASE = {"server_url": "https://fleet.example.com", "device_id": "xavier-0001", "token_file": "token",
        "ca_bundle": None, "spool_path": "spool.sqlite"}


def test_example_loads_with_the_documented_defaults(device_configs_dir: Path) -> None:
    settings = load_agent_settings(device_configs_dir / "agent" / "example.yaml")
    defaults = AgentSettings(**BASE)
    for key in ("batch_max_records", "backoff_initial_s", "backoff_max_s", "poll_s", "request_timeout_s"):
        assert getattr(settings, key) == getattr(defaults, key), key
    assert settings.server_url.startswith("https://")
    assert settings.resolve(settings.token_file) == (device_configs_dir / "agent" / "device-token").resolve()


@pytest.mark.parametrize("url", ["http://fleet.example.com", "http://10.0.0.5:8080", "http://127.0.0.2",
                                 "ftp://fleet.example.com", "fleet.example.com"])
def test_plain_http_to_a_non_loopback_host_is_refused(url: str) -> None:
    with pytest.raises(ConfigError) as error:
        agent_settings_from_mapping({**BASE, "server_url": url}, "agent.yaml")
    assert "\n" not in str(error.value) and "server_url" in str(error.value)
    with pytest.raises(ConfigError):
        HttpTransport(url)


@pytest.mark.parametrize("url", ["http://127.0.0.1:8080", "http://localhost:5000/prefix", "https://fleet.example.com"])
def test_loopback_http_and_https_are_accepted(url: str) -> None:
    assert agent_settings_from_mapping({**BASE, "server_url": url}, "agent.yaml").server_url == url
    HttpTransport(url)


@pytest.mark.parametrize("change, words", [
    ({"batch_max_records": 501}, "batch_max_records"),
    ({"poll_s": 0}, "poll_s"),
    ({"backoff_max_s": 0.5}, "backoff_max_s"),
    ({"surprise": 1}, "unknown key"),
    ({"device_id": ""}, "device_id"),
    ({"device_id": "site/7"}, "device_id"),  # it names the device's TUF paths
])
def test_invalid_settings_are_one_line_errors(change: dict, words: str) -> None:
    with pytest.raises(ConfigError, match=words):
        agent_settings_from_mapping({**BASE, **change}, "agent.yaml")


def test_token_file_first_line(tmp_path: Path) -> None:
    (tmp_path / "token").write_text("abc123\n")
    assert read_token(tmp_path / "token") == "abc123"
    (tmp_path / "empty").write_text("\n")
    with pytest.raises(ConfigError, match="empty"):
        read_token(tmp_path / "empty")
    with pytest.raises(ConfigError, match="cannot read"):
        read_token(tmp_path / "missing")


def test_cli_refuses_plain_http_in_one_line(tmp_path: Path) -> None:
    config = tmp_path / "agent.yaml"
    config.write_text("server_url: http://fleet.example.com\ndevice_id: d\ntoken_file: t\nca_bundle: null\n"
                      "spool_path: s.sqlite\n")
    result = subprocess.run([sys.executable, "-m", "edge_runtime.cli", "agent", "--config", str(config)],
                            capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1 and "plain http is allowed only to 127.0.0.1 or localhost" in result.stderr


def test_cli_missing_token_file_is_one_line(tmp_path: Path) -> None:
    config = tmp_path / "agent.yaml"
    config.write_text("server_url: http://127.0.0.1:9\ndevice_id: d\ntoken_file: missing-token\nca_bundle: null\n"
                      "spool_path: s.sqlite\n")
    result = subprocess.run([sys.executable, "-m", "edge_runtime.cli", "agent", "--config", str(config)],
                            capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 1
    errors = [line for line in result.stderr.splitlines() if "error" in line]
    assert errors == [errors[0]] and "token_file" in errors[0] and "Traceback" not in result.stderr


def test_run_loop_waits_as_told_and_stops_on_the_event() -> None:
    import threading

    from edge_runtime.fleet.agent import run_loop
    from edge_runtime.fleet.uploader import Outcome

    stop = threading.Event()
    outcomes = [Outcome(500, 0.0), Outcome(3, 0.0), Outcome(0, 10.0, idle=True), Outcome(0, 2.0)]
    waits: list = []

    class Steps:
        def step(self) -> Outcome:
            if len(outcomes) == 1:
                stop.set()  # as SIGTERM does: the step in flight finishes, then the loop ends
            return outcomes.pop(0)

    run_loop(Steps(), stop, wait=waits.append)  # type: ignore[arg-type]
    assert waits == [10.0] and outcomes == []


def test_a_sync_block_is_validated_by_its_own_rules(tmp_path: Path) -> None:
    base = {"server_url": "http://127.0.0.1:8080", "device_id": "d", "token_file": "t", "ca_bundle": None,
            "spool_path": "s.sqlite"}
    assert agent_settings_from_mapping(base, str(tmp_path / "agent.yaml")).sync is None
    sync = {"metadata_url": "http://127.0.0.1:9/m/", "targets_url": "http://127.0.0.1:9/t/", "metadata_dir": "tuf",
            "trusted_root": "root.json", "staging_dir": "dl", "repository": "models", "trusted_keys": ["k.pub"],
            "device_config": "device.yaml"}
    settings = agent_settings_from_mapping({**base, "sync": sync}, str(tmp_path / "agent.yaml"))
    assert settings.sync is not None and settings.sync.resolve(settings.sync.repository) == tmp_path / "models"
    assert (settings.sync.device_id, settings.sync.grace_s) == ("d", 300.0)  # the file's top-level device_id
    with pytest.raises(ConfigError, match=r"plain http is allowed only to 127\.0\.0\.1"):
        agent_settings_from_mapping({**base, "sync": {**sync, "targets_url": "http://10.0.0.9/t/"}}, "agent.yaml")
