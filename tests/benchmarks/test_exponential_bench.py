"""benchmarks.exponential in quick mode on a small graph whose answer is known: dx/dt = Bx − γLx on a 24-node
cycle (B random, not commuting with L), x(T) = exp(T(B − γL)) x0. The benchmark's own reference must equal the
exact solution, every method it reports must meet the error target against the exact solution too, and the
measured order must be the pair's (3) — the figures the Cora rows are built from, checked where they are known."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from benchmarks.common import Goal
from benchmarks.exponential import TARGET, measure
from cdflow.graph import Laplacian
from cdflow.heat import exponential_solve

F64 = torch.float64


@pytest.mark.slow  # about 35 s on the shared 2-core machine (the Strang search sub-solves thousands of steps)
def test_quick_figures_on_a_problem_with_a_known_answer() -> None:
    n, gamma = 16, 20.0
    i = torch.arange(n)
    lap = Laplacian.from_edges(torch.stack([i, (i + 1) % n]), n, "combinatorial", dtype=F64)
    g = torch.Generator().manual_seed(0)
    b = 0.2 * torch.randn(n, n, dtype=F64, generator=g)
    x0 = torch.randn(n, 3, dtype=F64, generator=g)
    exact = torch.linalg.matrix_exp(b - gamma * lap.to_dense()) @ x0

    rows = measure(lap, lambda t, x: b @ x, x0, gamma, quick=True, exact=exact)
    by = {(r.case, r.metric): r for r in rows}
    ref = next(r for r in rows if r.case.startswith("reference"))
    assert ref.extra["reference_vs_exact"] < 1e-8 and ref.value < 1e-5
    for name in ("exponential", "dopri5-in-drift", "strang (fixed steps)"):
        row = by[(f"{name} γT=20", "velocity evaluations")]
        assert math.isfinite(row.value) and row.value > 0 and row.spread == 0.0
        # the error is measured against the reference, which equals the exact answer to 1e-8
        assert row.extra["error"] <= TARGET
        assert by[(f"{name} γT=20", "Laplacian products")].value == row.extra["products"]
    assert by[("exponential γT=20", "Laplacian products")].value == by[("exponential γT=20", "velocity evaluations")
                                                                       ].extra["products"]
    goals = [r for r in rows if r.goal]
    assert len(goals) == 3
    for row in goals:  # the goal text is the bound `met` was judged by, beyond a spread of 0
        rule = row.extra["goal_rule"]
        assert row.goal.startswith(str(Goal(rule["op"], rule["bound"])))
        assert row.met == Goal(rule["op"], rule["bound"]).met(row.value, row.spread)
    # the measured order is the slope of the errors against the exact answer (the pair's order itself, 3 as
    # h → 0, is tested in tests/heat; at γhλ_max = 10 … 2.5 it may be lower for exprk32)
    order = next(r for r in goals if "order" in r.case)
    errs = []
    for m in order.extra["steps"]:
        y = exponential_solve(lambda t, x: b @ x, x0, lap, gamma, adaptive=False, step_size=1 / m, rtol=1e-10,
                              atol=1e-12).y
        errs.append(float((y - exact).abs().max() / exact.abs().max()))
    slope = -np.polyfit(np.log(order.extra["steps"]), np.log(errs), 1)[0]
    assert abs(order.extra["measured_order"] - slope) < 0.02
    assert abs(order.value - abs(order.extra["measured_order"] - 3.0)) < 1e-12
    assert 2.0 <= order.extra["measured_order"] <= 3.5
    # γλ_max = 80: dopri5 is held to its stability bound, the exponential pair is not
    nfe = next(r for r in goals if "velocity evaluations" in r.case)
    assert nfe.value > 1.0
