"""The op policy per target on small hand-made graphs: what is INT8, what keeps float, and why."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from edge_runtime.config import QuantizationSettings
from export.samples import SampleSet
from export.steps.quant_policy import INT8_OPS, excluded_nodes, int8_nodes, node_plan
from export.steps.quantize import quantize_int8

D = 8


def _attention(path: Path) -> Path:
    """x [b, s, 8] float, mask [b, s] int64: one attention block with an additive mask, a residual,
    a LayerNorm and an erf GELU, then a Gemm-free MatMul head."""
    rng = np.random.default_rng(0)
    weight = lambda name: numpy_helper.from_array(rng.standard_normal((D, D)).astype(np.float32), name)  # noqa: E731
    inits = [weight("Wq"), weight("Wk"), weight("Wo"),
             numpy_helper.from_array(np.array(1.0, np.float32), "one"),
             numpy_helper.from_array(np.array(np.finfo(np.float32).min, np.float32), "big"),
             numpy_helper.from_array(np.array([1], np.int64), "axis1"),
             numpy_helper.from_array(np.ones(D, np.float32), "gamma"),
             numpy_helper.from_array(np.zeros(D, np.float32), "beta"),
             numpy_helper.from_array(np.array(1.4142135, np.float32), "sqrt2"),
             numpy_helper.from_array(np.array(0.5, np.float32), "half")]
    n = helper.make_node
    nodes = [
        n("MatMul", ["x", "Wq"], ["q"], name="query"),
        n("MatMul", ["x", "Wk"], ["k"], name="key"),
        n("Transpose", ["k"], ["kt"], name="key_t", perm=[0, 2, 1]),
        n("MatMul", ["q", "kt"], ["scores"], name="scores"),
        n("Cast", ["mask"], ["maskf"], name="mask_cast", to=TensorProto.FLOAT),
        n("Sub", ["one", "maskf"], ["inverted"], name="mask_sub"),
        n("Mul", ["inverted", "big"], ["bias"], name="mask_mul"),
        n("Unsqueeze", ["bias", "axis1"], ["bias3"], name="mask_unsqueeze"),
        n("Add", ["scores", "bias3"], ["masked"], name="mask_add"),
        n("Softmax", ["masked"], ["probs"], name="softmax", axis=-1),
        n("MatMul", ["probs", "x"], ["context"], name="context"),
        n("Add", ["context", "x"], ["residual"], name="residual"),
        n("LayerNormalization", ["residual", "gamma", "beta"], ["normed"], name="norm", axis=-1),
        n("Div", ["normed", "sqrt2"], ["scaled"], name="gelu_div"),
        n("Erf", ["scaled"], ["erf"], name="gelu_erf"),
        n("Add", ["erf", "one"], ["erf1"], name="gelu_add"),
        n("Mul", ["normed", "erf1"], ["gelu2"], name="gelu_mul"),
        n("Mul", ["gelu2", "half"], ["gelu"], name="gelu_half"),
        n("MatMul", ["gelu", "Wo"], ["y"], name="out"),
    ]
    graph = helper.make_graph(
        nodes, "attention",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", "seq", D]),
         helper.make_tensor_value_info("mask", TensorProto.INT64, ["batch", "seq"])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", "seq", D])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


@pytest.fixture()
def attention(tmp_path: Path) -> Path:
    return _attention(tmp_path / "attention.onnx")


def test_ort_cpu_quantizes_the_matmuls_and_keeps_the_mask_path_in_fp32(attention: Path) -> None:
    plan = node_plan(attention, "u8s8-qdq")
    assert int8_nodes(plan) == ["query", "key", "scores", "context", "out"]
    assert "attention score MatMul" in plan["scores"].reason
    assert "attention context MatMul" in plan["context"].reason
    assert plan["query"].reason == "MatMul with constant weights"
    mask_add = plan["mask_add"]
    assert (mask_add.op, mask_add.precision) == ("Add", "fp32")
    assert "attention-mask Add before Softmax" in mask_add.reason
    for name in ("mask_cast", "mask_sub", "mask_mul", "mask_unsqueeze"):
        assert plan[name].precision == "fp32" and "mask arithmetic from an integer input" in plan[name].reason
    assert "Softmax" in plan["softmax"].reason
    assert "residual Add" in plan["residual"].reason
    assert "LayerNorm" in plan["norm"].reason
    for name in ("gelu_div", "gelu_erf", "gelu_add", "gelu_mul"):
        assert "GELU" in plan[name].reason, name


def test_tensorrt_leaves_the_rest_to_fp16(attention: Path) -> None:
    plan = node_plan(attention, "s8s8-qdq")
    assert int8_nodes(plan) == ["query", "key", "scores", "context", "out"]
    assert plan["mask_add"].precision == "fp16" and "TensorRT (FP16)" in plan["mask_add"].reason
    assert {step.precision for step in plan.values()} == {"int8", "fp16"}


def test_a_decomposed_layernorm_and_an_embedding_gather_are_recognised(tmp_path: Path) -> None:
    n = helper.make_node
    table = numpy_helper.from_array(np.ones((10, D), np.float32), "table")
    eps = numpy_helper.from_array(np.array(1e-5, np.float32), "eps")
    two = numpy_helper.from_array(np.array(2.0, np.float32), "two")
    nodes = [n("Gather", ["table", "ids"], ["emb"], name="embed"),
             n("ReduceMean", ["emb"], ["mean"], name="ln_mean", axes=[-1]),
             n("Sub", ["emb", "mean"], ["centred"], name="ln_sub"),
             n("Pow", ["centred", "two"], ["sq"], name="ln_pow"),
             n("ReduceMean", ["sq"], ["var"], name="ln_var", axes=[-1]),
             n("Add", ["var", "eps"], ["var_eps"], name="ln_eps"),
             n("Sqrt", ["var_eps"], ["std"], name="ln_sqrt"),
             n("Div", ["centred", "std"], ["y"], name="ln_div")]
    graph = helper.make_graph(nodes, "ln", [helper.make_tensor_value_info("ids", TensorProto.INT64, ["b", 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["b", 4, D])], [table, eps, two])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.save(model, str(tmp_path / "ln.onnx"))
    plan = node_plan(tmp_path / "ln.onnx", "u8s8-qdq")
    assert "embedding lookup" in plan["embed"].reason
    for name in ("ln_mean", "ln_sub", "ln_pow", "ln_var", "ln_eps", "ln_sqrt", "ln_div"):
        assert "LayerNorm" in plan[name].reason, (name, plan[name])
    assert int8_nodes(plan) == []


def test_an_integer_matmul_is_excluded(tmp_path: Path) -> None:
    n = helper.make_node
    weight = numpy_helper.from_array(np.ones((4, 3), np.int32), "W")
    graph = helper.make_graph([n("MatMul", ["a", "W"], ["y"], name="int_mm")], "int",
                              [helper.make_tensor_value_info("a", TensorProto.INT32, ["b", 4])],
                              [helper.make_tensor_value_info("y", TensorProto.INT32, ["b", 3])], [weight])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(tmp_path / "i.onnx"))
    plan = node_plan(tmp_path / "i.onnx", "u8s8-qdq")
    assert plan["int_mm"].precision == "fp32" and excluded_nodes(plan) == ["int_mm"]


def _quantized_tensors(path: Path) -> set:
    return {node.input[0] for node in onnx.load(str(path)).graph.node if node.op_type == "QuantizeLinear"}


def test_the_plan_applied_through_ort_keeps_the_mask_path_out_of_int8(attention: Path, tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    samples = SampleSet.from_batched({"x": rng.standard_normal((4, 5, D)).astype(np.float32),
                                      "mask": np.ones((4, 5), np.int64)})
    settings = QuantizationSettings(scheme="u8s8-qdq")
    plan = node_plan(attention, "u8s8-qdq")
    policy, naive = tmp_path / "policy.onnx", tmp_path / "naive.onnx"
    quantize_int8(attention, policy, tmp_path / "p.json", samples, settings, progress=False,
                  op_types=INT8_OPS, exclude=excluded_nodes(plan))
    quantize_int8(attention, naive, tmp_path / "n.json", samples, settings, progress=False)
    mask_path = {"maskf", "inverted", "bias", "bias3", "masked"}
    assert {"x", "probs", "gelu"} <= _quantized_tensors(policy)  # MatMul inputs: INT8
    assert not mask_path & _quantized_tensors(policy)
    assert mask_path & _quantized_tensors(naive)  # what the export used to do: the mask's minimum in a range
