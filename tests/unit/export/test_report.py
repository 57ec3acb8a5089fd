"""The report feeds every input and compares every output, per sample, across variable lengths."""

from __future__ import annotations

from pathlib import Path
from typing import List

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from export.errors import ExportError
from export.report import EvalSet, Variant, build_report, evaluate, fidelity, render_report, run_samples, session
from export.samples import SampleSet

SCALE = np.float32(1.1)


def _two_in_two_out(path: Path, scale: float = 1.0) -> Path:
    """SUM = A + B and PROD = A * B * scale, inputs and outputs float32 [batch, seq]."""
    graph = helper.make_graph(
        [helper.make_node("Add", ["A", "B"], ["SUM"]),
         helper.make_node("Mul", ["A", "B"], ["AB"]),
         helper.make_node("Mul", ["AB", "S"], ["PROD"])],
        "two",
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, ["batch", "seq"]) for n in ("A", "B")],
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, ["batch", "seq"]) for n in ("SUM", "PROD")],
        [numpy_helper.from_array(np.array(scale, np.float32), "S")],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


def _samples(lengths: List[int], labels: bool = False) -> SampleSet:
    rng = np.random.default_rng(0)
    samples = tuple({"A": rng.standard_normal(n).astype(np.float32), "B": rng.standard_normal(n).astype(np.float32)}
                    for n in lengths)
    return SampleSet(samples, np.zeros(len(lengths), np.int64) if labels else None)


def test_run_samples_feeds_every_input_and_keeps_sample_order(tmp_path: Path) -> None:
    samples = _samples([3, 5, 3, 2, 5])
    outputs = run_samples(session(_two_in_two_out(tmp_path / "m.onnx")), samples)
    for sample, (total, product) in zip(samples.samples, outputs, strict=True):
        np.testing.assert_allclose(total, sample["A"] + sample["B"], rtol=1e-6)
        np.testing.assert_allclose(product, sample["A"] * sample["B"], rtol=1e-6)


def test_evaluate_compares_every_output_per_sample(tmp_path: Path) -> None:
    samples = _samples([4, 7, 4, 7, 2])
    variants = [Variant("fp32", _two_in_two_out(tmp_path / "a.onnx"), "fp32"),
                Variant("scaled", _two_in_two_out(tmp_path / "b.onnx", float(SCALE)), "int8")]
    evaluate(variants, EvalSet(samples, "test"))
    cosines, worst = [], 0.0
    for s in samples.samples:
        ref = np.concatenate([s["A"] + s["B"], s["A"] * s["B"]]).astype(np.float64)
        got = np.concatenate([s["A"] + s["B"], s["A"] * s["B"] * SCALE]).astype(np.float64)
        cosines.append(ref @ got / (np.linalg.norm(ref) * np.linalg.norm(got)))
        worst = max(worst, float(np.abs(ref - got).max()))
    metrics = variants[1].metrics
    assert metrics["cosine_vs_fp32"] == pytest.approx(np.mean(cosines), rel=1e-6)
    assert metrics["min_cosine_vs_fp32"] == pytest.approx(min(cosines), rel=1e-6)
    assert metrics["max_abs_error_vs_fp32"] == pytest.approx(worst, rel=1e-5)
    assert metrics["min_cosine_vs_fp32"] < metrics["cosine_vs_fp32"] < 1.0
    assert variants[0].metrics == {}  # the reference itself


def test_build_report_times_all_inputs_and_counts_top1(tmp_path: Path) -> None:
    samples = _samples([6, 6, 6], labels=True)
    variants = [Variant("fp32", _two_in_two_out(tmp_path / "a.onnx"), "fp32"),
                Variant("other", _two_in_two_out(tmp_path / "b.onnx", 2.0), "int8")]
    report = build_report(model="two", variants=variants, eval_set=EvalSet(samples, "labelled"), latency_runs=2,
                          compute={}, notes=["a note"], progress=False)
    assert report["latency"]["input_shapes"] == {"A": [1, 6], "B": [1, 6]}
    for variant in report["variants"]:
        assert variant["metrics"]["latency_p50_ms"] > 0 and "top1" in variant["metrics"]
    text = render_report(report)
    assert "min cos" in text and "note: a note" in text
    with pytest.raises(ExportError, match="logits of one shape"):
        evaluate(variants, EvalSet(_samples([3, 6], labels=True), "variable lengths with labels"))


def test_identical_zero_outputs_have_cosine_1() -> None:
    zero = [[np.zeros(3, np.int32), np.zeros(2, np.int32)]]
    assert fidelity(zero, zero)["min_cosine_vs_fp32"] == 1.0
    assert fidelity([[np.ones(3), np.ones(2)]], zero)["cosine_vs_fp32"] == 0.0


def test_a_feed_the_model_refuses_is_one_line(tmp_path: Path) -> None:
    bad = SampleSet(({"A": np.zeros(3, np.float32), "B": np.zeros(4, np.float32)},))
    with pytest.raises(ExportError, match="running the model failed") as error:
        run_samples(session(_two_in_two_out(tmp_path / "m.onnx")), bad)
    assert "\n" not in str(error.value)
