"""The export pipeline's errors, on the project's one base (edge_runtime.errors.EdgeRuntimeError).

``edge_runtime`` never imports ``export``, so the workstation's errors live here, as MLServer's
subpackages keep theirs in their own ``errors.py``. The CLI prints any of them as one line.

    EdgeRuntimeError (500)                edge_runtime/errors.py
    ├── StepUnavailableError (501)        a pipeline step that this build does not provide
    ├── ExportError (400)                 the export pipeline cannot go on
    │   ├── ModelSourceError (400)        model name / import path / weights / ONNX file
    │   ├── CalibrationDataError (400)    calibration data missing, wrong shape or dtype
    │   └── PruningError (400)            pruning asked for something impossible
    └── OutputError (400)                 the output location cannot be written

OutputError is the device's own (its atomic writes raise it, and the export writes bundles with
them), re-exported here so that export code takes every error it raises from this module.
"""

from __future__ import annotations

from edge_runtime.errors import EdgeRuntimeError, OutputError

__all__ = [
    "CalibrationDataError",
    "ExportError",
    "ModelSourceError",
    "OutputError",
    "PruningError",
    "StepUnavailableError",
]


class StepUnavailableError(EdgeRuntimeError):
    """A pipeline step exists as a slot but is not provided by this build."""

    http_status = 501


class ExportError(EdgeRuntimeError):
    """The export pipeline cannot continue."""

    http_status = 400


class ModelSourceError(ExportError):
    """The model to export cannot be found, imported or loaded."""


class CalibrationDataError(ExportError):
    """Calibration data is missing or does not fit the model's input."""


class PruningError(ExportError):
    """A pruning request cannot be carried out."""
