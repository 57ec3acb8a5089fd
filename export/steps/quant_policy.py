"""Which nodes of a graph INT8 quantizes, per target scheme, with the reason for each node.

* ``u8s8-qdq`` (ONNX Runtime CPU): MatMul, Gemm and Conv in static INT8 (U8S8, per-channel
  weights); every other node stays FP32.
* ``s8s8-qdq`` (TensorRT): symmetric QDQ on the inputs of MatMul, Gemm and Conv only; the rest is
  left to TensorRT, which builds it in FP16.

The transformer patterns are recognised so that the report says why a node keeps higher
precision: attention score / context MatMuls, the attention-mask arithmetic derived from an integer
input (Cast/Sub/Mul/Where/... feeding the Add before a Softmax: its additive minimum would wreck a
calibrated range), Softmax, LayerNormalization (fused or decomposed into ReduceMean/Sub/Pow/Sqrt/Div),
residual Adds, GELU (Erf/Tanh and their arithmetic) and Gather embeddings. The plan is applied with
``quantize_static``'s ``op_types_to_quantize`` and ``nodes_to_exclude``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Mapping, Sequence, Set, Tuple

INT8_OPS = ("MatMul", "Gemm", "Conv")
INTEGER_OPS = frozenset({"Cast", "Sub", "Mul", "Where", "Not", "Equal", "Unsqueeze", "Reshape", "Expand",
                         "Squeeze", "Less", "Greater", "And", "Or", "Neg", "Add", "Div", "Transpose"})
SHAPE_OPS = frozenset({"Reshape", "Transpose", "Unsqueeze", "Squeeze", "Expand", "Identity"})
LAYERNORM_OPS = frozenset({"ReduceMean", "Pow", "Sqrt"})
GELU_ARITHMETIC = frozenset({"Div", "Mul", "Add", "Pow"})
FLOAT_TYPES = frozenset({1, 10, 11, 16})  # FLOAT, FLOAT16, DOUBLE, BFLOAT16


@dataclass(frozen=True)
class NodePlan:
    """One node's op type, planned precision (int8, fp32, or fp16 under TensorRT) and why."""

    op: str
    precision: str
    reason: str

    def as_report(self) -> Dict[str, str]:
        return {"op": self.op, "precision": self.precision, "reason": self.reason}


class _Graph:
    """A graph's producers, consumers, constants and integer-derived (mask) tensors."""

    def __init__(self, graph: Any) -> None:
        self.nodes = list(graph.node)
        self.constants: Set[str] = {t.name for t in graph.initializer}
        self.producer: Dict[str, Any] = {}
        self.consumers: Dict[str, List[Any]] = {}
        for node in self.nodes:
            for name in node.output:
                self.producer[name] = node
            for name in node.input:
                self.consumers.setdefault(name, []).append(node)
            if node.op_type == "Constant" or (node.op_type in SHAPE_OPS | {"Cast"} and node.input
                                              and all(i in self.constants for i in node.input if i)):
                self.constants.update(node.output)
        integer_inputs = {v.name for v in graph.input
                          if v.type.tensor_type.elem_type not in FLOAT_TYPES and v.name not in self.constants}
        self.mask = self._derived(integer_inputs)

    def _derived(self, sources: Set[str]) -> Set[str]:
        """Tensors computed only from ``sources`` and constants through INTEGER_OPS (graph order)."""
        derived = set(sources)
        for node in self.nodes:
            activations = [i for i in node.input if i and i not in self.constants]
            if node.op_type in INTEGER_OPS and activations and all(i in derived for i in activations):
                derived.update(node.output)
        return derived - sources

    def activations(self, node: Any) -> List[str]:
        return [i for i in node.input if i and i not in self.constants]

    def feeds_softmax(self, name: str, depth: int = 4) -> bool:
        """Whether ``name`` reaches a Softmax through at most ``depth`` Add/Div/Mul/shape nodes."""
        for consumer in self.consumers.get(name, []):
            if consumer.op_type == "Softmax":
                return True
            if depth and consumer.op_type in SHAPE_OPS | {"Add", "Div", "Mul", "Where"} and any(
                    self.feeds_softmax(out, depth - 1) for out in consumer.output):
                return True
        return False

    def from_op(self, name: str, ops: Set[str], depth: int = 3) -> bool:
        """Whether ``name`` is produced by one of ``ops`` through at most ``depth`` shape nodes."""
        node = self.producer.get(name)
        while node is not None and node.op_type in SHAPE_OPS and depth:
            node = self.producer.get(node.input[0]) if node.input else None
            depth -= 1
        return node is not None and node.op_type in ops


def _matmul_reason(graph: _Graph, node: Any) -> str:
    activations = graph.activations(node)
    if len(activations) < 2:
        return f"{node.op_type} with constant weights"
    if any(graph.from_op(name, {"Softmax"}) for name in activations):
        return "attention context MatMul (probabilities x values)"
    if any(graph.feeds_softmax(out) for out in node.output):
        return "attention score MatMul (queries x keys)"
    return "MatMul of two activations"


def _gelu(graph: _Graph, node: Any) -> bool:
    """Erf/Tanh, or arithmetic whose input or output touches one (x/sqrt2, 1 + erf, x * 0.5 ...)."""
    if node.op_type in ("Erf", "Tanh", "Gelu", "FastGelu", "BiasGelu"):
        return True
    return node.op_type in GELU_ARITHMETIC and (_reaches_erf(graph, node, upstream=True)
                                                or _reaches_erf(graph, node, upstream=False))


def _reaches_erf(graph: _Graph, node: Any, upstream: bool, depth: int = 3) -> bool:
    """Whether an Erf/Tanh is within ``depth`` GELU-arithmetic steps of ``node``, up or down the graph."""
    if depth == 0:
        return False
    if upstream:
        near = [graph.producer[i] for i in node.input if i in graph.producer]
    else:
        near = [c for o in node.output for c in graph.consumers.get(o, [])]
    return any(n.op_type in ("Erf", "Tanh") or (n.op_type in GELU_ARITHMETIC and
                                                  _reaches_erf(graph, n, upstream, depth - 1)) for n in near)


def _layernorm(graph: _Graph, node: Any) -> bool:
    if node.op_type in ("LayerNormalization", "SimplifiedLayerNormalization", "SkipLayerNormalization"):
        return True
    if node.op_type in LAYERNORM_OPS:
        return True
    inputs = [graph.producer.get(i) for i in node.input]
    if node.op_type in ("Sub", "Div") and any(n is not None and n.op_type in ("ReduceMean", "Sqrt") for n in inputs):
        return True
    return node.op_type == "Add" and any(c.op_type == "Sqrt" for o in node.output for c in graph.consumers.get(o, []))


def _fp_reason(graph: _Graph, node: Any) -> str:
    """Why a node that is not a MatMul/Gemm/Conv keeps higher precision."""
    op = node.op_type
    if any(out in graph.mask for out in node.output):
        return "mask arithmetic from an integer input (an additive mask's minimum would wreck a calibrated range)"
    activations = graph.activations(node)
    if op == "Add" and any(name in graph.mask for name in activations):
        if any(graph.feeds_softmax(out) for out in node.output):
            return "attention-mask Add before Softmax: adds the mask's large negative bias to the scores"
        return "Add of a mask derived from an integer input"
    if op == "Softmax":
        return "Softmax: exponentials need float range"
    if _layernorm(graph, node):
        return "LayerNorm: mean/variance statistics are precision-sensitive"
    if _gelu(graph, node):
        return "GELU activation"
    if op == "Gather":
        if node.input and node.input[0] in graph.constants:
            return "embedding lookup (Gather): a table read, nothing to compute in INT8"
        return "Gather: indexing, nothing to compute in INT8"
    if op == "Add" and len(activations) == 2:
        return "residual Add: sums branches of different ranges"
    if op in ("Add", "Sub", "Mul", "Div") and len(activations) == 1:
        return f"elementwise {op} with a constant (e.g. a bias): cheap in float"
    return "not a MatMul/Gemm/Conv"


def node_plan(onnx_path: Path, scheme: str) -> Dict[str, NodePlan]:
    """Plan every top-level node of ``onnx_path`` (unnamed nodes keyed by their first output) for ``scheme``."""
    import onnx

    if scheme not in ("u8s8-qdq", "s8s8-qdq"):
        raise ValueError(f"unknown quantization scheme '{scheme}'")
    model = onnx.load(str(onnx_path), load_external_data=False)
    with_types = _infer_types(model)
    graph = _Graph(model.graph)
    floats = _float_tensors(with_types)
    rest = "fp16" if scheme == "s8s8-qdq" else "fp32"
    rest_note = "; left to TensorRT (FP16)" if scheme == "s8s8-qdq" else "; FP32"
    plan: Dict[str, NodePlan] = {}
    for node in graph.nodes:
        if node.op_type == "Constant":
            continue
        name = node.name or node.output[0]
        if node.op_type in INT8_OPS and node.domain in ("", "ai.onnx"):
            if not any(floats.get(i, True) for i in node.input if i):
                plan[name] = NodePlan(node.op_type, "fp32", "integer inputs: nothing to quantize")
            else:
                plan[name] = NodePlan(node.op_type, "int8", _matmul_reason(graph, node))
            continue
        plan[name] = NodePlan(node.op_type, rest, _fp_reason(graph, node) + rest_note)
    return plan


def _infer_types(model: Any) -> Any:
    import onnx

    try:
        return onnx.shape_inference.infer_shapes(model)
    except (onnx.shape_inference.InferenceError, onnx.checker.ValidationError, ValueError):
        return model  # unknown types count as float: a MatMul is then planned INT8, as quantize would


def _float_tensors(model: Any) -> Dict[str, bool]:
    graph = model.graph
    known = {v.name: v.type.tensor_type.elem_type in FLOAT_TYPES
             for v in (*graph.input, *graph.output, *graph.value_info) if v.type.HasField("tensor_type")}
    known.update({t.name: t.data_type in FLOAT_TYPES for t in graph.initializer})
    return known


def float_output_ops(scheme: str) -> Tuple[str, ...]:
    """Op types whose outputs the policy leaves unquantized: QDQ on their inputs only.

    TensorRT: MatMul/Gemm/Conv (the rest runs in FP16). ORT CPU: MatMul/Gemm, whose float output
    (MatMulIntegerToFloat) keeps logits and residual branches exact; Conv outputs stay quantized so
    that ORT fuses QLinearConv chains, its fast path for CNNs.
    """
    return INT8_OPS if scheme == "s8s8-qdq" else ("MatMul", "Gemm")


def int8_nodes(plan: Mapping[str, NodePlan]) -> List[str]:
    """The names of the nodes planned INT8, in graph order."""
    return [name for name, step in plan.items() if step.precision == "int8"]


def excluded_nodes(plan: Mapping[str, NodePlan]) -> List[str]:
    """Nodes of the INT8 op types that the plan keeps in higher precision (``nodes_to_exclude``)."""
    return [name for name, step in plan.items() if step.op in INT8_OPS and step.precision != "int8"]


def with_fp32(plan: Mapping[str, NodePlan], names: Sequence[str], reason: str) -> Dict[str, NodePlan]:
    """A copy of ``plan`` with ``names`` put back to higher precision for ``reason``."""
    updated = dict(plan)
    for name in names:
        updated[name] = NodePlan(plan[name].op, "fp32", reason)
    return updated
