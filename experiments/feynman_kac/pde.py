"""Crank–Nicolson finite differences for the 1-D backward Kolmogorov equation, and its closed-form check.

    u_t = v(x) u_x + D u_xx,  D = ½ς²,  on [−L, L],  u(x, 0) = f(x),  u(±L, t) = f(±L) (Dirichlet).

Central differences in space (second order; the cell Péclet number |v| dx / D stays far below 2, so they
need no upwinding), Crank–Nicolson in time (second order): (I − ½Δt A) uᵐ⁺¹ = (I + ½Δt A) uᵐ with the
tridiagonal A, solved by `scipy.linalg.solve_banded`. The Dirichlet values are the payoff's, which is exact
up to e^{−(distance to the evaluation window)²} for a payoff that is constant far away; the domain is wide.

Closed form for validation: constant v = c and f(x) = exp(−x²/(2s²)) give
u(x, t) = s / √(s² + ς²t) · exp(−(x + ct)² / (2(s² + ς²t))).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from scipy.linalg import solve_banded


def solve_kolmogorov(
    v: Callable[[np.ndarray], np.ndarray],
    f: Callable[[np.ndarray], np.ndarray],
    sigma: float,
    T: float,
    half_width: float,
    dx: float,
    dt: float | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """(grid x, u(x, T)) by Crank–Nicolson with step dt (default dx/2)."""
    n_cells = int(round(2 * half_width / dx))
    x = np.linspace(-half_width, half_width, n_cells + 1)
    dx = x[1] - x[0]
    n_steps = max(1, int(np.ceil(T / (dt if dt is not None else dx / 2))))
    dt = T / n_steps
    diff = 0.5 * sigma**2
    vel = v(x)
    lower = diff / dx**2 - vel / (2 * dx)  # coefficient of u_{i−1}
    centre = np.full_like(x, -2 * diff / dx**2)
    upper = diff / dx**2 + vel / (2 * dx)  # coefficient of u_{i+1}
    ab = np.zeros((3, x.size))
    ab[0, 2:] = -0.5 * dt * upper[1:-1]
    ab[1, 1:-1] = 1 - 0.5 * dt * centre[1:-1]
    ab[2, :-2] = -0.5 * dt * lower[1:-1]
    ab[1, 0] = ab[1, -1] = 1.0  # Dirichlet rows
    u = f(x).astype(np.float64)
    boundary = u[[0, -1]].copy()
    for _ in range(n_steps):
        rhs = u.copy()
        rhs[1:-1] = u[1:-1] + 0.5 * dt * (lower[1:-1] * u[:-2] + centre[1:-1] * u[1:-1] + upper[1:-1] * u[2:])
        rhs[[0, -1]] = boundary
        u = solve_banded((1, 1), ab, rhs)
    return x, u


def gaussian_closed_form(x: np.ndarray, t: float, c: float, sigma: float, s: float) -> np.ndarray:
    """u(x, t) for v = c, f = exp(−x²/(2s²)): s/√(s² + ς²t) exp(−(x + ct)²/(2(s² + ς²t)))."""
    var = s**2 + sigma**2 * t
    return s / np.sqrt(var) * np.exp(-((x + c * t) ** 2) / (2 * var))


def validate(
    dxs: tuple[float, ...], c: float = 0.7, sigma: float = 0.8, s: float = 0.5, T: float = 1.0,
    half_width: float = 10.0, window: float = 3.0,
) -> list[dict]:
    """Max error of `solve_kolmogorov` against the closed form on |x| ≤ window, for each dx; observed orders."""
    rows: list[dict] = []
    for dx in dxs:
        x, u = solve_kolmogorov(lambda z: np.full_like(z, c), lambda z: np.exp(-(z**2) / (2 * s**2)), sigma, T,
                                half_width, dx)
        inside = np.abs(x) <= window
        err = float(np.abs(u - gaussian_closed_form(x, T, c, sigma, s))[inside].max())
        order = float(np.log2(rows[-1]["max_error"] / err) / np.log2(rows[-1]["dx"] / dx)) if rows else None
        rows.append({"dx": dx, "dt": dx / 2, "max_error": err, "observed_order": order})
    return rows
