"""`DiffusionSpec`: which diffusion a model adds to its convection, and how it is integrated."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from cdflow.errors import ConfigError
from cdflow.heat import DIFFUSION_METHODS, EXPRK_METHODS, SPLITTING_SCHEMES
from cdflow.solvers import SolverSpec

DIFFUSION_KINDS = ("none", "noise", "graph")
INTEGRATORS = ("drift", "explicit", "split", "exponential")


@dataclass
class DiffusionSpec:
    """Diffusion settings (every field is a CLI flag, e.g. ``--model.diffusion.kind graph``).

    kind: ``none`` (pure convection), ``noise`` (SDE dX = v dt + ς dW, Feynman–Kac averaged at evaluation),
        ``graph`` (−γ L x on a graph Laplacian).
    integrator (graph): ``drift`` (−γLx inside the ODE drift, any ODE solver), ``explicit`` (the authors'
        x ← x − τ L x steps, τ = gamma·t1/n_steps), ``split`` (Lie/Strang splitting with an exact or
        implicit diffusion sub-step: unconditionally stable), ``exponential`` (an adaptive exponential
        Runge–Kutta pair, `cdflow.heat.exponential_solve`: −γL exact by Krylov φ-functions, the convection by
        the pair's stages under the solver's rtol/atol; steps follow the convection, not the stiffness).
    gamma: diffusion coefficient γ (learnable if `learnable`).
    n_steps: explicit steps, or splitting steps.
    scheme: ``lie`` | ``strang``; method: the diffusion sub-step (krylov, chebyshev, implicit, explicit).
    exp_method (exponential): the pair, ``exprk32`` (order 3(2), 3 stages), ``exprk32s4`` (order 3(2), 4
        stages, stiff order 3 in the strong form) or ``exprk21`` (order 2(1)).
    sigma, noise_type, n_samples, mean_field: SDE noise ς, its structure, Monte Carlo paths at evaluation,
        and whether evaluation uses the noise-free ODE instead.
    """

    kind: Literal["none", "noise", "graph"] = "none"
    integrator: Literal["drift", "explicit", "split", "exponential"] = "split"
    gamma: float = 1.0
    learnable: bool = False
    n_steps: int = 10
    scheme: Literal["lie", "strang"] = "strang"
    method: Literal["krylov", "chebyshev", "implicit", "explicit"] = "krylov"
    exp_method: Literal["exprk32", "exprk32s4", "exprk21"] = "exprk32"
    sigma: float = 0.1
    noise_type: Literal["diagonal", "additive", "scalar"] = "diagonal"
    n_samples: int = 8
    mean_field: bool = False

    def __post_init__(self) -> None:
        checks = (("kind", DIFFUSION_KINDS), ("integrator", INTEGRATORS), ("scheme", SPLITTING_SCHEMES),
                  ("method", DIFFUSION_METHODS), ("exp_method", tuple(EXPRK_METHODS)))
        for name, valid in checks:
            if getattr(self, name) not in valid:
                raise ConfigError(f"diffusion.{name}={getattr(self, name)!r} is invalid; valid: {', '.join(valid)}")
        if self.gamma < 0:
            raise ConfigError(f"--model.diffusion.gamma must be ≥ 0, got {self.gamma}")
        if self.n_steps < 1:
            raise ConfigError(f"--model.diffusion.n_steps must be ≥ 1, got {self.n_steps}")
        if self.sigma < 0:
            raise ConfigError(f"--model.diffusion.sigma must be ≥ 0, got {self.sigma}")
        if self.n_samples < 1:
            raise ConfigError(f"--model.diffusion.n_samples must be ≥ 1, got {self.n_samples}")
        exponential = self.kind == "graph" and self.integrator == "exponential"
        if self.exp_method != _default("exp_method") and not exponential:
            raise ConfigError("diffusion.exp_method chooses the pair of the exponential integrator: set "
                              "--model.diffusion.kind graph --model.diffusion.integrator exponential, or drop it")
        idle = _IDLE_FIELDS.get(self.integrator) if self.kind == "graph" else None
        if idle is not None:
            names, why = idle
            for name in names:
                if getattr(self, name) != _default(name):
                    raise ConfigError(f"diffusion.{name}={getattr(self, name)!r} does not act on {why}")

    def check_solver(self, solver: SolverSpec) -> None:
        """Refuse solver settings that cannot act with this diffusion (the exponential integrator steps the
        convection itself: the solver's method and adjoint_method are not used)."""
        if not (self.kind == "graph" and self.integrator == "exponential"):
            return
        if solver.method != SolverSpec.__dataclass_fields__["method"].default:
            raise ConfigError(
                f"solver.method={solver.method!r} is not used by the exponential integrator, which steps the "
                "convection with its own pair (--model.diffusion.exp_method); drop --model.solver.method"
            )
        if solver.adjoint_method is not None:
            raise ConfigError("solver.adjoint_method is not used by the exponential integrator (its adjoint uses the "
                              "same exponential pair): drop it")
        if solver.adjoint == "checkpoint":
            raise ConfigError("solver.adjoint='checkpoint' is not implemented for the exponential integrator: use "
                              "--model.solver.adjoint none (backprop through its steps) or backsolve (its own adjoint)")


#: Per graph integrator, the DiffusionSpec fields that do not act on it and why (the end of the refusal).
_IDLE_FIELDS: dict[str, tuple[tuple[str, ...], str]] = {
    **{integ: (("scheme", "method"), f"integrator={integ!r} ({what}); it chooses the sub-step of integrator "
               "'split': drop it, or use --model.diffusion.integrator split")
       for integ, what in (("explicit", "x ← x − τLx steps"), ("drift", "−γLx in the ODE drift"))},
    "exponential": (("n_steps", "scheme", "method"), "the exponential integrator (its steps are adaptive under "
                    "--model.solver.rtol/atol and its φ-functions are Krylov): drop it"),
}


def _default(name: str) -> object:
    return DiffusionSpec.__dataclass_fields__[name].default
