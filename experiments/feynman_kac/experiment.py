"""The Feynman–Kac experiment: PDE reference, M = ∞ bias, Monte Carlo gaps over (n, M, seed), library check."""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from experiments.feynman_kac.pde import solve_kolmogorov, validate
from experiments.feynman_kac.problem import Problem, Settings
from experiments.feynman_kac.resnet import library_estimate, resnet_monte_carlo, resnet_quadrature


def pde_reference(problem: Problem, settings: Settings, x: np.ndarray) -> dict[str, Any]:
    """u_PDE(x, T) on the evaluation points, and its error estimate |u_dx − u_2dx| / 3 (Richardson, order 2)."""
    fine = solve_kolmogorov(problem.v, problem.f, problem.sigma, problem.T, settings.half_width, settings.pde_dx)
    coarse = solve_kolmogorov(problem.v, problem.f, problem.sigma, problem.T, settings.half_width,
                              2 * settings.pde_dx)
    u, u2 = np.interp(x, *fine), np.interp(x, *coarse)
    # np.interp is exact on grid nodes: x_eval lies on both grids when its spacing is a multiple of 2·dx.
    return {"u": u, "error_estimate": float(np.abs(u - u2).max() / 3)}


def run_experiment(problem: Problem, settings: Settings) -> dict[str, Any]:
    """All numbers of the results page (arrays as lists)."""
    x = settings.x_eval()
    start = time.perf_counter()
    validation = validate(settings.validation_dx, sigma=problem.sigma, T=problem.T, half_width=settings.half_width)
    ref = pde_reference(problem, settings, x)
    u_pde = ref["u"]
    bias, u_inf = {}, {}
    for n in settings.ns:
        u_inf[n] = resnet_quadrature(problem, x, n, settings.half_width, settings.quad_dx, settings.quad_nodes)
        bias[n] = float(np.abs(u_inf[n] - u_pde).max())
    runs, u_mc = [], {}
    for seed in settings.seeds:
        for n in settings.ns:
            for m in settings.ms:
                t0 = time.perf_counter()
                mean, se = resnet_monte_carlo(problem, x, n, m, seed)
                runs.append({
                    "seed": seed, "n": n, "M": m,
                    "gap": float(np.abs(mean - u_pde).max()),
                    "max_se": float(se.max()),
                    "mc_error": float(np.abs(mean - u_inf[n]).max()),
                    "wall_s": time.perf_counter() - t0,
                })
                if seed == settings.seeds[0] and m == max(settings.ms):
                    u_mc[n] = (mean, se)
    lib_mean, lib_se = library_estimate(problem, x, settings.check_n, settings.check_m, settings.seeds[0])
    lib_diff = float(np.abs(lib_mean - u_inf[settings.check_n]).max())
    check = {"n": settings.check_n, "M": settings.check_m, "max_abs_diff_to_M_inf": lib_diff,
             "max_se": float(lib_se.max()), "within_4_max_se": lib_diff <= 4 * float(lib_se.max())}
    return {
        "x": x.tolist(), "u_pde": u_pde.tolist(), "pde_error_estimate": ref["error_estimate"],
        "pde_validation": validation, "bias_M_inf": {str(n): b for n, b in bias.items()},
        "u_M_inf": {str(n): u.tolist() for n, u in u_inf.items()},
        "u_mc_first_seed_largest_M": {str(n): {"mean": m.tolist(), "se": s.tolist()} for n, (m, s) in u_mc.items()},
        "runs": runs, "library_check": check, "compute_wall_s": time.perf_counter() - start,
    }


def summarise(result: dict[str, Any], settings: Settings) -> dict[str, Any]:
    """Mean ± std over seeds of gap, max SE and MC error per (n, M); weak-order estimates from the M = ∞ bias."""
    cells: dict[str, Any] = {}
    for n in settings.ns:
        for m in settings.ms:
            rows = [r for r in result["runs"] if r["n"] == n and r["M"] == m]
            entry: dict[str, Any] = {"n": n, "M": m, "runs": len(rows)}
            for key in ("gap", "max_se", "mc_error"):
                vals = np.array([r[key] for r in rows])
                entry[f"{key}_mean"] = float(vals.mean())
                entry[f"{key}_std"] = float(vals.std(ddof=1)) if len(vals) > 1 else 0.0
            cells[f"{n}/{m}"] = entry
    bias = [result["bias_M_inf"][str(n)] for n in settings.ns]
    orders = [float(np.log(b0 / b1) / np.log(n1 / n0))
              for (n0, b0), (n1, b1) in zip(zip(settings.ns, bias), zip(settings.ns[1:], bias[1:]))]
    largest_m = max(settings.ms)
    return {
        "cells": cells, "weak_orders": orders,
        "gap_decreases_in_n_at_largest_M": cells[f"{settings.ns[-1]}/{largest_m}"]["gap_mean"]
        < cells[f"{settings.ns[0]}/{largest_m}"]["gap_mean"],
    }
