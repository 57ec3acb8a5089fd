"""Calibration data is read from .npy/.npz files or folders and checked against the model input."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edge_runtime.bundle.manifest import TensorSpec
from export.errors import CalibrationDataError
from export.steps.calibrate import iter_batches, load_calibration_data

INPUTS = (TensorSpec(name="input", dtype="float32", shape=(-1, 1, 8, 8)),)


def _batch(n: int, shape: tuple = (1, 8, 8), dtype: str = "float32") -> np.ndarray:
    return np.random.default_rng(n).random((n, *shape)).astype(dtype)


def test_npy_file_and_limit(tmp_path: Path) -> None:
    np.save(tmp_path / "c.npy", _batch(10))
    batches = load_calibration_data(tmp_path / "c.npy", INPUTS, limit=4)
    assert batches["input"].shape == (4, 1, 8, 8)


def test_directory_concatenates_batches_and_single_samples(tmp_path: Path) -> None:
    np.save(tmp_path / "a.npy", _batch(3))
    np.save(tmp_path / "b.npy", _batch(1)[0])  # one sample without batch axis
    np.savez(tmp_path / "c.npz", input=_batch(2))
    batches = load_calibration_data(tmp_path, INPUTS)
    assert batches["input"].shape == (6, 1, 8, 8)
    assert [len(b["input"]) for b in iter_batches(batches, 4)] == [4, 2]


def _write(path: Path, array: np.ndarray) -> Path:
    np.save(path, array)
    return path


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda d: _write(d / "x.npy", _batch(4, (1, 9, 9))), r"axis 2 of a batch should be 8"),
        (lambda d: _write(d / "x.npy", _batch(4, (8, 8))), r"has shape \(4, 8, 8\); axis 1 of a batch should be 1"),
        (lambda d: _write(d / "x.npy", _batch(4, dtype="float64")), "is float64; the model expects float32"),
        (lambda d: _write(d / "x.npy", np.zeros((4, 1, 8, 8), np.int64)), "is int64"),
        (lambda d: _write(d / "x.npy", np.full((2, 1, 8, 8), np.nan, np.float32)), "NaN or infinity"),
        (lambda d: _write(d / "x.npy", np.zeros((0, 1, 8, 8), np.float32)), "holds no samples"),
        (lambda d: d / "missing.npy", "not found"),
        (lambda d: d, "no .npy or .npz files"),
        (lambda d: (d / "bad.npy").write_bytes(b"not numpy") and d / "bad.npy", "cannot read"),
    ],
    ids=["wrong-spatial", "missing-channel-axis", "float64", "int64", "nan", "empty", "missing", "empty-dir",
         "corrupt"],
)
def test_bad_calibration_data_is_a_clear_error(tmp_path: Path, make, message: str) -> None:
    with pytest.raises(CalibrationDataError, match=message):
        load_calibration_data(make(tmp_path), INPUTS)


def test_npz_needs_an_array_per_input(tmp_path: Path) -> None:
    two = (INPUTS[0], TensorSpec(name="mask", dtype="float32", shape=(-1, 8)))
    np.savez(tmp_path / "c.npz", input=_batch(2))
    with pytest.raises(CalibrationDataError, match="no array for input"):
        load_calibration_data(tmp_path / "c.npz", two)
