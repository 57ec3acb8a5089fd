"""Pruning: structured L1 channel pruning (the default) and unstructured L1 (the seed's option).

Structured pruning uses torch-pruning's dependency graph (DepGraph), which removes whole
channels and rebuilds every coupled layer — both sides of a residual addition, the
BatchNorm after a conv, the Linear after the last conv — so the model physically shrinks
and FLOPs drop on any hardware.

Unstructured L1 pruning (``torch.nn.utils.prune.l1_unstructured``) only zeroes weights:
the dense ONNX graph keeps its shape and size, and Jetson Xavier (Volta, no sparse tensor
cores) gains no speed from it. It is kept as an option for comparison with the seed recipe.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, List, Optional, Tuple, Union

import torch
from torch import nn

from edge_runtime.errors import BackendUnavailableError
from export.errors import PruningError
from export.io_spec import ModelIO, as_model_io, torch_example_inputs

Shape = Union[ModelIO, Tuple[int, ...]]  # the model's inputs, or one float32 input's sample shape

METHODS = ("structured", "unstructured")
DEFAULT_ROUND_TO = 8
EXAMPLE_AXIS = 8  # the size of a named non-batch axis (a sequence) when counting MACs and pruning


@dataclass(frozen=True)
class PruneSpec:
    """What to prune: ``method`` in METHODS, the fraction to remove, and (structured) channel rounding.

    ``round_to`` keeps every pruned layer's channel count a multiple of it: odd widths such as
    45 run slower than 48 in INT8 kernels (VNNI on x86, tensor cores on Jetson want multiples
    of 8 to 32), which can cancel the FLOPs saved.
    """

    method: str
    ratio: float
    round_to: Optional[int] = DEFAULT_ROUND_TO

    @classmethod
    def parse(cls, text: str) -> PruneSpec:
        """Parse ``structured:0.3``, ``structured:0.3:16`` (round to 16) or ``unstructured:0.5``."""
        method, _, rest = text.partition(":")
        if method not in METHODS:
            raise PruningError(f"unknown pruning method '{method}': use one of {', '.join(METHODS)}")
        ratio_text, _, round_text = rest.partition(":")
        try:
            ratio = float(ratio_text)
            round_to = int(round_text) if round_text else DEFAULT_ROUND_TO
        except ValueError:
            raise PruningError(f"bad pruning spec '{text}': expected e.g. {method}:0.3 or {method}:0.3:8") from None
        if not 0.0 < ratio < 1.0:
            raise PruningError(f"pruning ratio must be between 0 and 1 (exclusive), got {ratio}")
        if round_to < 1:
            raise PruningError(f"channel rounding must be a positive integer, got {round_to}")
        return cls(method, ratio, round_to if round_to > 1 else None)


def _examples(model: nn.Module, io: Shape) -> Tuple[Any, ...]:
    """One sample per input (batch 1, other named axes EXAMPLE_AXIS), in argument order."""
    spec = as_model_io(io)
    batch = str(spec.inputs[0].dims[0])
    sizes = {d: 1 if d == batch else EXAMPLE_AXIS for s in spec.inputs for d in s.dims if isinstance(d, str)}
    return torch_example_inputs(model, spec, sizes)


def count_macs_params(model: nn.Module, io: Shape) -> Tuple[int, int]:
    """Multiply-accumulates for one sample and the parameter count (torch-pruning's counter).

    Sequence-like named axes are counted at EXAMPLE_AXIS positions.
    """
    import torch_pruning as tp

    example = _examples(model, io)
    with torch.no_grad():
        macs, params = tp.utils.count_ops_and_params(model, example)
    return int(macs), int(params)


def _output_layers(model: nn.Module) -> List[nn.Module]:
    """The classifier layer(s) whose outputs are the model's outputs: never pruned."""
    linears: List[nn.Module] = [m for m in model.modules() if isinstance(m, nn.Linear)]
    return linears[-1:]


def prune_structured(
    model: nn.Module,
    io: Shape,
    ratio: float,
    ignored_layers: Optional[List[nn.Module]] = None,
    round_to: Optional[int] = DEFAULT_ROUND_TO,
) -> nn.Module:
    """Remove ``ratio`` of the channels of every prunable layer group by L1 magnitude, in place."""
    try:
        import torch_pruning as tp
    except ImportError as exc:
        raise BackendUnavailableError.missing_module("torch_pruning", "export") from exc
    ignored = list(ignored_layers) if ignored_layers is not None else _output_layers(model)
    example = _examples(model, io)
    try:
        pruner = tp.pruner.MetaPruner(
            model,
            example,
            importance=tp.importance.MagnitudeImportance(p=1),
            pruning_ratio=ratio,
            ignored_layers=ignored,
            round_to=round_to,
        )
        pruner.step()
    except (RuntimeError, ValueError, KeyError, TypeError) as exc:
        # torch-pruning retries a failing model(*inputs) as model(inputs): the first error is the telling one
        raise PruningError(f"structured pruning failed on this model: {exc.__context__ or exc}") from exc
    return model.eval()


def prune_unstructured(model: nn.Module, ratio: float) -> nn.Module:
    """Zero the ``ratio`` smallest-magnitude weights of every conv/linear layer, in place."""
    from torch.nn.utils import prune

    for module in model.modules():
        if isinstance(module, (nn.Conv2d, nn.Conv1d, nn.Linear)):
            prune.l1_unstructured(module, name="weight", amount=ratio)
            prune.remove(module, "weight")
    return model.eval()


def apply_pruning(model: nn.Module, io: Shape, spec: PruneSpec) -> nn.Module:
    """Apply ``spec`` to ``model`` (in place) and return it."""
    if spec.method == "structured":
        return prune_structured(model, io, spec.ratio, round_to=spec.round_to)
    return prune_unstructured(model, spec.ratio)
