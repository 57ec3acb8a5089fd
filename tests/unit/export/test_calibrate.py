"""Calibration data is read from .npy/.npz files or folders and checked against the model's inputs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edge_runtime.bundle.manifest import TensorSpec
from export.errors import CalibrationDataError
from export.steps.calibrate import load_samples

INPUTS = (TensorSpec(name="input", dtype="float32", shape=(-1, 1, 8, 8)),)


def _batch(n: int, shape: tuple = (1, 8, 8), dtype: str = "float32") -> np.ndarray:
    return np.random.default_rng(n).random((n, *shape)).astype(dtype)


def test_npy_file_and_limit(tmp_path: Path) -> None:
    np.save(tmp_path / "c.npy", _batch(10))
    samples = load_samples(tmp_path / "c.npy", INPUTS, limit=4)
    assert len(samples) == 4 and samples.samples[0]["input"].shape == (1, 8, 8)


def test_directory_concatenates_batches_and_single_samples(tmp_path: Path) -> None:
    np.save(tmp_path / "a.npy", _batch(3))
    np.save(tmp_path / "b.npy", _batch(1)[0])  # one sample without batch axis
    np.savez(tmp_path / "c.npz", input=_batch(2))
    samples = load_samples(tmp_path, INPUTS)
    assert len(samples) == 6
    assert [b["input"].shape for b in samples.batches(4)] == [(4, 1, 8, 8), (2, 1, 8, 8)]


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
        load_samples(make(tmp_path), INPUTS)


def test_npz_needs_an_array_per_input(tmp_path: Path) -> None:
    two = (INPUTS[0], TensorSpec(name="mask", dtype="float32", shape=(-1, 8)))
    np.savez(tmp_path / "c.npz", input=_batch(2))
    with pytest.raises(CalibrationDataError, match="no array for input"):
        load_samples(tmp_path / "c.npz", two)


TEXT = (TensorSpec(name="input_ids", dtype="int64", shape=(-1, -1)),
        TensorSpec(name="attention_mask", dtype="int64", shape=(-1, -1)))


def _text_sample(length: int, seed: int) -> dict:
    ids = np.random.default_rng(seed).integers(1, 50, size=length, dtype=np.int64)
    return {"input_ids": ids, "attention_mask": np.ones(length, np.int64)}


def test_directory_of_variable_length_samples_for_two_inputs(tmp_path: Path) -> None:
    lengths = [5, 9, 5, 3, 9, 9]
    for i, length in enumerate(lengths):
        sample = _text_sample(length, i)
        if i == 1:  # a batch of 1 is one sample too
            sample = {name: array[None] for name, array in sample.items()}
        np.savez(tmp_path / f"s{i:02d}.npz", **sample)
    samples = load_samples(tmp_path, TEXT)
    assert [s["input_ids"].shape for s in samples.samples] == [(n,) for n in lengths]
    np.testing.assert_array_equal(samples.samples[3]["input_ids"], _text_sample(3, 3)["input_ids"])
    shapes = [(b["input_ids"].shape, b["attention_mask"].shape) for b in samples.batches(2)]
    assert shapes == [((2, 5), (2, 5)), ((2, 9), (2, 9)), ((1, 9), (1, 9)), ((1, 3), (1, 3))]
    assert load_samples(tmp_path, TEXT, limit=4).samples[-1]["input_ids"].shape == (3,)


def test_npz_batch_of_two_inputs(tmp_path: Path) -> None:
    np.savez(tmp_path / "c.npz", input_ids=np.ones((4, 7), np.int64), attention_mask=np.ones((4, 7), np.int64))
    samples = load_samples(tmp_path / "c.npz", TEXT)
    assert len(samples) == 4 and set(samples.names) == {"input_ids", "attention_mask"}


@pytest.mark.parametrize(
    "arrays, message",
    [
        ({"input_ids": np.ones((4, 7), np.int64), "attention_mask": np.ones((3, 7), np.int64)},
         "different sample counts"),
        ({"input_ids": np.ones((4, 7), np.int32), "attention_mask": np.ones((4, 7), np.int64)},
         "'input_ids' is int32; the model expects int64"),
        ({"input_ids": np.ones((4, 7, 2), np.int64), "attention_mask": np.ones((4, 7), np.int64)},
         r"has shape \(4, 7, 2\)"),
        ({"input_ids": np.ones((4, 7), np.int64)}, "no array for input"),
    ],
    ids=["counts", "dtype", "rank", "missing-input"],
)
def test_bad_two_input_data_is_one_line(tmp_path: Path, arrays: dict, message: str) -> None:
    np.savez(tmp_path / "c.npz", **arrays)
    with pytest.raises(CalibrationDataError, match=message) as error:
        load_samples(tmp_path / "c.npz", TEXT)
    assert "\n" not in str(error.value)


def test_npy_needs_a_single_input_model(tmp_path: Path) -> None:
    np.save(tmp_path / "c.npy", np.ones((2, 7), np.int64))
    with pytest.raises(CalibrationDataError, match="single-input model"):
        load_samples(tmp_path / "c.npy", TEXT)


def test_infinity_in_float16_is_refused(tmp_path: Path) -> None:
    spec = (TensorSpec(name="x", dtype="float16", shape=(-1, 4)),)
    np.save(tmp_path / "c.npy", np.array([[1, 2, np.inf, 4]], np.float16))
    with pytest.raises(CalibrationDataError, match="NaN or infinity"):
        load_samples(tmp_path / "c.npy", spec)


@pytest.mark.parametrize("limit", [0, -5])
def test_a_limit_below_one_is_refused(tmp_path: Path, limit: int) -> None:
    np.save(tmp_path / "c.npy", _batch(10))
    with pytest.raises(CalibrationDataError, match="at least 1"):
        load_samples(tmp_path / "c.npy", INPUTS, limit=limit)
