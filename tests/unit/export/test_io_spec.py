"""--input / --inputs / --output: parsing, validation (one line naming the flag) and example inputs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from export.io_spec import (
    InputSpec,
    IoSpecError,
    ModelIO,
    example_inputs,
    load_spec_file,
    model_io,
    parse_input,
    torch_example_inputs,
)
from export.steps.prune import count_macs_params


def test_parse_input_with_named_and_fixed_axes() -> None:
    spec = parse_input("input_ids:batch,seq:int64")
    assert spec == InputSpec("input_ids", ("batch", "seq"), "int64")
    assert parse_input("pixels:N,3,224,224:float16").dims == ("N", 3, 224, 224)


@pytest.mark.parametrize("text, message", [
    ("ids:batch,seq", "expected NAME:DIMS:DTYPE"),
    ("ids:batch,seq:int8", "dtype 'int8' is not one of"),
    ("ids:batch,0:int64", "axis sizes must be positive"),
    ("ids:batch,-3:int64", "axis sizes must be positive"),
    ("ids:4,seq:int64", "the first axis is the batch"),
    ("ids::int64", "needs at least the batch axis"),
    ("ids:batch,se q:int64", "neither a positive int nor a name"),
    ("9ids:batch:int64", "bad tensor name"),
])
def test_bad_input_is_one_line_naming_the_flag(text: str, message: str) -> None:
    with pytest.raises(IoSpecError, match=message) as caught:
        parse_input(text)
    assert str(caught.value).startswith("--input: ") and "\n" not in str(caught.value)


def test_inputs_must_share_the_batch_axis_and_have_unique_names() -> None:
    ids, mask = parse_input("ids:batch,seq:int64"), parse_input("mask:batch,seq:int64")
    assert model_io([ids, mask]).inputs == (ids, mask)
    with pytest.raises(IoSpecError, match="given twice"):
        model_io([ids, ids])
    with pytest.raises(IoSpecError, match="same batch"):
        model_io([ids, parse_input("mask:n,seq:int64")])


def test_output_names_default_given_and_counted() -> None:
    io = model_io([parse_input("ids:batch,seq:int64")])
    assert io.output_names(1) == ("output",)
    assert io.output_names(3) == ("output_0", "output_1", "output_2")
    named = io.with_outputs(["embedding"])
    assert named.output_names(1) == ("embedding",)
    with pytest.raises(IoSpecError, match="--output: 1 name"):
        named.output_names(2)
    with pytest.raises(IoSpecError, match="also an input name"):
        io.with_outputs(["ids"])


def test_dynamic_axes_name_every_input_axis_and_the_outputs_batch() -> None:
    io = model_io([parse_input("ids:batch,seq:int64"), parse_input("extra:batch,4:float32")])
    assert io.dynamic_axes(["out"]) == {"ids": {0: "batch", 1: "seq"}, "extra": {0: "batch"}, "out": {0: "batch"}}


def test_spec_file_round_trip_and_errors(tmp_path: Path) -> None:
    good = tmp_path / "io.yaml"
    good.write_text("inputs:\n  - {name: ids, shape: [batch, seq], dtype: int64}\n"
                    "  - {name: mask, shape: [batch, seq], dtype: bool}\noutputs: [pooled]\n")
    io = load_spec_file(good)
    assert [str(s) for s in io.inputs] == ["ids[batch,seq] int64", "mask[batch,seq] bool"]
    assert io.outputs == ("pooled",) and io.flag == "--inputs"
    for text, message in [("inputs: [{name: ids, shape: [batch], dtype: int64, size: 3}]\n", "unknown key"),
                          ("inputs: [{name: ids, dtype: int64}]\n", "missing shape"),
                          ("inputz: []\n", "'inputs' list"),
                          ("inputs: [{name: ids, shape: [batch, [\n", "not valid YAML")]:
        good.write_text(text)
        with pytest.raises(IoSpecError, match=message) as caught:
            load_spec_file(good)
        assert str(caught.value).startswith("--inputs: ") and "\n" not in str(caught.value)
    with pytest.raises(IoSpecError, match="cannot read"):
        load_spec_file(tmp_path / "missing.yaml")


def test_example_inputs_have_the_dtypes_and_valid_values() -> None:
    io = model_io([parse_input("ids:batch,seq:int64"), parse_input("attention_mask:batch,seq:int32"),
                   parse_input("flags:batch,2:bool"), parse_input("x:batch,3:float16")])
    arrays = example_inputs(io, {"batch": 2, "seq": 5}, int_high=7)
    assert {k: (v.dtype.name, v.shape) for k, v in arrays.items()} == {
        "ids": ("int64", (2, 5)), "attention_mask": ("int32", (2, 5)), "flags": ("bool", (2, 2)),
        "x": ("float16", (2, 3))}
    assert arrays["ids"].min() >= 0 and arrays["ids"].max() < 7
    assert np.all(arrays["attention_mask"] == 1)


class _Embedder(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(10, 4)
        self.head = nn.Linear(4, 2)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.head(self.embed(ids).mean(1))


def test_an_embedding_model_gets_valid_ids_and_its_macs_count() -> None:
    """The factory route crashed on int64 ids: count_macs_params built a float tensor from the shape."""
    model = _Embedder().eval()
    io = model_io([parse_input("ids:batch,seq:int64")])
    (ids,) = torch_example_inputs(model, io, {"batch": 1, "seq": 50})
    assert ids.dtype == torch.int64 and int(ids.max()) < 10  # within the smallest embedding table
    macs, params = count_macs_params(model, io)
    assert params == 10 * 4 + 4 * 2 + 2 and macs > 0


def test_single_shape_shorthand_is_one_float_input() -> None:
    io = ModelIO.single((3, 8, 8))
    assert io.inputs == (InputSpec("input", ("batch", 3, 8, 8), "float32"),) and io.flag == "--input-shape"


class _TwoInputMLP(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(20, 16)
        self.hidden = nn.Linear(16, 32)
        self.head = nn.Linear(32, 3)

    def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        pooled = (self.embed(ids) * mask.unsqueeze(-1)).sum(1)
        return self.head(torch.relu(self.hidden(pooled)))


def test_structured_pruning_feeds_every_input() -> None:
    from export.steps.prune import PruneSpec, apply_pruning

    torch.manual_seed(0)
    model = _TwoInputMLP().eval()
    io = model_io([parse_input("ids:batch,seq:int64"), parse_input("mask:batch,seq:int64")])
    apply_pruning(model, io, PruneSpec("structured", 0.5, round_to=None))
    assert model.hidden.out_features == 16 and model.head.in_features == 16
    assert model(torch.zeros((2, 5), dtype=torch.int64), torch.ones((2, 5), dtype=torch.int64)).shape == (2, 3)
