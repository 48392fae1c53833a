"""scikit-learn's bundled 8x8 digits (1,797 images, no download), scaled to [0, 1], with a seeded
stratified split and an optional semi-supervised labelled subset."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from sklearn.datasets import load_digits as _sk_load_digits

from cdflow.data.splits import labelled_subset, stratified_split

DIGITS_MAX = 16.0


@dataclass
class SplitData:
    """Points ``x [N, ...]``, labels ``y [N]`` and boolean masks.

    ``train_mask`` marks the *labelled* training points. ``unlabelled_mask`` marks training points whose
    labels are withheld (semi-supervised setting): they are in no other mask, and only transductive models
    see them (through ``x``).
    """

    x: torch.Tensor
    y: torch.Tensor
    train_mask: torch.Tensor
    val_mask: torch.Tensor
    test_mask: torch.Tensor
    unlabelled_mask: torch.Tensor
    num_classes: int


def load_digits_arrays() -> tuple[torch.Tensor, torch.Tensor]:
    """All 1,797 digits: ``x float32 [1797, 64]`` in [0, 1] (pixel / 16) and ``y int64 [1797]``."""
    bunch = _sk_load_digits()
    x = torch.from_numpy((bunch.data / DIGITS_MAX).astype(np.float32))
    return x, torch.from_numpy(bunch.target.astype(np.int64))


def split_with_labels(
    x: torch.Tensor,
    y: torch.Tensor,
    seed: int,
    *,
    val_fraction: float = 0.2,
    test_fraction: float = 0.2,
    labels_per_class: int | None = None,
) -> SplitData:
    """Stratified train/val/test split of ``(x, y)``; with ``labels_per_class`` only that many training
    points per class keep their label (the rest go to ``unlabelled_mask``)."""
    train, val, test = stratified_split(y, seed, val_fraction, test_fraction)
    labelled = train if labels_per_class is None else labelled_subset(y, train, labels_per_class, seed)
    return SplitData(
        x=x,
        y=y,
        train_mask=torch.from_numpy(labelled),
        val_mask=torch.from_numpy(val),
        test_mask=torch.from_numpy(test),
        unlabelled_mask=torch.from_numpy(train & ~labelled),
        num_classes=int(y.max()) + 1,
    )


def load_digits(
    seed: int = 0, *, val_fraction: float = 0.2, test_fraction: float = 0.2, labels_per_class: int | None = None
) -> SplitData:
    """The digits with a seeded stratified split (see :func:`split_with_labels`)."""
    x, y = load_digits_arrays()
    return split_with_labels(
        x, y, seed, val_fraction=val_fraction, test_fraction=test_fraction, labels_per_class=labels_per_class
    )
