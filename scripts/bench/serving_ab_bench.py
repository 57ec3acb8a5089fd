"""Serving bench before and after a change, in one run, with an A/A control.

Three `edge-runtime serve` processes: the baseline build twice (A and A', a `git worktree` of
--baseline: the pair's difference is the noise floor) and the working tree (new). All serve the
same bundle, written by the baseline's own code (a device keeps its old bundles), with the same
settings (only keys the baseline knows). Measured in rounds, the builds in rotating order, one
server busy at a time: HTTP binary batch-1 latency with the unmodified tritonclient (one client,
--block requests) and the throughput of --clients concurrent clients (each its own tritonclient,
binary batch-1 requests, --seconds). Goal: the new build's HTTP binary p50 and 8-client
throughput within 5 % of the baseline's.

Before those servers start, each build is also started --starts times more (after one untimed
start each, which fills a shared bytecode cache), in rotating order, one at a time: spawn to the
first 200 of /v2/health/ready, and VmRSS then; each is stopped with SIGTERM. After the rounds, each
long-running server's peak RSS (VmHWM). Goals: start -> ready and peak RSS within 10 % of the
baseline's (start -> ready: or inside the A/A noise).

    python scripts/bench/serving_ab_bench.py [--baseline 3fd36e9] [--model resnet18|tiny] [--rounds 10]
        [--block 30] [--seconds 3] [--clients 8] [--starts 5] [--out docs/benchmarks.md]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List

import numpy as np
import tritonclient.http as httpclient
from bench_support import (
    MODELS,
    REPO,
    ServeProcess,
    add_worktree,
    append_markdown,
    git,
    interrupt_on_sigterm,
    percentiles,
    proc_status_kib,
    remove_worktree,
    section_header,
    start_serve,
    verdict,
    write_bundle,
    write_settings,
)

BUILDS = ("A", "A'", "new")
LABELS = {"A": "A", "A'": "A2", "new": "new"}  # for file names
TOLERANCE = 0.05
FOOTPRINT_TOLERANCE = 0.10  # start -> ready and peak RSS
START_POLL_S = 0.005


@dataclass
class Measured:
    """What one build's rounds collected."""

    latencies_ms: List[float] = field(default_factory=list)
    rates: List[float] = field(default_factory=list)
    failures: List[str] = field(default_factory=list)
    starts_s: List[float] = field(default_factory=list)  # spawn -> ready, one per timed start
    ready_rss_kib: List[int] = field(default_factory=list)  # VmRSS at ready, one per timed start
    peak_kib: int = 0  # the long-running server's VmHWM after the latency and throughput rounds


class Workload:
    """Batch-1 binary inference on one model through the unmodified tritonclient."""

    def __init__(self, model: str, sample: np.ndarray) -> None:
        self.model = model
        self.input_name, _, self.output_name = MODELS[model]
        self.sample = sample

    def caller(self, url: str) -> Callable[[], object]:
        """A fresh client's infer call (binary input and output)."""
        client = httpclient.InferenceServerClient(url)
        given = httpclient.InferInput(self.input_name, list(self.sample.shape), "FP32")
        given.set_data_from_numpy(self.sample, binary_data=True)
        wanted = [httpclient.InferRequestedOutput(self.output_name, binary_data=True)]
        return lambda: client.infer(self.model, [given], outputs=wanted).as_numpy(self.output_name)

    def latency(self, url: str, block: int, into: Measured) -> None:
        """``block`` sequential requests on one connection (3 untimed first)."""
        call = self.caller(url)
        for _ in range(3):
            call()
        for _ in range(block):
            start = time.perf_counter()
            call()
            into.latencies_ms.append((time.perf_counter() - start) * 1e3)

    def throughput(self, url: str, clients: int, seconds: float, into: Measured) -> None:
        """``clients`` threads, each its own client (made in its thread: gevent), for ``seconds``: requests/s."""
        done = [0] * clients
        stop = [0.0]  # set when every client has made its first call: the timed part starts then
        ready = threading.Barrier(clients + 1, action=lambda: stop.__setitem__(0, time.monotonic() + seconds))

        def work(index: int) -> None:
            call = self.caller(url)
            call()
            ready.wait()
            while time.monotonic() < stop[0]:
                try:
                    call()
                    done[index] += 1
                except Exception as exc:
                    into.failures.append(f"{type(exc).__name__}: {str(exc)[:160]}")

        threads = [threading.Thread(target=work, args=(i,), daemon=True) for i in range(clients)]
        for thread in threads:
            thread.start()
        ready.wait()
        begin = stop[0] - seconds
        for thread in threads:
            thread.join()
        into.rates.append(sum(done) / (time.monotonic() - begin))


def rotated(names: List[str], index: int) -> List[str]:
    """``names`` rotated left by ``index``: round i's order."""
    return names[index % len(names):] + names[:index % len(names)]


def run_rounds(servers: Dict[str, ServeProcess], workload: Workload, args: argparse.Namespace,
               measured: Dict[str, Measured]) -> None:
    """Latency blocks, then throughput rounds, each build in turn; the order rotates every round. Then peak RSS."""
    names = list(servers)
    for name in names:  # warm-up, untimed
        workload.latency(servers[name].url, 20, Measured())
    for index in range(args.rounds):
        order = rotated(names, index)
        for name in order:
            workload.latency(servers[name].url, args.block, measured[name])
        for name in order:
            workload.throughput(servers[name].url, args.clients, args.seconds, measured[name])
        print(f"round {index + 1}/{args.rounds}: " + ", ".join(
            f"{name} p50 {statistics.median(measured[name].latencies_ms):.2f} ms {measured[name].rates[-1]:.0f} req/s"
            for name in names), file=sys.stderr, flush=True)
    for name in names:
        measured[name].peak_kib = proc_status_kib(servers[name].process.pid, "VmHWM")


def settings_for(tree: Path, pub: Path) -> Dict[str, object]:
    """Settings both builds accept: only keys the baseline knows; each build reads its own device config."""
    return {"device_config": str(tree / "device_configs/x86-cpu.yaml"), "trusted_keys": [str(pub)],
            "batching": {"enabled": True, "max_batch_size": 8, "max_queue_delay_us": 0}}


def serve_args(trees: Dict[str, Path], repo: Path, pub: Path, tmp: Path) -> Dict[str, List[str]]:
    """Each build's `serve` arguments: the bundle's repository and the build's own settings file."""
    return {name: ["--repository", str(repo), "--config",
                   str(write_settings(tmp / f"settings-{LABELS[name]}.yaml", settings_for(trees[name], pub)))]
            for name in BUILDS}


def time_starts(trees: Dict[str, Path], argv: Dict[str, List[str]], tmp: Path, starts: int,
                measured: Dict[str, Measured], started: List[ServeProcess]) -> None:
    """One untimed start per build, then ``starts`` timed ones each, rotating; each SIGTERMed once ready."""
    pycache = tmp / "pycache"  # one bytecode cache for every build, filled by the untimed starts
    for index in range(-1, starts):
        for name in rotated(list(BUILDS), max(index, 0)):
            server = start_serve(trees[name], argv[name], tmp / "start.log", poll_s=START_POLL_S, pycache=pycache)
            started.append(server)
            rss_kib = proc_status_kib(server.process.pid, "VmRSS")
            server.stop()
            if index >= 0:
                measured[name].starts_s.append(server.ready_s)
                measured[name].ready_rss_kib.append(rss_kib)
        if index >= 0:
            print(f"start {index + 1}/{starts}: " + ", ".join(
                f"{name} {measured[name].starts_s[-1]:.3f} s" for name in BUILDS), file=sys.stderr, flush=True)


def start_builds(trees: Dict[str, Path], argv: Dict[str, List[str]], tmp: Path, started: List[ServeProcess]
                 ) -> Dict[str, ServeProcess]:
    """One server per build; each is appended to ``started`` at once, so the caller can always stop it."""
    servers: Dict[str, ServeProcess] = {}
    for name in BUILDS:
        server = start_serve(trees[name], argv[name], tmp / f"{LABELS[name]}.log")
        started.append(server)
        servers[name] = server
        print(f"{name}: pid {server.process.pid}, {server.url}, edge_runtime from {server.module_file}",
              file=sys.stderr, flush=True)
    return servers


def render(measured: Dict[str, Measured], servers: Dict[str, ServeProcess], trees: Dict[str, Path], commit: str,
           dirty: bool, args: argparse.Namespace) -> List[str]:
    """The markdown section: table, ratios and the verdict."""
    what = (f"{args.model}, baseline {commit[:10]} (A, A') vs the working tree at {git('rev-parse', '--short', 'HEAD')}"
            f"{' + uncommitted changes' if dirty else ''} (new); {args.rounds} rounds x {args.block} latency requests"
            f" and {args.seconds:g} s of {args.clients} clients per build, rotating order; before them,"
            f" {args.starts} timed starts per build, rotating order.")
    lines = section_header(f"Serving before/after with an A/A control: {args.model}, batch 1", "serving_ab_bench.py",
                           what)
    lines += ["| build | edge_runtime from | HTTP binary p50 ms | p99 ms | "
              f"{args.clients} clients req/s (rounds) | failures |", "|---|---|---:|---:|---:|---:|"]
    p50: Dict[str, float] = {}
    rate: Dict[str, float] = {}
    for name, values in measured.items():
        p50[name], p99 = percentiles(values.latencies_ms)
        rate[name] = statistics.median(values.rates)
        rounds = ", ".join(f"{r:.0f}" for r in values.rates)
        where = "baseline worktree" if trees[name] != REPO else "working tree"
        module = servers[name].module_file.replace(str(trees[name]), f"<{where}>")
        lines.append(f"| {name} | `{module}` | {p50[name]:.2f} | {p99:.2f} | "
                     f"{rate[name]:.1f} ({rounds}) | {len(values.failures)} |")
    lines += ["", "| ratio | p50 | req/s |", "|---|---:|---:|"]
    for pair, (top, bottom) in (("new / A", ("new", "A")), ("A' / A (noise floor)", ("A'", "A"))):
        lines.append(f"| {pair} | {p50[top] / p50[bottom]:.3f} | {rate[top] / rate[bottom]:.3f} |")
    pooled_p50 = percentiles(measured["A"].latencies_ms + measured["A'"].latencies_ms)[0]
    pooled_rate = statistics.median(measured["A"].rates + measured["A'"].rates)
    lines.append(f"| new / A and A' pooled | {p50['new'] / pooled_p50:.3f} | {rate['new'] / pooled_rate:.3f} |")
    lines += ["", "Goal (new within 5 % of the baseline A): " + "; ".join([
        _verdict_line("HTTP binary p50", p50["new"] / p50["A"], p50["A'"] / p50["A"], higher_is_better=False),
        _verdict_line(f"{args.clients}-client throughput", rate["new"] / rate["A"], rate["A'"] / rate["A"],
                      higher_is_better=True)]) + "."]
    lines += footprint_lines(measured)
    for name, values in measured.items():
        if values.failures:
            lines.append(f"\nFailures, {name} (first 3 of {len(values.failures)}): " + " | ".join(values.failures[:3]))
    return [*lines, ""]


def footprint_lines(measured: Dict[str, Measured]) -> List[str]:
    """Start -> ready and memory: table, ratios and verdicts."""
    mib = 1 / 1024
    start = {name: statistics.median(values.starts_s) for name, values in measured.items()}
    ready_rss = {name: statistics.median(values.ready_rss_kib) * mib for name, values in measured.items()}
    peak = {name: values.peak_kib * mib for name, values in measured.items()}
    lines = ["", "| build | start -> ready median s | min s | (starts) | RSS at ready MiB (median) | "
             "peak RSS after the rounds MiB (VmHWM) |", "|---|---:|---:|---:|---:|---:|"]
    for name, values in measured.items():
        starts = ", ".join(f"{s:.3f}" for s in values.starts_s)
        lines.append(f"| {name} | {start[name]:.3f} | {min(values.starts_s):.3f} | ({starts}) | "
                     f"{ready_rss[name]:.1f} | {peak[name]:.1f} |")
    lines += ["", "| ratio | start -> ready | RSS at ready | peak RSS |", "|---|---:|---:|---:|"]
    for pair, (top, bottom) in (("new / A", ("new", "A")), ("A' / A (noise floor)", ("A'", "A"))):
        lines.append(f"| {pair} | {start[top] / start[bottom]:.3f} | {ready_rss[top] / ready_rss[bottom]:.3f} | "
                     f"{peak[top] / peak[bottom]:.3f} |")
    start_ratio, start_noise = start["new"] / start["A"], start["A'"] / start["A"]
    peak_ratio, peak_noise = peak["new"] / peak["A"], peak["A'"] / peak["A"]
    start_inside = abs(start_ratio - 1) <= abs(start_noise - 1)
    return [*lines, "", "Goal (new within 10 % of the baseline A): "
            f"start -> ready new/A {start_ratio:.3f} "
            f"({verdict(start_ratio <= 1 + FOOTPRINT_TOLERANCE or start_inside)}; the difference is "
            f"{'inside' if start_inside else 'outside'} the A/A noise of {abs(start_noise - 1) * 100:.1f} %); "
            f"peak RSS new/A {peak_ratio:.3f} ({verdict(peak_ratio <= 1 + FOOTPRINT_TOLERANCE)}; "
            f"A'/A {peak_noise:.3f})."]


def _verdict_line(name: str, ratio: float, noise: float, higher_is_better: bool) -> str:
    met = ratio >= 1 - TOLERANCE if higher_is_better else ratio <= 1 + TOLERANCE
    inside = abs(ratio - 1) <= abs(noise - 1)
    loud = "; the noise floor is over 5 %: run longer" if abs(noise - 1) > TOLERANCE else ""
    return (f"{name} new/A {ratio:.3f} ({verdict(met)}; the difference is {'inside' if inside else 'outside'} "
            f"the A/A noise of {abs(noise - 1) * 100:.1f} %{loud})")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", default="3fd36e9", help="git ref of the 'before' build (default: 3fd36e9)")
    parser.add_argument("--model", choices=sorted(MODELS), default="resnet18",
                        help="resnet18: the INT8 bundle as serving_bench.py exports it; tiny: a fast smoke run")
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--block", type=int, default=30, help="latency requests per build per round")
    parser.add_argument("--seconds", type=float, default=3.0, help="throughput time per build per round")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--starts", type=int, default=5, help="timed starts per build (at least 1)")
    parser.add_argument("--out", type=Path, help="append the markdown section to this file")
    args = parser.parse_args()
    if args.starts < 1:
        parser.error("--starts must be at least 1")
    interrupt_on_sigterm()
    _, shape, _ = MODELS[args.model]
    workload = Workload(args.model, np.random.default_rng(0).standard_normal(shape, dtype=np.float32))
    started: List[ServeProcess] = []
    with tempfile.TemporaryDirectory(prefix="serving-ab-bench-") as tmp_name:
        tmp = Path(tmp_name)
        baseline, commit = add_worktree(args.baseline, tmp / "baseline")
        try:
            dirty = bool(git("status", "--porcelain"))
            print(f"baseline {args.baseline} = {commit} at {baseline}; writing the {args.model} bundle with it",
                  file=sys.stderr, flush=True)
            repo, pub = write_bundle(baseline, args.model, tmp / "bundle")
            trees = {"A": baseline, "A'": baseline, "new": REPO}
            argv = serve_args(trees, repo, pub, tmp)
            measured = {name: Measured() for name in BUILDS}
            time_starts(trees, argv, tmp, args.starts, measured, started)
            servers = start_builds(trees, argv, tmp, started)
            run_rounds(servers, workload, args, measured)
            lines = render(measured, servers, trees, commit, dirty, args)
        finally:
            for server in started:
                server.stop()
            remove_worktree(baseline)
    append_markdown(args.out, lines)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
