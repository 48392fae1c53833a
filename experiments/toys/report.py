"""Summaries and the markdown / JSON results of the toy experiments."""

from __future__ import annotations

import inspect
import statistics
from typing import Any

from cdflow.data import toys as toy_data
from experiments.common import artefact, machine_info, mean_std, provenance  # noqa: F401 — re-exported for the runners
from experiments.toys import figures
from experiments.toys.config import DATASETS, RECIPES, Settings

LD_STEPS = (0, 1, 2, 5, 10, 20, 50, 100, 150, 200)


def summarise(runs: list[dict], curves: list[dict]) -> dict[str, Any]:
    """Mean ± std per (protocol, dataset, diffusion) of the accuracies, and the XOR l/d curve statistics."""
    acc: dict[str, Any] = {}
    for r in runs:
        key = f"{r['protocol']}/{r['dataset']}/{'diffusion' if r['diffusion'] else 'no_diffusion'}"
        acc.setdefault(key, {"final": [], "best_val": [], "seeds": []})
        acc[key]["final"].append(r["test_acc_final"])
        acc[key]["best_val"].append(r["test_acc_best_val"])
        acc[key]["seeds"].append(r["seed"])
    for entry in acc.values():
        entry["final_mean"], entry["final_std"] = mean_std(entry["final"])
        entry["best_val_mean"], entry["best_val_std"] = mean_std(entry["best_val"])
    n_steps = len(curves[0]["ratio"])
    ratio = [mean_std([c["ratio"][k] for c in curves]) for k in range(n_steps)]
    per_step = [[c["ratio"][k] for c in curves] for k in range(n_steps)]
    return {
        "accuracy": acc,
        "xor_ratio_mean": [m for m, _ in ratio],
        "xor_ratio_std": [s for _, s in ratio],
        "xor_ratio_median": [statistics.median(v) for v in per_step],
        "xor_ratio_min": [min(v) for v in per_step],
        "xor_ratio_max": [max(v) for v in per_step],
        "xor_monotone_increasing_every_seed": all(
            all(b >= a for a, b in zip(c["ratio"], c["ratio"][1:])) for c in curves
        ),
    }


def _pm(mean: float, std: float) -> str:
    return f"{mean:.3f} ± {std:.3f}"


def accuracy_table(summary: dict[str, Any], protocol: str, settings: Settings) -> list[str]:
    acc = summary["accuracy"]
    if protocol == "split":
        head = ["| dataset | k | diffusion steps | test acc, no diffusion (final) | test acc, diffusion (final) "
                "| no diffusion (best-val step) | diffusion (best-val step) |", "|---|---|---|---|---|---|---|"]
    else:
        head = ["| dataset | k | diffusion steps | fit acc, no diffusion | fit acc, diffusion |",
                "|---|---|---|---|---|"]
    rows = []
    for ds in DATASETS:
        a, b = acc.get(f"{protocol}/{ds}/no_diffusion"), acc.get(f"{protocol}/{ds}/diffusion")
        if a is None or b is None:
            continue
        cells = [ds, str(RECIPES[ds].k), str(RECIPES[ds].n_steps), _pm(a["final_mean"], a["final_std"]),
                 _pm(b["final_mean"], b["final_std"])]
        if protocol == "split":
            cells += [_pm(a["best_val_mean"], a["best_val_std"]), _pm(b["best_val_mean"], b["best_val_std"])]
        rows.append("| " + " | ".join(cells) + " |")
    return head + rows


def ld_table(summary: dict[str, Any], curves: list[dict]) -> list[str]:
    n = len(summary["xor_ratio_mean"])
    first = f"seed {curves[0]['seed']}"
    lines = [f"| k | l ({first}) | d ({first}) | l/d ({first}) | l/d median | l/d min | l/d max | l/d mean ± std |",
             "|---|---|---|---|---|---|---|---|"]
    for k in [s for s in LD_STEPS if s < n] + ([n - 1] if n - 1 not in LD_STEPS else []):
        lines.append(f"| {k} | {curves[0]['l'][k]:.4g} | {curves[0]['d'][k]:.4g} | {curves[0]['ratio'][k]:.4g} | "
                     f"{summary['xor_ratio_median'][k]:.4g} | {summary['xor_ratio_min'][k]:.4g} | "
                     f"{summary['xor_ratio_max'][k]:.4g} | "
                     f"{summary['xor_ratio_mean'][k]:.4g} ± {summary['xor_ratio_std'][k]:.2g} |")
    return lines


#: SGD steps of the reference scripts (Diff-ResNet `synthetic/*_example.py`).
REFERENCE_SGD_STEPS = 20


def _default(fn: Any, name: str) -> Any:
    """A keyword's default value in the function that uses it (the one source of the number)."""
    return inspect.signature(fn).parameters[name].default


def _per_dataset(field: str) -> str:
    """A recipe field per dataset, as "a / b / c" in DATASETS order (one value if they agree)."""
    values = [getattr(RECIPES[ds], field) for ds in DATASETS]
    return f"{values[0]:g}" if len(set(values)) == 1 else " / ".join(f"{v:g}" for v in values)


def _lr_sentence() -> str:
    lrs = {ds: RECIPES[ds].lr for ds in DATASETS}
    common = max(set(lrs.values()), key=list(lrs.values()).count)
    others = [f"{lr:g} {ds}" for ds, lr in lrs.items() if lr != common]
    return f"lr {common:g}" + (f" ({', '.join(others)})" if others else "")


def markdown(payload: dict[str, Any], settings: Settings, curves: list[dict]) -> str:
    """The results page: protocol, tables, l/d values, command, machine."""

    def png(stem: str) -> str:
        return artefact(stem, settings.mode, "png")

    s, m = payload["summary"], payload["machine"]
    seeds = ", ".join(map(str, settings.seeds))
    devs = [r["propagator_vs_explicit_max_abs_diff"] for r in payload.get("runs", [])
            if r.get("propagator_vs_explicit_max_abs_diff") is not None]
    out = [
        "# 2-D toys: Diff-ResNet with and without diffusion, and the XOR distance–diameter ratio",
        "",
        f"Mode **{settings.mode}**: {len(settings.seeds)} seeds ({seeds}), {settings.sgd_steps} full-batch SGD steps, "
        f"{2 * settings.n_per_class} points per dataset ({settings.n_per_class} per class). "
        f"Total wall time {payload['wall_s']:.1f} s. "
        f"Raw per-run records: `{payload['json_name']}`.",
        "",
        *provenance([payload["command"]], m),
        "## Protocol (our reading of Diff-ResNet `synthetic/*_example.py`)",
        "",
        "* Data: `cdflow.data.toys` (moons: sklearn, noise "
        f"{_default(toy_data.make_moons, 'noise'):g}; circles: radii "
        f"{' / '.join(f'{r:g}' for r in _default(toy_data.make_circles, 'radii'))}, noise "
        f"{_default(toy_data.make_circles, 'noise'):g}; spirals r = ±(1+t), noise "
        f"{_default(toy_data.make_spirals, 'noise'):g}); the seed sets the data noise, the split and the init.",
        "* Graph on the 2-D inputs: k nearest points (self included), w = exp(−|xi−xj|²/ε²), "
        f"ε = {_per_dataset('eps')}, rows normalised (P), L = I − P; k = {_per_dataset('k')} for "
        f"{' / '.join(DATASETS)}.",
        "* Network: z = x + W₂ ReLU(W₁x + b₁) + b₂ (width 2), then n diffusion layers z ← z − τLz "
        f"(τ = {_per_dataset('tau')}; n = {_per_dataset('n_steps')}), then a linear head 2 → 2. Without diffusion: "
        "n = 0.",
        "* The n diffusion layers are applied as the precomputed operator (I − τL)ⁿ (the same map as n explicit "
        "layers; the deviation from `cdflow.heat.explicit_diffusion` is recorded per run"
        + (f", at most {max(devs):.2g} here" if devs else "") + ").",
        f"* Full-batch SGD, {_lr_sentence()}, weight decay {_per_dataset('weight_decay')}, {settings.sgd_steps} steps"
        + (" as in the reference" if settings.sgd_steps == REFERENCE_SGD_STEPS else
           f" (the reference: {REFERENCE_SGD_STEPS})")
        + ". The reference creates a new SGD(momentum=0.9) every step, so momentum never accumulates: we use "
        "plain SGD.",
        f"* `split` (main table): transductive; all points in one batch, labels of a random "
        f"{100 * settings.train_frac:.0f}% used for the loss, {100 * settings.val_frac:.0f}% validation, "
        f"{100 * (1 - settings.train_frac - settings.val_frac):.0f}% test. Reported: test accuracy after the last "
        "step (final) and at the step of best validation accuracy.",
        "* `all` (the reference scripts' own protocol): every label trains, accuracy on all points (fit accuracy).",
        "",
        f"## Test accuracy, transductive split (mean ± std over {len(settings.seeds)} seeds)",
        "",
        *accuracy_table(s, "split", settings),
        "",
        f"## Fit accuracy, reference protocol (all labels; mean ± std over {len(settings.seeds)} seeds)",
        "",
        *accuracy_table(s, "all", settings),
        "",
        f"## XOR: distance–diameter ratio l/d after k diffusion steps ({len(curves)} seeds)",
        "",
        f"kNN graph of the {4 * settings.xor.n_per_disk} XOR points (k = {settings.xor.k}, ε = {settings.xor.eps}, "
        "rows normalised), "
        f"x ← x − {settings.xor.tau}·Lx; l = minimum distance between points of different disks, d = maximum "
        f"disk diameter. l/d non-decreasing in k for every seed: {s['xor_monotone_increasing_every_seed']}. "
        "Once the kNN graph splits into components (one per disk, or a few points cut off inside a disk), "
        "diffusion averages each component to its mean: d → 0 (ratio without bound) when every disk is one "
        "component, or d → a positive limit when a disk holds several (seed-to-seed spread of the tail). "
        "Full curves in the JSON.",
        "",
        *ld_table(s, curves),
        "",
        "## Figures",
        "",
        f"* `figures/{png('toys_decision_boundaries')}`: P(class 1) and the 0.5 contour, seed "
        f"{settings.seeds[0]}, split protocol. "
        "With diffusion the model is transductive; off-data points are placed by an out-of-sample extension "
        "(each grid point receives diffusion from its k nearest data points; data features are unchanged).",
        f"* `figures/{png('toys_trajectories')}`: features of every point through depth (input, residual block, "
        f"diffusion steps), seed {settings.seeds[0]} diffusion model; last column: paths of "
        f"{_default(figures.trajectories, 'n_tracks')} particles through all layers.",
        f"* `figures/{png('toys_xor_ld')}`: l and d, the l/d curve, and the XOR points at three depths.",
        "",
    ]
    return "\n".join(out)
