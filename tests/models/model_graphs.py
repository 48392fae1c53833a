"""Small graphs and features shared by the model tests."""

from __future__ import annotations

import torch


def ring_with_chords(n: int = 40) -> torch.Tensor:
    """A cycle plus a chord from every fourth node to the node seven ahead: edge_index [2, E]."""
    src = torch.arange(n)
    return torch.cat([torch.stack([src, (src + 1) % n]), torch.stack([src[::4], (src[::4] + 7) % n])], dim=1)


def ring_with_hub(n: int = 30) -> torch.Tensor:
    """A cycle plus a hub (node n) joined to every third node: a graph with a spread of degrees."""
    src = torch.arange(n)
    hub = torch.full((n // 3,), n)
    return torch.cat([torch.stack([src, (src + 1) % n]), torch.stack([hub, torch.arange(0, n, 3)])], dim=1)


def bag_of_words(n: int = 40, f: int = 30, seed: int = 0) -> torch.Tensor:
    """Binary, row-normalised sparse features (about 15% non-zero, one empty row)."""
    gen = torch.Generator().manual_seed(seed)
    x = (torch.rand(n, f, generator=gen) < 0.15).float()
    x[3] = 0.0
    return x / x.sum(1, keepdim=True).clamp_min(1.0)


def features(n: int, f: int = 5, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, f, generator=torch.Generator().manual_seed(seed))


def member_state(model: torch.nn.Module, k: int) -> dict[str, torch.Tensor]:
    """Member k's parameters and buffers of a model whose tensors all carry the member axis first."""
    return {name: t[k : k + 1].clone() for name, t in model.state_dict().items()}
