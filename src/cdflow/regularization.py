"""Regularised dynamics (RNODE, Finlay et al. 2020): the flow's kinetic energy and Jacobian Frobenius norm,
integrated as augmented states beside x in the same solve.

    dx/dt    = f(t, x)
    de_k/dt  = ‖f(t, x)‖²                    per sample (squared norm over the sample's state)
    de_j/dt  = ‖εᵀ ∂f/∂x (t, x)‖²             ε ~ N(0, I) or Rademacher, drawn once per solve

with e_k(0) = e_j(0) = 0. Since E_ε ‖εᵀ J‖² = tr(J Jᵀ) = ‖J‖²_F (Hutchinson), e_j(T) is an unbiased estimate
of ∫₀ᵀ ‖∂f/∂x‖²_F dt; εᵀ ∂f/∂x is one vector–Jacobian product (with ``create_graph`` when gradients are
taken, so that the penalty itself is differentiable). The training penalty is

    R = λ_k · mean_b e_k,b(T) + λ_j · mean_b e_j,b(T).

ε is stored on the augmented drift, so the backsolve adjoint sees the same ε as the forward solve. Only the
state x enters the solver's error norm: the integrals observe the trajectory and do not steer the steps, so a
regularised solve takes the steps of the plain solve (same forward NFE for the same weights).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor, nn

from cdflow.errors import ConfigError
from cdflow.solve import Solution, _fast_path, solve
from cdflow.solvers import SolverSpec

ProbeKind = Literal["gaussian", "rademacher"]
PROBES = ("gaussian", "rademacher")


@dataclass
class RegularizationSpec:
    """RNODE penalty weights (every field is a CLI flag: ``--model.regularization.kinetic 0.01``).

    kinetic: λ_k ≥ 0, the weight of the kinetic energy ∫‖f‖² dt (0: not integrated).
    jacobian: λ_j ≥ 0, the weight of the Jacobian Frobenius norm ∫‖∂f/∂x‖²_F dt (0: not integrated).
    probe: the distribution of the Hutchinson vector ε (``gaussian`` or ``rademacher``); acts only with
        ``jacobian`` > 0.
    """

    kinetic: float = 0.0
    jacobian: float = 0.0
    probe: ProbeKind = "gaussian"

    def __post_init__(self) -> None:
        for name in ("kinetic", "jacobian"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
                raise ConfigError(f"--model.regularization.{name} must be a finite number ≥ 0, got {value!r}")
        if self.probe not in PROBES:
            raise ConfigError(f"--model.regularization.probe must be one of {', '.join(PROBES)}, got {self.probe!r}")
        if self.probe != "gaussian" and self.jacobian == 0:
            raise ConfigError(
                f"--model.regularization.probe {self.probe} chooses the Hutchinson vector of the Jacobian term, "
                "which is off (jacobian = 0): set --model.regularization.jacobian > 0 or drop the probe"
            )

    @property
    def active(self) -> bool:
        """Whether any penalty is integrated."""
        return self.kinetic > 0 or self.jacobian > 0


@dataclass
class RegularizationValues:
    """The integrals of one regularised solve (batch means at the final time; ``None`` when not integrated) and
    the penalty λ_k E_k + λ_j E_j they give."""

    kinetic: Tensor | None
    jacobian: Tensor | None
    penalty: Tensor

    def __add__(self, other: RegularizationValues) -> RegularizationValues:
        def add(a: Tensor | None, b: Tensor | None) -> Tensor | None:
            return b if a is None else a if b is None else a + b

        return RegularizationValues(add(self.kinetic, other.kinetic), add(self.jacobian, other.jacobian),
                                    self.penalty + other.penalty)


def draw_probe(like: Tensor, kind: ProbeKind) -> Tensor:
    """ε of `like`'s shape with E[ε εᵀ] = I: standard normal or Rademacher (±1)."""
    if kind == "gaussian":
        return torch.randn_like(like)
    return torch.randint(0, 2, like.shape, device=like.device).to(like.dtype).mul_(2).sub_(1)


class RegularizedDrift(nn.Module):
    """The augmented drift on the flat state z = [x.flatten(), e_k (if λ_k > 0), e_j (if λ_j > 0)].

    Holds ε for the whole solve (forward and adjoint). When gradients are off (the forward pass of the
    backsolve adjoint), the vector–Jacobian product is taken on a detached copy of x and the result detached.
    """

    def __init__(self, drift: nn.Module, spec: RegularizationSpec, x0: Tensor) -> None:
        super().__init__()
        if x0.ndim < 1 or x0.shape[0] < 1:
            raise ConfigError(f"a regularised solve needs a batch of states [B, ...], got shape {tuple(x0.shape)}")
        self.drift = drift
        self.fn = _fast_path(drift)
        self.kinetic, self.jacobian = spec.kinetic > 0, spec.jacobian > 0
        self.shape = tuple(x0.shape)
        self.batch = x0.shape[0]
        self.n = x0.numel()
        self.extra = int(self.kinetic) + int(self.jacobian)
        self.eps: Tensor | None = draw_probe(x0.detach(), spec.probe) if self.jacobian else None

    def pack(self, x0: Tensor) -> Tensor:
        """z(0) = [x0, 0, …, 0]."""
        return torch.cat([x0.reshape(-1), x0.new_zeros(self.extra * self.batch)])

    def state_norm(self, z: Tensor) -> Tensor:
        """torchdiffeq's RMS norm over the x part only (the error norm of forward and adjoint solves)."""
        return z[: self.n].abs().pow(2).mean().sqrt()

    def forward(self, t: Tensor, z: Tensor) -> Tensor:
        x = z[: self.n].view(self.shape)
        parts: list[Tensor] = []
        if self.jacobian:
            grad_on = torch.is_grad_enabled()
            with torch.enable_grad():
                xg = x if grad_on and x.requires_grad else x.detach().requires_grad_()
                v = self.fn(t, xg)
                (vjp,) = torch.autograd.grad(v, xg, self.eps, create_graph=grad_on, allow_unused=True)
            if vjp is None:  # f does not depend on x
                vjp = torch.zeros_like(x)
            if not grad_on:
                v, vjp = v.detach(), vjp.detach()
            jac = vjp.pow(2).reshape(self.batch, -1).sum(dim=1)
        else:
            v = self.fn(t, x)
        if self.kinetic:
            parts.append(v.pow(2).reshape(self.batch, -1).sum(dim=1))
        if self.jacobian:
            parts.append(jac)
        return torch.cat([v.reshape(-1), *parts])


def regularized_solve(drift: nn.Module, x0: Tensor, solver: SolverSpec, spec: RegularizationSpec,
                      ts: Tensor | None = None) -> tuple[Solution, RegularizationValues]:
    """Solve dx/dt = drift(t, x) with the RNODE integrals as augmented states (see the module docstring).

    Returns the solution of x alone (as `solve` does) and the integrals at the final time, averaged over the
    batch, with their penalty. Works with every adjoint of `SolverSpec` (the augmented state is one flat tensor).
    """
    if not spec.active:
        raise ConfigError("regularized_solve needs kinetic > 0 or jacobian > 0 (else call solve)")
    aug = RegularizedDrift(drift, spec, x0)
    sol = solve(aug, aug.pack(x0), solver, ts, state_norm=aug.state_norm)
    xs = sol.ys[:, : aug.n].reshape(sol.ys.shape[0], *aug.shape)
    ints = sol.ys[-1, aug.n:].view(aug.extra, aug.batch).mean(dim=1)
    kinetic = ints[0] if aug.kinetic else None
    jacobian = ints[-1] if aug.jacobian else None
    penalty = ints.new_zeros(())
    if kinetic is not None:
        penalty = penalty + spec.kinetic * kinetic
    if jacobian is not None:
        penalty = penalty + spec.jacobian * jacobian
    return Solution(ts=sol.ts, ys=xs, stats=sol.stats), RegularizationValues(kinetic, jacobian, penalty)


def collect_regularization(model: nn.Module) -> RegularizationValues | None:
    """Sum of the `regularization_values` of `model`'s sub-modules from their latest call; ``None`` if none."""
    total: RegularizationValues | None = None
    for module in model.modules():
        values = getattr(module, "regularization_values", None)
        if isinstance(values, RegularizationValues):
            total = values if total is None else total + values
    return total


def clear_regularization(model: nn.Module) -> None:
    """Forget every sub-module's latest `regularization_values` (call before a forward pass, so that blocks
    that do not run in it, e.g. members that stopped, contribute nothing stale)."""
    for module in model.modules():
        if getattr(module, "regularization_values", None) is not None:
            module.regularization_values = None
