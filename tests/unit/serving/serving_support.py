"""Helpers shared by the serving tests."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, List, Optional

from x2_plus_1_onnx import x2_plus_1_model

from edge_runtime.config import RuntimeSettings, runtime_settings_from_mapping


def settings(**overrides: Any) -> RuntimeSettings:
    """Runtime settings for tests: one warm-up run, overrides applied on top."""
    data = {"device_config": "unused.yaml", "trusted_keys": ["unused.pub"], "warmup_runs": 1,
            "drain_timeout_s": 5.0}
    data.update(overrides)
    return runtime_settings_from_mapping(data, "test-settings")


# --- signed bundles on disk (the repository tests) ----------------------------------------------

AFFINE_INPUT = "x"  # every bundle below serves y = x * 2 + 1 on float32 x [-1, 4] -> y [-1, 4]


def _affine_onnx() -> bytes:
    """The FP32 ONNX of ``y = x * 2 + 1`` (written with onnx.helper, no torch)."""
    return bytes(x2_plus_1_model().SerializeToString())


class BundleShelf:
    """Writes ``<root>/<model>/<version>/`` directories: signed affine bundles, or broken ones."""

    def __init__(self, root: Path, private_key: Path) -> None:
        self.root, self._private_key = root, private_key
        self._onnx: Optional[bytes] = None

    def add(self, name: str, version: str, memory_mb: Optional[float] = 1) -> Path:
        """A signed bundle of the affine model at ``<root>/<name>/<version>``, recording ``memory_mb`` (None: not)."""
        from edge_runtime.bundle import ArtifactSpec, TargetInfo, TensorSpec, finalize_bundle
        from edge_runtime.bundle.signing import load_private_key

        if self._onnx is None:
            self._onnx = _affine_onnx()
        directory = self.root / name / version
        directory.mkdir(parents=True)
        (directory / "model.onnx").write_bytes(self._onnx)
        finalize_bundle(directory, name=name, version=version,
                        inputs=[TensorSpec("x", "float32", (-1, 4))], outputs=[TensorSpec("y", "float32", (-1, 4))],
                        source_model_sha256="0" * 64, artifacts=[ArtifactSpec("model.onnx", "onnx", None, "fp32")],
                        targets=[TargetInfo("x86-cpu", "x86-cpu", "onnxruntime", "fp32")],
                        private_key=load_private_key(self._private_key),
                        metadata={} if memory_mb is None else {"memory_mb": memory_mb})
        return directory

    def add_unsigned(self, name: str, version: str) -> Path:
        """A version directory with no manifest or signature: it fails to load ("not signed")."""
        directory = self.root / name / version
        directory.mkdir(parents=True)
        (directory / "model.onnx").write_bytes(b"not really")
        return directory


REPOSITORY_LOGGER = "edge_runtime.serving.repository"


def repository_log(records: List[logging.LogRecord]) -> List[str]:
    """``"LEVEL message"`` of each record the repository logged (operators read these lines)."""
    return [f"{record.levelname} {record.getMessage()}" for record in records if record.name == REPOSITORY_LOGGER]
