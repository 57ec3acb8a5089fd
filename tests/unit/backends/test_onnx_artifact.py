"""Which ONNX file the ONNX Runtime backend serves for a device, and what it says when it falls back."""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Sequence

import pytest

from edge_runtime.backends.onnxruntime import select_onnx_artifact
from edge_runtime.bundle.manifest import Artifact, Manifest, TargetInfo, TensorSpec
from edge_runtime.config import DeviceConfig, load_device_config
from edge_runtime.errors import BundleError

SHA = "0" * 64
SPEC = (TensorSpec(name="x", dtype="float32", shape=(-1, 4)),)
PORTABLE = Artifact(path="model.onnx", sha256=SHA, size=1, kind="onnx", precision="fp32")
OWN = Artifact(path="onnx/x86-cpu.int8.onnx", sha256=SHA, size=1, kind="onnx", target="x86-cpu", precision="int8")


def _manifest(artifacts: Sequence[Artifact], targets: Sequence[TargetInfo]) -> Manifest:
    return Manifest(name="m", version="1", created="2026-11-25T00:00:00Z", inputs=SPEC, outputs=SPEC,
                    source_model_sha256=SHA, artifacts=tuple(artifacts), targets=tuple(targets))


def _target(name: str = "x86-cpu", backend: str = "onnxruntime") -> TargetInfo:
    return TargetInfo(name=name, device_class=name, backend=backend, precision="int8",
                      compute_capability="7.2" if backend == "tensorrt" else None,
                      tensorrt_version="8.5.2" if backend == "tensorrt" else None)


@pytest.fixture()
def device(device_configs_dir: Path) -> DeviceConfig:
    return load_device_config(device_configs_dir / "x86-cpu.yaml")


def test_the_targets_own_model_is_served(device: DeviceConfig) -> None:
    assert select_onnx_artifact(_manifest([PORTABLE, OWN], [_target()]), device) == OWN


@pytest.mark.parametrize(
    "artifacts, targets, reason",
    [
        ([PORTABLE], [_target("agx-xavier", "tensorrt")], "no target 'x86-cpu' (targets: agx-xavier)"),
        ([PORTABLE], [_target("x86-cpu", "tensorrt")], "target 'x86-cpu' is built for tensorrt, not onnxruntime"),
        ([PORTABLE], [_target()], "target 'x86-cpu' has no ONNX model of its own"),
    ],
    ids=["no-target", "other-backend", "no-own-model"],
)
def test_falling_back_to_the_portable_model_says_why(device: DeviceConfig, caplog: pytest.LogCaptureFixture,
                                                     artifacts: Sequence[Artifact], targets: Sequence[TargetInfo],
                                                     reason: str) -> None:
    with caplog.at_level(logging.WARNING):
        assert select_onnx_artifact(_manifest(artifacts, targets), device) == PORTABLE
    assert f"bundle 'm': {reason}; serving the portable model.onnx" in caplog.text


def test_no_model_for_the_device_and_no_portable_one(device: DeviceConfig) -> None:
    with pytest.raises(BundleError, match="has no ONNX model for 'x86-cpu' and no portable model"):
        select_onnx_artifact(_manifest([dataclasses.replace(OWN, target="agx-xavier")],
                                       [_target("agx-xavier", "tensorrt")]), device)
