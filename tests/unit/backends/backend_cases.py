"""The backends under the Backend contract, one case each (as Polygraphy's tests/backend/).

Every case serves the same model, ``y = x * 2 + 1`` on float32 ``x [-1, 4]`` → ``y [-1, 4]``:
FakeBackend computes it directly (its defaults), ONNX Runtime runs it from a tiny signed bundle.
A new backend joins the whole suite with one entry in ``CASES``: a function that returns a
:class:`BackendCase` for that model, calling ``pytest.skip`` where the backend cannot run (the
TensorRT one, e.g., without a GPU: ``pytest.importorskip("tensorrt")``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, Optional, Tuple

import numpy as np
import pytest

from edge_runtime.backends.base import Backend, BackendOptions
from edge_runtime.bundle.manifest import TargetInfo, TensorSpec
from edge_runtime.bundle.signing import load_private_key, load_public_key
from edge_runtime.bundle.verify import VerifiedBundle, open_bundle
from edge_runtime.bundle.writer import ArtifactSpec, finalize_bundle
from edge_runtime.config import DeviceConfig, load_device_config

INPUTS = (TensorSpec(name="x", dtype="float32", shape=(-1, 4)),)
OUTPUTS = (TensorSpec(name="y", dtype="float32", shape=(-1, 4)),)
MAX_BATCH = 4


def reference(x: np.ndarray) -> np.ndarray:
    """What every case's model computes."""
    return x * 2 + 1


@dataclass
class BackendCase:
    """One backend, unloaded, and what loading it must produce."""

    backend: Backend
    bundle: Optional[VerifiedBundle]
    device: DeviceConfig
    artifact: str  # the Backend.artifact expected after load
    options: BackendOptions = field(default_factory=lambda: BackendOptions(max_batch_size=MAX_BATCH))

    def load(self) -> Backend:
        self.backend.load(self.bundle, self.device, self.options)
        return self.backend


@dataclass
class CaseContext:
    """What a case builder may use: a scratch folder, the signing key pair, the device configs."""

    tmp_path: Path
    keypair: Tuple[Path, Path]
    device_configs_dir: Path

    def device(self, name: str = "x86-cpu") -> DeviceConfig:
        return load_device_config(self.device_configs_dir / f"{name}.yaml")


def _fake_case(context: CaseContext) -> BackendCase:
    from edge_runtime.backends.fake import FakeBackend

    return BackendCase(FakeBackend(INPUTS, OUTPUTS, scale=2.0, offset=1.0), None, context.device(), "(fake)")


def _onnxruntime_case(context: CaseContext) -> BackendCase:
    pytest.importorskip("onnxruntime")
    from edge_runtime.backends.onnxruntime import OnnxRuntimeBackend

    bundle = _write_affine_bundle(context.tmp_path / "bundle", context.keypair)
    return BackendCase(OnnxRuntimeBackend(), bundle, context.device(), "model.onnx")


CASES: Dict[str, Callable[[CaseContext], BackendCase]] = {
    "fake": _fake_case,
    "onnxruntime": _onnxruntime_case,
}


def _write_affine_bundle(directory: Path, keypair: Tuple[Path, Path]) -> VerifiedBundle:
    """A signed bundle whose portable FP32 ONNX computes ``x * 2 + 1`` (written with onnx.helper, no torch)."""
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper

    graph = helper.make_graph(
        [helper.make_node("Mul", ["x", "two"], ["x2"]), helper.make_node("Add", ["x2", "one"], ["y"])],
        "affine",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4])],
        [numpy_helper.from_array(np.array(value, np.float32), name) for name, value in (("two", 2), ("one", 1))],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8  # readable by onnxruntime 1.19 (the last with Python 3.8 wheels)
    directory.mkdir(parents=True)
    onnx.save(model, str(directory / "model.onnx"))
    finalize_bundle(
        directory, name="affine", version="1", inputs=list(INPUTS), outputs=list(OUTPUTS),
        source_model_sha256="0" * 64,
        artifacts=[ArtifactSpec("model.onnx", "onnx", None, "fp32")],
        targets=[TargetInfo(name="x86-cpu", device_class="x86-cpu", backend="onnxruntime", precision="fp32")],
        private_key=load_private_key(keypair[0]),
    )
    return open_bundle(directory, [load_public_key(keypair[1])])
