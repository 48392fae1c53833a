"""torch.compile of the drift (inductor) vs eager inside a dopri5 solve: speed-up and compile time.

cdflow offers compilation as an option only where this benchmark shows it wins.
"""

from __future__ import annotations

import time

import torch

from benchmarks.common import Row, interleaved_times, median_spread, sync
from cdflow import ContinuousDepth, Convection, MLPVelocity, SolverSpec


def run(quick: bool, device: torch.device) -> list[Row]:
    if quick:
        return [Row("compile", "skipped in QUICK mode", "speed-up", float("nan"), "x",
                    extra={"note": "compilation takes tens of seconds; run `make bench` for it"})]
    rows = []
    for batch, width in ((256, 64), (1024, 256)):
        torch.manual_seed(0)
        v = MLPVelocity(width, width=width, depth=2).to(device)
        x = torch.randn(batch, width, device=device)
        eager = ContinuousDepth([Convection(v)], SolverSpec(method="dopri5", rtol=1e-3, atol=1e-4))
        compiled_v = torch.compile(v, dynamic=False)
        compiled = ContinuousDepth([Convection(compiled_v)], SolverSpec(method="dopri5", rtol=1e-3, atol=1e-4))

        def step(block):
            v.zero_grad(set_to_none=True)
            block(x).pow(2).mean().backward()

        sync(device)
        start = time.perf_counter()
        step(compiled)
        sync(device)
        compile_s = time.perf_counter() - start
        times = interleaved_times({"eager": lambda: step(eager), "compiled": lambda: step(compiled)}, 10, 3, device)
        me, _ = median_spread(times["eager"])
        mc, sc = median_spread(times["compiled"])
        rows.append(Row("compile", f"dopri5 fwd+bwd B={batch} W={width}", "speed-up eager/compiled", me / mc, "x",
                        goal="> 1 to offer the flag", met=me / mc > 1.0,
                        extra={"eager_ms": me * 1e3, "compiled_ms": mc * 1e3, "compiled_spread_ms": sc * 1e3,
                               "first_call_incl_compile_s": compile_s}))
    return rows
