"""Per-solve statistics: function evaluations and steps, forward and backward."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

import torch
from torch import Tensor


@dataclass
class SolveStats:
    """What one solve cost.

    nfe_forward: drift evaluations of the forward solve.
    nfe_backward: drift vector–Jacobian products of the backward pass (filled in during
        ``loss.backward()``): one per drift evaluation backpropagated through (adjoint ``none``),
        one per augmented-dynamics evaluation of the adjoint solve (adjoint ``backsolve``), or one per
        replayed evaluation plus one per vjp (adjoint ``checkpoint``).
    steps: attempted steps of the forward solve; steps_accepted / steps_rejected where the
        method adapts its step (``None`` for fixed-step methods, where every step is accepted).
    backward_steps*: the same for the adjoint solve (adjoint ``checkpoint``: the replayed steps).
    """

    method: str
    nfe_forward: int = 0
    nfe_backward: int = 0
    steps: int = 0
    steps_accepted: int | None = None
    steps_rejected: int | None = None
    backward_steps: int = 0
    backward_steps_accepted: int | None = None
    backward_steps_rejected: int | None = None
    in_forward: bool = field(default=True, repr=False)

    def as_dict(self) -> dict[str, int]:
        """Numeric statistics (for logging), without the method name or internal flags."""
        out = asdict(self)
        out.pop("method")
        out.pop("in_forward")
        return {k: v for k, v in out.items() if v is not None}

    def merge(self, other: SolveStats) -> SolveStats:
        """Sum of two solves' statistics (e.g. the convection sub-solves of a split integrator)."""
        out = SolveStats(method=self.method)
        for key, value in asdict(self).items():
            if key in ("method", "in_forward"):
                continue
            a, b = value, getattr(other, key)
            setattr(out, key, None if a is None and b is None else (a or 0) + (b or 0))
        out.in_forward = self.in_forward and other.in_forward
        return out


def merged(parts: Sequence[SolveStats]) -> SolveStats | None:
    """The sum of several solves' statistics (None for none), read when needed: the parts are the solves' own
    objects, into which their backward passes go on counting."""
    if not parts:
        return None
    total = parts[0]
    for part in parts[1:]:
        total = total.merge(part)
    return total


class _CountBackward(torch.autograd.Function):
    """Identity whose backward counts one drift vector–Jacobian product into `stats`."""

    @staticmethod
    def forward(ctx, out: Tensor, stats: SolveStats) -> Tensor:  # type: ignore[override]
        ctx.stats = stats
        return out.view_as(out)

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None]:  # type: ignore[override]
        ctx.stats.nfe_backward += 1
        return grad, None


def count_backward(out: Tensor, stats: SolveStats) -> Tensor:
    """`out` unchanged; each backward pass through it adds one to ``stats.nfe_backward``."""
    return _CountBackward.apply(out, stats)
