"""Shared cases for the heat-flow integrator tests: path/cycle graphs, random states, exact exp(−tL)x."""

from __future__ import annotations

import torch

from cdflow.graph import Laplacian

F64 = torch.float64


def edges(name: str, n: int = 30) -> torch.Tensor:
    """Edge list of the path or the cycle on n nodes."""
    i = torch.arange(n)
    return torch.stack([i[:-1], i[1:]]) if name == "path" else torch.stack([i, (i + 1) % n])


def graph(name: str, n: int = 30) -> Laplacian:
    """Combinatorial Laplacian (float64) of the path or the cycle on n nodes: λ_max ≤ 4."""
    return Laplacian.from_edges(edges(name, n), n, "combinatorial", dtype=F64)


def exact(lap: Laplacian | torch.Tensor, x: torch.Tensor, t: float) -> torch.Tensor:
    """exp(−tL)x from torch.linalg.eigh (float64)."""
    lam, q = torch.linalg.eigh(lap.to_dense())
    return q @ (torch.exp(-t * lam)[:, None] * (q.T @ x))


def rand_x(n: int = 30, c: int = 3, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, c, dtype=F64, generator=torch.Generator().manual_seed(seed))


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())
