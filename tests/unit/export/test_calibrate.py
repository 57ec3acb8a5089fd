"""Calibration data is read from .npy/.npz files or folders and checked against the model's inputs."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Optional

import numpy as np
import pytest

from edge_runtime.bundle.manifest import TensorSpec
from export.errors import CalibrationDataError
from export.samples import SampleSet
from export.steps.calibrate import check_arrays, load_samples

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
def test_bad_calibration_data_is_a_clear_error(tmp_path: Path, make: Any, message: str) -> None:
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


def test_a_limit_of_one_keeps_one_sample(tmp_path: Path) -> None:
    np.save(tmp_path / "c.npy", _batch(10))
    assert len(load_samples(tmp_path / "c.npy", INPUTS, limit=1)) == 1


@pytest.mark.parametrize("limit", [0, -5])
def test_a_limit_below_one_is_refused(tmp_path: Path, limit: int) -> None:
    np.save(tmp_path / "c.npy", _batch(10))
    with pytest.raises(CalibrationDataError, match="at least 1"):
        load_samples(tmp_path / "c.npy", INPUTS, limit=limit)


# --- whole messages, file selection, limits --------------------------------------------------------


def _error(path: Path, inputs: tuple = INPUTS, **options: Any) -> str:
    with pytest.raises(CalibrationDataError) as error:
        load_samples(path, inputs, **options)
    return str(error.value)


def test_the_whole_messages_of_bad_files_name_the_file(tmp_path: Path) -> None:
    path = _write(tmp_path / "x.npy", np.ones((4, 8), np.float32))
    assert _error(path) == f"{path}: calibration data for 'input' has shape (4, 8); the model expects (N, 1, 8, 8)"
    path = _write(tmp_path / "y.npy", _batch(2, dtype="float64"))
    assert _error(path) == f"{path}: calibration data for 'input' is float64; the model expects float32"
    path = _write(tmp_path / "z.npy", np.ones((2, 7), np.int64))
    assert _error(path, TEXT) == (f"{path}: a .npy file feeds a single-input model; this one has 2 inputs "
                                  "(use an .npz with one array per input name)")
    np.savez(tmp_path / "c.npz", a=np.ones((2, 7), np.int64), b=np.ones((2, 7), np.int64))
    assert _error(tmp_path / "c.npz", TEXT) == (
        f"{tmp_path / 'c.npz'}: no array for input(s) input_ids, attention_mask (found ['a', 'b'])")
    np.savez(tmp_path / "counts.npz", input_ids=np.ones((4, 7), np.int64), attention_mask=np.ones((3, 7), np.int64))
    assert _error(tmp_path / "counts.npz", TEXT) == (
        f"{tmp_path / 'counts.npz'}: inputs have different sample counts {{'input_ids': 4, 'attention_mask': 3}}")


def test_an_npz_holding_an_object_array_is_refused_without_unpickling(tmp_path: Path) -> None:
    np.savez(tmp_path / "o.npz", input=np.array([1, "a"], dtype=object))
    assert re.fullmatch(rf"cannot read calibration file {re.escape(str(tmp_path / 'o.npz'))}: .*allow_pickle.*",
                        _error(tmp_path / "o.npz"))


def test_a_single_array_npz_feeds_a_single_input_model_whatever_its_name(tmp_path: Path) -> None:
    np.savez(tmp_path / "c.npz", _batch(3))  # saved as arr_0
    assert len(load_samples(tmp_path / "c.npz", INPUTS)) == 3


def test_an_npz_with_extra_arrays_feeds_the_input_by_name(tmp_path: Path) -> None:
    data = _batch(3)
    np.savez(tmp_path / "c.npz", labels=np.arange(3), input=data)
    samples = load_samples(tmp_path / "c.npz", INPUTS)
    np.testing.assert_array_equal(samples.samples[2]["input"], data[2])


def test_a_single_array_npz_for_a_two_input_model_names_the_missing_input(tmp_path: Path) -> None:
    np.savez(tmp_path / "c.npz", input_ids=np.ones((2, 7), np.int64))
    assert _error(tmp_path / "c.npz", TEXT) == (
        f"{tmp_path / 'c.npz'}: no array for input(s) attention_mask (found ['input_ids'])")


def test_other_files_in_a_calibration_directory_are_ignored(tmp_path: Path) -> None:
    np.save(tmp_path / "a.npy", _batch(2))
    (tmp_path / "labels.json").write_text("[0, 1]")
    (tmp_path / "sub.npy").mkdir()  # a directory, whatever its name
    assert len(load_samples(tmp_path, INPUTS)) == 2


def test_files_past_the_limit_are_not_read(tmp_path: Path) -> None:
    np.save(tmp_path / "a.npy", _batch(1))
    np.save(tmp_path / "b.npy", _batch(1))
    (tmp_path / "c.npy").write_bytes(b"not numpy")
    assert len(load_samples(tmp_path, INPUTS, limit=2)) == 2
    assert len(load_samples(tmp_path, INPUTS, limit=1)) == 1


def test_a_text_file_needs_a_tokenizer(tmp_path: Path) -> None:
    path = tmp_path / "lines.txt"
    path.write_text("hello\n")
    assert _error(path, TEXT) == f"{path}: a text file becomes samples only with --tokenizer FILE"


def test_a_text_file_is_encoded_for_the_inputs_up_to_the_limit(tmp_path: Path) -> None:
    calls = []
    encoded = SampleSet.from_batched({"input_ids": np.ones((1, 3), np.int64)})

    class Encoding:
        def samples(self, path: Path, inputs: tuple, limit: Optional[int]) -> SampleSet:
            calls.append((path, inputs, limit))
            return encoded

    path = tmp_path / "lines.txt"
    assert load_samples(path, TEXT, limit=5, text=Encoding()) is encoded  # type: ignore[arg-type]
    assert calls == [(path, TEXT, 5)]


def test_check_arrays_names_its_source_and_keeps_labels() -> None:
    with pytest.raises(CalibrationDataError) as error:
        check_arrays({"other": np.ones((2, 7), np.int64)}, TEXT, "reference data")
    assert str(error.value) == "reference data: no array for input(s) input_ids, attention_mask"
    with pytest.raises(CalibrationDataError) as error:
        check_arrays({"input": _batch(2, dtype="float64")}, INPUTS, "reference data")
    assert str(error.value) == "reference data: calibration data for 'input' is float64; the model expects float32"
    samples = check_arrays({"input": _batch(2)}, INPUTS, "reference data", labels=np.array([3, 5]))
    np.testing.assert_array_equal(samples.labels, [3, 5])
