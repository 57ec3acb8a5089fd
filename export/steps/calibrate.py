"""Calibration data for static INT8 quantization: load it, check it against the model, feed it.

Accepted sources: one ``.npy`` file (a batch for a single-input model), one ``.npz`` file
(one array per input name, or a single array for a single-input model), or a directory of
such files whose batches are concatenated in name order. Every array must match the
model's input dtype exactly and its shape on every fixed axis; non-finite values are refused.
"""

from __future__ import annotations

from pathlib import Path
from typing import Dict, Iterator, List, Optional, Sequence

import numpy as np

from edge_runtime.bundle.manifest import TensorSpec
from export.errors import CalibrationDataError

Batches = Dict[str, np.ndarray]


def _read_file(path: Path, inputs: Sequence[TensorSpec]) -> Batches:
    try:
        loaded = np.load(str(path), allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise CalibrationDataError(f"cannot read calibration file {path}: {exc}") from exc
    if isinstance(loaded, np.ndarray):
        if len(inputs) != 1:
            raise CalibrationDataError(
                f"{path}: a .npy file feeds a single-input model; this one has {len(inputs)} inputs "
                "(use an .npz with one array per input name)"
            )
        return {inputs[0].name: loaded}
    with loaded:
        names = list(loaded.files)
        if len(names) == 1 and len(inputs) == 1:
            return {inputs[0].name: loaded[names[0]]}
        missing = [spec.name for spec in inputs if spec.name not in names]
        if missing:
            raise CalibrationDataError(f"{path}: no array for input(s) {', '.join(missing)} (found {names})")
        return {spec.name: loaded[spec.name] for spec in inputs}


def _check_array(array: np.ndarray, spec: TensorSpec, source: Path) -> np.ndarray:
    expected = spec.shape[1:]
    given = array.shape
    if array.ndim == len(expected):
        array = array[None]  # a single sample
    if array.ndim != len(spec.shape):
        raise CalibrationDataError(
            f"{source}: calibration data for '{spec.name}' has shape {array.shape}; "
            f"the model expects (N, {', '.join(str(d) for d in expected)})"
        )
    for axis, (got, want) in enumerate(zip(array.shape[1:], expected), start=1):
        if want != -1 and got != want:
            raise CalibrationDataError(
                f"{source}: calibration data for '{spec.name}' has shape {given}; "
                f"axis {axis} of a batch should be {want} (model input {spec.shape})"
            )
    if array.dtype != np.dtype(spec.dtype):
        raise CalibrationDataError(
            f"{source}: calibration data for '{spec.name}' is {array.dtype}; the model expects {spec.dtype}"
        )
    if array.dtype.kind == "f" and not np.isfinite(array).all():
        raise CalibrationDataError(f"{source}: calibration data for '{spec.name}' holds NaN or infinity")
    return array


def load_calibration_data(path: Path, inputs: Sequence[TensorSpec], limit: Optional[int] = None) -> Batches:
    """Read, check and concatenate calibration arrays from ``path`` (see module docstring)."""
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix in (".npy", ".npz"))
        if not files:
            raise CalibrationDataError(f"no .npy or .npz files in calibration directory {path}")
    elif path.is_file():
        files = [path]
    else:
        raise CalibrationDataError(f"calibration data not found: {path}")
    parts: Dict[str, List[np.ndarray]] = {spec.name: [] for spec in inputs}
    for file in files:
        for spec in inputs:
            parts[spec.name].append(_check_array(_read_file(file, inputs)[spec.name], spec, file))
    batches = {name: np.concatenate(arrays)[:limit] for name, arrays in parts.items()}
    counts = {len(a) for a in batches.values()}
    if len(counts) != 1:
        raise CalibrationDataError(f"{path}: inputs have different sample counts {sorted(counts)}")
    if counts == {0}:
        raise CalibrationDataError(f"{path}: calibration data holds no samples")
    return batches


def check_calibration_arrays(batches: Batches, inputs: Sequence[TensorSpec], source: str) -> Batches:
    """Check in-memory calibration arrays (e.g. a reference data set) like file data."""
    return {spec.name: _check_array(batches[spec.name], spec, Path(source)) for spec in inputs}


def iter_batches(batches: Batches, batch_size: int) -> Iterator[Batches]:
    """Yield the calibration samples as dicts of ``batch_size`` slices."""
    count = len(next(iter(batches.values())))
    for start in range(0, count, batch_size):
        yield {name: array[start : start + batch_size] for name, array in batches.items()}
