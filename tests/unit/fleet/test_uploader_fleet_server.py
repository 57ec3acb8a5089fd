"""The uploader against the real central server (fleet_server's app, SQLite) through its Flask test client."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, Iterator, Mapping, Tuple

import pytest

pytest.importorskip("sqlalchemy")
pytest.importorskip("fleet_server.app")

from edge_runtime.fleet.backoff import Backoff
from edge_runtime.fleet.transport import Reply, Transport
from edge_runtime.fleet.uploader import Uploader
from edge_runtime.telemetry.spool import Spool

T0 = 1764086400.0


def flask_transport(client: Any) -> Transport:
    """The transport seam over a Flask test client."""

    def post(path: str, body: bytes, headers: Mapping[str, str]) -> Reply:
        response = client.post(path, data=body, headers=dict(headers))
        return Reply(response.status_code, {k.lower(): v for k, v in response.headers.items()}, response.get_data())

    return post


@pytest.fixture()
def fleet(tmp_path: Path) -> Iterator[Tuple[Any, str, Any]]:
    """(test client, the device's token, the database engine) for a migrated SQLite fleet with dev-1 enrolled."""
    from fleet_server.app import create_app
    from fleet_server.db import make_engine
    from fleet_server.schema import upgrade_to_head
    from fleet_server.settings import fleet_settings_from_mapping
    from fleet_server.tokens import enroll_device, load_or_create_secret

    settings = fleet_settings_from_mapping({"database_url": f"sqlite:///{tmp_path / 'fleet.sqlite'}",
                                            "secret_file": str(tmp_path / "secret.key")}, str(tmp_path / "x.yaml"))
    engine = make_engine(settings)
    upgrade_to_head(engine)
    secret = load_or_create_secret(settings.resolve(settings.secret_file))
    with engine.begin() as connection:
        token = enroll_device(connection, secret, "dev-1", T0)
    app = create_app(settings, clock=lambda: T0 + 10_000_000)
    yield app.test_client(), token, engine
    engine.dispose()


def stored_sequences(engine: Any) -> Dict[int, int]:
    from sqlalchemy import text

    with engine.connect() as connection:
        rows = connection.execute(text("SELECT sequence, COUNT(*) FROM samples GROUP BY sequence")).all()
    return {int(sequence): int(count) for sequence, count in rows}


def record(index: int) -> Dict[str, Any]:
    return {"time": T0 + 10 * index, "interval_s": 10.0,
            "process": {"rss_mb": 145.2, "rss_peak_mb": 160.1, "cpu_percent": 12.5},
            "system": {"mem_total_mb": 31920.0, "mem_available_mb": 20011.0, "nvmap_mb": None, "gpu_load": None,
                       "temperatures_c": {}, "power_mw": {}, "power_mode": None, "clocks_locked": None},
            "models": [{"name": "digits", "version": "1", "backend": "onnxruntime", "memory_mb": 13.3,
                        "requests": 3, "failures": 0, "p50_ms": 2.1, "p99_ms": 5.3,
                        "histogram": {"bounds_ms": [1, 2, 5], "counts": [0, 1, 2, 0]}}]}


def test_spool_to_fleet_server_exactly_once_even_when_replayed(fleet: Tuple[Any, str, Any], tmp_path: Path) -> None:
    client, token, engine = fleet
    spool = Spool(tmp_path / "spool.sqlite", 1 << 30)
    for index in range(1200):
        spool.append(record(index))
    transport = flask_transport(client)
    answers = []

    def loses_every_third_answer(path: str, body: bytes, headers: Mapping[str, str]) -> Reply:
        reply = transport(path, body, headers)
        answers.append(reply.json())
        if len(answers) % 3 == 1:
            from edge_runtime.fleet.errors import TransportError

            raise TransportError("the answer was lost")
        return reply

    uploader = Uploader(spool, loses_every_third_answer, "dev-1", lambda: token, {"board": "test"},
                        Backoff(uniform=lambda: 0.0), 500)
    for _ in range(20):
        if uploader.step().idle:
            break
    assert spool.pending(1) == []
    stored = stored_sequences(engine)
    assert sorted(stored) == list(range(1, 1201)) and set(stored.values()) == {1}
    assert any(answer and answer.get("duplicates") for answer in answers)  # a replay happened, stored once
    spool.close()


@pytest.mark.parametrize("token_kind, status", [("wrong", 401), ("none", 401)])
def test_a_wrong_token_keeps_the_records(fleet: Tuple[Any, str, Any], tmp_path: Path, token_kind: str,
                                         status: int) -> None:
    client, _token, engine = fleet
    spool = Spool(tmp_path / "spool.sqlite", 1 << 30)
    spool.append(record(0))
    seen = []
    transport = flask_transport(client)

    def watch(path: str, body: bytes, headers: Mapping[str, str]) -> Reply:
        reply = transport(path, body, headers)
        seen.append(reply)
        return reply

    token = "not-a-token" if token_kind == "wrong" else ""
    uploader = Uploader(spool, watch, "dev-1", lambda: token, {}, Backoff(uniform=lambda: 1.0))
    assert uploader.step().wait_s == 1.0
    assert seen[0].status == status and "error" in json.loads(seen[0].body)
    assert len(spool.pending(10)) == 1 and stored_sequences(engine) == {}
    spool.close()
