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
from typing import List, Optional, Tuple

import torch
from torch import nn

from edge_runtime.errors import BackendUnavailableError, PruningError

METHODS = ("structured", "unstructured")


@dataclass(frozen=True)
class PruneSpec:
    """What to prune: ``method`` in METHODS and the fraction of channels/weights to remove."""

    method: str
    ratio: float

    @classmethod
    def parse(cls, text: str) -> PruneSpec:
        """Parse ``structured:0.3`` / ``unstructured:0.5``."""
        method, _, ratio_text = text.partition(":")
        if method not in METHODS:
            raise PruningError(f"unknown pruning method '{method}': use one of {', '.join(METHODS)}")
        try:
            ratio = float(ratio_text)
        except ValueError:
            raise PruningError(f"bad pruning ratio in '{text}': expected e.g. {method}:0.3") from None
        if not 0.0 < ratio < 1.0:
            raise PruningError(f"pruning ratio must be between 0 and 1 (exclusive), got {ratio}")
        return cls(method, ratio)


def count_macs_params(model: nn.Module, input_shape: Tuple[int, ...]) -> Tuple[int, int]:
    """Multiply-accumulates for one sample and the parameter count (torch-pruning's counter)."""
    import torch_pruning as tp

    example = torch.zeros((1, *input_shape))
    with torch.no_grad():
        macs, params = tp.utils.count_ops_and_params(model, example)
    return int(macs), int(params)


def _output_layers(model: nn.Module) -> List[nn.Module]:
    """The classifier layer(s) whose outputs are the model's outputs: never pruned."""
    linears: List[nn.Module] = [m for m in model.modules() if isinstance(m, nn.Linear)]
    return linears[-1:]


def prune_structured(
    model: nn.Module,
    input_shape: Tuple[int, ...],
    ratio: float,
    ignored_layers: Optional[List[nn.Module]] = None,
) -> nn.Module:
    """Remove ``ratio`` of the channels of every prunable layer group by L1 magnitude, in place."""
    try:
        import torch_pruning as tp
    except ImportError as exc:
        raise BackendUnavailableError.missing_module("torch_pruning", "export") from exc
    ignored = list(ignored_layers) if ignored_layers is not None else _output_layers(model)
    example = torch.zeros((1, *input_shape))
    try:
        pruner = tp.pruner.MetaPruner(
            model,
            example,
            importance=tp.importance.MagnitudeImportance(p=1),
            pruning_ratio=ratio,
            ignored_layers=ignored,
        )
        pruner.step()
    except (RuntimeError, ValueError, KeyError) as exc:
        raise PruningError(f"structured pruning failed on this model: {exc}") from exc
    return model.eval()


def prune_unstructured(model: nn.Module, ratio: float) -> nn.Module:
    """Zero the ``ratio`` smallest-magnitude weights of every conv/linear layer, in place."""
    from torch.nn.utils import prune

    for module in model.modules():
        if isinstance(module, (nn.Conv2d, nn.Conv1d, nn.Linear)):
            prune.l1_unstructured(module, name="weight", amount=ratio)
            prune.remove(module, "weight")
    return model.eval()


def apply_pruning(model: nn.Module, input_shape: Tuple[int, ...], spec: PruneSpec) -> nn.Module:
    """Apply ``spec`` to ``model`` (in place) and return it."""
    if spec.method == "structured":
        return prune_structured(model, input_shape, spec.ratio)
    return prune_unstructured(model, spec.ratio)
