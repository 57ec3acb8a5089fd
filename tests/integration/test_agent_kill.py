"""SIGKILL the agent (`edge-runtime agent`) mid-batch, again and again: no record is lost or stored twice.

The agent uploads a pre-filled spool to a central server on 127.0.0.1 in small batches and is
killed at three kinds of moment: while the server holds its batch (stored, not yet answered, so
the device never saw the acknowledgement), just after an acknowledgement (while the spool deletes),
and at a random time after start. At the end an agent drains the rest and stops on SIGTERM; the
server must hold every sequence exactly once. scripts/bench/uploader_kill_bench.py runs many more.
"""

from __future__ import annotations

import contextlib
import importlib.util
import random
import re
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import ModuleType
from typing import Any, Callable, Dict, List, Tuple

import pytest

from edge_runtime.telemetry.spool import Spool

KILLS = 50
RECORDS = 10_000
BATCH = 20
REPO = Path(__file__).resolve().parents[2]


def load_fake_ingest() -> ModuleType:
    """tests/unit/fleet/fake_ingest.py, whichever test folder pytest put on sys.path first."""
    if "fake_ingest" in sys.modules:
        return sys.modules["fake_ingest"]
    spec = importlib.util.spec_from_file_location("fake_ingest", REPO / "tests" / "unit" / "fleet" / "fake_ingest.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["fake_ingest"] = module
    spec.loader.exec_module(module)
    return module


class Gate:
    """A server hook that, when armed, holds the next request and says so (the test kills meanwhile)."""

    def __init__(self) -> None:
        self.armed = False
        self.arrived = threading.Event()
        self.release = threading.Event()

    def arm(self) -> None:
        self.arrived.clear()
        self.release.clear()
        self.armed = True

    def __call__(self) -> None:
        if self.armed:
            self.armed = False
            self.arrived.set()
            self.release.wait(10)


def write_agent_config(folder: Path, port: int, spool: Path) -> Path:
    (folder / "token").write_text("device-token\n")
    config = folder / "agent.yaml"
    config.write_text(f"server_url: http://127.0.0.1:{port}\ndevice_id: dev-1\ntoken_file: token\n"
                      f"ca_bundle: null\nspool_path: {spool}\nbatch_max_records: {BATCH}\n"
                      "backoff_initial_s: 0.05\nbackoff_max_s: 0.5\npoll_s: 0.1\nrequest_timeout_s: 10\n")
    return config


def start_agent(config: Path, log: Any) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "edge_runtime.cli", "agent", "--config", str(config)],
                            stdout=log, stderr=subprocess.STDOUT)


def stop_process(process: subprocess.Popen) -> None:
    """SIGKILL ``process`` unless it has ended; reap it (nothing is left behind, a failed test included)."""
    if process.poll() is None:
        process.send_signal(signal.SIGKILL)
    process.wait(10)


def drain_and_stop(config: Path, log: Any, spool: Spool) -> None:
    """A last agent, never killed, uploads what the spool still holds and stops cleanly on SIGTERM."""
    final = start_agent(config, log)
    try:
        assert wait_for(lambda: not spool.pending(1), timeout=120), "the agent did not drain the spool"
        final.send_signal(signal.SIGTERM)
        assert final.wait(30) == 0  # SIGTERM: a clean stop
    finally:
        stop_process(final)


def wait_for(condition: Callable[[], bool], timeout: float = 20.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.005)
    return False


def kill_once(process: subprocess.Popen, mode: int, hold: Gate, rng: random.Random,
              acks_before: Callable[[], int]) -> None:
    """Kill ``process`` at the moment ``mode`` names; bounded to a few seconds."""
    if mode == 0:
        assert hold.arrived.wait(20), "the agent sent no batch"
    elif mode == 1:
        before = acks_before()
        wait_for(lambda: acks_before() > before)
        time.sleep(rng.uniform(0, 0.02))
    else:
        time.sleep(rng.uniform(0.02, 0.15))
    stop_process(process)
    hold.armed = False
    hold.release.set()


@pytest.mark.parametrize("kills", [KILLS])
def test_sigkill_mid_batch_loses_and_doubles_nothing(tmp_path: Path, kills: int) -> None:
    fake = load_fake_ingest()
    ingest = fake.FakeIngest(device_id="dev-1", token="device-token")
    hold = Gate()
    ingest.before_reply = hold
    ingest.before_store = lambda: time.sleep(0.01)  # a server that takes its time: kills land mid-upload
    spool_path = tmp_path / "spool.sqlite"
    spool = Spool(spool_path, 1 << 30)
    for index in range(RECORDS):
        spool.append({"time": 1764086400.0 + index, "interval_s": 10.0, "index": index})
    rng = random.Random(16)
    acked = lambda: sum(1 for _ in ingest.dropped_reported)  # noqa: E731  (batches answered 200)
    with fake.serve(ingest.wsgi) as port, (tmp_path / "agent.log").open("w") as log:
        config = write_agent_config(tmp_path, port, spool_path)
        for iteration in range(kills):
            assert spool.pending(1), f"the spool emptied after {iteration} kills: give the test more records"
            mode = iteration % 3
            if mode == 0:
                hold.arm()
            agent = start_agent(config, log)
            try:
                kill_once(agent, mode, hold, rng, acked)
            finally:
                stop_process(agent)
        drain_and_stop(config, log, spool)
    assert sorted(ingest.stored) == list(range(1, RECORDS + 1))  # every sequence, once (the server is idempotent)
    assert all(ingest.stored[seq]["index"] == seq - 1 for seq in ingest.stored)
    replays = sum(count - 1 for count in ingest.deliveries.values())
    assert replays >= kills // 3 * 1  # each kill while the server held a batch made the device send it again
    assert spool.dropped == 0
    spool.close()


def oldest_pending(spool: Spool) -> int:
    """The oldest sequence still in the spool (0: none): it moves when the agent acknowledged a batch."""
    pending = spool.pending_raw(1)
    return pending[0][0] if pending else 0


def contract_record(when: float) -> Dict[str, Any]:
    """A record as the runtime's sampler writes it (the contract's shape: the real server validates it)."""
    return {"time": when, "interval_s": 10.0, "process": {"rss_mb": 145.2, "rss_peak_mb": 160.1, "cpu_percent": 1.5},
            "system": {"mem_total_mb": 31920.0, "mem_available_mb": 20011.0, "nvmap_mb": None, "gpu_load": None,
                       "temperatures_c": {}, "power_mw": {}, "power_mode": None, "clocks_locked": None},
            "models": [{"name": "digits", "version": "1", "backend": "onnxruntime", "memory_mb": 13.3,
                        "requests": 3, "failures": 0, "p50_ms": 2.1, "p99_ms": 5.3,
                        "histogram": {"bounds_ms": [1, 2, 5], "counts": [0, 1, 2, 0]}}]}


def start_fleet_server(folder: Path, log: Any) -> Tuple[subprocess.Popen, int, str]:
    """`edge-fleet serve` (SQLite) on 127.0.0.1 with dev-1 enrolled: the process, its port, dev-1's token."""
    config = folder / "fleet.yaml"
    config.write_text(f"database_url: sqlite:///{folder / 'fleet.sqlite'}\nsecret_file: {folder / 'secret.key'}\n")
    fleet = [sys.executable, "-m", "fleet_server.cli"]
    subprocess.run([*fleet, "migrate", "--config", str(config)], check=True, capture_output=True, timeout=120)
    token = subprocess.run([*fleet, "enroll", "dev-1", "--config", str(config)], check=True, capture_output=True,
                           text=True, timeout=120).stdout.strip()
    server = subprocess.Popen([*fleet, "serve", "--config", str(config), "--port", "0", "--workers", "1",
                               "--threads", "4"], stdout=log, stderr=subprocess.STDOUT)
    logged = folder / "fleet.log"
    found: List[int] = []

    def listening() -> bool:
        match = re.search(r"serving on http://127\.0\.0\.1:(\d+)", logged.read_text())
        if match:
            found.append(int(match.group(1)))
        return bool(found) or server.poll() is not None

    wait_for(listening, timeout=60)
    if not found:
        server.kill()
        server.wait()
        raise AssertionError(f"edge-fleet serve did not start:\n{logged.read_text()}")
    return server, found[0], token


def test_sigkill_against_edge_fleet_serve(tmp_path: Path) -> None:
    pytest.importorskip("gunicorn")
    pytest.importorskip("fleet_server.gunicorn_app")
    spool_path = tmp_path / "spool.sqlite"
    spool = Spool(spool_path, 1 << 30)
    now = time.time()
    for index in range(RECORDS):
        spool.append(contract_record(now - 10.0 * (RECORDS - index)))
    rng = random.Random(16)
    with (tmp_path / "fleet.log").open("w") as fleet_log, (tmp_path / "agent.log").open("w") as log:
        server, port, token = start_fleet_server(tmp_path, fleet_log)
        try:
            config = write_agent_config(tmp_path, port, spool_path)
            (tmp_path / "token").write_text(token + "\n")
            for iteration in range(KILLS):
                assert spool.pending(1), f"the spool emptied after {iteration} kills: give the test more records"
                oldest = oldest_pending(spool)
                agent = start_agent(config, log)
                try:
                    # somewhere in the first uploads: before, during or just after the first acknowledgement
                    wait_for(lambda seen=oldest: oldest_pending(spool) != seen, rng.uniform(0.1, 0.4))
                    time.sleep(rng.uniform(0, 0.03))
                finally:
                    stop_process(agent)
            drain_and_stop(config, log, spool)
        finally:
            server.send_signal(signal.SIGTERM)
            try:
                server.wait(30)
            finally:
                stop_process(server)
    with contextlib.closing(sqlite3.connect(str(tmp_path / "fleet.sqlite"))) as database:
        rows = database.execute("SELECT sequence, COUNT(*) FROM samples GROUP BY sequence").fetchall()
    assert sorted(sequence for sequence, _ in rows) == list(range(1, RECORDS + 1))
    assert {count for _, count in rows} == {1}
    spool.close()
