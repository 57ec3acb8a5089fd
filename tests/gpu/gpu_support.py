"""What the GPU tests share: a device config for this host and a bundle's target, ONNX Runtime references."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from edge_runtime.bundle.verify import VerifiedBundle
from edge_runtime.config import DeviceConfig, device_config_from_mapping
from edge_runtime.host_info import host_fingerprint


def host_config_for_bundle(bundle: VerifiedBundle, tmp_path: Path, precision: str, zero_copy: bool) -> DeviceConfig:
    """This host as a TensorRT device config that makes the loader build ``precision``.

    INT8 takes the bundle's TensorRT target (its QDQ model); FP16 and FP32 use a config that names no
    target, so the portable FP32 model is built at the one precision the config lists.
    """
    host = host_fingerprint()
    target = next((t for t in bundle.manifest.targets if t.backend == "tensorrt"), None)
    if precision == "int8" and (target is None or target.precision != "int8"):
        import pytest

        pytest.skip("the bundle has no INT8 TensorRT target")
    name = target.name if precision == "int8" and target is not None else f"gpu-host-{precision}"
    data = {
        "name": name, "device_class": host.device_model or "gpu-host", "backend": "tensorrt",
        "precisions": [precision], "default_precision": precision, "batch": {"min": 1, "opt": 8, "max": 32},
        "quantization": {"scheme": "s8s8-qdq"}, "memory_budget_mb": 8192, "workspace_mb": 1024,
        "compute_capability": host.compute_capability, "tensorrt_version": host.tensorrt_version,
        "l4t": host.l4t, "jetpack": host.jetpack, "dla_cores": host.dla_cores or 0,
        "tensorrt": {"zero_copy": zero_copy, "build_on_device": True},
    }
    return device_config_from_mapping(data, str(tmp_path / f"{name}.yaml"))


def ort_outputs(bundle: VerifiedBundle, device: DeviceConfig, inputs: np.ndarray) -> np.ndarray:
    """ONNX Runtime (CPU) on the model the engine for ``device`` was built from: the first output."""
    import onnxruntime as ort

    own = bundle.manifest.artifacts_of("onnx", device.name)
    artifact = own[0] if own else next(a for a in bundle.manifest.artifacts_of("onnx") if a.target is None)
    session: Any = ort.InferenceSession(bundle.read_verified(artifact), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return np.concatenate([session.run(None, {name: inputs[i:i + 32]})[0] for i in range(0, len(inputs), 32)])
