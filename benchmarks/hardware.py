"""Hardware efficiency: GFLOP/s of the MLP drift evaluations inside a dopri5 solve vs torch's matmul rate on
the same shapes in the same run.

MLPVelocity(dim=W, width=W, depth=2, time input) does two [B, W] @ [W, W] products per evaluation (the time
input is folded into the first bias, see cdflow.velocity.TimeLinear): 4·B·W² flops counted (activations and
bias adds are not). Three variants are interleaved, after a warm-up, `repeats` rounds:

* drift: one solve whose velocity field is wrapped in a timer around each call: its rate = NFE · flops per
  evaluation / time spent inside the drift evaluations (on CUDA the per-call timer synchronises, so there the
  figure includes launch latency);
* solve: the same solve without the timer: end-to-end rate = NFE · flops / whole solve time (which also pays
  torchdiffeq's Runge–Kutta algebra and error control);
* matmul: 20 bare [B, W] @ [W, W] @ [W, W] chains (the drift's products, back to back).

Each round's rates are divided by the same round's matmul rate; median and spread over rounds. Goal: the
drift evaluations run at ≥ 60% of the matmul rate, beyond the spread.
"""

from __future__ import annotations

import time

import torch

from benchmarks.common import Goal, Row, goal_row, interleaved_times, median_spread, paired_ratio, sync
from cdflow import ContinuousDepth, Convection, MLPVelocity, SolverSpec

GOAL = Goal(">=", 60.0, "%")
CHAIN = 20


class _Timed(torch.nn.Module):
    """Wraps a velocity field and accumulates the wall time spent inside its calls."""

    def __init__(self, inner: torch.nn.Module, device: torch.device) -> None:
        super().__init__()
        self.inner, self.device, self.seconds = inner, device, 0.0

    def forward(self, t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        sync(self.device)
        start = time.perf_counter()
        out = self.inner(t, x)
        sync(self.device)
        self.seconds += time.perf_counter() - start
        return out


def _flops_per_eval(batch: int, width: int) -> int:
    return 2 * 2 * batch * width * width


def run(quick: bool, device: torch.device) -> list[Row]:
    shapes = [(1024, 256)] if quick else [(1024, 256), (2048, 512), (4096, 256)]
    repeats, warmup = (4, 1) if quick else (10, 2)
    rows = []
    for batch, width in shapes:
        torch.manual_seed(0)
        v = MLPVelocity(width, width=width, depth=2, activation="tanh").to(device)
        spec = SolverSpec(method="dopri5", rtol=1e-3, atol=1e-4)
        block = ContinuousDepth([Convection(v)], spec)
        timed = _Timed(v, device)
        timed_block = ContinuousDepth([Convection(timed)], spec)
        x = torch.randn(batch, width, device=device)
        a = torch.randn(batch, width, device=device)
        w1, w2 = torch.randn(width, width, device=device), torch.randn(width, width, device=device)
        drift_s: list[float] = []

        def drift():
            before = timed.seconds
            timed_block(x)
            drift_s.append(timed.seconds - before)

        def matmul():
            for _ in range(CHAIN):
                torch.mm(torch.mm(a, w1), w2)

        with torch.no_grad():
            times = interleaved_times({"drift": drift, "solve": lambda: block(x), "matmul": matmul}, repeats,
                                      warmup, device)
        drift_s = drift_s[warmup:]
        nfe, nfe_timed = block.stats.nfe_forward, timed_block.stats.nfe_forward
        flops = nfe * _flops_per_eval(batch, width)
        matmul_rate = [CHAIN * _flops_per_eval(batch, width) / s for s in times["matmul"]]
        drift_rate = [flops / s for s in drift_s]
        solve_rate = [flops / s for s in times["solve"]]
        frac_drift, sp_drift, fr_d = paired_ratio([100 * r for r in drift_rate], matmul_rate)
        frac_solve, sp_solve, fr_s = paired_ratio([100 * r for r in solve_rate], matmul_rate)
        mm, mm_sp = median_spread([r / 1e9 for r in matmul_rate])
        info = {"nfe": nfe, "matmul_gflops": mm, "matmul_gflops_spread": mm_sp, "repeats": repeats,
                "warmup": warmup, "flops_per_eval": _flops_per_eval(batch, width)}
        case = f"dopri5 MLP drift B={batch} W={width}"
        rows.append(goal_row("hardware", case + " (drift evaluations)", "fraction of matmul rate", frac_drift, "%",
                             sp_drift, GOAL, require=nfe == nfe_timed,
                             extra={**info, "drift_gflops": median_spread([r / 1e9 for r in drift_rate])[0],
                                    "drift_ms": 1e3 * median_spread(drift_s)[0], "per_round_pct": fr_d,
                                    "nfe_timed_solve": nfe_timed}))
        rows.append(Row("hardware", case + " (whole solve)", "fraction of matmul rate", frac_solve, "%",
                        spread=sp_solve,
                        extra={**info, "solve_gflops": median_spread([r / 1e9 for r in solve_rate])[0],
                               "solve_ms": 1e3 * median_spread(times["solve"])[0], "per_round_pct": fr_s,
                               "note": "includes torchdiffeq's Runge-Kutta combinations and error norms"}))
    return rows
