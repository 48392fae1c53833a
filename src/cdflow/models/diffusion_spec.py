"""`DiffusionSpec`: which diffusion a model adds to its convection, and how it is integrated."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from cdflow.errors import ConfigError
from cdflow.heat import DIFFUSION_METHODS, SPLITTING_SCHEMES

DIFFUSION_KINDS = ("none", "noise", "graph")
INTEGRATORS = ("drift", "explicit", "split")


@dataclass
class DiffusionSpec:
    """Diffusion settings (every field is a CLI flag, e.g. ``--model.diffusion.kind graph``).

    kind: ``none`` (pure convection), ``noise`` (SDE dX = v dt + ς dW, Feynman–Kac averaged at evaluation),
        ``graph`` (−γ L x on a graph Laplacian).
    integrator (graph): ``drift`` (−γLx inside the ODE drift, any ODE solver), ``explicit`` (the authors'
        x ← x − τ L x steps, τ = gamma·t1/n_steps), ``split`` (Lie/Strang splitting with an exact or
        implicit diffusion sub-step: unconditionally stable).
    gamma: diffusion coefficient γ (learnable if `learnable`).
    n_steps: explicit steps, or splitting steps.
    scheme: ``lie`` | ``strang``; method: the diffusion sub-step (krylov, chebyshev, implicit, explicit).
    sigma, noise_type, n_samples, mean_field: SDE noise ς, its structure, Monte Carlo paths at evaluation,
        and whether evaluation uses the noise-free ODE instead.
    """

    kind: Literal["none", "noise", "graph"] = "none"
    integrator: Literal["drift", "explicit", "split"] = "split"
    gamma: float = 1.0
    learnable: bool = False
    n_steps: int = 10
    scheme: Literal["lie", "strang"] = "strang"
    method: Literal["krylov", "chebyshev", "implicit", "explicit"] = "krylov"
    sigma: float = 0.1
    noise_type: Literal["diagonal", "additive", "scalar"] = "diagonal"
    n_samples: int = 8
    mean_field: bool = False

    def __post_init__(self) -> None:
        checks = (("kind", DIFFUSION_KINDS), ("integrator", INTEGRATORS), ("scheme", SPLITTING_SCHEMES),
                  ("method", DIFFUSION_METHODS))
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
