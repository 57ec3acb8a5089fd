"""TensorRT engine build for Jetson targets: the pipeline's slot, filled by the TensorRT issue.

The slot exists so the pipeline's order and the bundle layout (``engines/<target>.plan``)
are settled now. Until the builder lands, exporting for a TensorRT target says so plainly
unless ``--skip-engine`` is given; the bundle then carries the target's S8S8 QDQ ONNX,
from which an engine can be built on the device.
"""

from __future__ import annotations

from pathlib import Path

from edge_runtime.config import DeviceConfig
from export.errors import StepUnavailableError


def ensure_available(config: DeviceConfig) -> None:
    """Fail before any heavy work when engines for ``config`` cannot be built here."""
    raise StepUnavailableError(
        f"building a TensorRT engine for '{config.name}' is not in this release yet; "
        "pass --skip-engine to bundle the target's QDQ ONNX without an engine"
    )


def build_engine(onnx_path: Path, engine_path: Path, config: DeviceConfig, precision: str) -> None:
    """Build a serialized TensorRT engine for ``config`` (not in this release: see module doc)."""
    ensure_available(config)
