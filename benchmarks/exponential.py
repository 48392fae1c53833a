"""The exponential integrator on Cora's Laplacian with an MLP convection (issue 14, item 1):

    dx/dt = v(t, x) − γ L x on [0, T = 1],   x(0) ~ N(0, 1) [2708, 16] (seed 0),
    v = MLPVelocity(16, width 64, depth 2, tanh) with fixed random weights (seed 0), L the GCN Laplacian, float64.

Reference: dopri5 with −γL in the drift at rtol 1e-10 / atol 1e-12, cross-checked against the exponential
integrator at a tight tolerance (their agreement is reported). Error: max|y − ref| / max|ref|. Each method is
driven to error ≤ 1e-4 at the least work on a common grid of settings (exact counts: the rows' spread is 0):
- exponential (``exprk32``) and dopri5-in-drift: rtol = 10⁻³·2^(−k/2), k = 0, 1, …, 20 (quick: even k), with
  atol = rtol and with atol = rtol/100; for each atol the first rtol that meets it, and the fewer velocity
  evaluations of the two;
- Strang splitting with fixed steps (fused exact Krylov sub-steps, the convection sub-solved by dopri5 at
  rtol 1e-10): n = ⌈8·2^(k/4)⌉ steps (quick: even k) with Krylov tol 1e-6 until the target is met, then that n
  and the next two also with Krylov tol 1e-4 and 1e-5; the fewest Laplacian products among those that meet it.
Goals: (a) velocity evaluations dopri5 / exponential ≥ 5; (b) Laplacian products Strang / exponential > 1;
(c) measured order of ``exprk32`` (fixed steps n₀, 2n₀, 4n₀, n₀ the first power of two with γhλ_max ≤ 10;
least-squares slope of log error) within ±0.3 of 3.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable

import numpy as np
import torch

from benchmarks.common import Goal, Row, goal_row
from cdflow import Convection, GraphDiffusion, SolverError, SolverSpec, solve
from cdflow.data import load_graph
from cdflow.graph import Laplacian
from cdflow.heat import EXPRK_METHODS, exponential_solve, split_solve
from cdflow.terms import Drift
from cdflow.velocity import MLPVelocity

BENCH = "exponential"
TARGET = 1e-4
METHOD = "exprk32"
GOAL_NFE = Goal(">=", 5.0, "x", note="γT ≥ 20")
GOAL_PRODUCTS = Goal(">", 1.0, "x", note="same error")
GOAL_ORDER = Goal("<=", 0.3, "", note="|measured − theory|")


def _err(y: torch.Tensor, ref: torch.Tensor) -> float:
    return float((y - ref).abs().max() / ref.abs().max())


def _settings(quick: bool) -> list[tuple[float, float]]:
    """(atol/rtol, rtol) pairs: rtol = 1e-3 … 1e-6 in steps of 2^(−1/2) (quick: 2^(−1)), atol = rtol and rtol/100."""
    tols = [1e-3 * 2.0 ** (-k / 2) for k in range(0, 21, 2 if quick else 1)]
    return [(factor, tol) for factor in (1.0, 1e-2) for tol in tols]


def measure(lap: Laplacian, vel: Callable, x0: torch.Tensor, gamma: float, quick: bool,
            exact: torch.Tensor | None = None) -> list[Row]:
    """Rows for one problem (see the module docstring); `exact`, when known, is reported against the reference."""
    case = f"γT={gamma:g}"
    drift = Drift([Convection(vel), GraphDiffusion(lap, gamma)])
    rows: list[Row] = []
    with torch.no_grad():
        start = time.perf_counter()
        ref = solve(drift, x0, SolverSpec(method="dopri5", rtol=1e-10, atol=1e-12, max_steps=10**6)).y_final
        ref_wall = time.perf_counter() - start
        check_tol = 1e-6 if quick else 1e-7
        cross = exponential_solve(vel, x0, lap, gamma, method=METHOD, rtol=check_tol, atol=check_tol).y
    extra = {"agreement_with_exprk32": _err(cross, ref), "cross_check_rtol": check_tol, "wall_s": ref_wall}
    if exact is not None:
        extra["reference_vs_exact"] = _err(ref, exact)
    rows.append(Row(BENCH, f"reference (dopri5 rtol 1e-10) {case}", "rel. difference to exprk32",
                    extra["agreement_with_exprk32"], "", spread=0.0, extra=extra))

    found: dict[str, dict] = {}
    for atol_factor, tol in _settings(quick):
        if "exponential" in found and found["exponential"]["atol_factor"] == atol_factor:
            continue
        start = time.perf_counter()
        with torch.no_grad():
            sol = exponential_solve(vel, x0, lap, gamma, method=METHOD, rtol=tol, atol=tol * atol_factor)
        err = _err(sol.y, ref)
        got = {"nfe": sol.stats.nfe_forward, "products": sol.diffusion.products, "error": err, "rtol": tol,
               "atol_factor": atol_factor, "steps": sol.stats.steps_accepted, "rejected": sol.stats.steps_rejected,
               "krylov_dim": sol.diffusion.krylov_dim, "wall_s": time.perf_counter() - start}
        if err <= TARGET and ("exponential" not in found or got["nfe"] < found["exponential"]["nfe"]):
            found["exponential"] = got
    for atol_factor, tol in _settings(quick):
        if "dopri5-in-drift" in found and found["dopri5-in-drift"]["atol_factor"] == atol_factor:
            continue
        start = time.perf_counter()
        try:
            with torch.no_grad():
                sol = solve(drift, x0, SolverSpec(method="dopri5", rtol=tol, atol=tol * atol_factor,
                                                  max_steps=200_000))
        except SolverError:
            continue
        err = _err(sol.y_final, ref)
        got = {"nfe": sol.stats.nfe_forward, "products": sol.stats.nfe_forward, "error": err, "rtol": tol,
               "atol_factor": atol_factor, "steps": sol.stats.steps_accepted, "rejected": sol.stats.steps_rejected,
               "wall_s": time.perf_counter() - start}
        if err <= TARGET and ("dopri5-in-drift" not in found or got["nfe"] < found["dopri5-in-drift"]["nfe"]):
            found["dopri5-in-drift"] = got
    strang = _strang(lap, vel, x0, gamma, ref, quick)
    if strang is not None:
        found["strang (fixed steps)"] = strang

    for name in ("exponential", "dopri5-in-drift", "strang (fixed steps)"):
        if name not in found:
            for metric in ("velocity evaluations", "Laplacian products"):
                rows.append(Row(BENCH, f"{name} {case}", metric, float("nan"),
                                extra={"note": "did not reach the error target on the grid"}))
            continue
        got = found[name]
        rows.append(Row(BENCH, f"{name} {case}", "velocity evaluations", got["nfe"], "", spread=0.0, extra=got))
        rows.append(Row(BENCH, f"{name} {case}", "Laplacian products", got["products"], "", spread=0.0, extra=got))

    def ratio(num: str, den: str, key: str) -> tuple[float, bool, str]:
        both = num in found and den in found
        missing = [k for k in (num, den) if k not in found]
        return (found[num][key] / found[den][key] if both else float("nan"), both,
                f"{', '.join(missing)} did not reach the error target")

    value, ok, why = ratio("dopri5-in-drift", "exponential", "nfe")
    rows.append(goal_row(BENCH, f"dopri5-in-drift / exponential velocity evaluations {case}", "ratio", value, "x",
                         0.0, GOAL_NFE, extra={"spread": "exact counts", "target_error": TARGET}, judge=ok,
                         why_not=why))
    value, ok, why = ratio("strang (fixed steps)", "exponential", "products")
    rows.append(goal_row(BENCH, f"strang / exponential Laplacian products {case}", "ratio", value, "x", 0.0,
                         GOAL_PRODUCTS, extra={"spread": "exact counts", "target_error": TARGET}, judge=ok,
                         why_not=why))
    rows += _order(lap, vel, x0, gamma, ref)
    return rows


def _strang(lap: Laplacian, vel: Callable, x0: torch.Tensor, gamma: float, ref: torch.Tensor,
            quick: bool) -> dict | None:
    conv = Drift([Convection(vel)])
    nfe = {"n": 0}

    def convect(x: torch.Tensor, ta: float, tb: float) -> torch.Tensor:
        sol = solve(conv, x, SolverSpec(method="dopri5", rtol=1e-10, atol=1e-12),
                    ts=torch.tensor([ta, tb], dtype=x.dtype, device=x.device))
        nfe["n"] += sol.stats.nfe_forward
        return sol.y_final

    def run(n: int, ktol: float) -> dict:
        nfe["n"] = 0
        start = time.perf_counter()
        with torch.no_grad():
            y, st = split_solve(convect, x0, lap, gamma, 0.0, 1.0, n, scheme="strang", diffusion="krylov", tol=ktol)
        return {"nfe": nfe["n"], "products": st.products, "error": _err(y, ref), "n_steps": n, "krylov_tol": ktol,
                "krylov_dim": st.krylov_dim, "wall_s": time.perf_counter() - start}

    grid = sorted({math.ceil(8 * 2 ** (k / 4)) for k in range(0, 36, 2 if quick else 1)})
    for i, n in enumerate(grid):
        first = run(n, 1e-6)
        if first["error"] > TARGET:
            continue
        candidates = [first]
        for m in grid[i : i + 3]:
            for ktol in (1e-4, 1e-5, 1e-6):
                if (m, ktol) != (n, 1e-6):
                    candidates.append(run(m, ktol))
        good = [c for c in candidates if c["error"] <= TARGET]
        return min(good, key=lambda c: c["products"])
    return None


def _order(lap: Laplacian, vel: Callable, x0: torch.Tensor, gamma: float, ref: torch.Tensor) -> list[Row]:
    lam = lap.spectral_bound().estimate
    n0 = 2 ** max(0, math.ceil(math.log2(gamma * lam / 10.0)))
    steps = [n0, 2 * n0, 4 * n0]
    errs = []
    for n in steps:
        with torch.no_grad():
            y = exponential_solve(vel, x0, lap, gamma, method=METHOD, adaptive=False, step_size=1.0 / n,
                                  rtol=1e-10, atol=1e-12).y
        errs.append(_err(y, ref))
    slope = float(-np.polyfit(np.log(steps), np.log(errs), 1)[0])
    theory = EXPRK_METHODS[METHOD].order
    return [goal_row(BENCH, f"{METHOD} measured order γT={gamma:g} (n={steps})", "|order − theory|",
                     abs(slope - theory), "", 0.0, GOAL_ORDER,
                     extra={"measured_order": slope, "theory": theory, "errors": errs, "steps": steps,
                            "gamma_h_lambda_max": [gamma * lam / n for n in steps],
                            "spread": "deterministic (fixed steps)"})]


def cora_problem() -> tuple[Laplacian, MLPVelocity, torch.Tensor]:
    g = load_graph("cora", os.environ.get("CDFLOW_DATA"))
    lap = Laplacian.from_edges(g.edge_index, g.x.shape[0], kind="gcn", dtype=torch.float64)
    torch.manual_seed(0)
    vel = MLPVelocity(16, width=64, depth=2, activation="tanh").double().requires_grad_(False)
    x0 = torch.randn(g.x.shape[0], 16, dtype=torch.float64)
    return lap, vel, x0


def run(quick: bool, device: torch.device) -> list[Row]:
    """The module docstring's rows for γT = 20 (quick) or γT ∈ {20, 50} (float64, on `device`)."""
    rows: list[Row] = []
    for gamma in (20.0,) if quick else (20.0, 50.0):
        lap, vel, x0 = cora_problem()
        rows += measure(lap.to(device), vel.to(device), x0.to(device), gamma, quick)
    return rows
