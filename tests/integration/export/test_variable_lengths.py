"""A two-input float model exported to INT8 from a directory of .npz samples of three sequence lengths.

The samples are calibrated and evaluated in buckets of one length each (never padded), every input
fed; the report gives the fidelity of the INT8 model to FP32.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Tuple

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from edge_runtime.bundle.signing import load_public_key
from edge_runtime.bundle.verify import verify_bundle

FEATURES, UNITS = 8, 4
LENGTHS = (3, 7, 12)


def _write_model(path: Path) -> Path:
    """x FP32 [batch, seq, 8] @ W + (1 - mask)[..., None] * -1e4, mask FP32 [batch, seq] -> y [batch, seq, 4]."""
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.standard_normal((FEATURES, UNITS)).astype(np.float32), "W"),
             numpy_helper.from_array(np.array(1.0, np.float32), "one"),
             numpy_helper.from_array(np.array(-1e4, np.float32), "big"),
             numpy_helper.from_array(np.array([-1], np.int64), "last")]
    nodes = [helper.make_node("MatMul", ["x", "W"], ["xw"]),
             helper.make_node("Sub", ["one", "mask"], ["masked"]),
             helper.make_node("Mul", ["masked", "big"], ["bias"]),
             helper.make_node("Unsqueeze", ["bias", "last"], ["bias3"]),
             helper.make_node("Add", ["xw", "bias3"], ["y"])]
    graph = helper.make_graph(
        nodes, "masked_matmul",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", "seq", FEATURES]),
         helper.make_tensor_value_info("mask", TensorProto.FLOAT, ["batch", "seq"])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", "seq", UNITS])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def _write_samples(folder: Path) -> None:
    rng = np.random.default_rng(1)
    folder.mkdir()
    for i in range(12):
        length = LENGTHS[i % len(LENGTHS)]
        x = rng.standard_normal((length, FEATURES)).astype(np.float32)
        np.savez(folder / f"sample{i:02d}.npz", x=x, mask=np.ones(length, np.float32))


def test_int8_from_variable_length_samples(tmp_path: Path, keypair: Tuple[Path, Path],
                                           device_configs_dir: Path) -> None:
    model = _write_model(tmp_path / "masked.onnx")
    _write_samples(tmp_path / "calib")
    out = tmp_path / "bundle"
    result = subprocess.run(
        [sys.executable, "-m", "export.cli", "--model", str(model),
         "--config", str(device_configs_dir / "x86-cpu.yaml"),
         "--calib-data", str(tmp_path / "calib"), "--key", str(keypair[0]), "--out", str(out), "--latency-runs", "3"],
        cwd=tmp_path, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    assert "cosine" in result.stdout and "9 calibration samples, 3 held out" in result.stderr

    manifest = verify_bundle(out, [load_public_key(keypair[1])])
    assert [(t.name, t.precision) for t in manifest.targets] == [("x86-cpu", "int8")]
    int8 = out / "onnx" / "x86-cpu.int8.onnx"
    quantized_ops = {"QuantizeLinear", "DynamicQuantizeLinear", "MatMulInteger"}  # static or dynamic INT8
    assert any(n.op_type in quantized_ops for n in onnx.load(str(int8)).graph.node)
    report = json.loads((out / "report.json").read_text())
    metrics = {v["label"]: v["metrics"] for v in report["variants"]}["x86-cpu int8"]
    assert 0.99 <= metrics["min_cosine_vs_fp32"] <= metrics["cosine_vs_fp32"] <= 1.0 + 1e-9
    assert "3 held-out samples" in report["evaluation"]

    # the INT8 model runs at every calibrated length with both inputs
    session = ort.InferenceSession(str(int8), providers=["CPUExecutionProvider"])
    for length in LENGTHS:
        feed = {"x": np.ones((2, length, FEATURES), np.float32), "mask": np.ones((2, length), np.float32)}
        assert session.run(None, feed)[0].shape == (2, length, UNITS)


def test_fp32_export_of_a_two_input_model_feeds_every_input(tmp_path: Path, keypair: Tuple[Path, Path],
                                                            device_configs_dir: Path) -> None:
    """Once a traceback: the report fed only the first input ("Required inputs (['mask']) are missing")."""
    model = _write_model(tmp_path / "masked.onnx")
    result = subprocess.run(
        [sys.executable, "-m", "export.cli", "--model", str(model), "--precision", "fp32",
         "--config", str(device_configs_dir / "x86-cpu.yaml"), "--key", str(keypair[0]),
         "--out", str(tmp_path / "bundle"), "--latency-runs", "3"],
        cwd=tmp_path, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr
    report = json.loads((tmp_path / "bundle" / "report.json").read_text())
    assert report["latency"]["input_shapes"] == {"x": [1, 1, FEATURES], "mask": [1, 1]}
    assert "random inputs" in report["evaluation"]
