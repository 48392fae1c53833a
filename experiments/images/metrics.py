"""Accuracy on a subset of points."""

from __future__ import annotations

from torch import Tensor


def masked_accuracy(logits: Tensor, y: Tensor, mask: Tensor) -> float:
    """Fraction of the points in `mask` whose arg-max logit is their label."""
    n = int(mask.sum())
    if n == 0:
        return float("nan")
    return float((logits[mask].argmax(dim=-1) == y[mask]).float().mean())
