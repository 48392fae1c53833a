"""Linear layers on sparse inputs (bag-of-words node features): y = x Wᵀ + b with x sparse."""

from __future__ import annotations

import torch
from torch import Tensor, nn


def sparse_linear(x: Tensor, layer: nn.Linear) -> Tensor:
    """layer(x) for sparse or dense x; sparse x costs O(nnz · out) instead of O(N · in · out)."""
    if not x.is_sparse:
        return layer(x)
    out = torch.sparse.mm(x, layer.weight.t())
    return out + layer.bias if layer.bias is not None else out
