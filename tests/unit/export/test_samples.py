"""SampleSet: samples of several named inputs, bucketed by shape into batches without padding."""

from __future__ import annotations

import numpy as np
import pytest

from edge_runtime.bundle.manifest import TensorSpec
from export.errors import CalibrationDataError
from export.samples import SampleSet, random_samples


def _sample(length: int, fill: int) -> dict:
    return {"ids": np.full(length, fill, np.int64), "mask": np.ones(length, np.int64)}


def test_batches_group_identical_shapes_in_first_seen_order() -> None:
    lengths = [4, 6, 4, 4, 6, 2, 4]
    samples = SampleSet(tuple(_sample(n, i) for i, n in enumerate(lengths)))
    indexed = list(samples.indexed_batches(2))
    assert [indices for indices, _ in indexed] == [[0, 2], [3, 6], [1, 4], [5]]
    for indices, batch in indexed:
        assert set(batch) == {"ids", "mask"}
        assert batch["ids"].shape == batch["mask"].shape == (len(indices), lengths[indices[0]])
        np.testing.assert_array_equal(batch["ids"][:, 0], indices)  # each row is its own sample
    assert [len(b["ids"]) for b in samples.batches(8)] == [4, 2, 1]


def test_from_batched_splits_samples_and_keeps_labels() -> None:
    batch = {"a": np.arange(12, dtype=np.float32).reshape(3, 4), "b": np.zeros((3, 2, 2), np.int32)}
    samples = SampleSet.from_batched(batch, labels=np.array([0, 1, 2]))
    assert len(samples) == 3 and samples.names == ("a", "b")
    np.testing.assert_array_equal(samples.samples[1]["a"], [4, 5, 6, 7])
    assert samples.samples[2]["b"].shape == (2, 2)
    head = samples.head(2)
    assert len(head) == 2 and head.labels is not None and list(head.labels) == [0, 1]
    (rebatched,) = list(samples.batches(64))
    np.testing.assert_array_equal(rebatched["a"], batch["a"])


def test_from_batched_refuses_different_counts_and_wrong_labels() -> None:
    with pytest.raises(CalibrationDataError, match="different sample counts"):
        SampleSet.from_batched({"a": np.zeros((3, 4)), "b": np.zeros((2, 4))})
    with pytest.raises(CalibrationDataError, match="2 labels for 3 samples"):
        SampleSet.from_batched({"a": np.zeros((3, 4))}, labels=np.array([1, 2]))


def test_max_batch_must_be_positive() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        list(SampleSet((_sample(3, 0),)).batches(0))


def test_representative_is_one_median_sample_at_batch_1() -> None:
    samples = SampleSet(tuple(_sample(n, n) for n in (9, 3, 5, 7, 1)))
    feed = samples.representative()
    assert feed["ids"].shape == (1, 5) and feed["mask"].shape == (1, 5)
    with pytest.raises(CalibrationDataError):
        SampleSet(()).representative()


def test_concat_keeps_labels_only_when_all_parts_have_them() -> None:
    labelled = SampleSet.from_batched({"a": np.zeros((2, 3))}, np.array([1, 0]))
    plain = SampleSet.from_batched({"a": np.ones((1, 3))})
    both = SampleSet.concat([labelled, labelled])
    assert len(both) == 4 and both.labels is not None and list(both.labels) == [1, 0, 1, 0]
    assert SampleSet.concat([labelled, plain]).labels is None


def test_random_samples_cover_every_input_and_dtype() -> None:
    inputs = (TensorSpec(name="x", dtype="float32", shape=(-1, -1, 8)),
              TensorSpec(name="ids", dtype="int32", shape=(-1, 4)),
              TensorSpec(name="flag", dtype="bool", shape=(-1,)))
    samples = random_samples(inputs, 3)
    (batch,) = list(samples.batches(8))
    assert batch["x"].shape == (3, 1, 8) and batch["x"].dtype == np.float32
    assert batch["ids"].dtype == np.int32 and (batch["ids"] == 1).all()
    assert batch["flag"].shape == (3,) and batch["flag"].all()
