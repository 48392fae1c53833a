"""Framework overhead: cdflow's ContinuousDepth vs a bare torchdiffeq.odeint on the same drift.

Same MLP drift (batch 256, width 64), same method, tolerances and solver options (cdflow steps onto the
output time with torchdiffeq's own ``step_t`` option, so the bare call gets it too); the NFE of both
are compared to prove they do the same numerical work.
"""

from __future__ import annotations

import torch
from torchdiffeq import odeint

from benchmarks.common import Row, interleaved_times, median_spread
from cdflow import ContinuousDepth, Convection, MLPVelocity, SolverSpec


class _Count(torch.nn.Module):
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
        bare_f = _Count(v)

        def bare(backward: bool):
            y = odeint(bare_f, x, t, rtol=spec.rtol, atol=spec.atol, method=method, options=opts)[-1]
            if backward:
                y.pow(2).mean().backward()

        def ours(backward: bool):
            y = block(x)
            if backward:
                y.pow(2).mean().backward()

        for backward in (False, True):
            ctx = torch.enable_grad() if backward else torch.no_grad()
            with ctx:
                times = interleaved_times(
                    {"bare": lambda: bare(backward), "cdflow": lambda: ours(backward)}, repeats, warmup, device
                )
            bare_f.n = 0
            with ctx:
                bare(False)
                ours(False)
            same_nfe = bare_f.n == block.stats.nfe_forward
            mb, sb = median_spread(times["bare"])
            mc, sc = median_spread(times["cdflow"])
            ratio = mc / mb
            spread = ratio * ((sb / mb) ** 2 + (sc / mc) ** 2) ** 0.5  # propagated half-IQR spreads
            case = f"{method} {'fwd+bwd' if backward else 'fwd'} B={batch} W={width}"
            rows.append(Row("overhead", case, "time ratio cdflow/bare", ratio, "x", spread=spread,
                            goal="≤ 1.05", met=ratio <= 1.05,
                            extra={"bare_ms": mb * 1e3, "bare_spread_ms": sb * 1e3, "cdflow_ms": mc * 1e3,
                                   "cdflow_spread_ms": sc * 1e3, "nfe": block.stats.nfe_forward,
                                   "same_nfe": same_nfe}))
    return rows
