"""SIGKILL the telemetry agent (`edge-runtime agent`) mid-upload, again and again: nothing lost, nothing doubled.

A spool is filled with --records records; an ingest server on 127.0.0.1 (the tests' contract fake,
idempotent by (device_id, sequence), with a 10 ms store so kills land inside uploads) receives them.
Each round starts an agent and SIGKILLs it at one of three moments, in turn: while the server holds
its batch after storing it (so the device never sees that acknowledgement), 0-20 ms after an
acknowledgement (while the spool deletes), or at a random 20-150 ms after start. A last agent drains
the spool and stops on SIGTERM. Printed: kills, records lost (a sequence the server lacks) or extra,
deliveries replayed (records the server received again and stored once: the idempotency at work),
the agent's start-to-first-batch time, and the drain time.

    python scripts/bench/uploader_kill_bench.py [--kills 500] [--records 60000] [--batch 20] [--check]

CI runs 50 kills in tests/integration/test_agent_kill.py (also against a real `edge-fleet serve`).
"""

from __future__ import annotations

import argparse
import importlib.util
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from types import ModuleType
from typing import Callable, Dict, List

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from edge_runtime.telemetry.spool import Spool  # noqa: E402


def load_fake_ingest() -> ModuleType:
    spec = importlib.util.spec_from_file_location("fake_ingest", REPO / "tests" / "unit" / "fleet" / "fake_ingest.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class Hold:
    """Server hook: when armed, note the arrival of the next batch and hold it until released."""

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


def wait_for(condition: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.002)
    return False


def run(kills: int, records: int, batch: int) -> Dict[str, float]:
    fake = load_fake_ingest()
    ingest = fake.FakeIngest(device_id="bench", token="bench-token")
    hold = Hold()
    ingest.before_store = lambda: time.sleep(0.01)
    ingest.before_reply = hold
    starts: List[float] = []
    with tempfile.TemporaryDirectory(prefix="uploader-kill-") as folder_name, fake.serve(ingest.wsgi) as port:
        folder = Path(folder_name)
        spool = Spool(folder / "spool.sqlite", 1 << 34)
        for index in range(records):
            spool.append({"time": 1764086400.0 + 10 * index, "interval_s": 10.0, "index": index})
        (folder / "token").write_text("bench-token\n")
        config = folder / "agent.yaml"
        config.write_text(f"server_url: http://127.0.0.1:{port}\ndevice_id: bench\ntoken_file: token\n"
                          f"ca_bundle: null\nspool_path: spool.sqlite\nbatch_max_records: {batch}\n"
                          "backoff_initial_s: 0.05\nbackoff_max_s: 0.5\npoll_s: 0.1\n")
        command = [sys.executable, "-m", "edge_runtime.cli", "agent", "--config", str(config)]
        rng = random.Random(16)
        done = 0
        with (folder / "agent.log").open("w") as log:
            for round_index in range(kills):
                if not spool.pending(1):
                    print(f"the spool emptied after {round_index} kills: use more --records", file=sys.stderr)
                    break
                mode = round_index % 3
                answered = len(ingest.dropped_reported)
                if mode == 0:
                    hold.arm()
                started = time.monotonic()
                agent = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
                if mode == 0:
                    if hold.arrived.wait(20):
                        starts.append(time.monotonic() - started)
                elif mode == 1:
                    wait_for(lambda seen=answered: len(ingest.dropped_reported) > seen, 20)
                    time.sleep(rng.uniform(0, 0.02))
                else:
                    time.sleep(rng.uniform(0.02, 0.15))
                agent.send_signal(signal.SIGKILL)
                agent.wait(10)
                hold.armed = False
                hold.release.set()
                done += 1
            drain_started = time.monotonic()
            final = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
            drained = wait_for(lambda: not spool.pending(1), 600)
            drain_s = time.monotonic() - drain_started
            final.send_signal(signal.SIGTERM)
            status = final.wait(60)
        spool.close()
    expected = set(range(1, records + 1))
    return {
        "kills": done,
        "records": records,
        "drained": float(drained),
        "sigterm_exit_status": status,
        "lost": len(expected - set(ingest.stored)),
        "extra": len(set(ingest.stored) - expected),
        "replayed_deliveries": sum(count - 1 for count in ingest.deliveries.values()),
        "start_to_first_batch_p50_ms": 1000 * statistics.median(starts) if starts else float("nan"),
        "drain_s": drain_s,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=500)
    parser.add_argument("--records", type=int, default=60_000)
    parser.add_argument("--batch", type=int, default=20, help="records per batch (small: more batches to kill)")
    parser.add_argument("--check", action="store_true", help="exit 1 unless nothing was lost or doubled")
    args = parser.parse_args()
    started = time.monotonic()
    result = run(args.kills, args.records, args.batch)
    result["wall_s"] = time.monotonic() - started
    for key, value in result.items():
        print(f"{key:30} {value:.1f}" if isinstance(value, float) else f"{key:30} {value}")
    ok = result["lost"] == 0 and result["extra"] == 0 and result["drained"] and result["sigterm_exit_status"] == 0
    print("OK: every sequence arrived, none twice" if ok else "FAILED")
    return 0 if ok or not args.check else 1


if __name__ == "__main__":
    sys.exit(main())
