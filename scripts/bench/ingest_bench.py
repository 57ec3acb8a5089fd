"""Fleet scale: `edge-fleet serve` on PostgreSQL under simulated devices, open loop. Goals from issue 16.

A throwaway PostgreSQL on 127.0.0.1 (scripts/lib/postgres.sh, stopped after); --devices devices
enrolled directly through the server's token functions (``fleet_server.tokens.new_token`` and
``token_digest``: the digests ``enroll_device`` stores), bulk-inserted in one transaction; then a
real `edge-fleet serve` (gunicorn, --workers x --threads) on 127.0.0.1. Load (ingest_load.py):
--procs processes, each with --connections keep-alive ``http.client`` connections, open loop:
batch i is due at start + i / rate whatever the server does and its latency counts from then, so
a slow server shows as latency (and send lag), never as a lower offered rate. A batch is one
record of one device (2 models, built with fleet_server.testing), devices taken round-robin: what
10 000 devices reporting once a minute send (~167 batches/s). "Achieved" is the 200 answers over
the time from the phase's start to its last answer. Then the device list, GET /api/v1/devices,
timed over --list-calls calls on the idle server; finally the database is checked: samples
stored == records accepted (warm-up included), two model rows each. With --baseline REF, REF's server (a git
worktree) runs the same way first, on a database of its own, for a before/after.

Goals: >= 500 batches/s sustained with ingest p99 <= 100 ms; the device list of 10 000 devices
<= 300 ms. The load generators share the machine's cores with the server and PostgreSQL.

    python scripts/bench/ingest_bench.py [--devices 10000] [--rates 167,500] [--duration 30]
        [--workers 2] [--threads 8] [--procs 2] [--connections 16] [--list-calls 7] [--warmup 3] [--baseline REF]
        [--out docs/benchmarks.md]
    python scripts/bench/ingest_bench.py --quick    # 1000 devices, 5 s at 500/s: a bounded sample for CI
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Optional, Tuple

import yaml
from bench_support import (
    REPO,
    add_worktree,
    append_markdown,
    git,
    interrupt_on_sigterm,
    percentiles,
    remove_worktree,
    section_header,
    tree_env,
    verdict,
)
from ingest_load import Device, Phase, run_phase

POSTGRES_SH = REPO / "scripts" / "lib" / "postgres.sh"
RATE_GOAL, P99_GOAL_MS, LIST_GOAL_MS = 500.0, 100.0, 300.0
WARMUP_RATE = 200.0  # batches/s, for --warmup seconds before the timed phases (a fresh server's first requests)


def time_device_list(port: int, operator: str, calls: int) -> Tuple[List[float], int, int, int]:
    """(milliseconds per call, devices listed, devices with figures, bytes) of GET /api/v1/devices."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    timings, devices, data = [], [], b""
    for _ in range(calls):
        begin = time.perf_counter()
        conn.request("GET", "/api/v1/devices", headers={"Authorization": f"Bearer {operator}"})
        response = conn.getresponse()
        data = response.read()
        timings.append((time.perf_counter() - begin) * 1e3)
        if response.status != 200:
            raise RuntimeError(f"GET /api/v1/devices answered {response.status}: {data[:200]!r}")
    conn.close()
    devices = json.loads(data)
    return timings, len(devices), sum(1 for d in devices if d["models"]), len(data)


def start_postgres(tmp: Path, fsync: bool) -> Tuple[Path, str]:
    """A throwaway cluster on 127.0.0.1 (owned by `postgres` when root): (its directory, its admin URL).

    ``fsync`` on is what a fleet runs (every commit reaches the disk); off is the tests' setting.
    """
    cluster = tmp / "pg"
    env = {**os.environ, "EDGE_PG_FSYNC": "on" if fsync else "off"}
    result = subprocess.run(["bash", str(POSTGRES_SH), "start", str(cluster), str(free_port())], capture_output=True,
                            text=True, timeout=300, check=False, env=env)
    if result.returncode != 0:
        raise RuntimeError(f"PostgreSQL did not start: {result.stderr.strip()[-500:]}")
    return cluster, result.stdout.strip().splitlines()[-1]


def create_database(admin: str, name: str) -> str:
    """A new database in the cluster: its URL."""
    import psycopg

    with psycopg.connect(admin.replace("postgresql+psycopg://", "postgresql://"), autocommit=True) as connection:
        connection.execute(f'CREATE DATABASE "{name}"')
    return admin.rsplit("/", 1)[0] + f"/{name}"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def enroll(config: Path, count: int) -> Tuple[List[Device], str, float]:
    """Enroll ``count`` devices and one operator in one transaction: (devices, operator token, seconds)."""
    from sqlalchemy import insert

    from fleet_server.db import make_engine
    from fleet_server.models import Device as DeviceRow
    from fleet_server.models import DeviceToken
    from fleet_server.settings import load_fleet_settings
    from fleet_server.tokens import create_operator_token, load_or_create_secret, new_token, token_digest

    settings = load_fleet_settings(config)
    engine = make_engine(settings)
    secret = load_or_create_secret(settings.resolve(settings.secret_file))
    begin = time.perf_counter()
    devices = [(f"bench-{index:05d}", new_token()) for index in range(count)]
    with engine.begin() as connection:
        rows = connection.execute(insert(DeviceRow).returning(DeviceRow.id, DeviceRow.device_id),
                                  [{"device_id": d, "created": time.time(), "dropped": 0} for d, _ in devices])
        pks = {device_id: pk for pk, device_id in rows}
        connection.execute(insert(DeviceToken), [{"device_pk": pks[d], "digest": token_digest(secret, t),
                                                  "created": time.time()} for d, t in devices])
        operator = create_operator_token(connection, secret, "bench", time.time())
    engine.dispose()
    return devices, operator, time.perf_counter() - begin


def fleet_command(tree: Path, *args: str) -> List[str]:
    """`edge-fleet ARGS` with ``tree``'s fleet_server (run it with tree_env(tree))."""
    return [sys.executable, "-c", "import sys; from fleet_server.cli import main; sys.exit(main())", *args]


def start_fleet(tree: Path, config: Path, args: argparse.Namespace, log: Path) -> Tuple[subprocess.Popen[bytes], int]:
    """Migrate with ``tree``'s code, then its `edge-fleet serve --port 0` (real gunicorn); wait for 'serving on'."""
    subprocess.run(fleet_command(tree, "migrate", "--config", str(config)), cwd=tree, env=tree_env(tree), check=True,
                   capture_output=True)
    command = fleet_command(tree, "serve", "--config", str(config), "--port", "0", "--workers", str(args.workers),
                            "--threads", str(args.threads))
    with log.open("wb") as handle:
        process = subprocess.Popen(command, stdout=handle, stderr=subprocess.STDOUT, cwd=tree, env=tree_env(tree))
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and process.poll() is None:
        found = re.search(r"serving on http://127\.0\.0\.1:(\d+)", log.read_text(errors="replace"))
        if found:
            return process, int(found.group(1))
        time.sleep(0.1)
    process.kill()
    process.wait()
    raise RuntimeError(f"edge-fleet serve did not start:\n{log.read_text(errors='replace')[-2000:]}")


def stored_rows(url: str) -> Tuple[int, int]:
    """(samples, model_samples) rows in a bench database."""
    import psycopg

    with psycopg.connect(url.replace("postgresql+psycopg://", "postgresql://")) as connection:
        samples = connection.execute("SELECT count(*) FROM samples").fetchone()
        models = connection.execute("SELECT count(*) FROM model_samples").fetchone()
    return int(samples[0]) if samples else -1, int(models[0]) if models else -1


@dataclass
class BuildRun:
    """One server build's whole run: its phases, the device list, what the database holds."""

    name: str
    warmup: Phase = field(default_factory=lambda: Phase(WARMUP_RATE, 0.0))  # untimed, stored like the rest
    phases: List[Phase] = field(default_factory=list)
    listing: Tuple[List[float], int, int, int] = ([], 0, 0, 0)
    enroll_s: float = 0.0
    stored: Tuple[int, int] = (0, 0)


def run_build(run: BuildRun, tree: Path, admin: str, pg_pid: int, args: argparse.Namespace, tmp: Path) -> None:
    """A fresh database, --devices enrolled, the tree's server, every phase, the device list, the stored rows."""
    url = create_database(admin, f"fleet_{run.name}")
    config = tmp / f"fleet-{run.name}.yaml"
    config.write_text(yaml.safe_dump({"database_url": url, "secret_file": str(tmp / "secret.key"),
                                      "retention": {"run_every_s": 0}}))
    server, port = start_fleet(tree, config, args, tmp / f"serve-{run.name}.log")
    try:
        devices, operator, run.enroll_s = enroll(config, args.devices)
        print(f"{run.name}: server from {tree}, {len(devices)} devices enrolled in {run.enroll_s:.1f} s",
              file=sys.stderr, flush=True)
        pids, sequence = {"server": server.pid, "postgres": pg_pid}, 1
        run.warmup = run_phase(port, devices, WARMUP_RATE, args.warmup, sequence, args, pids)
        sequence += -(-int(WARMUP_RATE * args.warmup) // max(1, len(devices) // args.procs)) + 1
        for rate in args.rate_list:
            run.phases.append(run_phase(port, devices, rate, args.duration, sequence, args, pids))
            sequence += -(-int(rate * args.duration) // max(1, len(devices) // args.procs)) + 1
            phase = run.phases[-1]
            p50, p99 = percentiles(phase.latencies_ms)
            print(f"{run.name} {rate:g}/s: {phase.ok}/{phase.sent} ok, p50 {p50:.1f} ms, p99 {p99:.1f} ms, "
                  f"{dict(phase.statuses)}", file=sys.stderr, flush=True)
        run.listing = time_device_list(port, operator, args.list_calls)
        run.stored = stored_rows(url)
    finally:
        server.terminate()
        server.wait(30)


def render(args: argparse.Namespace, runs: List[BuildRun], load: str, baseline: str) -> List[str]:
    """The markdown section: phases, CPU, device list, the goals' verdicts (for the working tree)."""
    dirty = " + uncommitted changes" if git("status", "--porcelain") else ""
    builds = (f"baseline = {baseline} (a git worktree), run first, then " if baseline else "") + \
        f"the working tree at {git('rev-parse', '--short', 'HEAD')}{dirty}, each on a database of its own"
    fsync = "on" if args.fsync else "off"
    what = (f"{builds}; PostgreSQL 15 on 127.0.0.1 (throwaway, fsync {fsync}); "
            f"`edge-fleet serve --workers {args.workers} --threads {args.threads}` (gunicorn gthread); "
            f"{args.devices} devices enrolled by bulk insert of "
            f"fleet_server.tokens digests; load: {args.procs} processes x {args.connections} keep-alive connections "
            "(opened before the first batch, as a load balancer's upstream connections are: no TCP or TLS set-up "
            "per batch is measured), "
            f"open loop, {args.duration:g} s per rate after {args.warmup:g} s of untimed warm-up at "
            f"{WARMUP_RATE:g}/s, 1 record x 2 models per batch. **{os.cpu_count()} cores "
            f"shared by the load generators, the server and PostgreSQL**; load average before the run: {load}.")
    lines = section_header(f"Fleet ingest: {args.devices} devices on PostgreSQL", "ingest_bench.py", what)
    lines += ["| build | offered /s | sent | 200 | achieved /s | p50 ms | p99 ms | worst 1 s p99 ms | max ms | "
              "send lag p99 ms | other answers | CPU s: server / PostgreSQL / load |",
              "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---|"]
    for run in runs:
        for phase in run.phases:
            p50, p99 = percentiles(phase.latencies_ms)
            others = ", ".join(f"{k}: {v}" for k, v in sorted(phase.statuses.items(), key=str) if k != 200) or "none"
            cpu = " / ".join(f"{phase.cpu_s[k]:.1f}" for k in ("server", "postgres", "load generators"))
            lines.append(f"| {run.name} | {phase.rate:g} | {phase.sent} | {phase.ok} | "
                         f"{phase.ok / phase.elapsed_s:.1f} | {p50:.1f} | {p99:.1f} | {phase.worst_second_p99():.1f} | "
                         f"{max(phase.latencies_ms, default=0):.1f} | "
                         f"{percentiles(phase.lags_ms)[1]:.1f} | {others} | {cpu} |")
    lines += ["", "| build | GET /api/v1/devices calls | median ms | max ms | devices (with figures) | bytes "
              "| stored |",
              "|---|---:|---:|---:|---:|---:|---|"]
    for run in runs:
        timings, listed, with_figures, size = run.listing
        everything = [run.warmup, *run.phases]
        accepted, duplicates = sum(p.accepted for p in everything), sum(p.duplicates for p in everything)
        exact = run.stored == (accepted, 2 * accepted) and duplicates == 0
        lines.append(f"| {run.name} | {len(timings)} | {percentiles(timings)[0]:.1f} | {max(timings):.1f} | {listed} "
                     f"({with_figures}) | {size} | {run.stored[0]} samples, {run.stored[1]} model rows for {accepted} "
                     f"accepted ({'exact' if exact else 'NOT EXACT'}) |")
    return [*lines, "", goals(runs[-1]), ""]


def goals(run: BuildRun) -> str:
    """The verdicts for one build at its highest offered rate."""
    top = max(run.phases, key=lambda p: p.rate)
    achieved, p99 = top.ok / top.elapsed_s, percentiles(top.latencies_ms)[1]
    clean = top.ok == top.sent
    timings, listed = run.listing[0], run.listing[1]
    median = percentiles(timings)[0]
    return (f"Goals ({run.name}, at {top.rate:g} batches/s offered): sustained >= {RATE_GOAL:g} batches/s: "
            f"{achieved:.1f} ({verdict(achieved >= RATE_GOAL * 0.99 and clean)}"
            f"{'' if clean else '; not every batch answered 200'}); ingest p99 <= {P99_GOAL_MS:g} ms: {p99:.1f} ms "
            f"({verdict(p99 <= P99_GOAL_MS)}); device list of {listed} devices <= {LIST_GOAL_MS:g} ms: median "
            f"{median:.1f} ms ({verdict(median <= LIST_GOAL_MS)}), max {max(timings):.1f} ms.")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=10_000)
    parser.add_argument("--rates", default="167,500", help="offered batches/s, one phase each (comma-separated)")
    parser.add_argument("--duration", type=float, default=30.0, help="seconds per phase")
    parser.add_argument("--workers", type=int, default=2, help="gunicorn worker processes")
    parser.add_argument("--threads", type=int, default=8, help="threads per worker")
    parser.add_argument("--procs", type=int, default=2, help="load generator processes")
    parser.add_argument("--connections", type=int, default=16, help="keep-alive connections per load process")
    parser.add_argument("--list-calls", type=int, default=7)
    parser.add_argument("--warmup", type=float, default=3.0, help=f"untimed seconds at {WARMUP_RATE:g}/s first")
    parser.add_argument("--baseline", help="git ref: run its server first, the same way, for a before/after")
    parser.add_argument("--quick", action="store_true", help="a bounded sample: 1000 devices, one 5 s phase at 500/s")
    parser.add_argument("--no-fsync", dest="fsync", action="store_false",
                        help="PostgreSQL with fsync off (the tests' setting); default: on, as a fleet runs it")
    parser.add_argument("--out", type=Path, help="append the markdown section to this file")
    args = parser.parse_args()
    if args.quick:
        args.devices, args.rates, args.duration, args.list_calls = 1000, "500", 5.0, 3
    args.rate_list = [float(rate) for rate in args.rates.split(",")]
    interrupt_on_sigterm()
    load = " ".join(f"{value:.2f}" for value in os.getloadavg())
    print(f"load average {load}; {os.cpu_count()} cores shared by the load generators, the server and PostgreSQL",
          file=sys.stderr, flush=True)
    with tempfile.TemporaryDirectory(prefix="ingest-bench-") as tmp_name:
        tmp = Path(tmp_name)
        tmp.chmod(0o755)  # the cluster runs as `postgres` when the bench runs as root
        cluster: Optional[Path] = None
        worktree: Optional[Path] = None
        try:
            cluster, admin = start_postgres(tmp, args.fsync)
            pg_pid = int((cluster / "data/postmaster.pid").read_text().split()[0])
            builds: List[Tuple[str, Path]] = [("new", REPO)]
            if args.baseline:
                worktree, commit = add_worktree(args.baseline, tmp / "baseline")
                builds.insert(0, (f"baseline {commit[:10]}", worktree))
            runs = []
            for name, tree in builds:
                runs.append(BuildRun(name.split()[0]))
                run_build(runs[-1], tree, admin, pg_pid, args, tmp)
            lines = render(args, runs, load, builds[0][0].split()[-1] if args.baseline else "")
        finally:
            if worktree is not None:
                remove_worktree(worktree)
            if cluster is not None:
                subprocess.run(["bash", str(POSTGRES_SH), "stop", str(cluster)], capture_output=True, timeout=120,
                               check=False)
    append_markdown(args.out, lines)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
