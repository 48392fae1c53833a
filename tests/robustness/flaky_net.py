"""`FlakyNet`: a real continuous-depth classifier that fails on chosen training calls (not a test module).

Usable from the CLI: ``--model.model flaky_net.FlakyNet --model.model.nan_at "[3]"`` (with this folder on
the Python path).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from cdflow.errors import SolverError
from cdflow.solvers import SolverSpec
from cdflow.training.networks import build_classifier


class _NaNGradient(torch.autograd.Function):
    """Identity whose backward returns NaN: finite loss, non-finite gradients."""

    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:  # type: ignore[override]
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:  # type: ignore[override]
        return torch.full_like(grad, float("nan"))


class _FailingBackwardSolve(torch.autograd.Function):
    """Identity whose backward raises the `SolverError` an adjoint solve raises on step-size underflow."""

    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:  # type: ignore[override]
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:  # type: ignore[override]
        raise SolverError("step-size underflow at t=0.5 with method 'dopri5' (simulated adjoint solve)")


class FlakyNet(nn.Module):
    """Digits classifier (euler, 2 steps) whose k-th training call (0-based) fails.

    Args:
        nan_at: calls returning NaN logits (a NaN loss).
        solver_at: calls whose solve raises a real `SolverError` (dopri5 with max_steps=1).
        grad_at: calls with finite logits but NaN gradients.
        backward_at: calls whose backward pass raises a `SolverError` (as a failing adjoint solve does).
    """

    def __init__(self, nan_at: list[int] | None = None, solver_at: list[int] | None = None,
                 grad_at: list[int] | None = None, backward_at: list[int] | None = None) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.net = build_classifier((64,), 10, SolverSpec(method="euler", step_size=0.5), hidden=8, width=8)
        self.nan_at, self.solver_at, self.grad_at = set(nan_at or ()), set(solver_at or ()), set(grad_at or ())
        self.backward_at = set(backward_at or ())
        self.calls = 0

    def forward(self, x: Tensor) -> Tensor:
        if not self.training:
            return self.net(x)
        call, self.calls = self.calls, self.calls + 1
        if call in self.solver_at:
            block = self.net.block
            kept, block.solver = block.solver, SolverSpec(method="dopri5", max_steps=1, rtol=1e-9, atol=1e-9)
            try:
                return self.net(x)
            finally:
                block.solver = kept
        logits = self.net(x)
        if call in self.nan_at:
            return logits * float("nan")
        if call in self.grad_at:
            return _NaNGradient.apply(logits)
        if call in self.backward_at:
            return _FailingBackwardSolve.apply(logits)
        return logits
