"""Seeded, stratified train/val/test splits and per-class labelled subsets, as boolean masks."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from sklearn.model_selection import train_test_split

from cdflow.errors import ConfigError, DataError


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


def _as_numpy(labels: np.ndarray | torch.Tensor) -> np.ndarray:
    return np.asarray(labels.cpu() if isinstance(labels, torch.Tensor) else labels).astype(np.int64)


def stratified_split(
    labels: np.ndarray | torch.Tensor, seed: int, val_fraction: float = 0.2, test_fraction: float = 0.2
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Split ``N`` points into train / val / test keeping class proportions; returns boolean masks."""
    if not (0.0 <= val_fraction < 1.0 and 0.0 < test_fraction < 1.0 and val_fraction + test_fraction < 1.0):
        raise ConfigError(
            f"val_fraction={val_fraction} and test_fraction={test_fraction} must be in [0, 1) and (0, 1) "
            f"and sum to less than 1."
        )
    y = _as_numpy(labels)
    index = np.arange(len(y))
    rest, test = train_test_split(index, test_size=test_fraction, stratify=y, random_state=seed)
    masks = [np.zeros(len(y), dtype=bool) for _ in range(3)]
    if val_fraction > 0:
        rel = val_fraction / (1.0 - test_fraction)
        train, val = train_test_split(rest, test_size=rel, stratify=y[rest], random_state=seed + 1)
        masks[1][val] = True
    else:
        train = rest
    masks[0][train] = True
    masks[2][test] = True
    return masks[0], masks[1], masks[2]


def labelled_subset(
    labels: np.ndarray | torch.Tensor, mask: np.ndarray, per_class: int, seed: int
) -> np.ndarray:
    """Keep ``per_class`` points of each class among ``mask`` (chosen with ``np.random.default_rng(seed)``).

    Raises:
        ConfigError: ``per_class < 1``.
        DataError: a class has fewer than ``per_class`` points in ``mask``.
    """
    if per_class < 1:
        raise ConfigError(f"labels_per_class must be >= 1 (or None for all labels), got {per_class}.")
    y = _as_numpy(labels)
    rng = np.random.default_rng(seed)
    keep = np.zeros(len(y), dtype=bool)
    for c in np.unique(y[mask]):
        pool = np.flatnonzero(mask & (y == c))
        if len(pool) < per_class:
            raise DataError(
                f"Class {c} has only {len(pool)} training points, fewer than labels_per_class={per_class}. "
                f"Lower labels_per_class."
            )
        keep[rng.choice(pool, per_class, replace=False)] = True
    return keep


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
