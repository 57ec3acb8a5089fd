"""End to end on the reference model: accuracy kept through INT8 and pruning, per-target schemes."""

from __future__ import annotations

from pathlib import Path
from typing import Tuple

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from edge_runtime.bundle.signing import load_public_key
from edge_runtime.bundle.verify import verify_bundle
from export.models.digits_data import load_digits_splits
from export.models.training import top1_accuracy
from export.pipeline import ExportResult

SPLITS = load_digits_splits()


def _top1(model_path: Path) -> float:
    session = ort.InferenceSession(str(model_path), providers=["CPUExecutionProvider"])
    (logits,) = session.run(None, {"input": SPLITS.test_x})
    return top1_accuracy(logits, SPLITS.test_y)


def test_bundle_verifies_and_lists_both_targets(digits_int8_bundle: ExportResult,
                                                keypair: Tuple[Path, Path]) -> None:
    manifest = verify_bundle(digits_int8_bundle.path, [load_public_key(keypair[1])])
    assert [t.name for t in manifest.targets] == ["x86-cpu", "agx-xavier"]
    assert {a.path for a in manifest.artifacts} == {
        "model.onnx", "report.json",
        "onnx/x86-cpu.int8.onnx", "calib/x86-cpu.calib.json",
        "onnx/agx-xavier.int8.onnx", "calib/agx-xavier.calib.json",
    }
    assert manifest.inputs[0].shape == (-1, 1, 8, 8)


def test_int8_top1_drop_is_at_most_half_a_point(digits_int8_bundle: ExportResult) -> None:
    fp32 = _top1(digits_int8_bundle.path / "model.onnx")
    int8 = _top1(digits_int8_bundle.path / "onnx/x86-cpu.int8.onnx")
    assert fp32 >= 95.0
    assert fp32 - int8 <= 0.5, f"INT8 top-1 {int8:.2f} vs FP32 {fp32:.2f}"
    reported = {v["label"]: v["metrics"]["top1"] for v in digits_int8_bundle.report["variants"]}
    assert reported["x86-cpu int8"] == pytest.approx(int8, abs=1e-3)


def _zero_point_dtypes(path: Path) -> set:
    model = onnx.load(str(path))
    inits = {t.name: t for t in model.graph.initializer}
    found = set()
    for node in model.graph.node:
        if node.op_type == "QuantizeLinear" and len(node.input) == 3:
            zp = onnx.numpy_helper.to_array(inits[node.input[2]])
            found.add((str(zp.dtype), bool(np.all(zp == 0))))
    return found


def test_each_target_gets_its_own_quantization_scheme(digits_int8_bundle: ExportResult) -> None:
    cpu = _zero_point_dtypes(digits_int8_bundle.path / "onnx/x86-cpu.int8.onnx")
    trt = _zero_point_dtypes(digits_int8_bundle.path / "onnx/agx-xavier.int8.onnx")
    assert {dtype for dtype, _ in cpu} == {"uint8"}  # U8S8 for ONNX Runtime CPU
    assert trt == {("int8", True)}  # symmetric S8S8 for TensorRT: every zero point is 0


def test_int8_model_is_smaller_and_report_is_complete(digits_int8_bundle: ExportResult) -> None:
    report = digits_int8_bundle.report
    sizes = {v["label"]: v["metrics"]["size_bytes"] for v in report["variants"]}
    assert sizes["x86-cpu int8"] < 0.5 * sizes["fp32"]
    for variant in report["variants"]:
        assert variant["metrics"]["latency_p50_ms"] > 0
    assert report["compute"]["macs"] > 0 and report["compute"]["params"] > 0
    assert any("agx-xavier" in note for note in report["notes"])


def test_structured_pruning_cuts_flops_and_keeps_accuracy(digits_pruned_bundle: ExportResult) -> None:
    compute = digits_pruned_bundle.report["compute"]
    assert compute["macs_after"] <= 0.75 * compute["macs_before"]
    reported = {v["label"]: v["metrics"]["top1"] for v in digits_pruned_bundle.report["variants"]}
    unpruned = reported["fp32 before pruning (not shipped)"]
    pruned = _top1(digits_pruned_bundle.path / "model.onnx")
    pruned_int8 = _top1(digits_pruned_bundle.path / "onnx/x86-cpu.int8.onnx")
    assert unpruned - pruned <= 1.0, f"pruned {pruned:.2f} vs unpruned {unpruned:.2f}"
    assert unpruned - pruned_int8 <= 1.5
    # the ONNX graph itself is smaller: channels were removed, not zeroed
    conv = next(n for n in onnx.load(str(digits_pruned_bundle.path / "model.onnx")).graph.initializer
                if len(n.dims) == 4)
    assert conv.dims[0] < 32
