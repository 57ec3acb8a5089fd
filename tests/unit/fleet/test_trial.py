"""The grace period after a promotion: commit if the runtime keeps running, else roll back."""

from __future__ import annotations

import json
from pathlib import Path
from typing import List, Optional, Tuple

import pytest
from served_in_thread import served_in_thread

from edge_runtime.fleet.health_gate import RuntimeApiError
from edge_runtime.fleet.refused_targets import RECORD_NAME, RefusedTargets
from edge_runtime.fleet.sync import FAILED, PROMOTED, SyncOutcome
from edge_runtime.fleet.trial import (
    POINTER_WRITTEN,
    ROLLED_BACK,
    TRIALS_NAME,
    TrialStore,
    TrialWatch,
    metrics_start_time,
    open_trials,
    target_sha256,
)
from edge_runtime.serving.active_version import ActiveVersion, read_pointer, write_pointer

PROMOTED_AT = 1764100000.0
STARTED = 1764099000.0
SHA = "c" * 64


class FakeRuntime:
    """The runtime as the watch sees it: a start time (or silence), and a repository API that promotes."""

    def __init__(self, model_dir: Path) -> None:
        self.model_dir = model_dir
        self.started: Optional[float] = STARTED
        self.answers = True
        self.promote_fails = False
        self.promoted: List[Tuple[str, str]] = []

    def start_time(self) -> Optional[float]:
        if not self.answers:
            raise RuntimeApiError("GET /metrics: no answer from the runtime at 127.0.0.1:8000")
        return self.started

    def promote(self, model: str, version: str) -> None:
        if not self.answers or self.promote_fails:
            raise RuntimeApiError("POST .../stage: no answer")
        self.promoted.append((model, version))
        current = read_pointer(self.model_dir)
        write_pointer(self.model_dir, ActiveVersion(version, current.active if current else None))


class Clock:
    def __init__(self) -> None:
        self.now = PROMOTED_AT

    def __call__(self) -> float:
        return self.now


Setup = Tuple[Path, FakeRuntime, Clock, TrialStore]  # repository, runtime, clock, trial store


@pytest.fixture()
def setup(tmp_path: Path) -> Setup:
    repository = tmp_path / "models"
    (repository / "digits").mkdir(parents=True)
    write_pointer(repository / "digits", ActiveVersion("3", "2"))  # the gate promoted 3 over 2
    return repository, FakeRuntime(repository / "digits"), Clock(), TrialStore(tmp_path / "staging")


def promoted(version: str = "3") -> SyncOutcome:
    return SyncOutcome(f"digits-{version}.tar", "digits", version, PROMOTED, "", PROMOTED_AT)


def watch_of(setup: Setup) -> TrialWatch:
    repository, runtime, clock, store = setup
    refused = RefusedTargets(store.path.parent / RECORD_NAME)
    return TrialWatch(store, repository, refused, runtime.start_time, runtime.promote, grace_s=300.0,
                      max_silence_s=30.0, now=clock)


def begin(setup: Setup) -> None:
    repository, runtime, _, store = setup
    opened = open_trials([promoted(), SyncOutcome("x.tar", "x", "1", FAILED, "no", 1.0)], repository, store,
                         runtime.start_time, lambda name: SHA)
    assert [(t.model, t.version, t.previous, t.sha256, t.runtime_started) for t in opened] == [
        ("digits", "3", "2", SHA, STARTED)]


def test_a_runtime_that_keeps_running_commits_the_trial_after_the_grace(setup: Setup) -> None:
    repository, runtime, clock, store = setup
    begin(setup)
    watch = watch_of(setup)
    clock.now += 299
    assert watch.check() == [] and watch.is_open()
    clock.now += 1
    assert watch.check() == []
    assert not watch.is_open() and not store.path.exists()
    assert read_pointer(repository / "digits") == ActiveVersion("3", "2")
    assert runtime.promoted == []


def test_a_restart_within_the_grace_rolls_back_through_the_api(setup: Setup) -> None:
    repository, runtime, clock, store = setup
    begin(setup)
    watch = watch_of(setup)
    clock.now += 12
    runtime.started = PROMOTED_AT + 12  # SIGKILLed and started again (by systemd) on version 3
    reports = watch.check()
    assert runtime.promoted == [("digits", "2")]
    assert read_pointer(repository / "digits").active == "2"
    assert [(r["status"], r["model"], r["version"], r["target"]) for r in reports] == [
        (ROLLED_BACK, "digits", "3", "digits-3.tar")]
    assert reports[0]["reason"] == ("the runtime restarted 12 s after digits 3 was promoted (grace 300 s); "
                                    "rolled back to 2")
    assert not watch.is_open()
    refused = RefusedTargets(store.path.parent / RECORD_NAME).find("digits-3.tar", SHA)
    assert refused is not None and refused.outcome == ROLLED_BACK


def test_a_silent_runtime_gets_the_pointer_rewritten_then_confirmed(setup: Setup) -> None:
    repository, runtime, clock, store = setup
    begin(setup)
    watch = watch_of(setup)
    runtime.answers = False
    clock.now += 5
    assert watch.check() == []  # silent, but not for long yet
    clock.now += 31
    reports = watch.check()
    assert [r["status"] for r in reports] == [ROLLED_BACK]
    assert "did not answer for 31 s" in reports[0]["reason"] and "rolled back to 2" in reports[0]["reason"]
    assert read_pointer(repository / "digits") == ActiveVersion("2", None)  # a restarted runtime serves 2
    assert [t.state for t in store.load()] == [POINTER_WRITTEN]
    clock.now += 60
    assert watch.check() == []  # still silent: nothing more to report
    runtime.answers, runtime.started = True, PROMOTED_AT + 90
    assert watch.check() == []
    assert runtime.promoted == [("digits", "2")] and not watch.is_open()


def test_a_runtime_that_cannot_take_the_previous_version_back_gets_the_pointer(setup: Setup) -> None:
    repository, runtime, clock, _ = setup
    begin(setup)
    watch = watch_of(setup)
    runtime.promote_fails = True
    runtime.started = PROMOTED_AT + 3
    clock.now += 3
    assert [r["status"] for r in watch.check()] == [ROLLED_BACK]
    assert read_pointer(repository / "digits").active == "2"


def test_the_watch_resumes_from_the_file_after_an_agent_restart(setup: Setup) -> None:
    repository, runtime, clock, store = setup
    begin(setup)
    json.loads(store.path.read_bytes())  # the trial is on disk
    clock.now += 40
    runtime.started = PROMOTED_AT + 20
    again = watch_of((repository, runtime, clock, TrialStore(store.path.parent)))  # a new agent process
    reports = again.check()
    assert [r["reason"].startswith("the runtime restarted 20 s after digits 3") for r in reports] == [True]
    assert runtime.promoted == [("digits", "2")]


def test_a_restart_after_the_grace_while_the_agent_was_down_commits(setup: Setup) -> None:
    _, runtime, clock, _ = setup
    begin(setup)
    clock.now += 4000
    runtime.started = PROMOTED_AT + 3600
    watch = watch_of(setup)
    assert watch.check() == [] and not watch.is_open()
    assert runtime.promoted == []


def test_no_trial_without_a_previous_version(setup: Setup) -> None:
    repository, runtime, _, store = setup
    write_pointer(repository / "digits", ActiveVersion("3", None))
    assert open_trials([promoted()], repository, store, runtime.start_time, lambda name: "") == []
    assert not store.path.exists()


def test_an_unreachable_runtime_at_promotion_is_compared_with_the_promotion_time(setup: Setup) -> None:
    repository, runtime, clock, store = setup
    runtime.answers = False
    open_trials([promoted()], repository, store, runtime.start_time, lambda name: SHA)
    assert store.load()[0].runtime_started is None
    runtime.answers, runtime.started = True, PROMOTED_AT + 7
    clock.now += 8
    assert [r["status"] for r in watch_of(setup).check()] == [ROLLED_BACK]


def test_start_time_is_read_from_prometheus_text() -> None:
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class Metrics(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            ok = self.headers.get("X-Key") == "secret"
            body = (b"# TYPE process_start_time_seconds gauge\nprocess_start_time_seconds 1.76409e+09\n"
                    if ok else b'{"error": "restricted"}')
            self.send_response(200 if ok else 403)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Metrics)
    with served_in_thread(httpd) as port:
        url = f"http://127.0.0.1:{port}"
        assert metrics_start_time(url, {"X-Key": "secret"})() == 1.76409e9
        assert metrics_start_time(url, {})() is None  # reachable, start time unknown
    with pytest.raises(RuntimeApiError):
        metrics_start_time(url, {}, timeout_s=2)()


def test_target_sha256_reads_the_trusted_targets(tmp_path: Path) -> None:
    document = {"signed": {"targets": {"digits-3.tar": {"length": 1, "hashes": {"sha256": SHA}}}}}
    (tmp_path / "targets.json").write_text(json.dumps(document))
    assert target_sha256(tmp_path, "digits-3.tar") == SHA
    assert target_sha256(tmp_path, "digits-4.tar") == ""
    assert target_sha256(tmp_path / "none", "digits-3.tar") == ""


def test_the_trial_file_is_the_only_file_written(setup: Setup) -> None:
    _, _, _, store = setup
    begin(setup)
    assert [p.name for p in store.path.parent.iterdir()] == [TRIALS_NAME]
