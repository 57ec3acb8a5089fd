"""INT8 quantization's edges: nothing to quantize, shape-inference fallback, no stray files, one-line errors."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import List

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from edge_runtime.config import QuantizationSettings
from export.errors import ExportError
from export.samples import SampleSet
from export.steps.quantize import has_quantizable_ops, quantize_int8

SIDE = 32  # 32 x 32 float weights: over ORT's 1 KiB external-data threshold


def _save(path: Path, nodes: list, inputs: list, outputs: list, inits: list = (), domains: tuple = ()) -> Path:
    graph = helper.make_graph(nodes, path.stem, inputs, outputs, list(inits))
    opsets = [helper.make_opsetid("", 17), *(helper.make_opsetid(d, 1) for d in domains)]
    onnx.save(helper.make_model(graph, opset_imports=opsets), str(path))
    return path


def _vi(name: str, elem: int, dims: list) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, elem, dims)


def _int_add_sub(path: Path) -> Path:
    ab = [_vi("A", TensorProto.INT32, ["batch", 4]), _vi("B", TensorProto.INT32, ["batch", 4])]
    return _save(path, [helper.make_node("Add", ["A", "B"], ["SUM"]), helper.make_node("Sub", ["A", "B"], ["DIFF"])],
                 ab, [_vi("SUM", TensorProto.INT32, ["batch", 4]), _vi("DIFF", TensorProto.INT32, ["batch", 4])])


def _matmul(path: Path, elem: int, weight_dtype: type) -> Path:
    weight = numpy_helper.from_array(np.ones((4, 3), weight_dtype), "W")
    return _save(path, [helper.make_node("MatMul", ["x", "W"], ["y"])], [_vi("x", elem, ["batch", 4])],
                 [_vi("y", elem, ["batch", 3])], [weight])


def _inverse_matmul(path: Path) -> Path:
    """x -> com.microsoft Inverse -> MatMul W: ORT runs it, its symbolic shape inference cannot."""
    weight = numpy_helper.from_array(np.random.default_rng(0).standard_normal((SIDE, SIDE)).astype(np.float32), "W")
    return _save(path, [helper.make_node("Inverse", ["x"], ["inv"], domain="com.microsoft"),
                        helper.make_node("MatMul", ["inv", "W"], ["y"])],
                 [_vi("x", TensorProto.FLOAT, ["batch", SIDE, SIDE])],
                 [_vi("y", TensorProto.FLOAT, ["batch", SIDE, SIDE])],
                 [weight], domains=("com.microsoft",))


def test_integer_graphs_have_nothing_to_quantize(tmp_path: Path) -> None:
    assert not has_quantizable_ops(_int_add_sub(tmp_path / "addsub.onnx"))
    assert not has_quantizable_ops(_matmul(tmp_path / "int_matmul.onnx", TensorProto.INT32, np.int32))
    assert has_quantizable_ops(_matmul(tmp_path / "float_matmul.onnx", TensorProto.FLOAT, np.float32))


def test_float_ops_inside_a_subgraph_count(tmp_path: Path) -> None:
    weight = numpy_helper.from_array(np.ones((4, 4), np.float32), "W")
    branch = helper.make_graph([helper.make_node("MatMul", ["x", "W"], ["y1"])], "then", [],
                               [_vi("y1", TensorProto.FLOAT, ["batch", 4])], [weight])
    other = helper.make_graph([helper.make_node("Identity", ["x"], ["y2"])], "else", [],
                              [_vi("y2", TensorProto.FLOAT, ["batch", 4])])
    node = helper.make_node("If", ["c"], ["y"], then_branch=branch, else_branch=other)
    inputs = [_vi("c", TensorProto.BOOL, []), _vi("x", TensorProto.FLOAT, ["batch", 4])]
    path = _save(tmp_path / "if.onnx", [node], inputs,
                 [_vi("y", TensorProto.FLOAT, ["batch", 4])])
    assert has_quantizable_ops(path)


def _settings() -> QuantizationSettings:
    return QuantizationSettings(scheme="u8s8-qdq")


def _inverse_samples(count: int = 4) -> SampleSet:
    rng = np.random.default_rng(1)
    x = (np.eye(SIDE, dtype=np.float32) * 2 + 0.1 * rng.standard_normal((count, SIDE, SIDE))).astype(np.float32)
    return SampleSet.from_batched({"x": x})


def test_symbolic_shape_failure_falls_back_and_leaves_no_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    model = _inverse_matmul(tmp_path / "inverse.onnx")
    work, scratch, out = tmp_path / "cwd", tmp_path / "tmp", tmp_path / "out"
    for folder in (work, scratch, out):
        folder.mkdir()
    monkeypatch.chdir(work)
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    notices: List[str] = []
    quantize_int8(model, out / "int8.onnx", out / "calib.json", _inverse_samples(), _settings(), progress=False,
                  notice=notices.append)
    assert len(notices) == 1 and "symbolic shape inference failed" in notices[0], notices
    assert "Incomplete symbolic shape inference" in notices[0]
    assert any(n.op_type == "QuantizeLinear" for n in onnx.load(str(out / "int8.onnx")).graph.node)
    assert sorted(p.name for p in out.iterdir()) == ["calib.json", "int8.onnx"]
    assert list(work.iterdir()) == []  # ORT's sym_shape_infer_temp.onnx and <uuid>.data stayed out of the cwd
    assert list(scratch.iterdir()) == []  # and every temporary directory is gone


def test_an_error_in_ort_quantization_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    model = _matmul(tmp_path / "m.onnx", TensorProto.FLOAT, np.float32)
    monkeypatch.chdir(tmp_path)
    wrong = SampleSet.from_batched({"not_x": np.ones((2, 4), np.float32)})  # a feed the model refuses
    with pytest.raises(ExportError, match="INT8 quantization failed") as error:
        quantize_int8(model, tmp_path / "q.onnx", tmp_path / "c.json", wrong, _settings(), progress=False)
    assert "\n" not in str(error.value)


# --- per-channel weights: one scale per output channel ----------------------------------------

OUT_CHANNELS, IN_CHANNELS, CLASSES = 6, 3, 5


def _conv_gemm(path: Path) -> Path:
    """x [batch, 3, 8, 8] -> Conv (6 output channels) -> Flatten -> Gemm (5 outputs, weight [5, 384] transposed)."""
    rng = np.random.default_rng(2)
    conv_w = rng.standard_normal((OUT_CHANNELS, IN_CHANNELS, 3, 3))
    gemm_w = rng.standard_normal((CLASSES, OUT_CHANNELS * 64))
    inits = [numpy_helper.from_array(conv_w.astype(np.float32), "conv_w"),
             numpy_helper.from_array(np.zeros(OUT_CHANNELS, np.float32), "conv_b"),
             numpy_helper.from_array(gemm_w.astype(np.float32), "gemm_w")]
    nodes = [helper.make_node("Conv", ["x", "conv_w", "conv_b"], ["c"], name="conv", pads=[1, 1, 1, 1]),
             helper.make_node("Flatten", ["c"], ["f"], name="flatten"),
             helper.make_node("Gemm", ["f", "gemm_w"], ["y"], name="gemm", transB=1)]
    return _save(path, nodes, [_vi("x", TensorProto.FLOAT, ["batch", IN_CHANNELS, 8, 8])],
                 [_vi("y", TensorProto.FLOAT, ["batch", CLASSES])], inits)


def _weight_scale_shapes(path: Path) -> dict:
    """{node name: shape of the scale of the DequantizeLinear that feeds its weight (input 1)}."""
    model = onnx.load(str(path))
    inits = {init.name: numpy_helper.to_array(init) for init in model.graph.initializer}
    producers = {output: node for node in model.graph.node for output in node.output}
    shapes = {}
    for node in model.graph.node:
        if node.name in ("conv", "gemm"):
            dequantize = producers[node.input[1]]
            assert dequantize.op_type == "DequantizeLinear", (node.name, dequantize.op_type)
            shapes[node.name] = inits[dequantize.input[1]].shape
    return shapes


@pytest.mark.parametrize("scheme", ["u8s8-qdq", "s8s8-qdq"])
def test_per_channel_weights_have_one_scale_per_output_channel(tmp_path: Path, scheme: str) -> None:
    model = _conv_gemm(tmp_path / "convnet.onnx")
    samples = SampleSet.from_batched({"x": np.random.default_rng(3).standard_normal((4, IN_CHANNELS, 8, 8))
                                      .astype(np.float32)})
    quantize_int8(model, tmp_path / "pc.onnx", tmp_path / "pc.json", samples,
                  QuantizationSettings(scheme=scheme, per_channel=True), progress=False)
    assert _weight_scale_shapes(tmp_path / "pc.onnx") == {"conv": (OUT_CHANNELS,), "gemm": (CLASSES,)}
    quantize_int8(model, tmp_path / "pt.onnx", tmp_path / "pt.json", samples,
                  QuantizationSettings(scheme=scheme, per_channel=False), progress=False)
    assert _weight_scale_shapes(tmp_path / "pt.onnx") == {"conv": (), "gemm": ()}
