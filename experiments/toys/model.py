"""The Diff-ResNet toy network and its diffusion operator.

    z = x + W₂ ReLU(W₁ x + b₁) + b₂            (one residual block of width 2)
    z ← z − τ L z,  n times  (= (I − τL)ⁿ z)    (diffusion layers, L = I − P on the input kNN graph)
    logits = W_h z + b_h                         (linear head)

The graph is built once on the inputs and the diffusion is linear, so the n layers are one fixed operator
D = (I − τL)ⁿ, precomputed densely (float64 repeated squaring) and applied as D z; `explicit_diffusion` of
cdflow gives the same features layer by layer (checked in `train.py`, used for the trajectories).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from cdflow.graph import knn_rownorm_graph, laplacian_from_weights


def toy_laplacian(x: Tensor, k: int, eps: float) -> Tensor:
    """L = I − P, P the row-normalised kNN Gaussian graph of the inputs (sparse COO)."""
    return laplacian_from_weights(knn_rownorm_graph(x, k=k, eps=eps), "combinatorial")


def diffusion_propagator(l_mat: Tensor, tau: float, n_steps: int) -> Tensor:
    """D = (I − τL)ⁿ as a dense float32 matrix (n explicit Euler diffusion layers in one product)."""
    step = torch.eye(l_mat.shape[0], dtype=torch.float64) - tau * l_mat.to_dense().to(torch.float64)
    return torch.linalg.matrix_power(step, n_steps).to(torch.float32)


class ToyDiffResNet(nn.Module):
    """2 → 2 residual block, optional fixed diffusion operator D, 2 → 2 linear head."""

    def __init__(self, propagator: Tensor | None = None) -> None:
        super().__init__()
        self.fc1 = nn.Linear(2, 2)
        self.fc2 = nn.Linear(2, 2)
        self.head = nn.Linear(2, 2)
        self.propagator: Tensor | None
        self.register_buffer("propagator", propagator)

    def block(self, x: Tensor) -> Tensor:
        """z = x + W₂ ReLU(W₁ x + b₁) + b₂."""
        return x + self.fc2(torch.relu(self.fc1(x)))

    def features(self, x: Tensor) -> Tensor:
        """The head's input: D z with diffusion, z without."""
        z = self.block(x)
        return z if self.propagator is None else self.propagator @ z

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x))
