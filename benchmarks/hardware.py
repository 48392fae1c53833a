"""Hardware efficiency: GFLOP/s of the MLP drift evaluations inside a dopri5 solve vs torch's matmul rate on
the same shapes in the same run.

One drift evaluation of MLPVelocity(dim=W, width=W, depth=2, time input) costs
2·B·((W+1)·W + W·W) flops in its two matmuls (activations and bias adds are not counted), so
the drift's rate = NFE · that / (time spent inside the drift evaluations, timed around each call), and the
end-to-end rate = NFE · that / whole solve time (which also pays torchdiffeq's Runge–Kutta algebra and
error control). The reference is the best rate of a bare [B, W+1] @ [W+1, W] @ [W, W] matmul loop.
On CUDA the per-call timer synchronises, so there the drift figure includes launch latency.
"""

from __future__ import annotations

import time

import torch

from benchmarks.common import Row, interleaved_times, median_spread, sync
from cdflow import ContinuousDepth, Convection, MLPVelocity, SolverSpec


def _matmul_rate(batch: int, width: int, device: torch.device, repeats: int) -> float:
    a = torch.randn(batch, width + 1, device=device)
    w1 = torch.randn(width + 1, width, device=device)
    w2 = torch.randn(width, width, device=device)
    best = 0.0
    for _ in range(repeats):
        sync(device)
        start = time.perf_counter()
        for _ in range(20):
            torch.mm(torch.mm(a, w1), w2)
        sync(device)
        elapsed = time.perf_counter() - start
        best = max(best, 20 * 2 * batch * ((width + 1) * width + width * width) / elapsed)
    return best / 1e9


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


def run(quick: bool, device: torch.device) -> list[Row]:
    shapes = [(1024, 256)] if quick else [(1024, 256), (2048, 512), (4096, 256)]
    repeats, warmup = (3, 1) if quick else (10, 2)
    rows = []
    for batch, width in shapes:
        torch.manual_seed(0)
        v = MLPVelocity(width, width=width, depth=2, activation="tanh").to(device)
        block = ContinuousDepth([Convection(v)], SolverSpec(method="dopri5", rtol=1e-3, atol=1e-4))
        x = torch.randn(batch, width, device=device)
        with torch.no_grad():
            times = interleaved_times({"solve": lambda: block(x)}, repeats, warmup, device)
        med, spread = median_spread(times["solve"])
        flops = block.stats.nfe_forward * 2 * batch * ((width + 1) * width + width * width)
        timed = _Timed(v, device)
        timed_block = ContinuousDepth([Convection(timed)], block.solver)
        with torch.no_grad():
            for _ in range(repeats):
                timed_block(x)
        drift_s = timed.seconds / repeats
        peak = _matmul_rate(batch, width, device, repeats)
        drift_rate, solve_rate = flops / drift_s / 1e9, flops / med / 1e9
        case = f"dopri5 MLP drift B={batch} W={width}"
        rows.append(Row("hardware", case + " (drift evaluations)", "fraction of matmul rate",
                        100 * drift_rate / peak, "%", goal="≥ 60%", met=drift_rate / peak >= 0.6,
                        extra={"drift_gflops": drift_rate, "matmul_gflops": peak, "nfe": block.stats.nfe_forward,
                               "drift_ms": drift_s * 1e3}))
        rows.append(Row("hardware", case + " (whole solve)", "fraction of matmul rate", 100 * solve_rate / peak, "%",
                        extra={"solve_gflops": solve_rate, "matmul_gflops": peak, "solve_ms": med * 1e3,
                               "solve_spread_ms": spread * 1e3,
                               "note": "includes torchdiffeq's Runge-Kutta combinations and error norms"}))
    return rows
