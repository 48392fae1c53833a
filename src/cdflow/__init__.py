"""cdflow: continuous-depth neural networks as convection–diffusion equations.

    dx = [ v_θ(x, t) − γ L x ] dt + ς(x, t) dW,   x(0) = input,  prediction = head(x(T))
"""

from cdflow.errors import CdflowError, ConfigError, DataError, SolverError
from cdflow.noise import NoiseDiffusion
from cdflow.regularization import RegularizationSpec, RegularizationValues, regularized_solve
from cdflow.sde import StochasticDepth, feynman_kac, solve_sde
from cdflow.solve import ContinuousDepth, Solution, solve
from cdflow.solvers import SolverSpec, all_method_names, ode_methods, sde_methods
from cdflow.stats import SolveStats
from cdflow.terms import Convection, Drift, GraphDiffusion, Term
from cdflow.velocity import ConvVelocity, MLPVelocity

__all__ = [
    "CdflowError", "ConfigError", "DataError", "SolverError",
    "ContinuousDepth", "Solution", "solve",
    "RegularizationSpec", "RegularizationValues", "regularized_solve",
    "SolverSpec", "all_method_names", "ode_methods", "sde_methods",
    "SolveStats",
    "Convection", "Drift", "GraphDiffusion", "Term",
    "ConvVelocity", "MLPVelocity",
    "NoiseDiffusion", "StochasticDepth", "feynman_kac", "solve_sde",
]
__version__ = "0.1.0"
