"""Heat flow dx/dt = −γ L x on a graph: one module per integrator, each working on any `cdflow.graph.Laplacian`.

* `explicit`   x ← x − τ L x, n times, optionally with dropout before each step (the authors' layers)
* `krylov`     exp(−tL) x by batched Lanczos with an a-posteriori error estimate
* `chebyshev`  exp(−tL) x by the Chebyshev–Bessel expansion on [0, λ_max]
* `implicit`   (I + τL) x_{k+1} = x_k by batched conjugate gradients, adjoint-CG backward
* `splitting`  Lie / Strang splitting of convection and diffusion
* `lanczos`    the batched Lanczos process behind `krylov` and `phi`
* `phi`        φ_k(−tL) v by Lanczos (one basis for every k and t)
* `exponential` adaptive exponential Runge–Kutta pairs (`exprk_tableaux`) for dx/dt = N(t, x) − γLx, with
               backpropagation or an adjoint
* `diffuse`    the dispatcher by method name

Every integrator returns ``(x_out, DiffusionStats)``; one "Laplacian product" is one L @ X for the whole
[N, C] block. To add an integrator: a new module here, a name in `diffuse.DIFFUSION_METHODS`, a branch in
`diffuse.diffuse`.
"""

from cdflow.heat.chebyshev import expm_action_chebyshev
from cdflow.heat.diffuse import DIFFUSION_METHODS, DiffusionMethod, diffuse
from cdflow.heat.explicit import explicit_diffusion
from cdflow.heat.exponential import ExponentialSolution, exponential_solve
from cdflow.heat.exprk_tableaux import EXPRK_METHODS
from cdflow.heat.implicit import implicit_euler_diffusion
from cdflow.heat.krylov import expm_action_krylov
from cdflow.heat.phi import phi_action_krylov
from cdflow.heat.splitting import SPLITTING_SCHEMES, split_solve
from cdflow.heat.stats import DiffusionStats

__all__ = [
    "DIFFUSION_METHODS",
    "EXPRK_METHODS",
    "SPLITTING_SCHEMES",
    "DiffusionMethod",
    "DiffusionStats",
    "ExponentialSolution",
    "diffuse",
    "explicit_diffusion",
    "exponential_solve",
    "expm_action_chebyshev",
    "expm_action_krylov",
    "implicit_euler_diffusion",
    "phi_action_krylov",
    "split_solve",
]
