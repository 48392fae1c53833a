"""Would compiling the drift pay? Eager vs ``torch.compile`` (inductor) of the same drift module in a dopri5 solve.

cdflow does not compile anything and offers no compile option. This benchmark measures what a user who wraps
their velocity field in ``torch.compile`` before handing it to cdflow would get: the same MLP drift, once
eager and once as ``torch.compile(v)`` (the same parameters), each inside ``ContinuousDepth`` with the same
dopri5 settings, forward + backward, interleaved after a warm-up. The first compiled call (compilation
included) is reported separately. The row's goal is the bar such an option would have to clear: a per-round
speed-up eager/compiled > 1 beyond its spread, with both solves taking the same number of drift evaluations.
"""

from __future__ import annotations

import time

import torch

from benchmarks.common import Goal, Row, goal_row, interleaved_times, median_spread, paired_ratio, sync
from cdflow import ContinuousDepth, Convection, MLPVelocity, SolverSpec

GOAL = Goal(">", 1.0, note="to be worth offering; same NFE")


def run(quick: bool, device: torch.device) -> list[Row]:
    if quick:
        return [Row("compile", "eager vs torch.compile of the drift: skipped in QUICK mode", "speed-up", float("nan"),
                    "x", extra={"note": "compilation takes tens of seconds; run `make bench` for it"})]
    rows = []
    repeats, warmup = 10, 3
    for batch, width in ((256, 64), (1024, 256)):
        torch.manual_seed(0)
        v = MLPVelocity(width, width=width, depth=2).to(device)
        x = torch.randn(batch, width, device=device)
        spec = SolverSpec(method="dopri5", rtol=1e-3, atol=1e-4)
        eager = ContinuousDepth([Convection(v)], spec)
        compiled = ContinuousDepth([Convection(torch.compile(v, dynamic=False))], spec)

        def step(block):
            v.zero_grad(set_to_none=True)
            block(x).pow(2).mean().backward()

        sync(device)
        start = time.perf_counter()
        step(compiled)
        sync(device)
        compile_s = time.perf_counter() - start
        times = interleaved_times({"eager": lambda: step(eager), "compiled": lambda: step(compiled)},
                                  repeats, warmup, device)
        step(eager)
        nfe_eager = eager.stats.nfe_forward
        step(compiled)
        nfe_compiled = compiled.stats.nfe_forward
        speedup, spread, ratios = paired_ratio(times["eager"], times["compiled"])
        me, se = median_spread(times["eager"])
        mc, sc = median_spread(times["compiled"])
        rows.append(goal_row("compile", f"eager vs torch.compile(drift), dopri5 fwd+bwd B={batch} W={width}",
                             "speed-up eager/compiled", speedup, "x", spread, GOAL, require=nfe_eager == nfe_compiled,
                             extra={"eager_ms": me * 1e3, "eager_spread_ms": se * 1e3, "compiled_ms": mc * 1e3,
                                    "compiled_spread_ms": sc * 1e3, "ratios": ratios, "repeats": repeats,
                                    "warmup": warmup, "nfe_eager": nfe_eager, "nfe_compiled": nfe_compiled,
                                    "first_call_incl_compile_s": compile_s,
                                    "offered_by_cdflow": False}))
    return rows
