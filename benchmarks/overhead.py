"""Framework overhead: cdflow's ContinuousDepth vs a bare torchdiffeq.odeint on the same drift.

Both sides get the same function object, the MLP velocity field v (batch 256, width 64): cdflow through
``ContinuousDepth([Convection(v)], spec)``, the baseline as plain ``torchdiffeq.odeint(v, x, t, ...)`` with the
method, tolerances and solver options cdflow passes (it steps onto the output time with torchdiffeq's own
``step_t`` option for adaptive methods, ``step_size`` for fixed-step ones). The timed calls do nothing else.
The number of drift evaluations of each side is counted in a separate, untimed call (the baseline's through a
counting wrapper used only there) and the outputs are compared: the goal holds only if both sides evaluate
the drift equally often and agree, and the per-round time ratio cdflow/bare is ≤ 1.05 beyond its spread.
"""

from __future__ import annotations

import torch
from torchdiffeq import odeint

from benchmarks.common import Goal, Row, goal_row, interleaved_times, median_spread, paired_ratio
from cdflow import ContinuousDepth, Convection, MLPVelocity, SolverSpec

GOAL = Goal("<=", 1.05, note="with the same NFE and output")


class _Count(torch.nn.Module):
    """Counts the evaluations of f: used only in the untimed NFE call."""

    def __init__(self, f):
        super().__init__()
        self.f, self.n = f, 0

    def forward(self, t, x):
        self.n += 1
        return self.f(t, x)


def run(quick: bool, device: torch.device) -> list[Row]:
    rows = []
    torch.manual_seed(0)
    batch, width = 256, 64
    repeats, warmup = (10, 2) if quick else (30, 5)
    for method, extra in (("dopri5", {}), ("rk4", {"step_size": 0.1})):
        v = MLPVelocity(width, width=width, depth=2).to(device)
        spec = SolverSpec(method=method, rtol=1e-3, atol=1e-4, **extra)
        block = ContinuousDepth([Convection(v)], spec)
        x = torch.randn(batch, width, device=device)
        t = torch.tensor([0.0, spec.t1], device=device)
        opts = {"step_t": t[1:]} if method == "dopri5" else {"step_size": spec.step_size}

        def bare(backward: bool, f=v):
            y = odeint(f, x, t, rtol=spec.rtol, atol=spec.atol, method=method, options=opts)[-1]
            if backward:
                y.pow(2).mean().backward()
            return y

        def ours(backward: bool):
            y = block(x)
            if backward:
                y.pow(2).mean().backward()
            return y

        for backward in (False, True):
            ctx = torch.enable_grad() if backward else torch.no_grad()
            with ctx:
                times = interleaved_times(
                    {"bare": lambda: bare(backward), "cdflow": lambda: ours(backward)}, repeats, warmup, device
                )
            counter = _Count(v)  # untimed: how often each side evaluates the drift, and what it returns
            with torch.no_grad():
                y_bare = bare(False, f=counter)
                y_ours = ours(False)
            nfe_bare, nfe_ours = counter.n, block.stats.nfe_forward
            same_nfe = nfe_bare == nfe_ours
            max_diff = float((y_bare - y_ours).abs().max())
            same_output = bool(torch.allclose(y_bare, y_ours, rtol=1e-6, atol=1e-7))
            mb, sb = median_spread(times["bare"])
            mc, sc = median_spread(times["cdflow"])
            ratio, spread, ratios = paired_ratio(times["cdflow"], times["bare"])
            case = f"{method} {'fwd+bwd' if backward else 'fwd'} B={batch} W={width}"
            rows.append(goal_row("overhead", case, "time ratio cdflow/bare", ratio, "x", spread, GOAL,
                                 require=same_nfe and same_output,
                                 extra={"bare_ms": mb * 1e3, "bare_spread_ms": sb * 1e3, "cdflow_ms": mc * 1e3,
                                        "cdflow_spread_ms": sc * 1e3, "ratios": ratios, "repeats": repeats,
                                        "warmup": warmup, "nfe_bare": nfe_bare, "nfe_cdflow": nfe_ours,
                                        "same_nfe": same_nfe, "same_output": same_output,
                                        "max_abs_diff": max_diff}))
    return rows
