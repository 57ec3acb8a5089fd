"""Export benchmark on ResNet-18 (random weights, fixed seed), measured side by side in one run.

Variants, all batch 1 on this machine's CPU:
  torch eager FP32                  the starting point
  seed recipe                       torch quantize_dynamic (Linear) + 30 % unstructured L1, eager
  ORT FP32                          the bundle's model.onnx
  ORT INT8                          the bundle's U8S8 QDQ model (x86-cpu target)
  ORT structured 30 % + INT8        a second bundle exported with --prune structured:0.3

The ONNX variants come from the real pipeline (run_export). Timing is interleaved: each round
runs a block of inferences of every variant in turn, so slow phases of the machine hit all
variants alike; p50 and p90 are over all timed runs. Each ORT block gets a fresh session
(see _ort_factory) and starts with untimed runs. Pruning uses the CLI's default channel
rounding (multiples of 8). Calibration uses seeded Gaussian inputs (no image data set ships
here), which is fine for latency and size, not for accuracy.

    python scripts/bench/export_bench.py [--rounds 40] [--block 5] [--threads 2] [--out docs/benchmarks.md]
"""

from __future__ import annotations

import argparse
import io
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, Dict, List

import numpy as np
import onnxruntime as ort
import torch

from edge_runtime.bundle.signing import generate_keypair
from edge_runtime.config import load_device_config
from export.models.resnet import INPUT_SHAPE, ResNet18
from export.pipeline import ExportRequest, run_export
from export.steps.prune import PruneSpec, prune_unstructured

REPO = Path(__file__).resolve().parents[2]
SETTLE_RUNS = 3


def _torch_size(model: torch.nn.Module) -> int:
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    return len(buffer.getvalue())


def _seed_recipe(seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    model = prune_unstructured(ResNet18().eval(), 0.3)
    return torch.ao.quantization.quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8)


def _export(out: Path, key: Path, calib: Path, prune: bool, seed: int) -> Path:
    request = ExportRequest(
        model="resnet18", configs=[load_device_config(REPO / "device_configs/x86-cpu.yaml")], key_path=key,
        out=out, calib_data=calib, calib_samples=64, latency_runs=5, seed=seed,
        prune=PruneSpec("structured", 0.3) if prune else None, progress=True,
    )
    return run_export(request).path


Runner = Callable[[], object]


def _ort_factory(path: Path, threads: int, sample: np.ndarray) -> Callable[[], Runner]:
    """A fresh session per block: a live session's idle intra-op threads keep spinning and, on
    2 cores, slowed the next ORT variant by ~1.7x when sessions were kept (measured here)."""

    def make() -> Runner:
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        feed = {session.get_inputs()[0].name: sample}
        return lambda: session.run(None, feed)

    return make


def _torch_factory(model: torch.nn.Module, sample: np.ndarray) -> Callable[[], Runner]:
    x = torch.from_numpy(sample)

    def run() -> object:
        with torch.inference_mode():
            return model(x)

    return lambda: run


def _time(factories: Dict[str, Callable[[], Runner]], rounds: int, block: int) -> Dict[str, List[float]]:
    times: Dict[str, List[float]] = {name: [] for name in factories}
    for _ in range(rounds):
        for name, make in factories.items():
            run = make()
            for _ in range(SETTLE_RUNS):  # warm caches; let the previous variant's threads go idle
                run()
            for _ in range(block):
                start = time.perf_counter()
                run()
                times[name].append((time.perf_counter() - start) * 1e3)
            del run
    return times


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=40)
    parser.add_argument("--block", type=int, default=5)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, help="append the results (markdown) to this file")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    sample = np.random.default_rng(args.seed).standard_normal((1, *INPUT_SHAPE), dtype=np.float32)
    with tempfile.TemporaryDirectory(prefix="export-bench-") as tmp_name:
        tmp = Path(tmp_name)
        key, _ = generate_keypair(tmp / "keys")
        calib = tmp / "calib.npy"
        np.save(calib, np.random.default_rng(args.seed + 1).standard_normal((64, *INPUT_SHAPE), dtype=np.float32))
        plain = _export(tmp / "resnet18", key, calib, prune=False, seed=args.seed)
        pruned = _export(tmp / "resnet18-pruned", key, calib, prune=True, seed=args.seed)
        torch.manual_seed(args.seed)
        eager = ResNet18().eval()
        seed_model = _seed_recipe(args.seed)
        sizes = {
            "torch eager FP32": _torch_size(eager),
            "seed recipe (dynamic quant + 30% unstructured)": _torch_size(seed_model),
            "ORT FP32": (plain / "model.onnx").stat().st_size,
            "ORT INT8 (U8S8 QDQ)": (plain / "onnx/x86-cpu.int8.onnx").stat().st_size,
            "ORT structured 30% + INT8": (pruned / "onnx/x86-cpu.int8.onnx").stat().st_size,
        }
        factories = {
            "torch eager FP32": _torch_factory(eager, sample),
            "seed recipe (dynamic quant + 30% unstructured)": _torch_factory(seed_model, sample),
            "ORT FP32": _ort_factory(plain / "model.onnx", args.threads, sample),
            "ORT INT8 (U8S8 QDQ)": _ort_factory(plain / "onnx/x86-cpu.int8.onnx", args.threads, sample),
            "ORT structured 30% + INT8": _ort_factory(pruned / "onnx/x86-cpu.int8.onnx", args.threads, sample),
        }
        times = _time(factories, args.rounds, args.block)
    text = _render(times, sizes, args)
    print(text)
    if args.out:
        with args.out.open("a") as handle:
            handle.write(text + "\n")
    return 0


def _render(times: Dict[str, List[float]], sizes: Dict[str, int], args: argparse.Namespace) -> str:
    base_p50 = statistics.median(times["torch eager FP32"])
    base_size = sizes["torch eager FP32"]
    command = "python scripts/bench/export_bench.py " + " ".join(sys.argv[1:])
    lines = [
        "## Export benchmark: ResNet-18, batch 1",
        "",
        f"`{command.strip()}` — {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, "
        f"{platform.processor() or platform.machine()}, {args.threads} threads, torch {torch.__version__}, "
        f"onnxruntime {ort.__version__}, {args.rounds} rounds x {args.block} runs per variant, interleaved.",
        "",
        "| variant | p50 ms | p90 ms | size MB | latency / torch | size / torch |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name, values in times.items():
        p50 = statistics.median(values)
        p90 = float(np.percentile(values, 90))
        lines.append(f"| {name} | {p50:.2f} | {p90:.2f} | {sizes[name] / 1e6:.2f} | "
                     f"{p50 / base_p50:.3f} | {sizes[name] / base_size:.3f} |")
    int8 = statistics.median(times["ORT INT8 (U8S8 QDQ)"]) / base_p50
    pruned = statistics.median(times["ORT structured 30% + INT8"]) / base_p50
    size = sizes["ORT structured 30% + INT8"] / base_size
    lines += [
        "",
        f"Goals: INT8 latency ratio {int8:.3f} (goal <= 0.20: {'met' if int8 <= 0.20 else 'NOT met'}), "
        f"pruned+INT8 {pruned:.3f} (goal <= 0.15: {'met' if pruned <= 0.15 else 'NOT met'}), "
        f"pruned+INT8 size ratio {size:.3f} (goal <= 0.18: {'met' if size <= 0.18 else 'NOT met'}).",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
