"""scikit-learn digits, stratified splits and the semi-supervised labelled subset."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cdflow.data.digits import load_digits, load_digits_arrays
from cdflow.data.splits import labelled_subset, stratified_split
from cdflow.errors import ConfigError, DataError


def test_digits_arrays() -> None:
    x, y = load_digits_arrays()
    assert x.shape == (1797, 64) and x.dtype == torch.float32 and y.dtype == torch.long
    assert float(x.min()) == 0.0 and float(x.max()) == 1.0
    assert set(y.tolist()) == set(range(10))


def test_split_is_stratified_disjoint_and_seeded() -> None:
    data = load_digits(seed=1)
    train, val, test = data.train_mask, data.val_mask, data.test_mask
    assert not bool((train & val).any() or (train & test).any() or (val & test).any())
    assert bool((train | val | test).all()) and not bool(data.unlabelled_mask.any())
    assert abs(int(test.sum()) - 360) <= 1 and abs(int(val.sum()) - 359) <= 1
    overall = torch.bincount(data.y).float() / len(data.y)
    for mask in (train, val, test):
        share = torch.bincount(data.y[mask], minlength=10).float() / int(mask.sum())
        assert float((share - overall).abs().max()) < 0.01
    assert torch.equal(load_digits(seed=1).test_mask, test)
    assert not torch.equal(load_digits(seed=2).test_mask, test)


@pytest.mark.parametrize("per_class", [1, 5])
def test_labels_per_class(per_class: int) -> None:
    full = load_digits(seed=0)
    data = load_digits(seed=0, labels_per_class=per_class)
    assert torch.bincount(data.y[data.train_mask]).tolist() == [per_class] * 10
    assert torch.equal(data.train_mask | data.unlabelled_mask, full.train_mask)
    assert not bool((data.train_mask & data.unlabelled_mask).any())
    assert torch.equal(data.val_mask, full.val_mask) and torch.equal(data.test_mask, full.test_mask)


def test_labelled_subset_errors() -> None:
    labels = np.array([0, 0, 1, 1, 1])
    mask = np.ones(5, dtype=bool)
    with pytest.raises(DataError, match="Class 0 has only 2"):
        labelled_subset(labels, mask, 3, seed=0)
    with pytest.raises(ConfigError, match="labels_per_class"):
        labelled_subset(labels, mask, 0, seed=0)


def test_bad_fractions() -> None:
    with pytest.raises(ConfigError, match="val_fraction"):
        stratified_split(np.repeat(np.arange(2), 10), seed=0, val_fraction=0.6, test_fraction=0.5)
