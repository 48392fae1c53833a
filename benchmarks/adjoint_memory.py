"""Adjoint memory, time and gradient: backprop through the solver vs backsolve adjoint (± seminorm) vs the
checkpointed adjoint, over depths T.

Backprop stores every stage of every step, so its memory grows with the number of steps (∝ T here);
the adjoint stores only x(T) and re-solves backwards, so its memory should stay flat. The seminorm
(Kidger et al. 2021) drops the parameter-gradient channels from the adjoint's error norm: fewer backward
steps for the same gradient. The checkpointed adjoint (``adjoint='checkpoint'``, default checkpoints) keeps a few
states of the forward solve and replays one segment at a time: memory bounded by its checkpoints and one segment,
time about one more forward solve than backprop, and backprop's gradient exactly, where backsolve's is only as
good as its reverse solve.

Memory: each (variant, T, batch) is measured in its own fresh process (``python -m benchmarks.adjoint_memory
--measure ...``, see benchmarks.memory): model and data, one warm-up step, then the peak of one forward +
backward step above the resident set before it. The growth goals need a spread, so the judged batch measures
the end depths in `rounds` separate processes each and the per-round ratios give median and spread.
Times are interleaved fwd+bwd times of the variants in the parent process, after a warm-up; the checkpointed
adjoint's time goal is the per-round ratio to backprop's at the largest depth.
Gradient error (float64, exact: no spread): each adjoint's gradient against backprop's, relative in the 2-norm, on
this benchmark's network and on a problem whose reverse solve is unstable (`Leak`).

Quick mode measures batch 256 only, whose activations are a few MiB, inside the allocator's noise, and the
memory of backprop only: its memory rows are reported, not judged. The backward-NFE cut is an exact count (from
the timed solves) and is judged in both modes, as are the time ratio and the gradient errors.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence

import torch
from torch import nn

from benchmarks.common import Goal, Row, goal_row, interleaved_times, median_spread, paired_ratio
from benchmarks.memory import METHOD, fresh_processes
from cdflow import ContinuousDepth, Convection, MLPVelocity, SolverSpec

VARIANTS = {
    "backprop": {"adjoint": "none"},
    "backsolve": {"adjoint": "backsolve"},
    "seminorm": {"adjoint": "backsolve", "seminorm": True},
    "checkpoint": {"adjoint": "checkpoint"},
}
WIDTH = 64
FLAT = Goal("<=", 1.2, "x", note="flat in T")
GROWS = Goal(">", 1.0, "x", note="backprop grows faster than the adjoint")
CUT = Goal(">", 0.0, "%")
CKPT_FLAT = Goal("<=", 1.3, "x", note="bounded by checkpoints, not steps")
CKPT_TIME = Goal("<=", 2.0, "x", note="of backprop's time")
EXACT = Goal("<=", 1e-6, "", note="backprop's gradient")
NOISE = "batch 256: activations of a few MiB, inside the allocator's noise; the goals are judged at batch 2048 " \
        "in the full run"


def _depths(quick: bool) -> tuple[float, ...]:
    return (1.0, 16.0) if quick else (1.0, 2.0, 4.0, 8.0, 16.0)


def _block(v: MLPVelocity, t1: float, variant: str) -> ContinuousDepth:
    return ContinuousDepth([Convection(v)], SolverSpec(method="dopri5", rtol=1e-3, atol=1e-4, t1=t1,
                                                       **VARIANTS[variant]))


def _problem(device: torch.device, batch: int, width: int) -> tuple[MLPVelocity, torch.Tensor]:
    torch.manual_seed(0)
    return MLPVelocity(width, width=width, depth=2, activation="tanh").to(device), torch.randn(batch, width,
                                                                                                device=device)


def _step(v: MLPVelocity, block: ContinuousDepth, x: torch.Tensor) -> None:
    v.zero_grad(set_to_none=True)
    block(x).pow(2).mean().backward()


def _measure(variant: str, t1: float, batch: int, width: int, device_name: str) -> dict:
    """One variant at one depth, in this process: call it only in a fresh process."""
    from benchmarks.memory import PeakMeter, exact_rss

    exact_rss()  # this process measures no time: let the resident set follow live tensors
    device = torch.device(device_name)
    v, x = _problem(device, batch, width)
    block = _block(v, t1, variant)
    _step(v, block, x)  # warm-up: first-call allocations stay outside the measurement
    v.zero_grad(set_to_none=True)
    meter = PeakMeter(device.type)
    _step(v, block, x)
    out = meter.stop()
    out.update(variant=variant, t1=t1, batch=batch, nfe_forward=block.stats.nfe_forward,
               nfe_backward=block.stats.nfe_backward)
    return out


def _memory_variants(quick: bool) -> tuple[str, ...]:
    """Quick mode measures backprop's memory only (each figure costs a process start; backprop's growth is the
    one a batch-256 measurement resolves); the full run measures every variant."""
    return ("backprop",) if quick else tuple(VARIANTS)


def _time_batch(quick: bool, device: torch.device, batch: int
                ) -> tuple[dict[float, dict[str, list[float]]], dict[str, dict[float, int]]]:
    """Interleaved fwd+bwd times of the variants at every depth, and the backward NFE of each."""
    repeats, warmup = (3, 1) if quick else (10, 2)
    v, x = _problem(device, batch, WIDTH)
    times, nfe_b = {}, {k: {} for k in VARIANTS}
    for t1 in _depths(quick):
        blocks = {k: _block(v, t1, k) for k in VARIANTS}
        times[t1] = interleaved_times({k: (lambda b=b: _step(v, b, x)) for k, b in blocks.items()}, repeats, warmup,
                                      device)
        for k, b in blocks.items():
            nfe_b[k][t1] = b.stats.nfe_backward
    return times, nfe_b


def _memory(quick: bool, device: torch.device, batch: int, rounds: int) -> dict[str, dict[float, list[dict]]]:
    """Fresh-process measurements: every depth once, the end depths `rounds` times (round-robin)."""
    depths = _depths(quick)
    jobs, keys = [], []
    for rnd in range(rounds):
        for t1 in depths if rnd == 0 else (depths[0], depths[-1]):
            for name in _memory_variants(quick):
                jobs.append(("benchmarks.adjoint_memory", ["--measure", name, t1, batch, WIDTH, device.type]))
                keys.append((name, t1))
    # memory figures are per process, so two may run side by side (they are not timed)
    results = fresh_processes(jobs, parallel=2)
    mem: dict[str, dict[float, list[dict]]] = {k: {t1: [] for t1 in depths} for k in _memory_variants(quick)}
    for (name, t1), res in zip(keys, results):
        mem[name][t1].append(res)
    return mem


def run(quick: bool, device: torch.device) -> list[Row]:
    batches = (256,) if quick else (256, 2048)
    rows: list[Row] = []
    for batch in batches:
        judged = not quick and batch == batches[-1]
        times, nfe_b = _time_batch(quick, device, batch)
        mem = _memory(quick, device, batch, rounds=3 if judged else 1)
        rows += _rows(quick, device, batch, times, nfe_b, mem, judged)
    return rows + gradient_errors(device)


def _rows(quick: bool, device: torch.device, batch: int, times: dict[float, dict[str, list[float]]],
          nfe_b: dict[str, dict[float, int]], mem: dict[str, dict[float, list[dict]]], judged: bool) -> list[Row]:
    depths = _depths(quick)
    rows: list[Row] = []
    for t1 in depths:
        for name in mem:
            samples = mem[name][t1]
            value, spread = median_spread([s["measured_mib"] for s in samples])
            med, t_spread = median_spread(times[t1][name])
            rows.append(Row("adjoint_memory", f"{name} B={batch} T={t1:g}", "peak memory of a step", value, "MiB",
                            spread=spread,
                            extra={"samples_mib": [s["measured_mib"] for s in samples],
                                   "baseline_mib": samples[0]["baseline_mib"], "time_ms": med * 1e3,
                                   "time_spread_ms": t_spread * 1e3, "nfe_forward": samples[0]["nfe_forward"],
                                   "nfe_backward": samples[0]["nfe_backward"], "memory_method": METHOD[device.type]}))
    lo, hi = depths[0], depths[-1]

    def growth(name: str) -> list[float]:
        return [a["measured_mib"] / max(b["measured_mib"], 1e-9) for a, b in zip(mem[name][hi], mem[name][lo])]

    for name in ("backsolve", "seminorm", "checkpoint") if "backsolve" in mem else ():
        value, spread = median_spread(growth(name))
        rows.append(goal_row("adjoint_memory", f"{name} B={batch} growth T={lo:g}→{hi:g}", "memory ratio", value, "x",
                             spread, CKPT_FLAT if name == "checkpoint" else FLAT, extra={"per_round": growth(name)},
                             judge=judged, why_not=NOISE))
    value, spread = median_spread(growth("backprop"))
    rows.append(Row("adjoint_memory", f"backprop B={batch} growth T={lo:g}→{hi:g}", "memory ratio", value, "x",
                    spread=spread, extra={"per_round": growth("backprop")}))
    if "backsolve" in mem:
        value, spread, ratios = paired_ratio(growth("backprop"), growth("backsolve"))
        rows.append(goal_row("adjoint_memory", f"backprop growth / backsolve growth B={batch} T={lo:g}→{hi:g}",
                             "ratio of memory ratios", value, "x", spread, GROWS, extra={"per_round": ratios},
                             judge=judged, why_not=NOISE))
    for name, goal in (("checkpoint", CKPT_TIME), ("backsolve", None)):
        value, spread, ratios = paired_ratio(times[hi][name], times[hi]["backprop"])
        case = f"{name} / backprop B={batch} T={hi:g}"
        extra = {"per_round": ratios, "nfe_backward": {k: nfe_b[k][hi] for k in ("backprop", name)}}
        rows.append(goal_row("adjoint_memory", case, "time ratio", value, "x", spread, goal, extra=extra)
                    if goal is not None else Row("adjoint_memory", case, "time ratio", value, "x", spread=spread,
                                                 extra=extra))
    cut = 1 - sum(nfe_b["seminorm"].values()) / max(sum(nfe_b["backsolve"].values()), 1)
    rows.append(goal_row("adjoint_memory", f"seminorm vs backsolve B={batch}, T={', '.join(f'{t:g}' for t in depths)}",
                         "backward NFE cut", 100 * cut, "%", 0.0, CUT,
                         extra={"backsolve": nfe_b["backsolve"], "seminorm": nfe_b["seminorm"],
                                "spread": "exact counts"}))
    return rows


class Leak(nn.Module):
    """dx₁/dt = −λ x₁, dx₂/dt = θ x₁: a decaying channel feeding a neutral one. A backward solve rebuilds x₁(t)
    from x₁(T), its error growing by e^{λ(T−t)}, while the neutral channel's adjoint does not decay: backsolve's
    ∂x₂(T)/∂θ = ∫ a₂ x₁ dt inherits the growth (tests/test_checkpoint_adjoint.py checks the analytic gradient)."""

    def __init__(self, lam: float) -> None:
        super().__init__()
        self.lam = lam
        self.theta = nn.Parameter(torch.tensor(0.7, dtype=torch.float64))

    def forward(self, t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return torch.stack([-self.lam * x[:, 0], self.theta * x[:, 0]], dim=1)


def _gradient(block: ContinuousDepth, x: torch.Tensor, loss) -> torch.Tensor:  # noqa: ANN001 — a loss of x(T)
    x = x.clone().requires_grad_(True)
    grads = torch.autograd.grad(loss(block(x)), [x, *block.parameters()])
    return torch.cat([g.flatten() for g in grads])


def gradient_errors(device: torch.device) -> list[Row]:
    """Each adjoint's gradient against backprop's, float64, relative 2-norm: this benchmark's network at T = 4
    (dopri5, rtol 1e-3) and `Leak` at λT = 20 (dopri5, rtol = atol = 1e-6)."""
    torch.manual_seed(0)
    v = MLPVelocity(WIDTH, width=WIDTH, depth=2, activation="tanh").double().to(device)
    problems = {
        "network T=4": (lambda spec: ContinuousDepth([Convection(v)], spec), dict(rtol=1e-3, atol=1e-4, t1=4.0),
                        torch.randn(256, WIDTH, dtype=torch.float64, device=device), lambda y: y.pow(2).mean()),
        "decaying channel λT=20": (lambda spec: ContinuousDepth([Leak(10.0)], spec).to(device),
                                   dict(rtol=1e-6, atol=1e-6, t1=2.0),
                                   torch.tensor([[1.0, 0.0], [0.5, 1.0]], dtype=torch.float64, device=device),
                                   lambda y: y[:, 1].sum()),
    }
    rows = []
    for problem, (make, tol, x, loss) in problems.items():
        grads = {name: _gradient(make(SolverSpec(method="dopri5", **tol, **VARIANTS[name])), x, loss)
                 for name in VARIANTS}
        for name in ("backsolve", "seminorm", "checkpoint"):
            err = float((grads[name] - grads["backprop"]).norm() / grads["backprop"].norm())
            case = f"{name} vs backprop, {problem}"
            extra = {"float64": True, "spread": "deterministic"}
            rows.append(goal_row("adjoint_memory", case, "gradient error", err, "", 0.0, EXACT, extra=extra)
                        if name == "checkpoint" else
                        Row("adjoint_memory", case, "gradient error", err, "", spread=0.0, extra=extra))
    return rows


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--measure", nargs=5, metavar=("VARIANT", "T", "BATCH", "WIDTH", "DEVICE"), required=True)
    args = parser.parse_args(argv)
    variant, t1, batch, width, device = args.measure
    print(json.dumps(_measure(variant, float(t1), int(batch), int(width), device)))


if __name__ == "__main__":
    main()
