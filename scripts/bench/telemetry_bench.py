"""Serving latency with telemetry on vs off, with an A/A control (off vs off) in the same run. Goal: on/off ≤ 1.03.

Three `edge-runtime serve` processes from the working tree, the same bundle and settings except
``telemetry``: "off" and "off'" (telemetry.enabled false: their difference is the noise floor) and
"on" (the sampler running every ``--interval`` seconds into a real SQLite spool; the default 1 s is
ten times the shipped rate, to make any cost visible). Measured as serving_ab_bench.py measures:
HTTP binary batch-1 latency with the unmodified tritonclient, in rounds, the servers in rotating
order, one busy at a time; and the throughput of --clients concurrent clients.

    python scripts/bench/telemetry_bench.py [--model resnet18|tiny] [--interval 1] [--rounds 10]
        [--out docs/benchmarks.md]
"""

from __future__ import annotations

import argparse
import sqlite3
import statistics
import tempfile
from pathlib import Path
from typing import Dict, List

import numpy as np
from bench_support import (
    MODELS,
    REPO,
    ServeProcess,
    append_markdown,
    git,
    interrupt_on_sigterm,
    percentiles,
    section_header,
    start_serve,
    verdict,
    write_bundle,
    write_settings,
)
from serving_ab_bench import Measured, Workload, run_rounds

GOAL = 1.03
SERVERS = ("off", "off'", "on")


def settings(pub: Path, spool: Path, enabled: bool, interval: float) -> Dict[str, object]:
    return {"device_config": str(REPO / "device_configs/x86-cpu.yaml"), "trusted_keys": [str(pub)],
            "batching": {"enabled": True, "max_batch_size": 8, "max_queue_delay_us": 0},
            "telemetry": {"enabled": enabled, "interval_s": interval, "spool_path": str(spool)}}


def spooled(spool: Path) -> int:
    """How many records the "on" server wrote: proof that telemetry really ran."""
    if not spool.exists():
        return 0
    with sqlite3.connect(f"file:{spool}?mode=ro", uri=True) as db:
        tables = [row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        return sum(db.execute(f'SELECT COUNT(*) FROM "{t}"').fetchone()[0] for t in tables if "record" in t)


def render(measured: Dict[str, Measured], args: argparse.Namespace, records: int) -> List[str]:
    what = (f"{args.model}, working tree at {git('rev-parse', '--short', 'HEAD')}; telemetry every {args.interval:g} s"
            f" on 'on' ({records} records spooled during the run); {args.rounds} rounds x {args.block} latency "
            f"requests and {args.seconds:g} s of {args.clients} clients per server, rotating order.")
    lines = section_header("Telemetry overhead: serving with telemetry on vs off (A/A control)", "telemetry_bench.py",
                           what)
    lines += ["| server | telemetry | HTTP binary p50 ms | p99 ms | req/s (median of rounds) | failures |",
              "|---|---|---:|---:|---:|---:|"]
    p50: Dict[str, float] = {}
    rate: Dict[str, float] = {}
    for name, values in measured.items():
        p50[name], p99 = percentiles(values.latencies_ms)
        rate[name] = statistics.median(values.rates)
        lines.append(f"| {name} | {'on' if name == 'on' else 'off'} | {p50[name]:.2f} | {p99:.2f} | "
                     f"{rate[name]:.1f} | {len(values.failures)} |")
    control = "off'"
    missing = "" if records else "; NO RECORDS WERE SPOOLED: telemetry did not run"
    ratio, noise = p50["on"] / p50["off"], p50[control] / p50["off"]
    lines += ["", "| ratio | p50 | req/s |", "|---|---:|---:|",
              f"| on / off | {ratio:.3f} | {rate['on'] / rate['off']:.3f} |",
              f"| off' / off (noise floor) | {noise:.3f} | {rate[control] / rate['off']:.3f} |",
              "", f"Goal (on/off p50 ≤ {GOAL}): {ratio:.3f} ({verdict(ratio <= GOAL)}; the A/A noise floor is "
              f"{abs(noise - 1) * 100:.1f} %{missing}).", ""]
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=sorted(MODELS), default="resnet18")
    parser.add_argument("--interval", type=float, default=1.0, help="sampling interval of 'on' (shipped default: 10)")
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--block", type=int, default=30)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    interrupt_on_sigterm()
    _, shape, _ = MODELS[args.model]
    workload = Workload(args.model, np.random.default_rng(0).standard_normal(shape, dtype=np.float32))
    started: List[ServeProcess] = []
    with tempfile.TemporaryDirectory(prefix="telemetry-bench-") as tmp_name:
        tmp = Path(tmp_name)
        repo, pub = write_bundle(REPO, args.model, tmp / "bundle")
        spool = tmp / "on-spool.sqlite"
        try:
            servers: Dict[str, ServeProcess] = {}
            for index, name in enumerate(SERVERS):
                config = write_settings(tmp / f"settings-{index}.yaml",
                                        settings(pub, tmp / f"spool-{index}.sqlite" if name != "on" else spool,
                                                 name == "on", args.interval))
                server = start_serve(REPO, ["--repository", str(repo), "--config", str(config)], tmp / f"{index}.log")
                started.append(server)
                servers[name] = server
            measured = {name: Measured() for name in SERVERS}
            run_rounds(servers, workload, args, measured)
            records = spooled(spool)
            lines = render(measured, args, records)
        finally:
            for server in started:
                server.stop()
    print("\n".join(lines))
    append_markdown(args.out, lines)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
