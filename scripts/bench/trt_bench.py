"""Our TensorRT backend against NVIDIA's ``trtexec`` on the same engine (goal: within 10 %). Runs on a Jetson.

The backend loads the bundle as the runtime does (fingerprint check, then the bundle's engine, or a
build on the device into the engine cache); the engine it runs is then handed to ``trtexec
--loadEngine``, so both time the same plan on the same GPU, at the same batch sizes, one after
the other in one run (clocks drift: lock them with ``sudo jetson_clocks`` first, and say so).

What each side measures:
- ours: ``backend.infer()`` from Python: copy into the pinned (or mapped) buffers, set shapes,
  ``execute_async_v3``, copy out, synchronize, copy the result to a fresh array — what a request pays.
- trtexec ``Latency``: host-to-device copy + GPU compute + device-to-host copy, from C++ (no Python).
  ``GPU Compute Time`` is printed too: the floor neither side can beat.

    python3 scripts/bench/trt_bench.py --bundle BUNDLE --key keys/signing.pub \\
        --config device_configs/agx-xavier.yaml [--batch 1,8] [--runs 500] [--trtexec PATH]

Needs TensorRT, pycuda and trtexec (JetPack: /usr/src/tensorrt/bin/trtexec). Prints what it measured;
results go in docs/benchmarks.md with the command line. Python 3.8 (JetPack 5) compatible.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

GOAL = 1.10
TRTEXEC_CANDIDATES = ("trtexec", "/usr/src/tensorrt/bin/trtexec")
# "[I] Latency: min = .., median = 0.79 ms, ..." (not "H2D Latency:" / "D2H Latency:")
_STAT = re.compile(r"(?:^|\]\s)(Latency|GPU Compute Time): .*?median = ([\d.]+) ms")


def parse_trtexec(output: str) -> Dict[str, float]:
    """Medians (ms) of trtexec's summary lines: {'Latency': .., 'GPU Compute Time': ..}; empty if absent."""
    found: Dict[str, float] = {}
    for line in output.splitlines():
        match = _STAT.search(line)
        if match:
            found[match.group(1)] = float(match.group(2))  # the last summary wins (trtexec prints one)
    return found


def find_trtexec(given: Optional[str]) -> str:
    for candidate in ([given] if given else list(TRTEXEC_CANDIDATES)):
        path = shutil.which(candidate) or (candidate if Path(candidate).is_file() else None)
        if path:
            return path
    raise SystemExit("trt_bench: trtexec not found (JetPack: /usr/src/tensorrt/bin/trtexec); pass --trtexec PATH")


def plan_of(backend_artifact: str, bundle_dir: Path, cache_dir: Path) -> Path:
    """The plan file the backend runs: the bundle's engine, or the engine cache entry it names."""
    if backend_artifact.startswith("engines/"):
        return bundle_dir / backend_artifact.split(",")[0].strip()
    for record in sorted(cache_dir.glob("*.json")):
        details = json.loads(record.read_text())
        if details.get("label") and details["label"] in backend_artifact:
            return record.with_suffix(".plan")
    raise SystemExit(f"trt_bench: cannot find the plan for {backend_artifact!r} in {cache_dir}")


def time_ours(backend: object, inputs: Dict[str, np.ndarray], runs: int) -> List[float]:
    infer = backend.infer  # type: ignore[attr-defined]
    for _ in range(min(50, runs)):
        infer(inputs)
    samples = []
    for _ in range(runs):
        start = time.perf_counter()
        infer(inputs)
        samples.append((time.perf_counter() - start) * 1000.0)
    return samples


def run_trtexec(trtexec: str, plan: Path, shapes: str, runs: int) -> Dict[str, float]:
    command = [trtexec, f"--loadEngine={plan}", f"--iterations={runs}", "--warmUp=500", "--duration=0",
               "--useSpinWait"]
    if shapes:
        command.append(f"--shapes={shapes}")
    done = subprocess.run(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          check=False)
    stats = parse_trtexec(done.stdout)
    if done.returncode != 0 or "Latency" not in stats:
        tail = "\n".join(done.stdout.splitlines()[-15:])
        raise SystemExit(f"trt_bench: trtexec failed ({done.returncode}):\n{tail}")
    return stats


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--bundle", type=Path, required=True)
    parser.add_argument("--key", type=Path, required=True, help="trusted public key")
    parser.add_argument("--config", type=Path, required=True, help="device config (backend: tensorrt)")
    parser.add_argument("--batch", default="1,8", help="batch sizes, comma-separated (default 1,8)")
    parser.add_argument("--runs", type=int, default=500)
    parser.add_argument("--engine-cache", type=Path, default=None, help="default: a temporary directory")
    parser.add_argument("--trtexec", default=None)
    args = parser.parse_args(argv)

    from edge_runtime.backends.base import BackendOptions
    from edge_runtime.backends.tensorrt.runner import TensorRTBackend
    from edge_runtime.bundle.signing import load_public_key
    from edge_runtime.bundle.verify import open_bundle
    from edge_runtime.config import load_device_config

    trtexec = find_trtexec(args.trtexec)
    batches = [int(b) for b in args.batch.split(",")]
    device = load_device_config(args.config)
    bundle = open_bundle(args.bundle, [load_public_key(args.key)])
    with tempfile.TemporaryDirectory(prefix="trt-bench-") as scratch:
        cache = args.engine_cache or Path(scratch)
        backend = TensorRTBackend()
        backend.load(bundle, device, BackendOptions(max_batch_size=max(batches), engine_cache_dir=cache,
                                                    progress=print))
        try:
            plan = plan_of(backend.artifact, args.bundle, cache)
            print(f"engine: {plan} ({plan.stat().st_size / 2**20:.1f} MiB); zero_copy={device.tensorrt.zero_copy}; "
                  f"{args.runs} runs per batch size")
            print(f"{'batch':>5} {'ours p50 ms':>12} {'ours p90':>9} {'trtexec latency':>16} {'GPU compute':>12} "
                  f"{'ours/trtexec':>13}")
            worst = 0.0
            for batch in batches:
                rng = np.random.default_rng(batch)
                inputs = {s.name: rng.random((batch, *s.shape[1:])).astype(s.dtype) for s in backend.inputs}
                samples = time_ours(backend, inputs, args.runs)
                shapes = ",".join(f"{name}:{'x'.join(map(str, a.shape))}" for name, a in inputs.items())
                stats = run_trtexec(trtexec, plan, shapes if backend.max_batch_size else "", args.runs)
                ours = statistics.median(samples)
                ratio = ours / stats["Latency"]
                worst = max(worst, ratio)
                p90 = sorted(samples)[int(0.9 * (len(samples) - 1))]
                print(f"{batch:>5} {ours:>12.3f} {p90:>9.3f} {stats['Latency']:>16.3f} "
                      f"{stats.get('GPU Compute Time', float('nan')):>12.3f} {ratio:>13.3f}")
        finally:
            backend.close()
    print(f"goal: ours within {GOAL:.2f}x of trtexec at every batch size: "
          f"{'MET' if worst <= GOAL else 'NOT MET'} (worst {worst:.3f}x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
