"""The export report: accuracy, size and latency of each model variant, written into the bundle.

Accuracy is top-1 on the held-out split when labels exist, otherwise fidelity to the FP32
model (mean cosine similarity and max abs error of the outputs). Latency is ONNX Runtime
CPU p50 at batch 1, with the variants timed interleaved, one run each per round, so that
a machine's slow phases hit all of them alike. The timing sessions run with intra-op spinning
off: with it on, the idle threads of the sessions not being timed spin and, on 2 cores, slowed
the timed one by up to 1.7x (measured here); off, each is ~10 % slower than alone, all alike.
"""

from __future__ import annotations

import os
import statistics
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional

import numpy as np
from tqdm import tqdm

from export.models.training import top1_accuracy

EVAL_BATCH = 64


@dataclass
class Variant:
    """One model file to evaluate; ``file`` is its path inside the bundle (None: not shipped)."""

    label: str
    path: Path
    precision: str
    file: Optional[str] = None
    target: Optional[str] = None
    metrics: Dict[str, Any] = field(default_factory=dict)


@dataclass
class EvalSet:
    """Inputs to evaluate on, labels when known, and a description for the report."""

    inputs: np.ndarray
    labels: Optional[np.ndarray]
    description: str


def _session(path: Path, spinning: bool = True) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def _run_all(session: Any, inputs: np.ndarray) -> np.ndarray:
    name = session.get_inputs()[0].name
    outs = [session.run(None, {name: inputs[i : i + EVAL_BATCH]})[0] for i in range(0, len(inputs), EVAL_BATCH)]
    return np.concatenate(outs)


def _fidelity(outputs: np.ndarray, reference: np.ndarray) -> Dict[str, float]:
    a = outputs.reshape(len(outputs), -1).astype(np.float64)
    b = reference.reshape(len(reference), -1).astype(np.float64)
    cosine = (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1) + 1e-12)
    return {"cosine_vs_fp32": float(cosine.mean()), "max_abs_error_vs_fp32": float(np.abs(a - b).max())}


def evaluate(variants: List[Variant], eval_set: EvalSet) -> None:
    """Fill each variant's accuracy (or fidelity to the first variant) metrics."""
    reference: Optional[np.ndarray] = None
    for variant in variants:
        outputs = _run_all(_session(variant.path), eval_set.inputs)
        if eval_set.labels is not None:
            variant.metrics["top1"] = round(top1_accuracy(outputs, eval_set.labels), 3)
        if reference is None:
            reference = outputs
        else:
            variant.metrics.update(_fidelity(outputs, reference))


def measure_latency(variants: List[Variant], sample: np.ndarray, runs: int, progress: bool = True) -> None:
    """Time ``runs`` batch-1 inferences of every variant, interleaved; store p50 in ms."""
    sessions = [_session(v.path, spinning=False) for v in variants]
    feeds = [{s.get_inputs()[0].name: sample} for s in sessions]
    for session, feed in zip(sessions, feeds):
        for _ in range(5):
            session.run(None, feed)
    timings: List[List[float]] = [[] for _ in variants]
    for _ in tqdm(range(runs), desc="latency", unit="round", disable=not progress, leave=False):
        for i, (session, feed) in enumerate(zip(sessions, feeds)):
            start = time.perf_counter()
            session.run(None, feed)
            timings[i].append((time.perf_counter() - start) * 1e3)
    for variant, times in zip(variants, timings):
        variant.metrics["latency_p50_ms"] = round(statistics.median(times), 4)


def build_report(
    *,
    model: str,
    variants: List[Variant],
    eval_set: EvalSet,
    latency_runs: int,
    compute: Dict[str, Any],
    notes: List[str],
    progress: bool = True,
) -> Dict[str, Any]:
    """Evaluate and time ``variants`` and assemble the report dict (JSON-serialisable)."""
    evaluate(variants, eval_set)
    measure_latency(variants, eval_set.inputs[:1], latency_runs, progress)
    for variant in variants:
        variant.metrics["size_bytes"] = variant.path.stat().st_size
    return {
        "model": model,
        "evaluation": eval_set.description,
        "latency": {
            "engine": "onnxruntime CPUExecutionProvider, intra-op spinning off",
            "batch": 1,
            "runs": latency_runs,
            "cpu_count": os.cpu_count(),
        },
        "compute": compute,
        "variants": [
            {k: v for k, v in asdict(variant).items() if k != "path"} for variant in variants
        ],
        "notes": notes,
    }


def render_report(report: Dict[str, Any]) -> str:
    """A plain-text table of the report for the terminal."""
    lines = [f"model: {report['model']}   evaluation: {report['evaluation']}"]
    compute = report.get("compute") or {}
    if compute:
        lines.append("compute: " + ", ".join(f"{k}={v}" for k, v in compute.items()))
    header = f"{'variant':34} {'precision':9} {'size MB':>8} {'p50 ms':>8} {'top-1 %':>8} {'cosine':>8}"
    lines += [header, "-" * len(header)]
    for v in report["variants"]:
        m = v["metrics"]
        top1 = f"{m['top1']:.2f}" if "top1" in m else "-"
        cosine = f"{m['cosine_vs_fp32']:.5f}" if "cosine_vs_fp32" in m else "-"
        lines.append(
            f"{v['label']:34} {v['precision']:9} {m['size_bytes'] / 1e6:8.3f} "
            f"{m['latency_p50_ms']:8.3f} {top1:>8} {cosine:>8}"
        )
    lines += [f"note: {note}" for note in report.get("notes", [])]
    return "\n".join(lines)
