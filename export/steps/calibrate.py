"""Calibration and evaluation data: load it, check it against the model's inputs, as a SampleSet.

Accepted sources:

* one ``.npz`` file: one array per input name, batched (N first, the same N for every input);
  a single array for a single-input model;
* one ``.npy`` file: a batch (or one sample) for a single-input model;
* a directory of such files, read in name order. Each file is a batch or one sample (no batch
  axis, or a batch of 1), so files may differ in their dynamic axes (sequence length): the
  samples are bucketed by shape when batched, never padded;
* a ``.txt`` file with ``--tokenizer``: one sample per non-blank line (export/text_data.py).

Every array must match its input's dtype exactly and its shape on every fixed axis;
NaN and infinity are refused. Each problem is one CalibrationDataError line.
"""

from __future__ import annotations

from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np

from edge_runtime.bundle.manifest import TensorSpec
from export.errors import CalibrationDataError
from export.samples import Batch, SampleSet
from export.text_data import TextEncoding


def _read_file(path: Path, inputs: Sequence[TensorSpec]) -> Dict[str, np.ndarray]:
    try:
        loaded = np.load(str(path), allow_pickle=False)
    except (OSError, ValueError, EOFError) as exc:
        raise CalibrationDataError(f"cannot read calibration file {path}: {exc}") from exc
    if isinstance(loaded, np.ndarray):
        if len(inputs) != 1:
            raise CalibrationDataError(
                f"{path}: a .npy file feeds a single-input model; this one has {len(inputs)} inputs "
                "(use an .npz with one array per input name)"
            )
        return {inputs[0].name: loaded}
    try:
        with loaded:
            names = list(loaded.files)
            if len(names) == 1 and len(inputs) == 1:
                return {inputs[0].name: loaded[names[0]]}
            missing = [spec.name for spec in inputs if spec.name not in names]
            if missing:
                raise CalibrationDataError(f"{path}: no array for input(s) {', '.join(missing)} (found {names})")
            return {spec.name: loaded[spec.name] for spec in inputs}
    except (OSError, ValueError, EOFError) as exc:  # a corrupt member, or an object array
        raise CalibrationDataError(f"cannot read calibration file {path}: {exc}") from exc


def _check_array(array: np.ndarray, spec: TensorSpec, source: str) -> np.ndarray:
    """Return ``array`` as a batch (N first) after checking it against ``spec``."""
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
    if array.dtype.kind in "fc" and not np.isfinite(array).all():
        raise CalibrationDataError(f"{source}: calibration data for '{spec.name}' holds NaN or infinity")
    return array


def check_arrays(batch: Batch, inputs: Sequence[TensorSpec], source: str,
                 labels: Optional[np.ndarray] = None) -> SampleSet:
    """Check batched in-memory arrays (e.g. a reference data set) like file data; split into samples."""
    missing = [spec.name for spec in inputs if spec.name not in batch]
    if missing:
        raise CalibrationDataError(f"{source}: no array for input(s) {', '.join(missing)}")
    checked = {spec.name: _check_array(batch[spec.name], spec, source) for spec in inputs}
    counts = {name: len(array) for name, array in checked.items()}
    if len(set(counts.values())) > 1:
        raise CalibrationDataError(f"{source}: inputs have different sample counts {counts}")
    return SampleSet.from_batched(checked, labels)


def _files(path: Path) -> List[Path]:
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix in (".npy", ".npz") and p.is_file())
        if not files:
            raise CalibrationDataError(f"no .npy or .npz files in calibration directory {path}")
        return files
    if path.is_file():
        return [path]
    raise CalibrationDataError(f"calibration data not found: {path}")


def load_samples(path: Path, inputs: Sequence[TensorSpec], limit: Optional[int] = None,
                 text: Optional[TextEncoding] = None) -> SampleSet:
    """Read and check the samples at ``path`` (see the module docstring); keep the first ``limit``."""
    if limit is not None and limit < 1:
        raise CalibrationDataError(f"the number of calibration samples must be at least 1, got {limit}")
    if path.suffix == ".txt":
        if text is None:
            raise CalibrationDataError(f"{path}: a text file becomes samples only with --tokenizer FILE")
        return text.samples(path, inputs, limit)
    parts: List[SampleSet] = []
    count = 0
    for file in _files(path):
        if limit is not None and count >= limit:
            break
        part = check_arrays(_read_file(file, inputs), inputs, str(file))
        parts.append(part)
        count += len(part)
    samples = SampleSet.concat(parts)
    if limit is not None:
        samples = samples.head(limit)
    if not len(samples):
        raise CalibrationDataError(f"{path}: calibration data holds no samples")
    return samples
