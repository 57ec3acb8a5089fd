"""The agent's sync loop: passes every poll_s, backoff after failures, no pass during a trial, reports flushed."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional

from edge_runtime.errors import ConfigError
from edge_runtime.fleet.agent_config import agent_settings_from_mapping
from edge_runtime.fleet.backoff import Backoff
from edge_runtime.fleet.errors import TransportError
from edge_runtime.fleet.sync import FAILED, PROMOTED, SyncOutcome
from edge_runtime.fleet.sync_loop import SyncLoop, build_sync_loop, report_once
from edge_runtime.fleet.sync_reports import Report, ReportQueue, make_report, report_sender
from edge_runtime.fleet.transport import Reply

POLL_S = 300.0


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Server:
    """/api/v1/sync-reports: up or down; the reports it stored."""

    def __init__(self) -> None:
        self.up = True
        self.stored: List[Dict[str, Any]] = []

    def __call__(self, path: str, body: bytes, headers: Mapping[str, str]) -> Reply:
        if not self.up:
            raise TransportError("connection refused")
        self.stored.extend(json.loads(body)["reports"])
        return Reply(200, {}, b'{"accepted": 1}')


class Watch:
    """The trial watch: open or not; the rollback reports its next check gives."""

    def __init__(self) -> None:
        self.open = False
        self.checks = 0
        self.rollbacks: List[Report] = []

    def is_open(self) -> bool:
        return self.open

    def check(self) -> List[Report]:
        self.checks += 1
        reports, self.rollbacks = self.rollbacks, []
        if reports:
            self.open = False
        return reports


class Passes:
    """run_pass: the outcomes (or exception) each pass gives, in order; then empty passes."""

    def __init__(self, *results: Any) -> None:
        self.results = list(results)
        self.count = 0

    def __call__(self) -> List[SyncOutcome]:
        self.count += 1
        result = self.results.pop(0) if self.results else []
        if isinstance(result, Exception):
            raise result
        return list(result)


def outcome(status: str = PROMOTED, version: str = "3") -> SyncOutcome:
    return SyncOutcome(f"digits-{version}.tar", "digits", version, status, "" if status == PROMOTED else "x", 1.0)


class ClockedLoop(SyncLoop):
    """The loop on a simulated clock the test moves."""

    clock: Clock


def make_loop(tmp_path: Path, passes: Passes, server: Server, watch: Optional[Watch] = None,
              opened: Optional[List[List[SyncOutcome]]] = None) -> ClockedLoop:
    queue = ReportQueue(tmp_path / "staging")
    sender = report_sender(queue, server, "dev-1", lambda: "token", tmp_path / "models")
    trials: List[List[SyncOutcome]] = opened if opened is not None else []
    clock = Clock()
    loop = ClockedLoop(passes, trials.append, watch or Watch(), queue, sender, POLL_S,
                    Backoff(1.0, POLL_S, uniform=lambda: 0.5), Backoff(1.0, 60.0, uniform=lambda: 0.5),
                    watch_every_s=2.0, clock=clock)
    loop.clock = clock
    return loop


def test_a_pass_runs_at_once_then_every_poll_s_and_its_reports_are_sent(tmp_path: Path) -> None:
    passes, server = Passes([outcome()]), Server()
    opened: List[List[SyncOutcome]] = []
    loop = make_loop(tmp_path, passes, server, opened=opened)
    assert loop.step() == POLL_S
    assert passes.count == 1
    assert [(r["status"], r["version"]) for r in server.stored] == [(PROMOTED, "3")]
    assert opened == [[outcome()]]  # the promoted outcome went to open a trial
    loop.clock.now += POLL_S - 1
    assert loop.step() == 1.0 and passes.count == 1
    loop.clock.now += 1
    loop.step()
    assert passes.count == 2


def test_a_failed_pass_is_retried_sooner_with_backoff(tmp_path: Path) -> None:
    passes = Passes(ConfigError("device_config: cannot read"), [outcome(FAILED)], [outcome()])
    loop = make_loop(tmp_path, passes, Server())
    assert loop.step() == 0.5  # ceiling 1 s, jitter 0.5
    loop.clock.now += 0.5
    assert loop.step() == 1.0  # ceiling 2 s: a failed outcome counts as a failed pass
    loop.clock.now += 1.0
    assert loop.step() == POLL_S and loop.backoff.failures == 0


def test_no_pass_while_a_trial_is_open_and_rollbacks_are_sent(tmp_path: Path) -> None:
    watch, server, passes = Watch(), Server(), Passes()
    watch.open = True
    loop = make_loop(tmp_path, passes, server, watch)
    assert loop.step() == 2.0
    assert (watch.checks, passes.count) == (1, 0)
    watch.rollbacks = [make_report("digits", "3", "digits-3.tar", "rolled_back", "restarted", None, 1.0)]
    loop.clock.now += 2
    loop.step()  # the trial closes with a rollback: reported, then the pass that was due runs
    assert [r["status"] for r in server.stored] == ["rolled_back"]
    assert passes.count == 1


def test_reports_wait_while_the_server_is_down_and_go_when_it_is_back(tmp_path: Path) -> None:
    server = Server()
    server.up = False
    loop = make_loop(tmp_path, Passes([outcome()]), server)
    assert loop.step() == 0.5  # the report flush is retried before the next pass
    assert [r["version"] for r in loop.queue.pending()] == ["3"]
    server.up = True
    loop.clock.now += 0.5
    loop.step()
    assert [r["version"] for r in server.stored] == ["3"] and loop.queue.pending() == []


def test_run_stops_on_the_stop_event(tmp_path: Path) -> None:
    queue = ReportQueue(tmp_path / "staging")
    loop = SyncLoop(Passes(), list, Watch(), queue, None, POLL_S, Backoff(), Backoff())  # the real clock
    stop = threading.Event()
    thread = threading.Thread(target=loop.run, args=(stop,))
    thread.start()
    stop.set()  # the loop is waiting poll_s (300 s) for its next pass
    thread.join(30)
    assert not thread.is_alive()


def test_build_sync_loop_from_an_agent_file(tmp_path: Path) -> None:
    (tmp_path / "token").write_text("device-token\n")
    data = {"server_url": "http://127.0.0.1:9", "device_id": "dev-1", "token_file": "token", "ca_bundle": None,
            "spool_path": "spool.sqlite",
            "sync": {"metadata_url": "http://127.0.0.1:9/metadata/", "targets_url": "http://127.0.0.1:9/targets/",
                     "metadata_dir": "tuf", "trusted_root": "root.json", "staging_dir": "staging",
                     "repository": "models", "trusted_keys": ["k.pub"], "device_config": "device.yaml",
                     "runtime_url": "http://127.0.0.1:9"}}
    agent = agent_settings_from_mapping(data, str(tmp_path / "agent.yaml"))
    assert agent.sync is not None
    server = Server()
    loop = build_sync_loop(agent, agent.sync, server, run_pass=Passes([outcome(FAILED, "4")]))
    loop.step()  # the pass; no trial (nothing promoted); the report goes with the device token
    assert [(r["status"], r["version"]) for r in server.stored] == [(FAILED, "4")]
    assert loop.queue.path.parent == tmp_path / "staging"


def test_report_once_keeps_reports_when_no_server_is_configured(tmp_path: Path) -> None:
    data = {"metadata_url": "http://127.0.0.1:9/m/", "targets_url": "http://127.0.0.1:9/t/", "metadata_dir": "tuf",
            "trusted_root": "root.json", "staging_dir": "staging", "repository": "models",
            "trusted_keys": ["k.pub"], "device_config": "device.yaml"}
    from edge_runtime.fleet.sync_config import sync_settings_from_mapping

    settings = sync_settings_from_mapping(data, str(tmp_path / "agent.yaml"))
    report_once(None, settings, [outcome()])
    assert [r["version"] for r in ReportQueue(tmp_path / "staging").pending()] == ["3"]


def _sync_once_file(tmp_path: Path, server_url: str) -> Path:
    (tmp_path / "token").write_text("device-token\n")
    config = tmp_path / "agent.yaml"
    config.write_text(
        f"server_url: {server_url}\ndevice_id: dev-1\ntoken_file: token\nca_bundle: null\nspool_path: spool.sqlite\n"
        "sync:\n  metadata_url: http://127.0.0.1:9/m/\n  targets_url: http://127.0.0.1:9/t/\n  metadata_dir: tuf\n"
        "  trusted_root: root.json\n  staging_dir: staging\n  repository: models\n  trusted_keys: [k.pub]\n"
        "  device_config: device.yaml\n")
    return config


def test_sync_once_queues_its_reports_and_keeps_them_when_the_server_is_down(
        tmp_path: Path, monkeypatch: Any, capsys: Any) -> None:
    from edge_runtime import cli
    from edge_runtime.fleet import sync_pass

    monkeypatch.setattr(sync_pass, "run_once", lambda settings: [outcome()])
    config = _sync_once_file(tmp_path, "http://127.0.0.1:9")  # the discard port: connection refused
    assert cli.main(["sync", "--once", "--config", str(config)]) == 0  # the pass result stands
    assert "digits 3 (digits-3.tar): promoted" in capsys.readouterr().out
    assert [r["version"] for r in ReportQueue(tmp_path / "staging").pending()] == ["3"]


def test_sync_once_sends_the_queue_when_the_server_answers(tmp_path: Path, monkeypatch: Any) -> None:
    from edge_runtime import cli
    from edge_runtime.fleet import sync_loop, sync_pass

    server = Server()
    real_build_sender = sync_loop.build_sender
    monkeypatch.setattr(sync_pass, "run_once", lambda settings: [outcome(FAILED, "4")])
    monkeypatch.setattr(sync_loop, "build_sender",
                        lambda agent, queue, repository, transport=None: real_build_sender(agent, queue, repository,
                                                                                           server))
    ReportQueue(tmp_path / "staging").append([make_report("digits", "3", "digits-3.tar", PROMOTED, "", None, 1.0)])
    config = _sync_once_file(tmp_path, "http://127.0.0.1:9")
    assert cli.main(["sync", "--once", "--config", str(config)]) == 1  # a failed outcome: exit status as before
    assert [r["version"] for r in server.stored] == ["3", "4"]  # an earlier run's report too, oldest first
    assert ReportQueue(tmp_path / "staging").pending() == []
