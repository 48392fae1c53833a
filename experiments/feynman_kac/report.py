"""The markdown results page of the Feynman–Kac experiment."""

from __future__ import annotations

import inspect
from typing import Any

from experiments.common import artefact, provenance
from experiments.feynman_kac.pde import validate
from experiments.feynman_kac.problem import Problem, Settings


def _pm(mean: float, std: float) -> str:
    return f"{mean:.4f} ± {std:.4f}"


def gap_table(summary: dict[str, Any], result: dict[str, Any], settings: Settings) -> list[str]:
    """Rows n; columns: the gap for each M (mean ± std over seeds), then the M = ∞ bias."""
    head = "| n | " + " | ".join(f"gap, M = {m}" for m in settings.ms) + " | bias (M = ∞) | bias·n |"
    lines = [head, "|---" * (len(settings.ms) + 3) + "|"]
    for n in settings.ns:
        cells = [_pm(summary["cells"][f"{n}/{m}"]["gap_mean"], summary["cells"][f"{n}/{m}"]["gap_std"])
                 for m in settings.ms]
        b = result["bias_M_inf"][str(n)]
        lines.append(f"| {n} | " + " | ".join(cells) + f" | {b:.4f} | {b * n:.3f} |")
    return lines


def detail_table(summary: dict[str, Any], settings: Settings) -> list[str]:
    lines = ["| n | M | runs | gap max|u_ResNet − u_PDE| | max SE | MC error max|u_ResNet − u_∞| |",
             "|---|---|---|---|---|---|"]
    for n in settings.ns:
        for m in settings.ms:
            c = summary["cells"][f"{n}/{m}"]
            lines.append(f"| {n} | {m} | {c['runs']} | {_pm(c['gap_mean'], c['gap_std'])} | "
                         f"{_pm(c['max_se_mean'], c['max_se_std'])} | {_pm(c['mc_error_mean'], c['mc_error_std'])} |")
    return lines


def floor_sentence(summary: dict[str, Any], result: dict[str, Any], settings: Settings) -> str:
    """The Monte Carlo floor from the cells: gap / max SE where the M = ∞ bias is below the max SE, and the
    gap against the bias at the smallest M and largest n."""
    ratios = []
    for n in settings.ns:
        for m in settings.ms:
            c = summary["cells"][f"{n}/{m}"]
            if result["bias_M_inf"][str(n)] < c["max_se_mean"]:
                ratios.append(c["gap_mean"] / c["max_se_mean"])
    n, m = settings.ns[-1], settings.ms[0]
    gap, bias = summary["cells"][f"{n}/{m}"]["gap_mean"], result["bias_M_inf"][str(n)]
    text = "With M samples the gap is about max(bias, MC floor)."
    if ratios:
        cells = f"{len(ratios)} cell{'s' if len(ratios) > 1 else ''}"
        text += (f" In the {cells} where the M = ∞ bias is below the max SE, gap / max SE is "
                 f"{min(ratios):.2f}–{max(ratios):.2f}.")
    ratio = f" ({gap / bias:.1f}×)" if bias > 0 else ""
    return text + f" At M = {m}, n = {n}: gap {gap:.4f}, bias {bias:.4f}{ratio}."


def markdown(payload: dict[str, Any], problem: Problem, settings: Settings) -> str:
    def png(stem: str) -> str:
        return artefact(stem, settings.mode, "png")

    r, s, m = payload["result"], payload["summary"], payload["machine"]
    val = r["pde_validation"]
    orders = ", ".join(f"{o:.2f}" for o in s["weak_orders"])
    check = r["library_check"]
    seeds = ", ".join(map(str, settings.seeds))
    defaults = inspect.signature(validate).parameters  # the closed-form problem `validate` solves
    check_c, check_s, check_window = (defaults[k].default for k in ("c", "s", "window"))
    return "\n".join([
        "# Feynman–Kac: noise-injected ResNet vs the convection–diffusion PDE (1-D)",
        "",
        f"Mode **{settings.mode}**: n ∈ {list(settings.ns)}, M ∈ {list(settings.ms)}, {len(settings.seeds)} seeds "
        f"({seeds}); {settings.n_eval} evaluation points on [{settings.x_lo}, {settings.x_hi}]. Total wall time "
        f"{payload['wall_s']:.1f} s. Raw per-run records: `{payload['json_name']}`.",
        "",
        *provenance([payload["command"]], m),
        "## Setting",
        "",
        f"* ResNet with n noisy blocks, h = T/n: x_(k+1) = x_k + h v(x_k) + √h ς ξ_k, ξ_k ~ N(0, 1), "
        f"v(x) = {problem.amplitude}·sin(x), ς = {problem.sigma}, T = {problem.T}; "
        f"u_ResNet(x) = E f(x_n), f(x) = 1/(1 + exp(−{problem.beta}(x − {problem.offset}))), "
        "estimated by the mean over M noise samples per input (float64).",
        "* PDE: with dX = v dt + ς dW and u(x, t) = E[f(X_t) | X_0 = x], u solves the backward Kolmogorov "
        "equation u_t = v u_x + ½ς² u_xx, u(·, 0) = f. Solved by Crank–Nicolson with central differences on "
        f"[−{settings.half_width}, {settings.half_width}], dx = {settings.pde_dx}, dt = dx/2, Dirichlet "
        f"u(±L) = f(±L); error estimate (Richardson, dx vs 2dx) {r['pde_error_estimate']:.1e}.",
        "* gap = max over the evaluation points of |u_ResNet − u_PDE(·, T)|; max SE = max over points of the "
        "Monte Carlo standard error std(f(x_n))/√M; MC error = max |u_ResNet − u_∞| with u_∞ the M = ∞ "
        "expectation of the same chain, computed without sampling (backward recursion g_(j+1)(x) = "
        f"E g_j(x + h v(x) + √h ς ξ), {settings.quad_nodes}-node Gauss–Hermite, cubic splines, dx = "
        f"{settings.quad_dx}); bias = max |u_∞ − u_PDE| is the discretisation error alone.",
        "",
        f"## Gap max_x |u_ResNet − u_PDE| (mean ± std over {len(settings.seeds)} seeds)",
        "",
        *gap_table(s, r, settings),
        "",
        f"Weak order from the M = ∞ bias between consecutive n: {orders} (order 1 expected). "
        + floor_sentence(s, r, settings),
        "",
        "## Details per (n, M)",
        "",
        *detail_table(s, settings),
        "",
        "## Checks",
        "",
        f"* PDE solver against the closed form (v = {check_c:g} constant, f = exp(−x²/(2·{check_s:g}²)), "
        f"ς = {problem.sigma}, T = {problem.T}, max error on |x| ≤ {check_window:g}):",
        "",
        "| dx | dt | max error | observed order |",
        "|---|---|---|---|",
        *[f"| {v['dx']} | {v['dt']} | {v['max_error']:.2e} | "
          f"{'' if v['observed_order'] is None else format(v['observed_order'], '.2f')} |" for v in val],
        "",
        f"* `cdflow.sde.feynman_kac` (torchsde Euler–Maruyama, step T/n, n = {check['n']}, M = {check['M']}) is "
        f"this ResNet: max |u_lib − u_∞| = {check['max_abs_diff_to_M_inf']:.4f} vs max SE "
        f"{check['max_se']:.4f} (within 4 max SE: {check['within_4_max_se']}).",
        "",
        "## Figures",
        "",
        f"* `figures/{png('fk_gap')}`: gap against n for each M (log–log), the M = ∞ bias with a 1/n guide, and "
        "the max SE per M; u_PDE(·, T) and f; the pointwise errors u_ResNet − u_PDE (± 2 SE) and u_∞ − u_PDE for "
        "the smallest and largest n at the largest M.",
        f"* `figures/{png('fk_pde_validation')}`: PDE solver error against dx on the closed-form problem.",
        "",
    ])
