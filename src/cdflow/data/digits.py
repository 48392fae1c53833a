"""scikit-learn's bundled 8x8 digits (1,797 images, no download), scaled to [0, 1], with a seeded
stratified split and an optional semi-supervised labelled subset."""

from __future__ import annotations

import numpy as np
import torch
from sklearn.datasets import load_digits as _sk_load_digits

from cdflow.data.splits import SplitData, split_with_labels

DIGITS_MAX = 16.0


def load_digits_arrays() -> tuple[torch.Tensor, torch.Tensor]:
    """All 1,797 digits: ``x float32 [1797, 64]`` in [0, 1] (pixel / 16) and ``y int64 [1797]``."""
    bunch = _sk_load_digits()
    x = torch.from_numpy((bunch.data / DIGITS_MAX).astype(np.float32))
    return x, torch.from_numpy(bunch.target.astype(np.int64))


def load_digits(
    seed: int = 0,
    *,
    val_fraction: float = 0.2,
    test_fraction: float = 0.2,
    labels_per_class: int | None = None,
) -> SplitData:
    """The digits with a seeded stratified split (see :func:`split_with_labels`)."""
    x, y = load_digits_arrays()
    return split_with_labels(
        x, y, seed, val_fraction=val_fraction, test_fraction=test_fraction, labels_per_class=labels_per_class
    )
