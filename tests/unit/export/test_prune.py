"""Structured pruning really shrinks layers (and FLOPs); unstructured only zeroes weights."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from export.errors import PruningError
from export.models.digits_cnn import INPUT_SHAPE as DIGITS_SHAPE
from export.models.digits_cnn import DigitsCNN
from export.models.resnet import ResNet18
from export.steps.prune import PruneSpec, apply_pruning, count_macs_params


def _conv_widths(model: nn.Module) -> list:
    return [m.out_channels for m in model.modules() if isinstance(m, nn.Conv2d)]


def test_structured_pruning_rebuilds_smaller_layers_and_cuts_macs() -> None:
    torch.manual_seed(0)
    model = DigitsCNN().eval()
    macs_before, params_before = count_macs_params(model, DIGITS_SHAPE)
    apply_pruning(model, DIGITS_SHAPE, PruneSpec("structured", 0.3, round_to=None))
    macs_after, params_after = count_macs_params(model, DIGITS_SHAPE)
    assert [round(w / o, 1) for w, o in zip(_conv_widths(model), [32, 64, 128])] == [0.7, 0.7, 0.7]
    assert macs_after <= 0.75 * macs_before
    assert params_after < params_before
    assert model(torch.zeros(2, *DIGITS_SHAPE)).shape == (2, 10)  # classifier outputs kept


def test_structured_pruning_rounds_channel_counts() -> None:
    model = DigitsCNN().eval()
    apply_pruning(model, DIGITS_SHAPE, PruneSpec.parse("structured:0.3:8"))
    assert all(width % 8 == 0 for width in _conv_widths(model))
    assert PruneSpec.parse("structured:0.3").round_to == 8
    assert PruneSpec.parse("structured:0.3:1").round_to is None


def test_structured_pruning_follows_resnet_residuals() -> None:
    torch.manual_seed(0)
    model = ResNet18().eval()
    shape = (3, 64, 64)  # small input: the graph is what matters here
    macs_before, _ = count_macs_params(model, shape)
    apply_pruning(model, shape, PruneSpec("structured", 0.3))
    macs_after, _ = count_macs_params(model, shape)
    block = model.layer2[0]
    # both sides of the residual addition keep the same (smaller) width
    assert block.conv2.out_channels == block.downsample[0].out_channels < 128
    assert macs_after <= 0.6 * macs_before
    assert model(torch.zeros(1, *shape)).shape == (1, 1000)


def test_unstructured_pruning_zeroes_weights_but_keeps_shapes() -> None:
    torch.manual_seed(0)
    model = DigitsCNN().eval()
    widths = _conv_widths(model)
    apply_pruning(model, DIGITS_SHAPE, PruneSpec("unstructured", 0.3))
    assert _conv_widths(model) == widths
    conv = model.features[1][0].weight
    zero_fraction = float((conv == 0).float().mean())
    assert 0.29 <= zero_fraction <= 0.31


@pytest.mark.parametrize(
    "text, message",
    [
        ("channels:0.3", "unknown pruning method"),
        ("structured:abc", "bad pruning spec"),
        ("structured:1.0", "between 0 and 1"),
        ("structured:0", "between 0 and 1"),
        ("structured", "bad pruning spec"),
        ("structured:0.3:x", "bad pruning spec"),
        ("structured:0.3:0", "positive integer"),
    ],
)
def test_bad_prune_specs_are_clear_errors(text: str, message: str) -> None:
    with pytest.raises(PruningError, match=message):
        PruneSpec.parse(text)
