"""scikit-learn's bundled 8x8 digits (1,797 images, no download) split for export work.

The split is stratified and seeded so that every run, test and benchmark sees the same
held-out set. Calibration samples come from the training split, never from the test split.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class LabelledSplits:
    """Train and held-out arrays, images as float32 N x C x H x W, labels as int64."""

    train_x: np.ndarray
    train_y: np.ndarray
    test_x: np.ndarray
    test_y: np.ndarray

    def calibration(self, count: int) -> np.ndarray:
        """The first ``count`` training images (the split is already shuffled)."""
        return self.train_x[:count]


def load_digits_splits(test_fraction: float = 0.25, seed: int = 0) -> LabelledSplits:
    """Load the digits set, scale pixels from 0..16 to 0..1 and split it."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    images = (digits.images / 16.0).astype(np.float32)[:, None, :, :]
    labels = digits.target.astype(np.int64)
    train_x, test_x, train_y, test_y = train_test_split(
        images, labels, test_size=test_fraction, random_state=seed, stratify=labels
    )
    return LabelledSplits(train_x, train_y, test_x, test_y)
