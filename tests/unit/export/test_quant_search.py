"""The INT8 search on a small masked-attention graph: held-out data, both evaluation modes, determinism,
the sensitivity pass, the fallback when no candidate meets the budget, and the gate before signing."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Iterator, Tuple

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from edge_runtime.bundle.manifest import TensorSpec
from edge_runtime.config import QuantizationSettings, load_device_config
from export.errors import CalibrationDataError, ExportError
from export.samples import SampleSet
from export.steps import quantize
from export.steps.accuracy_budget import AccuracyBudget
from export.steps.held_out import HeldOut, padded_batches, split_off, with_labels
from export.steps.int8_targets import Int8Targets, SearchOptions
from export.steps.quant_search import SearchResult, report_entry, search

D = 8
INPUTS = (TensorSpec("x", "float32", (-1, -1, D)), TensorSpec("mask", "int64", (-1, -1)))
OUTPUTS = (TensorSpec("y", "float32", (-1, D)),)
SETTINGS = QuantizationSettings(scheme="u8s8-qdq")


def _model(path: Path) -> Path:
    """x [b, s, 8], int64 mask [b, s] -> masked self-attention over x -> mean over s -> y [b, 8]."""
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.standard_normal((D, D)).astype(np.float32), name) for name in ("Wq", "Wo")]
    inits += [numpy_helper.from_array(np.array(1.0, np.float32), "one"),
              numpy_helper.from_array(np.array(np.finfo(np.float32).min, np.float32), "big"),
              numpy_helper.from_array(np.array([1], np.int64), "axis1")]
    n = helper.make_node
    nodes = [n("MatMul", ["x", "Wq"], ["q"], name="query"),
             n("Transpose", ["x"], ["xt"], name="xt", perm=[0, 2, 1]),
             n("MatMul", ["q", "xt"], ["scores"], name="scores"),
             n("Cast", ["mask"], ["maskf"], name="mask_cast", to=TensorProto.FLOAT),
             n("Sub", ["one", "maskf"], ["inverted"], name="mask_sub"),
             n("Mul", ["inverted", "big"], ["bias"], name="mask_mul"),
             n("Unsqueeze", ["bias", "axis1"], ["bias3"], name="mask_unsqueeze"),
             n("Add", ["scores", "bias3"], ["masked"], name="mask_add"),
             n("Softmax", ["masked"], ["probs"], name="softmax", axis=-1),
             n("MatMul", ["probs", "x"], ["context"], name="context"),
             n("MatMul", ["context", "Wo"], ["out"], name="out"),
             n("ReduceMean", ["out"], ["y"], name="pool", axes=[1], keepdims=0)]
    graph = helper.make_graph(
        nodes, "masked_attention",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", "seq", D]),
         helper.make_tensor_value_info("mask", TensorProto.INT64, ["batch", "seq"])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", D])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def _samples(count: int, seed: int) -> SampleSet:
    rng = np.random.default_rng(seed)
    samples = []
    for _ in range(count):
        length = int(rng.integers(3, 10))
        samples.append({"x": rng.standard_normal((length, D)).astype(np.float32), "mask": np.ones(length, np.int64)})
    return SampleSet(tuple(samples), np.arange(count) % 2)


@contextlib.contextmanager
def _prepared(tmp_path: Path) -> Iterator[Tuple[Path, Path, Path, HeldOut]]:
    fp32 = _model(tmp_path / "model.onnx")
    held = HeldOut(_samples(12, 2), INPUTS, OUTPUTS, "test")
    held.reference(fp32)
    with quantize.workspace() as workdir:
        yield fp32, quantize.prepare(fp32, workdir, lambda message: None), workdir, held


def _run(prepared: Path, fp32: Path, workdir: Path, held: HeldOut, budget: AccuracyBudget,
         max_trials: int = 2) -> SearchResult:
    return search(prepared, fp32, workdir, SETTINGS, _samples(24, 1), held, budget, dynamic=True,
                  max_trials=max_trials, latency_runs=2, progress=False)


def _figures(result: SearchResult) -> list:
    return [(c.name, c.metrics, c.violations) for c in result.candidates]


def test_the_search_is_deterministic_and_evaluates_both_modes(tmp_path: Path) -> None:
    budget = AccuracyBudget({"cosine-mean": 0.9})
    with _prepared(tmp_path) as (fp32, prepared, workdir, held):
        first = _run(prepared, fp32, workdir, held, budget)
        second = _run(prepared, fp32, workdir, held, budget)
    assert [c.name for c in first.candidates] == ["static-all", "static-policy", "dynamic"]
    assert _figures(first) == _figures(second)
    assert set(first.candidates[1].metrics["modes"]) == {"natural", "padded"}
    assert first.choice is not None and first.choice.within_budget
    assert all(c.latency_p50_ms is not None and c.latency_p50_ms > 0 for c in first.candidates)
    assert "zero-padded mixed-length" in held.description()


def test_an_impossible_budget_has_no_int8_choice_after_a_bounded_sensitivity_pass(tmp_path: Path) -> None:
    budget = AccuracyBudget({"cosine-mean": 1.0})
    with _prepared(tmp_path) as (fp32, prepared, workdir, held):
        result = _run(prepared, fp32, workdir, held, budget, max_trials=2)
        again = _run(prepared, fp32, workdir, held, budget, max_trials=2)
    names = [c.name for c in result.candidates]
    assert names == ["static-all", "static-policy", "dynamic", "static-policy-fp32:1", "static-policy-fp32:2"]
    assert result.choice is None and not any(c.within_budget for c in result.candidates)
    assert _figures(result) == _figures(again)  # the sensitivity order too
    put_back = [n for n, step in result.candidates[-1].plan.items() if "sensitivity pass" in step.reason]
    assert len(put_back) == 2 and all(result.policy[n].precision == "int8" for n in put_back)
    entry = report_entry(result, SETTINGS, 24, budget, held.description(), "fp32")
    assert entry["choice"] == "fp32" and entry["budget"] == {"cosine_mean": 1.0}
    assert {node["precision"] for node in entry["nodes"].values()} == {"fp32"}
    json.dumps(entry)  # report.json material


def test_the_gate_before_signing_measures_the_shipped_file_again(tmp_path: Path, device_configs_dir: Path) -> None:
    config = load_device_config(device_configs_dir / "x86-cpu.yaml")
    staging = tmp_path / "staging"
    staging.mkdir()
    options = SearchOptions({"cosine-mean": 0.9}, max_trials=0, latency_runs=2, progress=False)
    with _prepared(tmp_path) as (fp32, prepared, workdir, held):
        int8 = Int8Targets(options, _samples(24, 1), held, prepared, workdir, fp32, lambda message: None)
        artifacts: list = []
        assert int8.run(config, staging, artifacts, []) == "int8"
        int8.assert_within_budget()  # as shipped: within
        assert int8.metadata()["x86-cpu"]["scheme"] == "u8s8-qdq"
        int8.budget = AccuracyBudget({"cosine-mean": 1.0})
        with pytest.raises(ExportError, match="refusing to sign the bundle"):
            int8.assert_within_budget()


def test_padded_batches_pad_dynamic_axes_with_zeros_in_sample_order() -> None:
    samples = _samples(10, 3)
    batches = list(padded_batches(samples, INPUTS, batch=4))
    assert [indices for indices, _ in batches] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    indices, feed = batches[0]
    longest = max(len(samples.samples[i]["mask"]) for i in indices)
    assert feed["x"].shape == (4, longest, D) and feed["mask"].shape == (4, longest)
    for row, index in enumerate(indices):
        length = len(samples.samples[index]["mask"])
        np.testing.assert_array_equal(feed["x"][row, :length], samples.samples[index]["x"])
        assert not feed["x"][row, length:].any() and not feed["mask"][row, length:].any()


def test_padded_mode_only_where_lengths_vary() -> None:
    fixed = SampleSet.from_batched({"x": np.ones((4, 3, D), np.float32), "mask": np.ones((4, 3), np.int64)})
    assert not HeldOut(fixed, INPUTS, OUTPUTS, "t").padded_mode
    assert HeldOut(_samples(6, 0), INPUTS, OUTPUTS, "t").padded_mode
    dynamic_output = (TensorSpec("y", "float32", (-1, -1, D)),)
    held = HeldOut(_samples(6, 0), INPUTS, dynamic_output, "t")
    assert not held.padded_mode and held.description().startswith("natural-length batches")


def test_split_off_is_seeded_and_disjoint() -> None:
    samples = _samples(20, 4)
    calib, held = split_off(samples, seed=5)
    assert (len(calib), len(held)) == (15, 5)
    again = split_off(samples, seed=5)[1]
    assert [s["x"].tobytes() for s in held.samples] == [s["x"].tobytes() for s in again.samples]
    keys = {s["x"].tobytes() for s in calib.samples}
    assert not keys & {s["x"].tobytes() for s in held.samples}
    assert held.labels is not None and len(held.labels) == 5
    with pytest.raises(CalibrationDataError, match="at least 2"):
        split_off(samples.head(1), seed=0)


def test_labels_come_from_labels_json_beside_the_samples(tmp_path: Path) -> None:
    for i in range(3):
        np.savez(tmp_path / f"s{i}.npz", x=np.ones((2, D), np.float32))
    (tmp_path / "labels.json").write_text(json.dumps({"s0.npz": 1, "s1.npz": 0, "s2.npz": 1}))
    unlabelled = SampleSet(tuple({"x": np.ones((2, D), np.float32)} for _ in range(3)))
    assert list(with_labels(unlabelled, tmp_path).labels) == [1, 0, 1]  # type: ignore[arg-type]
    (tmp_path / "labels.json").write_text(json.dumps({"s0.npz": 1}))
    with pytest.raises(CalibrationDataError, match=r"no label for s1\.npz"):
        with_labels(unlabelled, tmp_path)
