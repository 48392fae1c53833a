"""Input perturbations in [0, 1] pixel space: Gaussian noise and the L∞ PGD attack (Madry et al. 2018)."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def gaussian_noise(x: Tensor, sigma: float, generator: torch.Generator) -> Tensor:
    """clip(x + σ ε, 0, 1), ε ~ N(0, I): σ in pixel units of [0, 1] images, before normalisation."""
    noise = torch.randn(x.shape, generator=generator, dtype=x.dtype)
    return (x + sigma * noise).clamp(0.0, 1.0)


#: PGD's default step: this fraction of ε.
STEP_FRACTION = 0.25


def pgd_linf(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    eps: float,
    steps: int,
    generator: torch.Generator,
    step_size: float | None = None,
    before_step: Callable[[int], None] | None = None,
) -> Tensor:
    """L∞ PGD with a uniform random start: maximise the cross-entropy of ``model(x')`` over
    ‖x' − x‖∞ ≤ eps, x' ∈ [0, 1]; ``steps`` signed-gradient steps of ``step_size`` (default STEP_FRACTION · eps).

    The model's scores are differentiated as they are computed at evaluation (for the SDE: the log of the
    Monte Carlo mean of the softmax over its paths). ``before_step(k)`` runs before step k's gradient (e.g. to
    draw fresh paths). Returns the last iterate.
    """
    alpha = STEP_FRACTION * eps if step_size is None else step_size
    model.eval()
    start = (torch.rand(x.shape, generator=generator, dtype=x.dtype) * 2 - 1) * eps
    x_adv = (x + start).clamp(0.0, 1.0)
    for k in range(steps):
        if before_step is not None:
            before_step(k)
        x_adv = x_adv.detach().requires_grad_(True)
        loss = F.cross_entropy(model(x_adv), y)
        (grad,) = torch.autograd.grad(loss, x_adv)
        x_adv = x_adv.detach() + alpha * grad.sign()
        x_adv = torch.min(torch.max(x_adv, x - eps), x + eps).clamp(0.0, 1.0)
    return x_adv.detach()
