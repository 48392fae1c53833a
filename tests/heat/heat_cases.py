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


def assert_grads_match_dense(ours, lap: Laplacian, h: float) -> None:
    """Gradients w.r.t. x and a scalar g of ``ours(x, g)`` ≈ exp(−g·h·L) x equal the dense matrix exponential's."""
    weights = rand_x(seed=2)
    grads = []
    for fn in (ours, lambda x, g: torch.linalg.matrix_exp(-g * h * lap.to_dense()) @ x):
        x = rand_x().requires_grad_()
        g = torch.tensor(1.3, dtype=F64, requires_grad=True)
        (fn(x, g) * weights).sum().backward()
        grads.append((x.grad, g.grad))
    torch.testing.assert_close(grads[0][0], grads[1][0], rtol=1e-8, atol=1e-10)
    torch.testing.assert_close(grads[0][1], grads[1][1], rtol=1e-8, atol=1e-10)
