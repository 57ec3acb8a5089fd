"""A two-input INT32 add/sub model: nothing to quantize, so an INT8 target keeps FP32 without calibration.

Exported with the x86-cpu config (INT8 by default) and no --calib-data, served by the real runtime
and queried through the unmodified tritonclient: both outputs, batch 2.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Tuple

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper
from runtime_support import start_server

from edge_runtime.bundle.signing import load_public_key
from edge_runtime.bundle.verify import verify_bundle

httpclient = pytest.importorskip("tritonclient.http")


def _write_add_sub(path: Path) -> Path:
    """A INT32 [batch, 4], B INT32 [batch, 4] -> SUM = A + B, DIFF = A - B."""
    graph = helper.make_graph(
        [helper.make_node("Add", ["A", "B"], ["SUM"]), helper.make_node("Sub", ["A", "B"], ["DIFF"])],
        "addsub",
        [helper.make_tensor_value_info(name, TensorProto.INT32, ["batch", 4]) for name in ("A", "B")],
        [helper.make_tensor_value_info(name, TensorProto.INT32, ["batch", 4]) for name in ("SUM", "DIFF")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8  # readable by onnxruntime 1.19 (JetPack 5's Python 3.8)
    onnx.save(model, str(path))
    return path


def test_integer_model_keeps_fp32_exports_and_serves(tmp_path: Path, keypair: Tuple[Path, Path],
                                                     device_configs_dir: Path, runtime_config: Path) -> None:
    model = _write_add_sub(tmp_path / "addsub.onnx")
    out = tmp_path / "repo" / "addsub" / "1"
    result = subprocess.run(
        [sys.executable, "-m", "export.cli", "--model", str(model),
         "--config", str(device_configs_dir / "x86-cpu.yaml"),
         "--key", str(keypair[0]), "--out", str(out), "--latency-runs", "3"],
        cwd=tmp_path, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert "nothing to quantize: kept FP32" in result.stdout
    assert "calibration samples" not in result.stderr  # nothing was calibrated

    manifest = verify_bundle(out, [load_public_key(keypair[1])])
    assert [(t.name, t.precision) for t in manifest.targets] == [("x86-cpu", "fp32")]
    assert {a.kind for a in manifest.artifacts} == {"onnx", "report"}  # no INT8 model, no calibration cache
    report = json.loads((out / "report.json").read_text())
    assert any("nothing to quantize: kept FP32" in note for note in report["notes"])
    assert [v["precision"] for v in report["variants"]] == ["fp32", "fp32"]

    server = start_server(["--repository", str(tmp_path / "repo"), "--config", str(runtime_config)],
                          tmp_path / "server.log")
    try:
        client = httpclient.InferenceServerClient(server.url)
        a = np.array([[1, 2, 3, 4], [-5, 6, 2**20, 0]], np.int32)
        b = np.array([[10, 20, 30, 40], [5, -6, 7, -(2**20)]], np.int32)
        given = [httpclient.InferInput("A", list(a.shape), "INT32"), httpclient.InferInput("B", list(b.shape), "INT32")]
        given[0].set_data_from_numpy(a, binary_data=True)
        given[1].set_data_from_numpy(b, binary_data=True)
        wanted = [httpclient.InferRequestedOutput(name, binary_data=True) for name in ("SUM", "DIFF")]
        answer = client.infer("addsub", given, outputs=wanted)
        np.testing.assert_array_equal(answer.as_numpy("SUM"), a + b)
        np.testing.assert_array_equal(answer.as_numpy("DIFF"), a - b)
        assert answer.as_numpy("SUM").dtype == np.int32
    finally:
        assert server.stop() == 0
