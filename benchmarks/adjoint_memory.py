"""Adjoint memory: backprop through the solver vs backsolve adjoint vs seminorm adjoint, T ∈ {1,…,16}.

Backprop stores every stage of every step, so its memory grows with the number of steps (∝ T here);
the adjoint stores only x(T) and re-solves backwards, so its memory should stay flat. The seminorm
(Kidger et al. 2021) drops the parameter-gradient channels from the adjoint's error norm: fewer backward
steps for the same gradient.
"""

from __future__ import annotations

import gc

import torch

from benchmarks.common import MEMORY_METHOD, Row, exact_rss, interleaved_times, median_spread, peak_memory_mib
from cdflow import ContinuousDepth, Convection, MLPVelocity, SolverSpec

VARIANTS = {
    "backprop": {"adjoint": "none"},
    "backsolve": {"adjoint": "backsolve"},
    "seminorm": {"adjoint": "backsolve", "seminorm": True},
}


def run(quick: bool, device: torch.device) -> list[Row]:
    """Batch 256 (the issue's reference size) and, in full mode, batch 2048, where activations dominate
    the allocator's noise; the growth goals are judged at the largest batch."""
    batches = (256,) if quick else (256, 2048)
    times = {batch: _time_batch(quick, device, batch, width=64) for batch in batches}
    exact_rss()  # memory phase: from here on the RSS follows live tensors (see benchmarks.common)
    rows: list[Row] = []
    for batch in batches:
        rows += _run_batch(quick, device, batch, 64, times[batch], judged=batch == batches[-1])
    return rows


def _blocks(v: MLPVelocity, t1: float) -> dict[str, ContinuousDepth]:
    return {k: ContinuousDepth([Convection(v)], SolverSpec(method="dopri5", rtol=1e-3, atol=1e-4, t1=t1, **kw))
            for k, kw in VARIANTS.items()}


def _depths(quick: bool) -> tuple[float, ...]:
    return (1.0, 4.0, 16.0) if quick else (1.0, 2.0, 4.0, 8.0, 16.0)


def _problem(device: torch.device, batch: int, width: int) -> tuple[MLPVelocity, torch.Tensor]:
    torch.manual_seed(0)
    return MLPVelocity(width, width=width, depth=2, activation="tanh").to(device), torch.randn(batch, width,
                                                                                                device=device)


def _step(v: MLPVelocity, block: ContinuousDepth, x: torch.Tensor) -> None:
    v.zero_grad(set_to_none=True)
    block(x).pow(2).mean().backward()


def _time_batch(quick: bool, device: torch.device, batch: int, width: int) -> dict[float, dict[str, list[float]]]:
    """Interleaved fwd+bwd times of the three variants at every depth (before the memory phase)."""
    repeats, warmup = (3, 1) if quick else (10, 2)
    v, x = _problem(device, batch, width)
    return {t1: interleaved_times({k: (lambda b=b: _step(v, b, x)) for k, b in _blocks(v, t1).items()},
                                  repeats, warmup, device) for t1 in _depths(quick)}


def _run_batch(quick: bool, device: torch.device, batch: int, width: int,
               times_by_depth: dict[float, dict[str, list[float]]], judged: bool) -> list[Row]:
    """Rows for one batch size; the goals are held only where `judged` (the largest batch: at batch 256 the
    activations are a few MiB, inside the allocator's noise)."""
    depths = _depths(quick)
    v, x = _problem(device, batch, width)
    rows: list[Row] = []
    mem: dict[str, dict[float, float]] = {k: {} for k in VARIANTS}
    nfe_b: dict[str, dict[float, int]] = {k: {} for k in VARIANTS}
    for t1 in depths:
        blocks = _blocks(v, t1)
        times = times_by_depth[t1]
        for name, block in blocks.items():
            gc.collect()
            _step(v, block, x)  # warm: the first call allocates optimiser-free gradients
            mem[name][t1] = peak_memory_mib(lambda b=block: _step(v, b, x), device)
            nfe_b[name][t1] = block.stats.nfe_backward
            med, spread = median_spread(times[name])
            rows.append(Row("adjoint_memory", f"{name} B={batch} T={t1:g}", "peak memory", mem[name][t1], "MiB",
                            extra={"time_ms": med * 1e3, "time_spread_ms": spread * 1e3,
                                   "nfe_forward": block.stats.nfe_forward, "nfe_backward": block.stats.nfe_backward,
                                   "memory_method": MEMORY_METHOD[device.type]}))
    lo, hi = depths[0], depths[-1]
    for name in ("backsolve", "seminorm"):
        growth = mem[name][hi] / max(mem[name][lo], 1e-9)
        rows.append(Row("adjoint_memory", f"{name} B={batch} growth T={lo:g}→{hi:g}", "memory ratio", growth, "x",
                        goal="≤ 1.2" if judged else "", met=growth <= 1.2 if judged else None))
    growth_bp = mem["backprop"][hi] / max(mem["backprop"][lo], 1e-9)
    rows.append(Row("adjoint_memory", f"backprop B={batch} growth T={lo:g}→{hi:g}", "memory ratio", growth_bp, "x",
                    goal="grows (> adjoint's)" if judged else "", met=growth_bp > max(
                        mem["backsolve"][hi] / max(mem["backsolve"][lo], 1e-9), 1.2) if judged else None))
    cut = 1 - sum(nfe_b["seminorm"].values()) / max(sum(nfe_b["backsolve"].values()), 1)
    rows.append(Row("adjoint_memory", f"seminorm vs backsolve B={batch}, all T", "backward NFE cut", 100 * cut, "%",
                    goal="> 0" if judged else "", met=cut > 0 if judged else None,
                    extra={"backsolve": nfe_b["backsolve"], "seminorm": nfe_b["seminorm"]}))
    return rows
