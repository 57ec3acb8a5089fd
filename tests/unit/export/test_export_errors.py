"""export's errors live in export/errors.py, on the project's one base; edge_runtime holds none of them."""

from __future__ import annotations

import pytest

import edge_runtime.errors
from edge_runtime.errors import EdgeRuntimeError
from export import errors


@pytest.mark.parametrize("name, status", [
    ("ExportError", 400), ("ModelSourceError", 400), ("CalibrationDataError", 400), ("PruningError", 400),
    ("OutputError", 400), ("StepUnavailableError", 501),
])
def test_every_export_error_is_on_the_shared_base_with_its_status(name: str, status: int) -> None:
    error_class = getattr(errors, name)
    assert issubclass(error_class, EdgeRuntimeError) and error_class.http_status == status
    assert name in errors.__all__


@pytest.mark.parametrize("name", ["ExportError", "ModelSourceError", "CalibrationDataError", "PruningError",
                                  "StepUnavailableError"])
def test_the_device_runtime_does_not_define_export_errors(name: str) -> None:
    assert not hasattr(edge_runtime.errors, name)


def test_output_error_is_the_device_runtimes_own() -> None:
    """export writes bundles with edge_runtime.atomic_io: what it raises is what export re-exports."""
    assert errors.OutputError is edge_runtime.errors.OutputError
