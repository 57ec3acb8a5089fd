"""Samples of a model's named inputs, possibly of different lengths, and their batching.

A :class:`SampleSet` holds one dict of arrays per sample (input name -> array without the
batch axis) and optional labels. Calibration, evaluation and latency all read their data
through it, so that every input of a model is fed, never only the first.

Batches group samples of identical shapes (bucketing by length) instead of padding them:
a padded attention mask would put its additive -inf (or -3.4e38) into the calibrated
ranges of every attention Add, which destroys an INT8 transformer (FIELD-NOTES).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Iterator, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from edge_runtime.bundle.manifest import TensorSpec
from export.errors import CalibrationDataError

Sample = Dict[str, np.ndarray]  # input name -> one sample's array, no batch axis
Batch = Dict[str, np.ndarray]  # input name -> a batch, samples along axis 0


@dataclass(frozen=True)
class SampleSet:
    """Samples of named inputs (one dict each, no batch axis) and, when known, one label per sample."""

    samples: Tuple[Sample, ...]
    labels: Optional[np.ndarray] = None

    def __post_init__(self) -> None:
        if self.labels is not None and len(self.labels) != len(self.samples):
            raise CalibrationDataError(f"{len(self.labels)} labels for {len(self.samples)} samples")

    def __len__(self) -> int:
        return len(self.samples)

    @property
    def names(self) -> Tuple[str, ...]:
        """The input names, in the order of the first sample."""
        return tuple(self.samples[0]) if self.samples else ()

    def head(self, n: int) -> SampleSet:
        """The first ``n`` samples (and their labels)."""
        labels = None if self.labels is None else self.labels[:n]
        return SampleSet(self.samples[:n], labels)

    def indexed_batches(self, max_batch: int) -> Iterator[Tuple[List[int], Batch]]:
        """Yield (sample indices, batch) for buckets of identical shapes, at most ``max_batch`` each.

        Buckets come in order of their first sample; samples keep their order inside a bucket.
        """
        if max_batch < 1:
            raise ValueError(f"max_batch must be at least 1, got {max_batch}")
        buckets: Dict[Tuple[Tuple[str, Tuple[int, ...]], ...], List[int]] = {}
        for index, sample in enumerate(self.samples):
            key = tuple((name, array.shape) for name, array in sample.items())
            buckets.setdefault(key, []).append(index)
        for indices in buckets.values():
            for start in range(0, len(indices), max_batch):
                chunk = indices[start : start + max_batch]
                yield chunk, {name: np.stack([self.samples[i][name] for i in chunk]) for name in self.names}

    def batches(self, max_batch: int) -> Iterator[Batch]:
        """Yield dicts of batched arrays, each from samples of identical shapes (no padding)."""
        for _, batch in self.indexed_batches(max_batch):
            yield batch

    def representative(self) -> Batch:
        """One sample at batch 1, of median size among the samples: the feed for latency timing."""
        if not self.samples:
            raise CalibrationDataError("no samples to time the model with")
        sizes = [sum(array.size for array in sample.values()) for sample in self.samples]
        index = int(np.argsort(sizes, kind="stable")[(len(sizes) - 1) // 2])
        return {name: array[None] for name, array in self.samples[index].items()}

    @classmethod
    def from_batched(cls, batch: Mapping[str, np.ndarray], labels: Optional[np.ndarray] = None) -> SampleSet:
        """Split a dict of batched arrays (same N first for every input) into samples."""
        counts = {name: len(array) for name, array in batch.items()}
        if len(set(counts.values())) > 1:
            raise CalibrationDataError(f"inputs have different sample counts: {counts}")
        count = next(iter(counts.values()), 0)
        samples = tuple({name: array[i] for name, array in batch.items()} for i in range(count))
        return cls(samples, labels)

    @classmethod
    def concat(cls, parts: Sequence[SampleSet]) -> SampleSet:
        """Join sample sets in order; labels are kept only when every part has them."""
        samples = tuple(sample for part in parts for sample in part.samples)
        if parts and all(part.labels is not None for part in parts):
            return cls(samples, np.concatenate([part.labels for part in parts if part.labels is not None]))
        return cls(samples)


def random_samples(inputs: Sequence[TensorSpec], count: int, seed: int = 0) -> SampleSet:
    """``count`` synthetic samples: standard normal floats, ones for integer and bool inputs.

    Ones are valid token ids and mask values alike, so integer models run on them; dynamic
    axes get length 1. Used only when there is no data at all, and the report says so.
    """
    rng = np.random.default_rng(seed)
    batch: Batch = {}
    for spec in inputs:
        shape = (count, *(d if d > 0 else 1 for d in spec.shape[1:]))
        dtype = np.dtype(spec.dtype)
        batch[spec.name] = (rng.standard_normal(shape).astype(dtype) if dtype.kind == "f"
                            else np.ones(shape, dtype))
    return SampleSet.from_batched(batch)
