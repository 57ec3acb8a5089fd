"""Sync reports on the device: queued durably, sent with the installed map, dropped only once acknowledged."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Tuple

import pytest

from edge_runtime.fleet.errors import TransportError
from edge_runtime.fleet.sync import FAILED, METADATA, PROMOTED, REFUSED, SyncOutcome
from edge_runtime.fleet.sync_reports import (
    QUEUE_NAME,
    REPORTS_PATH,
    ReportQueue,
    installed_map,
    make_report,
    outcome_report,
    report_sender,
    worth_reporting,
)
from edge_runtime.fleet.transport import Reply
from edge_runtime.serving.active_version import ActiveVersion, write_pointer


def report(version: str, status: str = PROMOTED) -> Dict[str, Any]:
    return make_report("digits", version, f"digits-{version}.tar", status, "", None, 1764100000.0)


class FakeServer:
    """The contract's /api/v1/sync-reports: answers from a script; records what it stored."""

    def __init__(self, answers: Optional[List[Any]] = None) -> None:
        self.answers = list(answers or [])  # each: a status (int) or an exception to raise; then 200s
        self.stored: Dict[str, Dict[str, Any]] = {}
        self.requests: List[Tuple[str, Dict[str, Any], Mapping[str, str]]] = []

    def __call__(self, path: str, body: bytes, headers: Mapping[str, str]) -> Reply:
        payload = json.loads(body)
        self.requests.append((path, payload, headers))
        if any(r["version"] == "bad" for r in payload["reports"]):  # refused for what it holds, every time
            return Reply(400, {}, b'{"error": "reports[0].version: not a version"}')
        answer = self.answers.pop(0) if self.answers else 200
        if isinstance(answer, Exception):
            raise answer
        if answer != 200:
            return Reply(answer, {}, b'{"error": "busy"}')
        new = [r for r in payload["reports"] if r["id"] not in self.stored]
        self.stored.update({r["id"]: r for r in new})
        return Reply(200, {}, json.dumps({"accepted": len(new)}).encode())


def sender(tmp_path: Path, server: FakeServer) -> Any:
    repository = tmp_path / "models"
    (repository / "digits").mkdir(parents=True)
    write_pointer(repository / "digits", ActiveVersion("2", "1"))
    return report_sender(ReportQueue(tmp_path / "staging"), server, "dev-1", lambda: "device-token", repository)


def test_a_torn_last_line_is_skipped_and_the_next_report_starts_a_fresh_line(tmp_path: Path) -> None:
    queue = ReportQueue(tmp_path / "staging")
    first = report("1")
    queue.append([first])
    with queue.path.open("ab") as handle:  # a kill in the middle of an append
        handle.write(b'{"id": "0123456789abcdef", "model": "dig')
    assert queue.pending() == [first]
    second = report("2")
    queue.append([second])
    assert queue.pending() == [first, second]


def test_reports_survive_a_new_queue_instance(tmp_path: Path) -> None:
    ReportQueue(tmp_path / "staging").append([report("1"), report("2")])
    again = ReportQueue(tmp_path / "staging")
    assert [r["version"] for r in again.pending()] == ["1", "2"]


def test_only_acknowledged_reports_are_dropped(tmp_path: Path) -> None:
    server = FakeServer([200, TransportError("connection reset")])
    reports_sender = sender(tmp_path, server)
    queued = [report(str(n)) for n in range(150)]
    reports_sender.queue.append(queued)

    result = reports_sender.flush()

    assert (result.sent, result.kept) == (100, 50) and "connection reset" in result.error
    assert list(server.stored) == [r["id"] for r in queued[:100]]
    assert reports_sender.queue.pending() == queued[100:]  # the unacknowledged half, in order
    assert reports_sender.flush().sent == 50
    assert list(server.stored) == [r["id"] for r in queued]
    assert not reports_sender.queue.path.exists()  # an empty queue leaves no file


def test_server_down_keeps_every_report(tmp_path: Path) -> None:
    reports_sender = sender(tmp_path, FakeServer([TransportError("refused"), 503]))
    queued = [report("1"), report("2")]
    reports_sender.queue.append(queued)
    assert reports_sender.flush().kept == 2
    assert reports_sender.flush().kept == 2  # 503: kept as well
    assert ReportQueue(tmp_path / "staging").pending() == queued


def test_a_missing_token_file_keeps_the_reports(tmp_path: Path) -> None:
    from edge_runtime.errors import ConfigError

    def no_token() -> str:
        raise ConfigError("token_file: cannot read token")

    queue = ReportQueue(tmp_path / "staging")
    queue.append([report("1")])
    result = report_sender(queue, FakeServer(), "dev-1", no_token, tmp_path).flush()
    assert result.kept == 1 and "token_file" in result.error


def test_the_request_carries_device_token_and_installed_map(tmp_path: Path) -> None:
    server = FakeServer()
    reports_sender = sender(tmp_path, server)
    reports_sender.queue.append([report("2")])
    reports_sender.flush()
    path, payload, headers = server.requests[0]
    assert path == REPORTS_PATH
    assert headers["Authorization"] == "Bearer device-token"
    assert payload["device_id"] == "dev-1"
    assert payload["installed"] == {"digits": {"active": "2", "last_good": "1"}}
    assert set(payload["reports"][0]) == {"id", "at", "model", "version", "target", "status", "reason", "rollout_id"}


def test_a_report_the_server_refuses_is_dropped_alone(tmp_path: Path) -> None:
    server = FakeServer()
    reports_sender = sender(tmp_path, server)
    good = [report("1"), report("2"), report("3")]
    reports_sender.queue.append([good[0], report("bad"), good[1], good[2]])
    result = reports_sender.flush()
    assert result.error == ""
    assert sorted(server.stored) == sorted(r["id"] for r in good)
    assert reports_sender.queue.pending() == []


def test_a_report_is_one_line_of_at_most_500_characters() -> None:
    outcome = SyncOutcome("digits-3.tar", "digits", "3", REFUSED, "bad\nsignature " + "x" * 600, 1.0)
    made = outcome_report(outcome)
    assert "\n" not in made["reason"] and len(made["reason"]) == 500
    assert len(made["id"]) == 32 and int(made["id"], 16) >= 0
    assert made["status"] == REFUSED and made["target"] == "digits-3.tar"


def test_an_offline_refresh_failure_is_not_queued() -> None:
    assert not worth_reporting(SyncOutcome(METADATA, "", "", FAILED, "connection refused", 1.0))
    assert worth_reporting(SyncOutcome(METADATA, "", "", REFUSED, "expired timestamp", 1.0))
    assert worth_reporting(SyncOutcome("digits-3.tar", "digits", "3", FAILED, "disk full", 1.0))


def test_installed_map_skips_models_without_a_readable_pointer(tmp_path: Path) -> None:
    for name in ("digits", "tiny", "broken"):
        (tmp_path / name).mkdir()
    write_pointer(tmp_path / "digits", ActiveVersion("3", "2"))
    (tmp_path / "broken" / "active.json").write_text("{not json")
    assert installed_map(tmp_path) == {"digits": {"active": "3", "last_good": "2"}}


def test_the_queue_is_capped_oldest_first(tmp_path: Path) -> None:
    queue = ReportQueue(tmp_path / "staging", max_queued=3)
    queued = [report(str(n)) for n in range(5)]
    for item in queued:
        queue.append([item])
    assert queue.pending() == queued[2:]
    assert sorted(p.name for p in (tmp_path / "staging").iterdir()) == [QUEUE_NAME]


def test_reports_reach_the_real_fleet_server_once_and_set_its_sync_state(tmp_path: Path) -> None:
    """The sender against fleet_server's app (SQLite) through its Flask test client; a report sent twice counts once."""
    pytest.importorskip("sqlalchemy")
    pytest.importorskip("fleet_server.app")
    from sqlalchemy import text

    from fleet_server.app import create_app
    from fleet_server.db import make_engine
    from fleet_server.schema import upgrade_to_head
    from fleet_server.settings import fleet_settings_from_mapping
    from fleet_server.tokens import enroll_device, load_or_create_secret

    settings = fleet_settings_from_mapping({"database_url": f"sqlite:///{tmp_path / 'fleet.sqlite'}",
                                            "secret_file": str(tmp_path / "secret.key")}, str(tmp_path / "x.yaml"))
    engine = make_engine(settings)
    upgrade_to_head(engine)
    with engine.begin() as connection:
        token = enroll_device(connection, load_or_create_secret(settings.resolve(settings.secret_file)), "dev-1",
                             1764100000.0)
    client = create_app(settings).test_client()

    def transport(path: str, body: bytes, headers: Mapping[str, str]) -> Reply:
        response = client.post(path, data=body, headers=dict(headers))
        return Reply(response.status_code, {}, response.get_data())

    repository = tmp_path / "models"
    (repository / "digits").mkdir(parents=True)
    write_pointer(repository / "digits", ActiveVersion("2", "1"))
    queue = ReportQueue(tmp_path / "staging")
    sent = report("3", "gate_failed")
    queue.append([sent, sent])  # the same report twice (as after a kill between the 200 and the drop)
    try:
        result = report_sender(queue, transport, "dev-1", lambda: token, repository).flush()
        assert (result.sent, result.error) == (2, ""), result.error
        with engine.connect() as connection:
            rows = connection.execute(text("SELECT report_id, status FROM sync_reports")).all()
            state = connection.execute(text("SELECT sync_state FROM devices WHERE device_id = 'dev-1'")).scalar()
        assert [(str(r[0]), str(r[1])) for r in rows] == [(sent["id"], "gate_failed")]
        installed = json.loads(state) if isinstance(state, str) else state
        assert installed == {"digits": {"active": "2", "last_good": "1"}}
    finally:
        engine.dispose()
