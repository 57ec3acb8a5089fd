"""Held-out evaluation of quantized candidates against FP32, in the two ways clients feed a model.

* **natural-length**: samples bucketed by shape (``SampleSet.batches``), never padded;
* **zero-padded mixed-length**: samples in order, ``PADDED_BATCH`` at a time, every input padded with
  0 along its dynamic non-batch axes to the batch's longest. That is what clients send the runtime,
  and where a naively calibrated INT8 transformer breaks: natural-length calibration never sees the
  attention mask's additive minimum, so padded keys stop being masked (tests/export_models).

Each metric is the worse of the two modes, each mode compared with FP32 run the same way. Outputs
with a dynamic non-batch axis cannot be compared row by row once padded: they are compared in
natural-length mode only. Padded mode runs only when some input has such an axis and the samples'
shapes differ (otherwise it is the natural mode again).

Held-out data: ``--eval-data``; else the reference model's test split; else 25 % of the calibration
samples split off with the seed, never used for calibration.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np

from edge_runtime.bundle.manifest import TensorSpec
from export.errors import CalibrationDataError
from export.report import Outputs, fidelity, run_samples, session, top1
from export.samples import Batch, SampleSet
from export.text_data import TextEncoding

PADDED_BATCH = 8
HELD_OUT_FRACTION = 0.25
LABELS_FILE = "labels.json"


def with_labels(samples: SampleSet, path: Path) -> SampleSet:
    """``samples`` read from ``path`` with the labels of ``labels.json`` beside them, when there is one.

    Labels map file name to a class (one sample per file) or to a list (a batch per file), and are
    taken in file-name order, as the samples were read.
    """
    labels_file = path / LABELS_FILE if path.is_dir() else path.parent / LABELS_FILE
    if not labels_file.is_file():
        return samples
    try:
        mapping = json.loads(labels_file.read_text())
    except (OSError, ValueError) as exc:
        raise CalibrationDataError(f"cannot read {labels_file}: {exc}") from exc
    files = sorted(p.name for p in (path.iterdir() if path.is_dir() else [path]) if p.suffix in (".npy", ".npz"))
    labels: List[int] = []
    for name in files:
        if len(labels) >= len(samples):
            break
        if not isinstance(mapping, dict) or name not in mapping:
            raise CalibrationDataError(f"{labels_file}: no label for {name}")
        value = mapping[name]
        labels.extend(int(v) for v in (value if isinstance(value, list) else [value]))
    if len(labels) < len(samples):
        raise CalibrationDataError(f"{labels_file}: {len(labels)} labels for {len(samples)} samples")
    return SampleSet(samples.samples, np.asarray(labels[: len(samples)], np.int64))


def load_labelled(path: Path, inputs: Sequence[TensorSpec], limit: Optional[int] = None,
                  text: Optional[TextEncoding] = None) -> SampleSet:
    """Samples at ``path`` (--calib-data's formats), labelled when ``labels.json`` is beside them (not text)."""
    from export.steps.calibrate import load_samples

    samples = load_samples(path, inputs, limit, text)
    return samples if path.suffix == ".txt" else with_labels(samples, path)


def split_off(samples: SampleSet, seed: int, fraction: float = HELD_OUT_FRACTION) -> Tuple[SampleSet, SampleSet]:
    """(calibration, held-out): ``fraction`` of the samples (at least 1) drawn with ``seed``, in order."""
    if len(samples) < 2:
        raise CalibrationDataError(
            f"{len(samples)} calibration sample(s): at least 2 are needed to hold some out for the accuracy "
            "check (or pass --eval-data)")
    count = max(1, round(len(samples) * fraction))
    held = set(np.random.default_rng(seed).permutation(len(samples))[:count].tolist())
    return _subset(samples, [i for i in range(len(samples)) if i not in held]), _subset(samples, sorted(held))


def _subset(samples: SampleSet, indices: Sequence[int]) -> SampleSet:
    labels = None if samples.labels is None else samples.labels[list(indices)]
    return SampleSet(tuple(samples.samples[i] for i in indices), labels)


def padded_batches(samples: SampleSet, inputs: Sequence[TensorSpec],
                   batch: int = PADDED_BATCH) -> Iterator[Tuple[List[int], Batch]]:
    """(indices, batch) of consecutive samples, each input zero-padded on its dynamic non-batch axes."""
    for start in range(0, len(samples), batch):
        indices = list(range(start, min(start + batch, len(samples))))
        feed: Batch = {}
        for spec in inputs:
            arrays = [samples.samples[i][spec.name] for i in indices]
            width = np.max([a.shape for a in arrays], axis=0)
            out = np.zeros((len(arrays), *width), arrays[0].dtype)
            for row, array in enumerate(arrays):
                region: Tuple[Any, ...] = (row, *(slice(0, n) for n in array.shape))
                out[region] = array
            feed[spec.name] = out
        yield indices, feed


def _fixed(spec: TensorSpec) -> bool:
    return all(d > 0 for d in spec.shape[1:])


@dataclass
class HeldOut:
    """Held-out samples, the model's I/O and FP32's outputs in both modes: measures a candidate file."""

    samples: SampleSet
    inputs: Sequence[TensorSpec]
    outputs: Sequence[TensorSpec]
    source: str
    _reference: Dict[str, Outputs] = field(default_factory=dict)

    @property
    def padded_mode(self) -> bool:
        """Whether zero-padded mixed-length batches differ from natural ones here and can be compared."""
        dynamic = any(d < 0 for spec in self.inputs for d in spec.shape[1:])
        shapes = {tuple((k, v.shape) for k, v in s.items()) for s in self.samples.samples}
        return dynamic and len(shapes) > 1 and any(_fixed(spec) for spec in self.outputs)

    def description(self) -> str:
        """How candidates are evaluated, for the report."""
        count = f"{len(self.samples)} held-out samples ({self.source})"
        if not self.padded_mode:
            return f"natural-length batches, {count}"
        dynamic = [spec.name for spec in self.outputs if not _fixed(spec)]
        text = f"natural-length and zero-padded mixed-length batches (batch {PADDED_BATCH}), {count}"
        return text + (f"; outputs {', '.join(dynamic)} (dynamic non-batch axes) compared at natural length only"
                       if dynamic else "")

    def run(self, path: Path, mode: str) -> Outputs:
        """Per-sample outputs of ``path`` in ``mode`` ("natural": all outputs; "padded": fixed ones)."""
        sess = session(path)
        if mode == "natural":
            return run_samples(sess, self.samples)
        keep = [i for i, spec in enumerate(self.outputs) if _fixed(spec)]
        per_sample: Outputs = [[] for _ in range(len(self.samples))]
        for indices, feed in padded_batches(self.samples, self.inputs):
            results = sess.run(None, feed)
            for index in keep:
                for row, sample in enumerate(indices):
                    per_sample[sample].append(results[index][row])
        return per_sample

    def modes(self) -> List[str]:
        return ["natural", "padded"] if self.padded_mode else ["natural"]

    def reference(self, fp32_path: Path) -> None:
        """Run FP32 once per mode: what every candidate is compared with."""
        self._reference = {mode: self.run(fp32_path, mode) for mode in self.modes()}

    def measure(self, path: Path) -> Dict[str, Any]:
        """The candidate's metrics: worst over modes at the top level, per mode under "modes"."""
        per_mode: Dict[str, Dict[str, float]] = {}
        for mode, reference in self._reference.items():
            outputs = self.run(path, mode)
            fid = fidelity(outputs, reference)
            metrics = {"cosine_mean": fid["cosine_vs_fp32"], "cosine_min": fid["min_cosine_vs_fp32"],
                       "max_abs": fid["max_abs_error_vs_fp32"]}
            if self.samples.labels is not None and (mode == "natural" or _fixed(self.outputs[0])):
                fp32_top1 = top1(reference, self.samples.labels)
                metrics["top1"] = top1(outputs, self.samples.labels)
                metrics["top1_drop"] = fp32_top1 - metrics["top1"]
            per_mode[mode] = {k: round(float(v), 6) for k, v in metrics.items()}
        return {**_worst(per_mode), "modes": per_mode}


def _worst(per_mode: Dict[str, Dict[str, float]]) -> Dict[str, float]:
    worst: Dict[str, float] = {}
    for metrics in per_mode.values():
        for key, value in metrics.items():
            pick = max if key in ("top1_drop", "max_abs") else min
            worst[key] = pick(worst[key], value) if key in worst else value
    return worst


def held_out_set(eval_data: Optional[SampleSet], test_split: Optional[SampleSet], calibration: SampleSet,
                 seed: int) -> Tuple[SampleSet, SampleSet, str]:
    """(calibration samples, held-out samples, where they come from) by the module docstring's order."""
    if eval_data is not None:
        return calibration, eval_data, "--eval-data"
    if test_split is not None:
        return calibration, test_split, "the model's test split"
    calib, held = split_off(calibration, seed)
    return calib, held, f"{int(HELD_OUT_FRACTION * 100)} % of the calibration data, split off with seed {seed}"
