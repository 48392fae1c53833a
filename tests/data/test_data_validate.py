"""Tensor checks: NaN/Inf rows named, labels in range, masks usable, edge ids in range."""

from __future__ import annotations

import pytest
import torch

from cdflow.data.validate import (
    check_edge_index,
    check_finite,
    check_labels,
    check_masks,
    check_transductive_batch,
)
from cdflow.errors import DataError


def test_nan_rows_are_named() -> None:
    x = torch.zeros(30, 4)
    x[3, 1] = float("nan")
    x[17, 0] = float("inf")
    expected = r"features \(from demo\) has NaN or Inf values in 2 row\(s\): rows \[3, 17\]"
    with pytest.raises(DataError, match=expected):
        check_finite(x, "features", source="demo")


def test_many_bad_rows_are_summarised() -> None:
    x = torch.full((50, 2), float("nan"))
    with pytest.raises(DataError, match=r"rows \[0, 1, 2, 3, 4, 5, 6, 7, 8, 9\] and 40 more"):
        check_finite(x, "x")


def test_finite_and_integer_tensors_pass() -> None:
    check_finite(torch.ones(3, 2, 2), "x")
    check_finite(torch.arange(4), "ints")


def test_labels_out_of_range() -> None:
    check_labels(torch.tensor([0, 1, 2]), 3)
    with pytest.raises(DataError, match=r"outside 0\.\.2 at rows \[1, 3\] \(values \[-1, 3\]\)"):
        check_labels(torch.tensor([0, -1, 2, 3]), 3)
    with pytest.raises(DataError, match="integer class labels"):
        check_labels(torch.tensor([0.0, 1.0]), 2)


def test_masks() -> None:
    t = torch.tensor([True, False, False])
    v = torch.tensor([False, True, False])
    s = torch.tensor([False, False, True])
    check_masks(t, v, s, 3)
    with pytest.raises(DataError, match="selects no training nodes"):
        check_masks(torch.zeros(3, dtype=torch.bool), v, s, 3)
    with pytest.raises(DataError, match="overlap at rows \\[1\\]"):
        check_masks(t | v, v, s, 3)
    with pytest.raises(DataError, match="bool tensor of shape \\(3,\\)"):
        check_masks(t.long(), v, s, 3)


def test_edge_index() -> None:
    check_edge_index(torch.tensor([[0, 1], [1, 0]]), 2)
    with pytest.raises(DataError, match="outside 0..1 in columns \\[1\\]"):
        check_edge_index(torch.tensor([[0, 2], [1, 0]]), 2)
    with pytest.raises(DataError, match="shape \\[2, E\\]"):
        check_edge_index(torch.tensor([[0, 1, 1]]), 2)


def test_transductive_batch_checks_everything() -> None:
    batch = {
        "x": torch.zeros(3, 2),
        "y": torch.tensor([0, 1, 1]),
        "train_mask": torch.tensor([True, False, False]),
        "val_mask": torch.tensor([False, True, False]),
        "test_mask": torch.tensor([False, False, True]),
        "edge_index": None,
    }
    check_transductive_batch(batch, 2)
    batch["x"] = batch["x"].clone()
    batch["x"][2, 0] = float("nan")
    with pytest.raises(DataError, match=r"x \(from g\) has NaN.*rows \[2\]"):
        check_transductive_batch(batch, 2, source="g")
