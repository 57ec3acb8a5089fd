"""Fake models that the HTTP tests serve (no model file): ``fake`` is FakeBackend's default, ``multi`` below."""

from __future__ import annotations

from edge_runtime.backends.fake import FakeBackend
from edge_runtime.bundle.manifest import TensorSpec


def multi_backend() -> FakeBackend:
    """Two inputs of other datatypes than FP32: A INT32 [-1, 4] and B BOOL [-1, 2] -> A_OUT, B_OUT."""
    return FakeBackend(
        inputs=(TensorSpec(name="A", dtype="int32", shape=(-1, 4)), TensorSpec(name="B", dtype="bool", shape=(-1, 2))),
        outputs=(
            TensorSpec(name="A_OUT", dtype="int32", shape=(-1, 4)),
            TensorSpec(name="B_OUT", dtype="bool", shape=(-1, 2)),
        ),
    )
