"""Structured pruning really shrinks layers (and FLOPs); unstructured only zeroes weights."""

from __future__ import annotations

import re
import sys

import pytest
import torch
from torch import nn

from edge_runtime.errors import BackendUnavailableError
from export.errors import PruningError
from export.io_spec import InputSpec, ModelIO
from export.models.digits_cnn import INPUT_SHAPE as DIGITS_SHAPE
from export.models.digits_cnn import DigitsCNN
from export.models.resnet import ResNet18
from export.steps.prune import EXAMPLE_AXIS, PruneSpec, apply_pruning, count_macs_params, prune_structured


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


# --- example inputs, output layers, importance, errors -------------------------------------------


class _OverSequence(nn.Module):
    """x [batch, seq, 4] -> a Linear over the sequence axis: it runs only at seq == EXAMPLE_AXIS (8)."""

    def __init__(self) -> None:
        super().__init__()
        self.mix = nn.Linear(EXAMPLE_AXIS, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.mix(x.transpose(1, 2))


def test_macs_are_counted_for_one_sample_with_sequences_of_the_example_length() -> None:
    io = ModelIO((InputSpec("x", ("batch", "seq", 4), "float32"),))
    # 1 sample x 4 features x (8 -> 2) = 64 multiply-accumulates, plus torch-pruning's 2 for the bias;
    # 8 x 2 weights + 2 biases
    assert count_macs_params(_OverSequence(), io) == (66, 18)


def _mlp() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(16, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10)).eval()


def test_structured_pruning_keeps_only_the_last_linear_whole() -> None:
    model = apply_pruning(_mlp(), (16,), PruneSpec("structured", 0.5, round_to=None))
    assert [m.out_features for m in model if isinstance(m, nn.Linear)] == [32, 32, 10]


def test_structured_pruning_keeps_the_layers_it_is_told_to_ignore() -> None:
    model = _mlp()
    prune_structured(model, (16,), 0.5, ignored_layers=[model[0], model[4]], round_to=None)
    assert [m.out_features for m in model if isinstance(m, nn.Linear)] == [64, 32, 10]


def test_structured_pruning_ranks_channels_by_l1_magnitude() -> None:
    """Row A = [1, 1, 1, 1] (L1 4, L2 2) beats row B = [3, 0, 0, 0] (L1 3, L2 3) only by the L1 norm."""
    model = nn.Sequential(nn.Linear(4, 2), nn.Linear(2, 1)).eval()
    with torch.no_grad():
        model[0].weight.copy_(torch.tensor([[3.0, 0, 0, 0], [1.0, 1, 1, 1]]))
        model[0].bias.zero_()
        model[1].weight.fill_(1.0)
    prune_structured(model, (4,), 0.5, round_to=None)
    assert model[0].weight.tolist() == [[1.0, 1.0, 1.0, 1.0]]


def test_a_model_the_pruner_cannot_trace_is_one_pruning_error() -> None:
    with pytest.raises(PruningError) as error:
        prune_structured(_mlp(), (5,), 0.5)  # the first Linear wants 16 features
    assert re.fullmatch(r"structured pruning failed on this model: [^\n]*mat1 and mat2[^\n]*", str(error.value))


def test_structured_pruning_without_torch_pruning_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "torch_pruning", None)
    with pytest.raises(BackendUnavailableError) as error:
        prune_structured(_mlp(), (16,), 0.5)
    assert str(error.value) == ("the Python module 'torch_pruning' is not installed: "
                                "pip install 'edge-runtime[export]'")


@pytest.mark.parametrize(
    "text, spec",
    [
        ("structured:0.3", PruneSpec("structured", 0.3, 8)),
        ("structured:0.3:2", PruneSpec("structured", 0.3, 2)),
        ("structured:0.3:1", PruneSpec("structured", 0.3, None)),
        ("unstructured:0.5", PruneSpec("unstructured", 0.5, 8)),
    ],
)
def test_prune_specs_parse_to_method_ratio_and_rounding(text: str, spec: PruneSpec) -> None:
    assert PruneSpec.parse(text) == spec


def test_an_unknown_pruning_method_lists_the_known_ones() -> None:
    with pytest.raises(PruningError) as error:
        PruneSpec.parse("channels:0.3")
    assert str(error.value) == "unknown pruning method 'channels': use one of structured, unstructured"
