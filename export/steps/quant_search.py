"""Accuracy-aware INT8: quantize candidates, keep those within the budget, ship the fastest measured.

Candidates, each quantized from the same pre-processed FP32 model with the same calibration samples:

* ``static-all``: static QDQ on every op ORT quantizes by default, what the export used to do
  (kept as the naive reference: on transformers it breaks most budgets);
* ``static-policy``: the target's op policy (:mod:`export.steps.quant_policy`);
* ``dynamic``: ``quantize_dynamic`` on MatMul/Gemm weights (ONNX Runtime CPU targets only, and only
  for graphs whose INT8 work is all MatMul/Gemm: dynamic INT8 would leave every Conv in FP32);
* when ``static-policy`` breaks the budget, a greedy sensitivity pass: ``static-policy-fp32:<k>``
  puts back the ``k`` most harmful INT8 nodes, k = 1, 2, ... until one meets the budget or
  ``max_trials`` is reached.

A node's harm is measured by a deterministic proxy, one run and no extra quantization: on the
held-out batches, the relative L2 error vs FP32 of the node's output in the ``static-policy`` model
minus the largest such error of its activation inputs, i.e. the error the node itself adds. Ties
go by graph order. Accuracy figures are the same on every run for a fixed seed; only the pick by
measured p50 latency (interleaved, one representative sample) may vary, and it is reported with
its figures. If no candidate meets the budget there is no INT8 choice: the caller ships FP32 (ORT)
or FP16 (TensorRT) and says so.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np
from tqdm import tqdm

from edge_runtime.config import QuantizationSettings
from export.samples import Batch, SampleSet
from export.steps import quantize
from export.steps.accuracy_budget import AccuracyBudget
from export.steps.held_out import HeldOut, padded_batches
from export.steps.quant_policy import (
    INT8_OPS,
    NodePlan,
    excluded_nodes,
    float_output_ops,
    int8_nodes,
    node_plan,
    with_fp32,
)

PROBE_BATCH = 16
Notice = Callable[[str], None]


@dataclass
class Candidate:
    """One quantized model tried: its file, plan, accuracy, latency and size."""

    name: str
    path: Path
    plan: Dict[str, NodePlan]
    cache_path: Optional[Path] = None  # calibration ranges (static candidates)
    metrics: Dict[str, Any] = field(default_factory=dict)
    violations: List[str] = field(default_factory=list)
    latency_p50_ms: Optional[float] = None
    size_bytes: int = 0

    @property
    def within_budget(self) -> bool:
        return not self.violations

    def as_report(self) -> Dict[str, Any]:
        return {"name": self.name, "metrics": self.metrics, "latency_p50_ms": self.latency_p50_ms,
                "size_bytes": self.size_bytes, "within_budget": self.within_budget,
                **({"violations": self.violations} if self.violations else {})}


@dataclass
class SearchResult:
    """Every candidate tried for one scheme, the choice (None: no INT8 meets the budget) and FP32's p50."""

    scheme: str
    candidates: List[Candidate]
    choice: Optional[Candidate]
    fp32_latency_p50_ms: float
    policy: Dict[str, NodePlan]


def search(prepared: Path, fp32_path: Path, workdir: Path, settings: QuantizationSettings, calibration: SampleSet,
           held_out: HeldOut, budget: AccuracyBudget, *, dynamic: bool, max_trials: int, latency_runs: int,
           progress: bool = True, label: str = "") -> SearchResult:
    """Try the candidates for ``settings.scheme`` in ``workdir`` and pick the fastest within ``budget``."""
    policy = node_plan(prepared, settings.scheme)
    bar = tqdm(total=3 if dynamic else 2, desc=f"INT8 search {label}".strip(), unit="trial", disable=not progress,
               leave=False)

    def trial(name: str, plan: Dict[str, NodePlan], op_types: Optional[Sequence[str]]) -> Candidate:
        slug = name.replace(":", "-")
        candidate = Candidate(name, workdir / f"{settings.scheme}.{slug}.onnx", plan,
                              workdir / f"{settings.scheme}.{slug}.calib.json")
        quantize.quantize_static_model(prepared, candidate.path, candidate.cache_path, calibration, settings,
                                       op_types=op_types, exclude=excluded_nodes(plan) if op_types else (),
                                       float_outputs=float_output_ops(settings.scheme) if op_types else (),
                                       progress=False)
        return _measured(candidate, held_out, budget, bar)

    candidates = [trial("static-all", _naive_plan(policy), None),
                  trial("static-policy", policy, INT8_OPS)]
    int8_ops = {policy[name].op for name in int8_nodes(policy)}
    if dynamic and int8_ops and int8_ops <= {"MatMul", "Gemm"}:  # with Conv, static wins: dynamic skips convs
        plan = _dynamic_plan(policy)
        candidate = Candidate("dynamic", workdir / f"{settings.scheme}.dynamic.onnx", plan)
        quantize.quantize_dynamic_model(prepared, candidate.path)
        candidates.append(_measured(candidate, held_out, budget, bar))
    if not candidates[1].within_budget and max_trials > 0:
        order = node_harm(prepared, candidates[1].path, held_out, int8_nodes(policy))
        bar.total += min(max_trials, max(0, len(order) - 1))
        for k in range(1, min(max_trials, len(order) - 1) + 1):
            reason = f"put back by the sensitivity pass (among the {k} most harmful INT8 nodes)"
            candidates.append(trial(f"static-policy-fp32:{k}", with_fp32(policy, [n for n, _ in order[:k]], reason),
                                    INT8_OPS))
            if candidates[-1].within_budget:
                break
    bar.close()
    timings = _time(fp32_path, candidates, held_out, latency_runs, progress)
    within = [c for c in candidates if c.within_budget]
    choice = min(within, key=lambda c: (c.latency_p50_ms or 0.0, c.name)) if within else None
    return SearchResult(settings.scheme, candidates, choice, timings, policy)


def _measured(candidate: Candidate, held_out: HeldOut, budget: AccuracyBudget, bar: Any) -> Candidate:
    candidate.size_bytes = candidate.path.stat().st_size
    candidate.metrics = held_out.measure(candidate.path)
    candidate.violations = budget.check(candidate.metrics)
    bar.update(1)
    return candidate


def _time(fp32_path: Path, candidates: List[Candidate], held_out: HeldOut, runs: int, progress: bool) -> float:
    from export.report import time_models

    p50s = time_models([fp32_path, *(c.path for c in candidates)], held_out.samples.representative(), runs,
                       progress)
    for candidate, p50 in zip(candidates, p50s[1:]):
        candidate.latency_p50_ms = round(p50, 4)
    return round(p50s[0], 4)


def _naive_plan(policy: Mapping[str, NodePlan]) -> Dict[str, NodePlan]:
    """static-all's plan: ORT quantizes whatever it has a QDQ rule for (the report says so)."""
    return {name: NodePlan(step.op, "int8" if step.op in INT8_OPS and step.precision == "int8" else "auto",
                           "static-all: every op ORT's quantizer handles by default") for name, step in policy.items()}


def _dynamic_plan(policy: Mapping[str, NodePlan]) -> Dict[str, NodePlan]:
    return {name: (NodePlan(step.op, "int8", "dynamic INT8: int8 weights, activations quantized per run")
                   if step.op in ("MatMul", "Gemm") and step.precision == "int8" else step)
            for name, step in policy.items()}


def node_harm(fp32_path: Path, qdq_path: Path, held_out: HeldOut, nodes: Sequence[str]) -> List[Tuple[str, float]]:
    """INT8 ``nodes`` of ``qdq_path`` by the error each adds vs ``fp32_path`` (the pre-processed FP32 model
    it was quantized from: same node names), most harmful first (see the module doc)."""
    import onnx

    graph = onnx.load(str(qdq_path), load_external_data=False).graph
    by_name = {node.name: node for node in graph.node}
    fp32_graph = onnx.load(str(fp32_path), load_external_data=False).graph
    fp32_nodes = {node.name: node for node in fp32_graph.node}
    initializers = {t.name for t in fp32_graph.initializer}
    wanted = [n for n in nodes if n in by_name and n in fp32_nodes]
    io = {n: ([i for i in fp32_nodes[n].input if i and i not in initializers], fp32_nodes[n].output[0])
          for n in wanted}
    tensors = sorted({t for ins, out in io.values() for t in (*ins, out)})
    errors = _tensor_errors(fp32_path, qdq_path, tensors, held_out)
    harm = [(n, round(errors.get(out, 0.0) - max([errors.get(i, 0.0) for i in ins], default=0.0), 9))
            for n, (ins, out) in io.items()]
    order = {n: i for i, n in enumerate(wanted)}
    return sorted(harm, key=lambda item: (-item[1], order[item[0]]))


def _with_outputs(path: Path, tensors: Sequence[str], out: Path) -> Path:
    """A copy of ``path`` that also outputs ``tensors`` (float, shape left to ORT)."""
    import onnx

    model = onnx.load(str(path))
    existing = {o.name for o in model.graph.output}
    graph_inputs = {i.name for i in model.graph.input}
    model.graph.output.extend(onnx.helper.make_tensor_value_info(t, onnx.TensorProto.FLOAT, None)
                              for t in tensors if t not in existing and t not in graph_inputs)
    onnx.save_model(model, str(out), save_as_external_data=True, all_tensors_to_one_file=True,
                    location=out.name + ".data")
    return out


def _tensor_errors(fp32_path: Path, qdq_path: Path, tensors: Sequence[str], held_out: HeldOut) -> Dict[str, float]:
    """Relative L2 error of each tensor in the QDQ model vs FP32, over every held-out batch of both modes."""
    from export.report import session

    directory = qdq_path.parent
    sessions = [session(_with_outputs(p, tensors, directory / f"{qdq_path.stem}.probe-{i}.onnx"))
                for i, p in enumerate((fp32_path, qdq_path))]
    names = [o.name for o in sessions[0].get_outputs()]
    feeds: List[Batch] = list(held_out.samples.batches(PROBE_BATCH))
    if held_out.padded_mode:
        feeds += [feed for _, feed in padded_batches(held_out.samples, held_out.inputs)]
    diff = dict.fromkeys(names, 0.0)
    ref = dict.fromkeys(names, 0.0)
    for feed in feeds:
        want, got = (dict(zip(names, s.run(names, feed))) for s in sessions)
        for name in names:
            a, b = np.asarray(got[name], np.float64), np.asarray(want[name], np.float64)
            if a.shape == b.shape and a.dtype.kind == "f":
                diff[name] += float(np.square(a - b).sum())
                ref[name] += float(np.square(b).sum())
    return {name: float(np.sqrt(diff[name] / ref[name])) if ref[name] else float(np.sqrt(diff[name]))
            for name in names if name in tensors}


def report_entry(result: SearchResult, settings: QuantizationSettings, calibration_samples: int,
                 budget: AccuracyBudget, evaluation: str, fallback: str) -> Dict[str, Any]:
    """report.json's ``quantization[<target>]``: scheme, calibration, budget, candidates, choice and nodes.

    ``fallback`` ("fp32" or "fp16") is the choice when no candidate met the budget.
    """
    if result.choice is not None:
        choice, plan = result.choice.name, result.choice.plan
    else:
        choice = fallback
        reason = f"no INT8 candidate met the budget: {fallback.upper()} " + (
            "(TensorRT builds the FP32 ONNX in FP16)" if fallback == "fp16" else "")
        plan = {name: NodePlan(step.op, fallback, reason.strip()) for name, step in result.policy.items()}
    return {
        "scheme": result.scheme,
        "calibration": {"method": settings.calibration_method, "samples": calibration_samples},
        "budget": budget.as_report(),
        "evaluation": evaluation,
        "fp32_latency_p50_ms": result.fp32_latency_p50_ms,
        "candidates": [c.as_report() for c in result.candidates],
        "choice": choice,
        "nodes": {name: step.as_report() for name, step in plan.items()},
    }
