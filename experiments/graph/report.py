"""Summaries, floors and the markdown page of the node-classification runs."""

from __future__ import annotations

import math
import statistics
from collections import defaultdict
from typing import Any

from experiments.common import mean_std
from experiments.graph.configs import PROTOCOLS

#: The issue's floors (reduced protocol).
FLOOR_COIN = {"cora": 0.83, "citeseer": 0.72}
FLOOR_GAIN = 0.10
#: The continuous net's floors (issue 14): mean test accuracy, and time per run against COIN's in the same run.
FLOOR_CDNET = {"cora": 0.825, "citeseer": 0.72}
FLOOR_CDNET_TIME_RATIO = 3.0
FLOOR_SINGLE_RUN_S = 1.0
FLOOR_FULL_PROTOCOL_MIN = 30.0
#: The full protocol's size (splits × initialisations of one row).
FULL_SPLITS, FULL_INITS = PROTOCOLS["full"].n_splits, PROTOCOLS["full"].n_inits
FULL_RUNS = FULL_SPLITS * FULL_INITS
FULL_NAME = f"full {FULL_SPLITS}×{FULL_INITS} Cora COIN protocol"


def summarise(runs: list[dict]) -> dict[str, dict[str, Any]]:
    """Per (split protocol, dataset, model): test/val accuracy mean ± std, counts, epochs, wall, diagnostics."""
    groups: dict[str, list[dict]] = defaultdict(list)
    for r in runs:
        if r["phase"] == "main":
            groups[f"{r['split_protocol']}/{r['dataset']}/{r['model']}"].append(r)
    out = {}
    for key, rs in groups.items():
        finite = [r for r in rs if not r["nan"]]
        test_m, test_s = mean_std([r["test_acc"] for r in finite])
        val_m, val_s = mean_std([r["val_acc"] for r in finite])
        batches = {(r["split"], r["pid"], r["batch_wall_s"]) for r in rs}
        out[key] = {
            "label": rs[0]["label"],
            "n": len(rs),
            "n_nan": len(rs) - len(finite),
            "test_mean": test_m,
            "test_std": test_s,
            "val_mean": val_m,
            "val_std": val_s,
            "epochs_mean": statistics.fmean(r["epochs"] for r in rs),
            "splits": sorted({r["split"] for r in rs}),
            "init_seeds": sorted({r["init_seed"] for r in rs}),
            "wall_s": sum(b[2] for b in batches),
            "wall_per_run_s": statistics.fmean(r["wall_s"] for r in rs),
            "negative_u_runs": sum(1 for r in rs if r.get("negative_u_entries", 0) > 0),
            "negative_u_entries": sum(r.get("negative_u_entries", 0) for r in rs),
            "min_u": min((r["min_u"] for r in rs if "min_u" in r), default=None),
        }
    return out


def tuning_table(runs: list[dict]) -> tuple[dict[str, Any], list[str]]:
    """Mean validation accuracy per (τ, steps) of the COIN search, the chosen point, and its markdown."""
    cells: dict[tuple[float, int], list[float]] = defaultdict(list)
    tests: dict[tuple[float, int], list[float]] = defaultdict(list)
    for r in runs:
        if r["phase"] == "tune" and r["model"] == "coin-explicit":
            key = (r["kwargs"]["tau"], r["kwargs"]["n_steps"])
            cells[key].append(r["val_acc"])
            tests[key].append(r["test_acc"])
    if not cells:
        return {}, []
    means = {k: statistics.fmean(v) for k, v in cells.items()}
    best = max(sorted(means), key=lambda k: means[k])
    taus = sorted({k[0] for k in cells})
    steps = sorted({k[1] for k in cells})
    lines = ["| τ \\ steps | " + " | ".join(str(s) for s in steps) + " |", "|---" * (len(steps) + 1) + "|"]
    for tau in taus:
        row = []
        for s in steps:
            v = means.get((tau, s))
            mark = " **(chosen)**" if (tau, s) == best else ""
            row.append("—" if v is None else f"{v:.4f} (n={len(cells[(tau, s)])}){mark}")
        lines.append(f"| {tau} | " + " | ".join(row) + " |")
    chosen = {"tau": best[0], "n_steps": best[1], "val_mean": means[best],
              "test_mean_not_used": statistics.fmean(tests[best]),
              "grid": {f"{k[0]}/{k[1]}": v for k, v in means.items()}}
    return chosen, lines


def _pct(mean: float, std: float) -> str:
    return "—" if math.isnan(mean) else f"{100 * mean:.2f} ± {100 * std:.2f}"


def model_table(summary: dict[str, dict[str, Any]], prefix: str, order: list[str]) -> list[str]:
    lines = ["| model | test acc % (mean ± std) | runs | splits × inits | val acc % | epochs (mean) | NaN runs "
             "| runs with u(T) < 0 (entries, min u) | wall s (total / per run) |",
             "|---|---|---|---|---|---|---|---|---|"]
    for key in order:
        s = summary.get(f"{prefix}/{key}")
        if s is None:
            continue
        neg = "—"
        if s["min_u"] is not None:
            neg = f"{s['negative_u_runs']} ({s['negative_u_entries']}, {s['min_u']:.3g})"
        shape = f"{len(s['splits'])} × {s['n'] // max(1, len(s['splits']))}"
        lines.append(f"| {s['label']} | {_pct(s['test_mean'], s['test_std'])} | {s['n']} | {shape} | "
                     f"{_pct(s['val_mean'], s['val_std'])} | {s['epochs_mean']:.0f} | {s['n_nan']} | {neg} | "
                     f"{s['wall_s']:.1f} / {s['wall_per_run_s']:.2f} |")
    return lines


def floors(summary: dict[str, dict[str, Any]], timing: dict[str, Any] | None,
           estimate: dict[str, Any] | None,
           full_run: dict[str, Any] | None = None) -> tuple[list[dict[str, Any]], list[str]]:
    """The issue's floors: measured value and whether it is met."""
    rows: list[dict[str, Any]] = []
    for ds, floor in FLOOR_COIN.items():
        s = summary.get(f"random/{ds}/coin-explicit")
        if s:
            rows.append({"floor": f"{ds} COIN mean test acc ≥ {100 * floor:.0f}%",
                         "value": f"{100 * s['test_mean']:.2f}% (n={s['n']})", "met": s["test_mean"] >= floor})
        for diff, base, name in (("coin-explicit", "coin-nodiff", "COIN"), ("diffresnet", "resnet", "Diff-ResNet")):
            a, b = summary.get(f"random/{ds}/{diff}"), summary.get(f"random/{ds}/{base}")
            if a and b:
                gain = a["test_mean"] - b["test_mean"]
                rows.append({"floor": f"{ds} {name}: diffusion − no diffusion ≥ {100 * FLOOR_GAIN:.0f} points",
                             "value": f"{100 * gain:+.2f} points", "met": gain >= FLOOR_GAIN})
    for ds, floor in FLOOR_CDNET.items():
        cd, coin = summary.get(f"random/{ds}/cdnet"), summary.get(f"random/{ds}/coin-explicit")
        if not cd:
            continue
        rows.append({"floor": f"{ds} continuous net mean test acc ≥ {100 * floor:g}%",
                     "value": f"{100 * cd['test_mean']:.2f}% (n={cd['n']})", "met": cd["test_mean"] >= floor})
        if coin:
            ratio = cd["wall_per_run_s"] / coin["wall_per_run_s"]
            rows.append({"floor": f"{ds} continuous net time per run ≤ {FLOOR_CDNET_TIME_RATIO:g}× COIN's (explicit)",
                         "value": f"{cd['wall_per_run_s']:.2f} s / {coin['wall_per_run_s']:.2f} s = {ratio:.2f}×",
                         "met": ratio <= FLOOR_CDNET_TIME_RATIO})
    nan_runs = sum(s["n_nan"] for s in summary.values())
    rows.append({"floor": "no NaN in any reported run", "value": f"{nan_runs} NaN runs", "met": nan_runs == 0})
    if timing:
        best = min(timing["runs"], key=lambda r: r["wall_s"])
        rows.append({"floor": f"one Cora COIN run (1 split, 1 init, to early stopping) < {FLOOR_SINGLE_RUN_S:g} s",
                     "value": f"{best['wall_s']:.2f} s ({best['threads']} threads, {best['epochs']} epochs, "
                              f"load {best['loadavg_before'][0]})",
                     "met": best["wall_s"] < FLOOR_SINGLE_RUN_S})
    if full_run:
        minutes = full_run["wall_s"] / 60
        rows.append({"floor": f"{FULL_NAME} < {FLOOR_FULL_PROTOCOL_MIN:g} min (measured)",
                     "value": f"{minutes:.1f} min for {full_run['runs']} runs with {full_run['workers']} process(es) "
                              f"(`{full_run['command']}`; test acc {100 * full_run['test_mean']:.2f} ± "
                              f"{100 * full_run['test_std']:.2f}%)",
                     "met": minutes < FLOOR_FULL_PROTOCOL_MIN})
    elif estimate:
        value = (f"estimate {estimate['minutes_one_process']:.0f} min in one process, "
                 f"{estimate['minutes_two_processes']:.0f} min with --workers 2 (from {estimate['per_run_s']:.2f} s "
                 "per run in this protocol run, under its load)")
        best = estimate["minutes_two_processes"]
        if timing:
            one = min(r["wall_s"] for r in timing["runs"] if r["threads"] == 1)
            value += (f"; from the single-run timing ({one:.2f} s): {FULL_RUNS * one / 60:.0f} min in one process, "
                      f"{FULL_RUNS * one / 120:.0f} min with --workers 2")
            best = min(best, FULL_RUNS * one / 120)
        rows.append({"floor": f"{FULL_NAME} < {FLOOR_FULL_PROTOCOL_MIN:g} min (estimate)",
                     "value": value, "met": best < FLOOR_FULL_PROTOCOL_MIN})
    lines = ["| floor | measured | met |", "|---|---|---|"]
    lines += [f"| {r['floor']} | {r['value']} | {'yes' if r['met'] else '**no**'} |" for r in rows]
    return rows, lines


def full_run_summary(payload: dict[str, Any]) -> dict[str, Any] | None:
    """The measured full-protocol run (FULL_SPLITS × FULL_INITS) of Cora COIN (explicit) in a
    `graph_full.json` payload, if it has one."""
    s = payload.get("summary", {}).get("random/cora/coin-explicit")
    if payload.get("mode") != "full" or not s or s["n"] < FULL_RUNS:
        return None
    return {"command": payload["command"], "wall_s": payload["wall_s"], "workers": payload["protocol"]["workers"],
            "runs": s["n"], "splits": len(s["splits"]), "test_mean": s["test_mean"], "test_std": s["test_std"],
            "loadavg_start": payload["machine"]["loadavg"], "loadavg_end": payload["loadavg_end"]}


def full_protocol_estimate(summary: dict[str, dict[str, Any]]) -> dict[str, Any] | None:
    """Minutes for FULL_SPLITS × FULL_INITS runs of Cora COIN (explicit), from the measured time per run."""
    s = summary.get("random/cora/coin-explicit")
    if not s:
        return None
    per_run = s["wall_per_run_s"]
    return {"per_run_s": per_run, "runs": FULL_RUNS, "minutes_one_process": FULL_RUNS * per_run / 60,
            "minutes_two_processes": FULL_RUNS * per_run / 120, "measured": False}
