"""The backends under the Backend contract, one case each (as Polygraphy's tests/backend/).

Every case serves the same model, ``y = x * 2 + 1`` on float32 ``x [-1, 4]`` → ``y [-1, 4]``:
FakeBackend computes it directly (its defaults), ONNX Runtime runs it from a tiny signed bundle.
A new backend joins the whole suite with one entry in ``CASES``: a function that returns a
:class:`BackendCase` for that model, calling ``pytest.skip`` where the backend cannot run.
TensorRT runs here through its seam (fake ``tensorrt``/``pycuda``, real loader and runner).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

import numpy as np
import pytest
from x2_plus_1_onnx import x2_plus_1_model

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


def _tensorrt_case(context: CaseContext) -> BackendCase:
    """TensorRT through its seam: fake ``tensorrt`` and ``pycuda`` (tests/trt_fakes), the real loader, a
    bundle whose engine is a FakePlan of the same ONNX (the fake engine runs it with ONNX Runtime)."""
    pytest.importorskip("onnxruntime")
    from trt_fakes.fake_pycuda import FakeCuda
    from trt_fakes.fake_tensorrt import make_tensorrt
    from trt_fakes.fake_trt_runtime import plan_from_onnx

    from edge_runtime.backends.tensorrt.runner import TensorRTBackend
    from edge_runtime.bundle.fingerprint import HostFingerprint

    device = context.device("agx-xavier")
    host = HostFingerprint(tensorrt_version="8.5.2.2", compute_capability=device.compute_capability,
                           l4t=device.l4t, device_model="NVIDIA Jetson AGX Xavier Developer Kit", dla_cores=2)
    directory = context.tmp_path / "bundle"
    model = _affine_model(directory)
    (directory / "engines").mkdir()
    (directory / "engines" / f"{device.name}.plan").write_bytes(plan_from_onnx(model.SerializeToString()).to_bytes())
    target = TargetInfo(name=device.name, device_class=device.device_class, backend="tensorrt", precision="fp16",
                        compute_capability=host.compute_capability, tensorrt_version=host.tensorrt_version,
                        l4t=host.l4t)
    bundle = _finalize(directory, context.keypair, [target], [
        ArtifactSpec("model.onnx", "onnx", None, "fp32"),
        ArtifactSpec(f"engines/{device.name}.plan", "engine", device.name, "fp16")])
    cuda = FakeCuda()
    backend = TensorRTBackend(trt=make_tensorrt("8.5.2.2", cuda.calls, cuda_memory=cuda), cuda=cuda, host=host)
    return BackendCase(backend, bundle, device, f"engines/{device.name}.plan")


CASES: Dict[str, Callable[[CaseContext], BackendCase]] = {
    "fake": _fake_case,
    "onnxruntime": _onnxruntime_case,
    "tensorrt": _tensorrt_case,
}


def _write_affine_bundle(directory: Path, keypair: Tuple[Path, Path]) -> VerifiedBundle:
    """A signed bundle whose portable FP32 ONNX computes ``x * 2 + 1`` (written with onnx.helper, no torch)."""
    _affine_model(directory)
    target = TargetInfo(name="x86-cpu", device_class="x86-cpu", backend="onnxruntime", precision="fp32")
    return _finalize(directory, keypair, [target], [ArtifactSpec("model.onnx", "onnx", None, "fp32")])


def _finalize(directory: Path, keypair: Tuple[Path, Path], targets: List[TargetInfo],
              artifacts: List[ArtifactSpec]) -> VerifiedBundle:
    finalize_bundle(
        directory, name="affine", version="1", inputs=list(INPUTS), outputs=list(OUTPUTS),
        source_model_sha256="0" * 64, artifacts=artifacts, targets=targets,
        private_key=load_private_key(keypair[0]),
    )
    return open_bundle(directory, [load_public_key(keypair[1])])


def _affine_model(directory: Path) -> Any:
    """Write ``directory/model.onnx``, the FP32 ONNX of ``x * 2 + 1``; return the ModelProto."""
    onnx = pytest.importorskip("onnx")
    model = x2_plus_1_model()
    directory.mkdir(parents=True)
    onnx.save(model, str(directory / "model.onnx"))
    return model
