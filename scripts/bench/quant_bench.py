"""Quantization benchmark: FP32, naive static, dynamic and accuracy-aware INT8 side by side, in one run.

Models (scripts/bench/quant_cases.py): the digits CNN, ResNet-18, the tiny test transformer and the
BERT-style encoder. Variants of each, all on this machine's CPU:

  torch eager FP32           the starting point (latency and size only)
  ORT FP32                   the bundle's model.onnx, the accuracy reference
  naive static INT8          quantize_static on every default op (U8S8 per-channel QDQ, MinMax),
                             calibrated on the export's samples at their natural lengths
  dynamic INT8               quant_pre_process + quantize_dynamic with its default ops (int8 weights)
  accuracy-aware (CHOICE)    the model edge-export ships for x86-cpu, CHOICE read from its report.json

Accuracy: top-1 and its drop vs ORT FP32 where there are labels, and always the mean and minimum
per-sample cosine to ORT FP32 over every output. Transformers are evaluated twice: on zero-padded
mixed-length batches of 8, as clients send them, and at natural lengths (batches of one length).
Latency: ORT CPU p50 with intra-op spinning off (as export/report.py), each variant a fresh session
per block, variants interleaved block by block so that a machine's slow phases hit all of them;
at batch 1 (a median-length sample), and for transformers also on a zero-padded batch of 8.

    python scripts/bench/quant_bench.py [--quick] [--models a,b] [--rounds 20] [--out docs/benchmarks.md]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

import onnxruntime as ort
import torch
from bench_support import append_markdown, section_header, verdict
from quant_cases import CASES, REPO, Case, Sizes, padded_batches

from edge_runtime.bundle.signing import generate_keypair
from edge_runtime.config import load_device_config
from export.report import Outputs, fidelity, run_samples, session, top1
from export.samples import Batch
from export.steps.quantize import preprocess, quantize_int8

CONFIG = REPO / "device_configs" / "x86-cpu.yaml"
TARGET = "x86-cpu"
PADDED_BATCH = 8
SETTLE_RUNS = 3
LATENCY_GOAL_VS_FP32 = 0.6  # transformers: accuracy-aware INT8 p50 / ORT FP32 p50
RESNET_GOAL_VS_TORCH = 0.20  # ResNet-18: INT8 p50 / torch eager p50
FULL = Sizes(calib_cnn=128, eval_cnn=64, calib_text=512, eval_text=1024)
QUICK = Sizes(calib_cnn=16, eval_cnn=8, calib_text=96, eval_text=64)

Runner = Callable[[], object]


@dataclass
class Variant:
    """One way of running a model: a file (None: torch eager), its accuracy per evaluation and p50 per feed."""

    label: str
    path: Optional[Path]
    size: int
    accuracy: Dict[str, Dict[str, float]] = field(default_factory=dict)
    p50: Dict[str, float] = field(default_factory=dict)


@dataclass
class Result:
    """A model's variants and what its export chose."""

    case: Case
    variants: List[Variant]
    choice: str
    candidates: List[Dict[str, Any]]


def _edge_export(case: Case, work: Path, key: Path, args: argparse.Namespace) -> Path:
    """Run edge-export on the case (x86-cpu, its budget); return the bundle directory."""
    out = work / f"{case.name}-bundle"
    command = [sys.executable, "-m", "export.cli", *case.export_args, "--config", str(CONFIG), "--key", str(key),
               "--out", str(out), "--accuracy-budget", case.budget_flag, "--latency-runs", "10", "--quiet",
               *(["--max-trials", str(args.max_trials)] if args.max_trials else [])]
    env = dict(os.environ, PYTHONPATH=str(REPO))
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"edge-export failed for {case.name}: {done.stderr.strip()[-2000:]}")
    return out


def _shipped(bundle: Path) -> Path:
    """The x86-cpu target's model file in the bundle (model.onnx when it kept FP32)."""
    artifacts = json.loads((bundle / "manifest.json").read_text())["artifacts"]
    files = [a["path"] for a in artifacts if a["kind"] == "onnx" and a["target"] == TARGET]
    return bundle / (files[0] if files else "model.onnx")


def _torch_size(module: torch.nn.Module) -> int:
    return sum(t.numel() * t.element_size() for t in module.state_dict().values())


def _variants(case: Case, bundle: Path, work: Path, choice: str) -> List[Variant]:
    """Build the naive static and dynamic INT8 models beside the exported ones; list every variant."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    fp32 = bundle / "model.onnx"
    static, dynamic = work / f"{case.name}.static-all.onnx", work / f"{case.name}.dynamic.onnx"
    quantize_int8(fp32, static, work / f"{case.name}.calib.json", case.calibration,
                  load_device_config(CONFIG).quantization, progress=False)
    with tempfile.TemporaryDirectory(prefix="quant-bench-dynamic-") as tmp:
        previous = os.getcwd()
        os.chdir(tmp)  # ORT's tools write temporary files into the current directory
        try:
            preprocess(fp32, Path(tmp) / "prepared.onnx", lambda message: None)
            quantize_dynamic(str(Path(tmp) / "prepared.onnx"), str(dynamic), weight_type=QuantType.QInt8)
        finally:
            os.chdir(previous)
    files = {"ORT FP32": fp32, "naive static INT8": static, "dynamic INT8": dynamic,
             f"accuracy-aware ({choice})": _shipped(bundle)}
    return [Variant("torch eager FP32", None, _torch_size(case.module)),
            *(Variant(label, path, path.stat().st_size) for label, path in files.items())]


def _padded_outputs(sess: Any, case: Case) -> Outputs:
    per_sample: Outputs = [[] for _ in range(len(case.evaluation))]
    for indices, feed in padded_batches(case.evaluation, PADDED_BATCH):
        for output in sess.run(None, feed):
            for row, index in enumerate(indices):
                per_sample[index].append(output[row])
    return per_sample


def _outputs(path: Path, case: Case) -> Dict[str, Outputs]:
    sess = session(path)
    found = {"natural": run_samples(sess, case.evaluation)}
    if case.transformer:
        found["padded"] = _padded_outputs(sess, case)
    return found


def _evaluate(case: Case, variants: List[Variant]) -> None:
    """Fill every ONNX variant's accuracy per evaluation, against ORT FP32's outputs."""
    labels = case.evaluation.labels
    reference = _outputs(variants[1].path, case)  # type: ignore[arg-type]  # ORT FP32 has a file
    for variant in variants[1:]:
        assert variant.path is not None
        for name, outputs in _outputs(variant.path, case).items():
            metrics = fidelity(outputs, reference[name])
            if labels is not None:
                metrics["top1"] = top1(outputs, labels)
                metrics["top1_drop"] = top1(reference[name], labels) - metrics["top1"]
            variant.accuracy[name] = metrics


def _within_budget(case: Case, metrics: Dict[str, float]) -> bool:
    limits = case.budget
    return (metrics.get("top1_drop", 0.0) <= limits.get("top1_drop", float("inf"))
            and metrics["cosine_vs_fp32"] >= limits.get("cosine_mean", -1.0)
            and metrics["min_cosine_vs_fp32"] >= limits.get("cosine_min", -1.0))


def _runner(variant: Variant, case: Case, feed: Batch) -> Runner:
    """A fresh runner for one timed block: a new ORT session (spinning off), or the torch module."""
    if variant.path is not None:
        sess = session(variant.path, spinning=False)
        return lambda: sess.run(None, feed)
    tensors = [torch.from_numpy(feed[name]) for name in case.evaluation.names]

    def run() -> object:
        with torch.inference_mode():
            return case.module(*tensors)

    return run


def _time(case: Case, variants: List[Variant], feeds: Dict[str, Batch], rounds: int, block: int) -> None:
    """p50 per variant and feed, the variants interleaved block by block."""
    for feed_name, feed in feeds.items():
        times: List[List[float]] = [[] for _ in variants]
        for _ in range(rounds):
            for variant, samples in zip(variants, times):
                run = _runner(variant, case, feed)
                for _ in range(SETTLE_RUNS):
                    run()
                for _ in range(block):
                    start = time.perf_counter()
                    run()
                    samples.append((time.perf_counter() - start) * 1e3)
        for variant, samples in zip(variants, times):
            variant.p50[feed_name] = statistics.median(samples)


def _feeds(case: Case) -> Dict[str, Batch]:
    feeds = {"batch 1": case.evaluation.representative()}
    if case.transformer:
        feeds[f"batch {PADDED_BATCH} padded"] = padded_batches(case.evaluation.head(PADDED_BATCH), PADDED_BATCH)[0][1]
    return feeds


def _run_case(name: str, work: Path, key: Path, args: argparse.Namespace) -> Result:
    sizes = QUICK if args.quick else FULL
    started = time.monotonic()
    case = CASES[name](work, sizes, args.seed)
    print(f"[quant-bench] {name}: edge-export ...", file=sys.stderr, flush=True)
    bundle = _edge_export(case, work, key, args)
    record = json.loads((bundle / "report.json").read_text()).get("quantization", {}).get(TARGET, {})
    choice = str(record.get("choice", "?"))
    variants = _variants(case, bundle, work, choice)
    print(f"[quant-bench] {name}: evaluating and timing {len(variants)} variants", file=sys.stderr, flush=True)
    _evaluate(case, variants)
    _time(case, variants, _feeds(case), args.rounds, args.block)
    print(f"[quant-bench] {name}: done in {time.monotonic() - started:.0f} s", file=sys.stderr, flush=True)
    return Result(case, variants, choice, list(record.get("candidates", [])))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(CASES), help=f"comma-separated, of {', '.join(CASES)}")
    parser.add_argument("--quick", action="store_true", help="smoke run: few samples, 3 rounds of 3 runs")
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--block", type=int, default=5)
    parser.add_argument("--max-trials", type=int, help="edge-export's --max-trials (default: its own)")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="torch threads")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, help="append the results (markdown) to this file")
    args = parser.parse_args()
    if args.quick:
        args.rounds, args.block = 3, 3
    names = [n for n in args.models.split(",") if n]
    unknown = [n for n in names if n not in CASES]
    if unknown:
        parser.error(f"unknown model(s) {', '.join(unknown)}; known: {', '.join(CASES)}")
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory(prefix="quant-bench-") as tmp:
        work = Path(tmp)
        key, _ = generate_keypair(work / "keys")
        results = [_run_case(name, work, key, args) for name in names]
    title = "Quantization benchmark: FP32, naive static, dynamic and accuracy-aware INT8"
    append_markdown(args.out, [*section_header(title, "quant_bench.py", _setting(args)), *_table(results),
                               "", *_choices(results), "", *_goals(results), ""])
    return 0


def _setting(args: argparse.Namespace) -> str:
    return (f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__} "
            f"({args.threads} threads), onnxruntime {ort.__version__}, {args.rounds} rounds x {args.block} runs "
            f"per variant and feed, interleaved{', quick mode' if args.quick else ''}.")


def _accuracy(metrics: Optional[Dict[str, float]], reference: bool) -> str:
    if metrics is None:
        return "-"
    parts = []
    if "top1" in metrics:
        parts.append(f"top-1 {metrics['top1']:.2f}" + ("" if reference else f" (drop {metrics['top1_drop']:.2f})"))
    if not reference:
        parts.append(f"cos {metrics['cosine_vs_fp32']:.4f}, min {metrics['min_cosine_vs_fp32']:.4f}")
    return "; ".join(parts) or "reference"


def _table(results: List[Result]) -> List[str]:
    feeds = ["batch 1", f"batch {PADDED_BATCH} padded"]
    lines = ["| model | variant | accuracy, zero-padded mixed lengths | accuracy, natural lengths | "
             + " | ".join(f"p50 ms {f} | / torch | / ORT FP32" for f in feeds) + " | size MB |",
             "|---|---|---|---|" + "---:|" * (3 * len(feeds) + 1)]
    for result in results:
        eager, fp32 = result.variants[0], result.variants[1]
        for variant in result.variants:
            cells = [result.case.name, variant.label]
            cells += [_accuracy(variant.accuracy.get(name) if variant.path else None, variant is fp32)
                      for name in ("padded", "natural")]
            for feed in feeds:
                p50 = variant.p50.get(feed)
                cells += (["-"] * 3 if p50 is None else
                          [f"{p50:.3f}", f"{p50 / eager.p50[feed]:.3f}", f"{p50 / fp32.p50[feed]:.3f}"])
            lines.append("| " + " | ".join([*cells, f"{variant.size / 1e6:.3f}"]) + " |")
    return lines


def _choices(results: List[Result]) -> List[str]:
    lines = []
    for result in results:
        tried = ", ".join(f"{c.get('name')} ({'within' if c.get('within_budget') else 'over'}, "
                          f"{c.get('latency_p50_ms', float('nan')):.3f} ms)" for c in result.candidates)
        lines.append(f"- {result.case.name}: budget `{result.case.budget_flag}`; edge-export chose "
                     f"**{result.choice}** of {tried or 'no candidates'}.")
    return lines


def _goals(results: List[Result]) -> List[str]:
    lines = []
    for result in results:
        case, by_label = result.case, {v.label: v for v in result.variants}
        aware, fp32, eager = result.variants[-1], by_label["ORT FP32"], by_label["torch eager FP32"]
        within = all(_within_budget(case, m) for m in aware.accuracy.values())
        naive = all(_within_budget(case, m) for m in by_label["naive static INT8"].accuracy.values())
        head = (f"{case.name}: accuracy-aware ({result.choice}) within budget on every evaluation: {verdict(within)} "
                f"(naive static INT8: {'within' if naive else 'over'})")
        if case.transformer:
            ratios = {feed: p50 / fp32.p50[feed] for feed, p50 in aware.p50.items()}
            head += "; p50 / ORT FP32 " + ", ".join(
                f"{ratio:.3f} at {feed} (goal <= {LATENCY_GOAL_VS_FP32} within budget: "
                f"{verdict(within and ratio <= LATENCY_GOAL_VS_FP32)})" for feed, ratio in ratios.items())
        if case.name == "resnet18":
            ratio = aware.p50["batch 1"] / eager.p50["batch 1"]
            head += (f"; p50 / torch eager {ratio:.3f} (goal <= {RESNET_GOAL_VS_TORCH}: "
                     f"{verdict(ratio <= RESNET_GOAL_VS_TORCH)}), mean cosine to FP32 "
                     f"{aware.accuracy['natural']['cosine_vs_fp32']:.4f}")
        lines.append(f"- {head}.")
    return lines


if __name__ == "__main__":
    raise SystemExit(main())
