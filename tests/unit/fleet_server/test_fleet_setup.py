"""Settings, the token secret and digests, and the migrations matching the models."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from edge_runtime.errors import ConfigError
from fleet_server.db import make_engine
from fleet_server.errors import SecretError
from fleet_server.models import Base
from fleet_server.schema import head_revision, upgrade_to_head
from fleet_server.settings import fleet_settings_from_mapping, load_fleet_settings
from fleet_server.tokens import load_or_create_secret, new_token, token_digest


def test_settings_defaults_and_relative_paths(tmp_path: Path) -> None:
    path = tmp_path / "conf" / "fleet.yaml"
    path.parent.mkdir()
    path.write_text("retention: {raw_days: 2}\n")
    settings = load_fleet_settings(path)
    assert settings.max_ingest_bytes == 1024 * 1024 and settings.retention.raw_days == 2.0
    assert settings.resolved_database_url == f"sqlite:///{path.parent / 'fleet.sqlite'}"
    assert settings.resolve(settings.secret_file) == path.parent / "fleet-secret.key"
    pg = fleet_settings_from_mapping({"database_url": "postgresql://u@h/db"}, "x.yaml")
    assert pg.resolved_database_url == "postgresql+psycopg://u@h/db" and not pg.is_sqlite


@pytest.mark.parametrize("data", [{"unknown": 1}, {"max_ingest_bytes": 0}, {"database_url": "mysql://x"},
                                  {"retention": {"raw_days": 100, "minute_days": 10}}, {"online_after_s": -1}])
def test_bad_settings_are_one_line_config_errors(data: dict) -> None:
    with pytest.raises(ConfigError) as info:
        fleet_settings_from_mapping(data, "fleet.yaml")
    assert "\n" not in str(info.value) and str(info.value).startswith("fleet.yaml: ")


def test_secret_is_created_private_once_and_reused(tmp_path: Path) -> None:
    path = tmp_path / "secret.key"
    secret = load_or_create_secret(path)
    assert len(secret) == 64 and stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert load_or_create_secret(path) == secret
    assert [p.name for p in tmp_path.iterdir()] == ["secret.key"]
    path.write_text("short\n")
    with pytest.raises(SecretError):
        load_or_create_secret(path)


def test_tokens_are_random_and_digests_keyed() -> None:
    token = new_token()
    assert len(token) >= 43 and token != new_token()
    assert token_digest(b"k" * 32, token) == token_digest(b"k" * 32, token)
    assert token_digest(b"k" * 32, token) != token_digest(b"j" * 32, token)
    assert token not in token_digest(b"k" * 32, token)


def test_migrations_create_exactly_the_models(tmp_path: Path) -> None:
    settings = fleet_settings_from_mapping({}, str(tmp_path / "fleet.yaml"))
    engine = make_engine(settings)
    assert upgrade_to_head(engine) == head_revision()
    assert upgrade_to_head(engine) == head_revision()  # idempotent
    with engine.connect() as connection:
        differences = compare_metadata(MigrationContext.configure(connection), Base.metadata)
    engine.dispose()
    assert differences == []
