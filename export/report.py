"""The export report: accuracy, size and latency of each model variant, written into the bundle.

Every input is fed and every output compared. Accuracy is top-1 on labelled samples (the first
output holds the logits), and always fidelity to the FP32 model: per sample, the cosine between
all its outputs flattened and concatenated, reported as the mean and the minimum over samples,
plus the max abs error. Samples of different lengths are run in buckets of one shape each, and
compared sample by sample, so variable-length outputs need no padding either.

Latency is ONNX Runtime CPU p50 at batch 1 on one representative sample, with the variants timed
interleaved, one run each per round, so that a machine's slow phases hit all of them alike. The
timing sessions run with intra-op spinning off: with it on, the idle threads of the sessions not
being timed spin and, on 2 cores, slowed the timed one by up to 1.7x (measured here); off, each
is ~10 % slower than alone, all alike.
"""

from __future__ import annotations

import os
import statistics
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import numpy as np
from tqdm import tqdm

from export.errors import ExportError
from export.models.training import top1_accuracy
from export.samples import Batch, SampleSet
from export.steps.quantize import one_line

EVAL_BATCH = 64

Outputs = List[List[np.ndarray]]  # per sample, in sample order: one array per model output, no batch axis


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
    """Samples to evaluate on (labels when known) and a description for the report."""

    samples: SampleSet
    description: str


def session(path: Path, spinning: bool = True) -> Any:
    """An ONNX Runtime CPU session on ``path``; a model ORT cannot load is an ExportError."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
    try:
        return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # ORT's pybind errors derive from Exception only
        raise ExportError(f"ONNX Runtime cannot load {path.name}: {one_line(exc)}") from exc


def _run(sess: Any, feed: Batch) -> List[np.ndarray]:
    try:
        return list(sess.run(None, feed))
    except Exception as exc:  # a feed the model refuses (names, dtypes, lengths that disagree)
        raise ExportError(f"running the model failed: {one_line(exc)}") from exc


def _max_batch(sess: Any) -> int:
    fixed = [i.shape[0] for i in sess.get_inputs() if i.shape and isinstance(i.shape[0], int) and i.shape[0] > 0]
    return min([EVAL_BATCH, *fixed])


def run_samples(sess: Any, samples: SampleSet) -> Outputs:
    """Run every sample through ``sess`` (all inputs, bucketed by shape); outputs per sample."""
    per_sample: Outputs = [[] for _ in range(len(samples))]
    names = [o.name for o in sess.get_outputs()]
    for indices, batch in samples.indexed_batches(_max_batch(sess)):
        for name, out in zip(names, _run(sess, batch)):
            if out.ndim == 0 or out.shape[0] != len(indices):
                raise ExportError(f"output '{name}' has no batch axis (shape {out.shape}); cannot compare samples")
            for row, index in enumerate(indices):
                per_sample[index].append(out[row])
    return per_sample


def _flat(sample_outputs: Sequence[np.ndarray]) -> np.ndarray:
    return np.concatenate([np.asarray(o, np.float64).ravel() for o in sample_outputs])


def fidelity(outputs: Outputs, reference: Outputs) -> Dict[str, float]:
    """Mean and min per-sample cosine over all outputs, and max abs error, vs ``reference``."""
    cosines: List[float] = []
    max_abs = 0.0
    for got, want in zip(outputs, reference, strict=True):
        a, b = _flat(got), _flat(want)
        if a.shape != b.shape:
            raise ExportError(f"a variant's outputs have {a.size} values per sample, FP32's {b.size}")
        norms = float(np.linalg.norm(a) * np.linalg.norm(b))
        same_zero = not a.any() and not b.any()
        cosines.append(1.0 if same_zero else float(a @ b) / norms if norms else 0.0)
        if a.size:
            max_abs = max(max_abs, float(np.abs(a - b).max()))
    return {"cosine_vs_fp32": float(np.mean(cosines)) if cosines else 1.0,
            "min_cosine_vs_fp32": min(cosines, default=1.0),
            "max_abs_error_vs_fp32": max_abs}


def top1(outputs: Outputs, labels: np.ndarray) -> float:
    """Top-1 accuracy in percent, the first output being the logits."""
    logits = [sample[0] for sample in outputs]
    if len({row.shape for row in logits}) > 1:
        raise ExportError("top-1 needs logits of one shape for every sample; the first output's shape varies")
    return top1_accuracy(np.stack(logits), labels)


def evaluate(variants: List[Variant], eval_set: EvalSet) -> None:
    """Fill each variant's top-1 (with labels) and fidelity to the first variant."""
    reference: Optional[Outputs] = None
    labels = eval_set.samples.labels
    for variant in variants:
        outputs = run_samples(session(variant.path), eval_set.samples)
        if labels is not None:
            variant.metrics["top1"] = round(top1(outputs, labels), 3)
        if reference is None:
            reference = outputs
        else:
            variant.metrics.update(fidelity(outputs, reference))


def time_models(paths: Sequence[Path], feed: Batch, runs: int, progress: bool = True) -> List[float]:
    """p50 latency in ms of each model file on ``feed`` (every input), timed interleaved."""
    sessions = [session(path, spinning=False) for path in paths]
    for sess in sessions:
        for _ in range(5):
            _run(sess, feed)
    timings: List[List[float]] = [[] for _ in sessions]
    for _ in tqdm(range(runs), desc="latency", unit="round", disable=not progress, leave=False):
        for i, sess in enumerate(sessions):
            start = time.perf_counter()
            sess.run(None, feed)
            timings[i].append((time.perf_counter() - start) * 1e3)
    return [statistics.median(times) for times in timings]


def measure_latency(variants: List[Variant], feed: Batch, runs: int, progress: bool = True) -> None:
    """Time ``runs`` inferences of every variant on ``feed`` (batch 1), interleaved; store p50 in ms."""
    for variant, p50 in zip(variants, time_models([v.path for v in variants], feed, runs, progress)):
        variant.metrics["latency_p50_ms"] = round(p50, 4)


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
    feed = eval_set.samples.representative()
    measure_latency(variants, feed, latency_runs, progress)
    for variant in variants:
        variant.metrics["size_bytes"] = variant.path.stat().st_size
    return {
        "model": model,
        "evaluation": eval_set.description,
        "latency": {
            "engine": "onnxruntime CPUExecutionProvider, intra-op spinning off",
            "batch": 1,
            "input_shapes": {name: list(array.shape) for name, array in feed.items()},
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
    header = (f"{'variant':34} {'precision':9} {'size MB':>8} {'p50 ms':>8} {'top-1 %':>8} "
              f"{'cosine':>8} {'min cos':>8}")
    lines += [header, "-" * len(header)]
    for v in report["variants"]:
        m = v["metrics"]
        top = f"{m['top1']:.2f}" if "top1" in m else "-"
        cosine = f"{m['cosine_vs_fp32']:.5f}" if "cosine_vs_fp32" in m else "-"
        worst = f"{m['min_cosine_vs_fp32']:.5f}" if "min_cosine_vs_fp32" in m else "-"
        lines.append(
            f"{v['label']:34} {v['precision']:9} {m['size_bytes'] / 1e6:8.3f} "
            f"{m['latency_p50_ms']:8.3f} {top:>8} {cosine:>8} {worst:>8}"
        )
    for target, entry in (report.get("quantization") or {}).items():
        lines += render_candidates(target, entry)
    if report.get("memory"):
        lines.append(f"memory: {report['memory']['memory_mb']} MiB at batch {report['memory']['batch']}")
    lines += [f"note: {note}" for note in report.get("notes", [])]
    return "\n".join(lines)


def _figure(metrics: Dict[str, Any], key: str, digits: int) -> str:
    value = metrics.get(key)
    return "-" if value is None else f"{value:.{digits}f}"


def render_candidates(target: str, entry: Dict[str, Any]) -> List[str]:
    """The INT8 candidates tried for ``target`` as a short table, and the choice."""
    budget = ", ".join(f"{k}={v:g}" for k, v in entry["budget"].items())
    lines = [f"INT8 search for {target} ({entry['scheme']}, budget {budget}): choice {entry['choice']}",
             f"  {'candidate':26} {'p50 ms':>8} {'size MB':>8} {'top-1 drop':>10} {'cosine':>8} {'min cos':>8}  budget"]
    for candidate in entry["candidates"]:
        m = candidate["metrics"]
        p50 = candidate.get("latency_p50_ms")
        lines.append(f"  {candidate['name']:26} {p50 if p50 is not None else float('nan'):8.3f} "
                     f"{candidate['size_bytes'] / 1e6:8.3f} {_figure(m, 'top1_drop', 2):>10} "
                     f"{_figure(m, 'cosine_mean', 5):>8} {_figure(m, 'cosine_min', 5):>8}  "
                     f"{'ok' if candidate['within_budget'] else 'BROKEN'}")
    return lines
