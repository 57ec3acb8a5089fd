"""INT8 quantization's edges: nothing to quantize, shape-inference fallback, no stray files, one-line errors."""

from __future__ import annotations

import re
import tempfile
from pathlib import Path
from typing import Any, Iterator, List, Optional, Sequence

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from edge_runtime.config import QuantizationSettings
from export.errors import ExportError
from export.samples import SampleSet
from export.steps.quantize import (
    calibration_reader,
    fixed_batch,
    has_quantizable_ops,
    one_line,
    prepare,
    quantize_dynamic_model,
    quantize_int8,
    quantize_static_model,
    workspace,
)

SIDE = 32  # 32 x 32 float weights: over ORT's 1 KiB external-data threshold


def _save(path: Path, nodes: list, inputs: list, outputs: list, inits: Sequence = (), domains: tuple = ()) -> Path:
    graph = helper.make_graph(nodes, path.stem, inputs, outputs, list(inits))
    opsets = [helper.make_opsetid("", 17), *(helper.make_opsetid(d, 1) for d in domains)]
    onnx.save(helper.make_model(graph, opset_imports=opsets), str(path))
    return path


def _vi(name: str, elem: int, dims: Optional[list]) -> onnx.ValueInfoProto:
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
    with pytest.raises(ExportError) as error:
        quantize_int8(model, tmp_path / "q.onnx", tmp_path / "c.json", wrong, _settings(), progress=False)
    assert re.fullmatch(r"INT8 quantization failed: ValueError: [^\n]*\['not_x'\][^\n]*", str(error.value)), error.value


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


# --- one-line errors ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "error, line",
    [
        (Exception("boom\nsecond line"), "boom"),  # ORT's bare Exception: its text alone
        (Exception("  \n"), "Exception"),  # no text: the type names it
        (ValueError("bad value\nmore"), "ValueError: bad value"),
        (ValueError(""), "ValueError"),
        (RuntimeError("MAX"), "RuntimeError: MAX"),  # text ending in X is kept whole
    ],
)
def test_one_line_keeps_the_first_line_and_names_the_type(error: BaseException, line: str) -> None:
    assert one_line(error) == line


# --- what counts as quantizable -------------------------------------------------------------------


def test_a_matmul_of_two_float_inputs_counts(tmp_path: Path) -> None:
    inputs = [_vi("a", TensorProto.FLOAT, ["batch", 4]), _vi("b", TensorProto.FLOAT, [4, 3])]
    path = _save(tmp_path / "inputs.onnx", [helper.make_node("MatMul", ["a", "b"], ["y"])], inputs,
                 [_vi("y", TensorProto.FLOAT, ["batch", 3])])
    assert has_quantizable_ops(path)


def test_a_matmul_of_two_float_constants_counts(tmp_path: Path) -> None:
    inits = [numpy_helper.from_array(np.ones((2, 4), np.float32), "A"),
             numpy_helper.from_array(np.ones((4, 3), np.float32), "B")]
    path = _save(tmp_path / "constants.onnx", [helper.make_node("MatMul", ["A", "B"], ["y"])], [],
                 [_vi("y", TensorProto.FLOAT, [2, 3])], inits)
    assert has_quantizable_ops(path)


def test_a_matmul_in_the_ai_onnx_domain_counts(tmp_path: Path) -> None:
    weight = numpy_helper.from_array(np.ones((4, 3), np.float32), "W")
    path = _save(tmp_path / "domain.onnx", [helper.make_node("MatMul", ["x", "W"], ["y"], domain="ai.onnx")],
                 [_vi("x", TensorProto.FLOAT, ["batch", 4])], [_vi("y", TensorProto.FLOAT, ["batch", 3])], [weight])
    assert has_quantizable_ops(path)


def test_a_matmul_on_tensors_of_unknown_type_counts(tmp_path: Path) -> None:
    """An int64 input through a custom op nobody can type: the MatMul after it may well be float."""
    nodes = [helper.make_node("Embed", ["ids"], ["e"], domain="custom.ops"),
             helper.make_node("MatMul", ["e", "e"], ["y"])]
    path = _save(tmp_path / "unknown.onnx", nodes, [_vi("ids", TensorProto.INT64, ["batch", 4])],
                 [_vi("y", TensorProto.FLOAT, None)], domains=("custom.ops",))
    assert has_quantizable_ops(path)


def test_float_ops_inside_a_list_of_subgraphs_count(tmp_path: Path) -> None:
    weight = numpy_helper.from_array(np.ones((4, 4), np.float32), "W")
    plain = helper.make_graph([helper.make_node("Identity", ["x"], ["y1"])], "plain", [],
                              [_vi("y1", TensorProto.FLOAT, ["batch", 4])])
    branch = helper.make_graph([helper.make_node("MatMul", ["x", "W"], ["y2"])], "matmul", [],
                               [_vi("y2", TensorProto.FLOAT, ["batch", 4])], [weight])
    node = helper.make_node("Switch", ["x"], ["y"], domain="custom.ops", branches=[plain, branch])
    path = _save(tmp_path / "graphs.onnx", [node], [_vi("x", TensorProto.FLOAT, ["batch", 4])],
                 [_vi("y", TensorProto.FLOAT, ["batch", 4])], domains=("custom.ops",))
    assert has_quantizable_ops(path)


@pytest.mark.parametrize("error", [onnx.shape_inference.InferenceError, onnx.checker.ValidationError, ValueError])
def test_a_graph_shape_inference_refuses_is_still_checked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                          error: type) -> None:
    def refuse(model: onnx.ModelProto) -> onnx.ModelProto:
        raise error("shape inference refused this graph")

    monkeypatch.setattr(onnx.shape_inference, "infer_shapes", refuse)
    assert has_quantizable_ops(_matmul(tmp_path / "float_matmul.onnx", TensorProto.FLOAT, np.float32))


def _without_weights(path: Path) -> Path:
    """``path`` saved again with its weights in an external file, then that file deleted."""
    model = onnx.load(str(path))
    light = path.with_name("light.onnx")
    onnx.save_model(model, str(light), save_as_external_data=True, location="light.data", size_threshold=0)
    light.with_name("light.data").unlink()
    return light


def test_the_graph_checks_read_no_weights(tmp_path: Path) -> None:
    light = _without_weights(_matmul(tmp_path / "float_matmul.onnx", TensorProto.FLOAT, np.float32))
    assert has_quantizable_ops(light)
    assert fixed_batch(light, 16) == 16


@pytest.mark.parametrize(
    "inputs, wanted, batch",
    [
        ([["batch", 4]], 16, 16),  # a dynamic batch axis: the wanted batch
        ([[1, 4]], 16, 1),  # fixed to 1
        ([[3, 4]], 16, 3),
        ([[3, 4]], 2, 2),  # fixed larger than wanted
        ([["batch", 4], [2, 4]], 16, 2),  # the smallest fixed batch of all inputs
        ([[], ["batch", 4]], 16, 16),  # a scalar input has no batch axis
    ],
)
def test_fixed_batch_follows_the_inputs_batch_axes(tmp_path: Path, inputs: list, wanted: int, batch: int) -> None:
    values = [_vi(f"in{index}", TensorProto.FLOAT, dims) for index, dims in enumerate(inputs)]
    nodes = [helper.make_node("Identity", [value.name], [f"out{index}"]) for index, value in enumerate(values)]
    outputs = [_vi(f"out{index}", TensorProto.FLOAT, None) for index in range(len(values))]
    assert fixed_batch(_save(tmp_path / "inputs.onnx", nodes, values, outputs), wanted) == batch


def test_fixed_batch_ignores_weights_listed_as_inputs(tmp_path: Path) -> None:
    """Older exporters list initializers among the graph inputs: a [4, 3] weight fixes no batch."""
    weight = numpy_helper.from_array(np.ones((4, 3), np.float32), "W")
    path = _save(tmp_path / "old.onnx", [helper.make_node("MatMul", ["x", "W"], ["y"])],
                 [_vi("x", TensorProto.FLOAT, ["batch", 4]), _vi("W", TensorProto.FLOAT, [4, 3])],
                 [_vi("y", TensorProto.FLOAT, ["batch", 3])], [weight])
    assert fixed_batch(path, 16) == 16


# --- calibration feed and progress bar ------------------------------------------------------------


def _positive_samples(count: int = 4) -> SampleSet:
    """All-positive images for the conv net: an asymmetric activation range."""
    return SampleSet.from_batched({"x": np.random.default_rng(3).random((count, IN_CHANNELS, 8, 8))
                                   .astype(np.float32)})


def test_the_calibration_reader_feeds_batches_under_a_bar_that_leaves_no_line(
        capsys: pytest.CaptureFixture) -> None:
    reader = calibration_reader(_positive_samples(), 3, True, "calib")
    assert [batch["x"].shape[0] for batch in iter(reader.get_next, None)] == [3, 1]
    bar = capsys.readouterr().err
    assert "calib:   0%|" in bar and "| 0/4 [" in bar and "sample/s]" in bar, bar
    assert "\n" not in bar  # leave=False: the finished bar is wiped, not left on screen


def test_the_calibration_reader_is_silent_without_progress(capsys: pytest.CaptureFixture) -> None:
    reader = calibration_reader(_positive_samples(), 3, False, "calib")
    assert len(list(iter(reader.get_next, None))) == 2
    assert capsys.readouterr().err == ""


def test_quantize_int8_shows_a_calibrate_bar_by_default(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    quantize_int8(_conv_gemm(tmp_path / "convnet.onnx"), tmp_path / "q.onnx", tmp_path / "q.json",
                  _positive_samples(), _settings())
    assert "calibrate:   0%|" in capsys.readouterr().err


def test_quantize_int8_names_its_bar_and_can_hide_it(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    model = _conv_gemm(tmp_path / "convnet.onnx")
    quantize_int8(model, tmp_path / "q.onnx", tmp_path / "q.json", _positive_samples(), _settings(), desc="digits")
    assert "digits:   0%|" in capsys.readouterr().err
    quantize_int8(model, tmp_path / "q.onnx", tmp_path / "q.json", _positive_samples(), _settings(), progress=False)
    assert "sample" not in capsys.readouterr().err


# --- pre-processing: files in the workspace, node names, shape inference --------------------------


def test_prepare_writes_one_model_and_one_weights_file(tmp_path: Path) -> None:
    notices: List[str] = []
    with workspace() as directory:
        prepared = prepare(_conv_gemm(tmp_path / "convnet.onnx"), directory, notices.append)
        assert prepared == directory / "prepared.onnx"
        assert sorted(p.name for p in directory.iterdir()) == ["prepared.onnx", "prepared.onnx.data"]
    assert notices == []


def test_prepare_names_unnamed_nodes_uniquely(tmp_path: Path) -> None:
    weight = numpy_helper.from_array(np.random.default_rng(0).standard_normal((SIDE, SIDE)).astype(np.float32), "W")
    nodes = [helper.make_node("MatMul", ["x", "W"], ["a"], name="MatMul_0"),  # the name the first unnamed would get
             helper.make_node("MatMul", ["a", "W"], ["b"]), helper.make_node("Relu", ["b"], ["y"])]
    model = _save(tmp_path / "unnamed.onnx", nodes, [_vi("x", TensorProto.FLOAT, ["batch", SIDE])],
                  [_vi("y", TensorProto.FLOAT, ["batch", SIDE])], [weight])
    with workspace() as directory:
        prepared = prepare(model, directory, lambda message: None)
        assert prepared == directory / "prepared-named.onnx"
        assert sorted(p.name for p in directory.iterdir()) == [
            "prepared-named.onnx", "prepared-named.onnx.data", "prepared.onnx", "prepared.onnx.data"]
        assert [node.name for node in onnx.load(str(prepared)).graph.node] == ["MatMul_0", "MatMul_0_", "Relu_1"]


def test_dynamic_axes_that_need_merging_need_no_fallback(tmp_path: Path) -> None:
    """x [b, n, 4] + y [b, m, 4]: symbolic shape inference succeeds only by merging n and m."""
    weight = numpy_helper.from_array(np.ones((4, 4), np.float32), "W")
    model = _save(tmp_path / "merge.onnx",
                  [helper.make_node("Add", ["x", "y"], ["s"]), helper.make_node("MatMul", ["s", "W"], ["z"])],
                  [_vi("x", TensorProto.FLOAT, ["b", "n", 4]), _vi("y", TensorProto.FLOAT, ["b", "m", 4])],
                  [_vi("z", TensorProto.FLOAT, ["b", "n", 4])], [weight])
    notices: List[str] = []
    with workspace() as directory:
        prepare(model, directory, notices.append)
    assert notices == []


def test_the_shape_inference_fallback_keeps_the_weights_in_one_file(tmp_path: Path) -> None:
    notices: List[str] = []
    with workspace() as directory:
        prepare(_inverse_matmul(tmp_path / "inverse.onnx"), directory, notices.append)
        assert {"prepared.onnx", "prepared.onnx.data"} <= {p.name for p in directory.iterdir()}
    assert len(notices) == 1


def test_a_pre_processing_failure_is_one_line_after_the_fallback_notice(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import onnxruntime.quantization

    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("broken graph\nat node 7")

    monkeypatch.setattr(onnxruntime.quantization, "quant_pre_process", broken)
    notices: List[str] = []
    with pytest.raises(ExportError) as error, workspace() as directory:
        prepare(_conv_gemm(tmp_path / "convnet.onnx"), directory, notices.append)
    assert str(error.value) == "INT8 pre-processing failed: RuntimeError: broken graph"
    assert notices == ["symbolic shape inference failed (RuntimeError: broken graph); "
                       "using ONNX shape inference instead"]


# --- the two schemes, op selection, float outputs, calibration methods ----------------------------


def _graph(path: Path) -> tuple:
    """(nodes, {initializer name: array}, {tensor name: producing node}) of an ONNX file."""
    model = onnx.load(str(path))
    inits = {init.name: numpy_helper.to_array(init) for init in model.graph.initializer}
    return model.graph.node, inits, {output: node for node in model.graph.node for output in node.output}


def _quantized(path: Path, prepared: Path, **options: Any) -> Path:
    settings = options.pop("settings", _settings())
    quantize_static_model(prepared, path, None, _positive_samples(), settings, progress=False, **options)
    return path


@pytest.fixture
def prepared_convnet(tmp_path: Path) -> Iterator[Path]:
    with workspace() as directory:
        yield prepare(_conv_gemm(tmp_path / "convnet.onnx"), directory, lambda message: None)


def test_u8s8_has_uint8_activations_and_int8_weights_stored_quantized(tmp_path: Path, prepared_convnet: Path) -> None:
    nodes, inits, producers = _graph(_quantized(tmp_path / "u8s8.onnx", prepared_convnet))
    activations = [node for node in nodes if node.op_type == "QuantizeLinear"]
    assert activations and {inits[node.input[2]].dtype for node in activations} == {np.dtype(np.uint8)}
    assert any(inits[node.input[2]].any() for node in activations)  # asymmetric: some zero point is not 0
    for name in ("conv", "gemm"):
        weight = producers[next(node for node in nodes if node.name == name).input[1]]
        assert weight.op_type == "DequantizeLinear" and inits[weight.input[0]].dtype == np.int8


@pytest.mark.parametrize("per_channel", [True, False])
def test_s8s8_is_symmetric_int8_with_float_weights_for_tensorrt(tmp_path: Path, prepared_convnet: Path,
                                                                per_channel: bool) -> None:
    settings = QuantizationSettings(scheme="s8s8-qdq", per_channel=per_channel)
    nodes, inits, producers = _graph(_quantized(tmp_path / "s8s8.onnx", prepared_convnet, settings=settings))
    quantizers = [node for node in nodes if node.op_type == "QuantizeLinear"]
    for node in quantizers:  # activations and weights alike: int8, zero point 0
        assert inits[node.input[2]].dtype == np.int8 and not inits[node.input[2]].any(), node.name
    for name in ("conv", "gemm"):  # weights stay FP32 behind a Q/DQ pair: TensorRT folds them
        dequantize = producers[next(node for node in nodes if node.name == name).input[1]]
        quantizer = producers[dequantize.input[0]]
        assert quantizer.op_type == "QuantizeLinear" and inits[quantizer.input[0]].dtype == np.float32


def test_an_unknown_scheme_is_refused_naming_it(tmp_path: Path) -> None:
    with pytest.raises(ExportError) as error:
        quantize_static_model(tmp_path / "absent.onnx", tmp_path / "q.onnx", None, _positive_samples(),
                              QuantizationSettings(scheme="u8u8-qdq"))
    assert str(error.value) == "unknown quantization scheme 'u8u8-qdq'"


def _int8_weights(path: Path) -> set:
    """The names of the conv/gemm nodes whose weight comes through a DequantizeLinear."""
    nodes, _, producers = _graph(path)
    return {node.name for node in nodes if node.name in ("conv", "gemm")
            and producers.get(node.input[1], node).op_type == "DequantizeLinear"}


def test_quantize_int8_quantizes_only_the_op_types_asked_and_not_the_excluded_nodes(tmp_path: Path) -> None:
    model, samples = _conv_gemm(tmp_path / "convnet.onnx"), _positive_samples()
    quantize_int8(model, tmp_path / "all.onnx", tmp_path / "all.json", samples, _settings(), progress=False)
    assert _int8_weights(tmp_path / "all.onnx") == {"conv", "gemm"}
    quantize_int8(model, tmp_path / "conv.onnx", tmp_path / "conv.json", samples, _settings(), progress=False,
                  op_types=["Conv"])
    assert _int8_weights(tmp_path / "conv.onnx") == {"conv"}
    quantize_int8(model, tmp_path / "gemm.onnx", tmp_path / "gemm.json", samples, _settings(), progress=False,
                  exclude=["conv"])
    assert _int8_weights(tmp_path / "gemm.onnx") == {"gemm"}


def test_float_output_op_types_get_no_output_quantizer(tmp_path: Path, prepared_convnet: Path) -> None:
    settings = QuantizationSettings(scheme="s8s8-qdq")
    _, _, producers = _graph(_quantized(tmp_path / "q.onnx", prepared_convnet, settings=settings))
    assert producers["y"].op_type == "DequantizeLinear"
    _, _, producers = _graph(_quantized(tmp_path / "fo.onnx", prepared_convnet, settings=settings,
                                        float_outputs=["Conv", "Gemm"]))
    assert producers["y"].op_type == "Gemm" and producers["f"].input == ["c"]  # conv's output not quantized


def test_each_calibration_method_gives_its_own_ranges(tmp_path: Path, prepared_convnet: Path) -> None:
    caches = set()
    for method in ("minmax", "entropy", "percentile"):
        settings = QuantizationSettings(scheme="u8s8-qdq", calibration_method=method)
        cache = tmp_path / f"{method}.json"
        quantize_static_model(prepared_convnet, tmp_path / f"{method}.onnx", cache, _positive_samples(), settings,
                              progress=False)
        caches.add(cache.read_text())
    assert len(caches) == 3


def test_static_quantization_needs_no_cache_and_shows_a_calibrate_bar(
        tmp_path: Path, prepared_convnet: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "out"
    out.mkdir()
    quantize_static_model(prepared_convnet, out / "q.onnx", None, _positive_samples(), _settings())
    assert [p.name for p in out.iterdir()] == ["q.onnx"]
    assert "calibrate:   0%|" in capsys.readouterr().err


def test_dynamic_int8_quantizes_matmul_and_gemm_weights_only(tmp_path: Path, prepared_convnet: Path) -> None:
    quantize_dynamic_model(prepared_convnet, tmp_path / "dynamic.onnx")
    nodes, inits, _ = _graph(tmp_path / "dynamic.onnx")
    conv = next(node for node in nodes if node.op_type == "Conv")  # Conv stays FP32
    assert inits[conv.input[1]].dtype == np.float32
    integer = [node for node in nodes if node.op_type == "MatMulInteger"]  # the Gemm, as an int8 MatMul
    assert len(integer) == 1 and inits[integer[0].input[1]].dtype == np.int8


def test_a_dynamic_quantization_failure_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import onnxruntime.quantization

    def broken(*args: object, **kwargs: object) -> None:
        raise ValueError("unsupported weight\ndetails")

    monkeypatch.setattr(onnxruntime.quantization, "quantize_dynamic", broken)
    with pytest.raises(ExportError) as error:
        quantize_dynamic_model(tmp_path / "prepared.onnx", tmp_path / "dynamic.onnx")
    assert str(error.value) == "dynamic INT8 quantization failed: ValueError: unsupported weight"
