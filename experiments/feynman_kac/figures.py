"""Figures of the Feynman–Kac experiment (matplotlib, Agg backend)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from experiments.feynman_kac.problem import Problem, Settings  # noqa: E402


def gap_figure(result: dict[str, Any], summary: dict[str, Any], problem: Problem, settings: Settings,
               path: Path) -> None:
    """Left: gap vs n per M, bias (M = ∞), 1/n guide. Middle: u_PDE, f. Right: pointwise error of u_ResNet
    (smallest and largest n, largest M, ± 2 SE) and of u_∞."""
    ns = np.array(settings.ns)
    fig, (ax, bx, cx) = plt.subplots(1, 3, figsize=(15, 4.2))
    for m in settings.ms:
        cells = [summary["cells"][f"{n}/{m}"] for n in settings.ns]
        line = ax.errorbar(ns, [c["gap_mean"] for c in cells], yerr=[c["gap_std"] for c in cells], marker="o",
                           capsize=3, label=f"gap, M = {m}")
        ax.plot(ns, [c["max_se_mean"] for c in cells], ls=":", color=line[0].get_color(),
                label=f"max SE, M = {m}")
    bias = np.array([result["bias_M_inf"][str(n)] for n in settings.ns])
    ax.plot(ns, bias, "k-s", label="bias (M = ∞)")
    ax.plot(ns, bias[0] * ns[0] / ns, "k--", lw=0.8, label="∝ 1/n")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("blocks n (h = T/n)")
    ax.set_ylabel("max_x |u_ResNet − u_PDE|")
    ax.legend(fontsize=7)
    x = np.array(result["x"])
    bx.plot(x, problem.f(x), color="tab:gray", label="f = u(·, 0)")
    bx.plot(x, result["u_pde"], "k", lw=2, label="u_PDE(·, T)")
    bx.set_xlabel("x")
    bx.legend(fontsize=7)
    u_pde = np.array(result["u_pde"])
    for n in (settings.ns[0], settings.ns[-1]):
        est = result["u_mc_first_seed_largest_M"][str(n)]
        mean, se = np.array(est["mean"]), np.array(est["se"])
        line = cx.plot(x, np.array(result["u_M_inf"][str(n)]) - u_pde, label=f"u_∞ − u_PDE, n = {n}")
        cx.errorbar(x, mean - u_pde, yerr=2 * se, fmt=".", ms=3, capsize=2, color=line[0].get_color(),
                    label=f"u_ResNet − u_PDE ± 2 SE, n = {n}, M = {max(settings.ms)}")
    cx.axhline(0, color="k", lw=0.5)
    cx.set_xlabel("x")
    cx.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def validation_figure(result: dict[str, Any], path: Path) -> None:
    """PDE solver max error against dx on the closed-form problem, with a dx² guide."""
    val = result["pde_validation"]
    dx = np.array([v["dx"] for v in val])
    err = np.array([v["max_error"] for v in val])
    fig, ax = plt.subplots(figsize=(4.5, 3.6))
    ax.loglog(dx, err, "o-", label="Crank–Nicolson, dt = dx/2")
    ax.loglog(dx, err[0] * (dx / dx[0]) ** 2, "k--", lw=0.8, label="∝ dx²")
    ax.set_xlabel("dx")
    ax.set_ylabel("max |u − u_exact|")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
