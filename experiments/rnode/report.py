"""The RNODE report, rendered from the raw record of `experiments.rnode.run` only: the choice of λ (validation
accuracy), and per data set the forward NFE at the end of training and the test accuracy without and with RNODE."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from experiments.common import mean_std

NFE_GOAL = 1.5  # forward NFE at the end of training at least this many times lower with RNODE
ACC_GOAL = 0.5  # test accuracy at most this many points lower with RNODE


def choose_lambda(runs: list[dict[str, Any]], margin_points: float, dataset: str = "digits",
                  nfe_goal: float = NFE_GOAL) -> float | None:
    """The λ > 0 of `dataset`'s grid (its first seed) with the best validation accuracy among those that meet the
    goal before any test: forward NFE at least `nfe_goal`× lower than the unregularised run's in the last
    epoch's training steps and in the last validation, and best validation accuracy at least the unregularised
    run's minus `margin_points` (ties: the larger λ); ``None`` when no λ qualifies. Reads no test figure."""
    runs = [r for r in runs if r["dataset"] == dataset]
    if not runs:
        return None
    seed = runs[0]["seed"]
    base = [r for r in runs if r["seed"] == seed and r["lambda"] == 0]
    keys = ("best_val_acc", "final_val_nfe_forward", "train_nfe_forward_last_epoch")
    if not base or any(not base[0].get(k) for k in keys):
        return None
    floor = base[0]["best_val_acc"] - margin_points / 100

    def fast(r: dict[str, Any], key: str) -> bool:
        return r[key] <= base[0][key] / nfe_goal + 1e-9

    ok = [r for r in runs if r["seed"] == seed and r["lambda"] > 0 and all(r.get(k) is not None for k in keys)
          and r["best_val_acc"] >= floor - 1e-9 and fast(r, "final_val_nfe_forward")
          and fast(r, "train_nfe_forward_last_epoch")]
    return max(ok, key=lambda r: (r["best_val_acc"], r["lambda"]))["lambda"] if ok else None


def _arm(runs: list[dict[str, Any]], dataset: str, lam: float, seeds: list[int] | None) -> list[dict[str, Any]]:
    return [r for r in runs if r["dataset"] == dataset and r["lambda"] == lam and (seeds is None or r["seed"] in seeds)]


def summarise(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Means (and sample std) over seeds of one arm."""
    def stat(key: str) -> tuple[float, float]:
        return mean_std([float(r[key]) for r in runs if r.get(key) is not None])

    return {"n": len(runs), "seeds": [r["seed"] for r in runs], "test_acc": stat("test_acc"),
            "train_nfe": stat("train_nfe_forward_last_epoch"), "val_nfe": stat("final_val_nfe_forward"),
            "test_nfe": stat("test_nfe_forward"), "fit_s": stat("fit_seconds"),
            "kinetic": stat("reg_kinetic_last_epoch"), "jacobian": stat("reg_jacobian_last_epoch")}


def compare(rec: dict[str, Any], dataset: str) -> dict[str, Any] | None:
    """Unregularised vs the chosen λ on `dataset` over the seeds both arms ran: summaries, ratios, verdicts."""
    lam = rec["chosen_lambda"] if dataset == "digits" else (rec.get("mnist") or {}).get("lambda")
    if lam is None:
        return None
    seeds = sorted({r["seed"] for r in _arm(rec["runs"], dataset, 0.0, None)}
                   & {r["seed"] for r in _arm(rec["runs"], dataset, lam, None)})
    if not seeds:
        return None
    base, reg = (summarise(_arm(rec["runs"], dataset, x, seeds)) for x in (0.0, lam))
    ratios = {k: base[k][0] / reg[k][0] if reg[k][0] else math.nan for k in ("train_nfe", "val_nfe", "test_nfe")}
    delta = 100 * (reg["test_acc"][0] - base["test_acc"][0])
    nfe_met = all(ratios[k] >= NFE_GOAL for k in ("train_nfe", "test_nfe"))
    return {"lambda": lam, "seeds": seeds, "base": base, "reg": reg, "ratios": ratios, "delta_points": delta,
            "nfe_met": nfe_met, "acc_met": delta >= -ACC_GOAL}


def _pm(s: tuple[float, float], fmt: str = ".1f", scale: float = 1.0) -> str:
    m, sd = s
    if math.isnan(m):
        return "–"
    return f"{m * scale:{fmt}}" + (f" ± {sd * scale:{fmt}}" if sd else "")


def _comparison(rec: dict[str, Any], dataset: str, title: str, note: str) -> list[str]:
    c = compare(rec, dataset)
    if c is None:
        return [f"## {title}", "", "Not run (no λ was chosen, or an arm is missing).", ""]
    n = len(c["seeds"])
    rows = []
    for name, s in (("none", c["base"]), (f"RNODE λ = {c['lambda']:g}", c["reg"])):
        rows.append(f"| {name} | {_pm(s['test_acc'], '.2f', 100)} | {_pm(s['train_nfe'])} | {_pm(s['val_nfe'])} | "
                    f"{_pm(s['test_nfe'])} | {_pm(s['kinetic'], '.3g')} | {_pm(s['jacobian'], '.3g')} | "
                    f"{_pm(s['fit_s'], '.0f')} |")
    r = c["ratios"]
    verdict = "met" if c["nfe_met"] and c["acc_met"] else "not met"
    why = []
    if not c["nfe_met"]:
        why.append(f"the NFE ratio is below {NFE_GOAL:g}×")
    if not c["acc_met"]:
        why.append(f"the test accuracy fell by more than {ACC_GOAL:g} points")
    return [
        f"## {title}",
        "",
        note,
        "",
        f"Means over {n} seed(s) ({', '.join(str(s) for s in c['seeds'])}) ± sample std; NFE are forward drift "
        "evaluations per batch: the training steps of the last epoch (the augmented solve takes the plain solve's "
        "steps), the last validation, and the test of the checkpoint `cdflow fit` tests (its best-validation one). "
        "Kinetic and Jacobian are the integrals E_k, E_j of the last epoch's training steps (batch means).",
        "",
        "| regularisation | test acc % | train NFE (last epoch) | val NFE (last) | test NFE | E_k | E_j | fit s |",
        "|---|---|---|---|---|---|---|---|",
        *rows,
        "",
        f"Forward NFE without / with RNODE: {r['train_nfe']:.2f}× (training, last epoch), {r['val_nfe']:.2f}× "
        f"(last validation), {r['test_nfe']:.2f}× (test). Test accuracy with RNODE minus without: "
        f"{c['delta_points']:+.2f} points. Goal (NFE at least {NFE_GOAL:g}× lower in training and test, test "
        f"accuracy at most {ACC_GOAL:g} points lower): **{verdict}**" + (f" ({'; '.join(why)})." if why else "."),
        "",
    ]


def _choice(rec: dict[str, Any], dataset: str, grid: list[float], chosen: float | None) -> list[str]:
    """The validation table of `dataset`'s grid (its first seed) and the rule's choice."""
    first = [r for r in rec["runs"] if r["dataset"] == dataset]
    seed0 = first[0]["seed"] if first else None
    grid_runs = sorted((r for r in first if r["seed"] == seed0 and (r["lambda"] == 0 or r["lambda"] in grid)),
                       key=lambda r: r["lambda"])
    base = next((r for r in grid_runs if r["lambda"] == 0), None)
    lines = [
        f"## Choosing λ on validation ({dataset}, seed " + (f"{seed0})" if seed0 is not None else "–)"),
        "",
        "| λ | best val acc % | train NFE (last epoch) | val NFE (last) |",
        "|---|---|---|---|",
        *(f"| {r['lambda']:g} | {100 * r['best_val_acc']:.2f} | {r['train_nfe_forward_last_epoch']:.1f} | "
          f"{r['final_val_nfe_forward']:g} |" for r in grid_runs),
        "",
    ]
    if base is not None:
        floor = 100 * base["best_val_acc"] - rec["val_margin"]
        cap = base["final_val_nfe_forward"] / NFE_GOAL
        cap_train = base["train_nfe_forward_last_epoch"] / NFE_GOAL
        pick = f"λ = {chosen:g}" if chosen is not None else "none (no λ of the grid qualifies)"
        lines += [f"Rule: among the λ of the grid ({', '.join(f'{g:g}' for g in grid)}) whose forward NFE is at "
                  f"least {NFE_GOAL:g}× lower than the unregularised run's in the last validation (≤ {cap:.3g}) "
                  f"and in the last epoch's training steps (≤ {cap_train:.3g}), and whose best "
                  f"validation accuracy is at least its minus {rec['val_margin']:g} points ({floor:.2f}%), the one "
                  f"of best validation accuracy (ties: the larger λ). Chosen: {pick}. Test accuracy plays no part "
                  "in the choice.", ""]
    return lines


def _unchosen(rec: dict[str, Any], dataset: str, title: str, size: str) -> list[str]:
    """When no λ of `dataset`'s grid met the goal on validation: every arm's figures, the test ones for
    information only (they chose nothing), and the gap to the goal of each."""
    runs = sorted((r for r in rec["runs"] if r["dataset"] == dataset), key=lambda r: r["lambda"])
    base = next((r for r in runs if r["lambda"] == 0), None)
    lines = [f"## {title}", "", f"Every arm with the adaptive dopri5 (rtol 1e-3, atol 1e-4), {size}. No λ of the "
             "grid met the goal on validation (table above), so no λ is compared; each arm's test figures, for "
             "information only:", "",
             "| λ | best val acc % | test acc % | test acc − none (points) | train NFE (last epoch) | test NFE | "
             "NFE none / λ (test) | fit s |", "|---|---|---|---|---|---|---|---|"]
    for r in runs:
        delta = f"{100 * (r['test_acc'] - base['test_acc']):+.2f}" if base and r is not base else "–"
        ratio = f"{base['test_nfe_forward'] / r['test_nfe_forward']:.2f}×" if base and r is not base else "–"
        lines.append(f"| {r['lambda']:g} | {100 * r['best_val_acc']:.2f} | {100 * r['test_acc']:.2f} | {delta} | "
                     f"{r['train_nfe_forward_last_epoch']:.1f} | {r['test_nfe_forward']:g} | {ratio} | "
                     f"{r['fit_seconds']:.0f} |")
    return [*lines, "", f"Goal (NFE at least {NFE_GOAL:g}× lower in training and test, test accuracy at most "
            f"{ACC_GOAL:g} points lower): **not met** (no λ of the grid met it on validation).", ""]


def _reused(runs: list[dict[str, Any]]) -> list[str]:
    """Which runs this record took from earlier records (``--reuse``: identical commands, not trained again)."""
    by_source: dict[str, list[str]] = {}
    for r in runs:
        if r.get("reused_from"):
            by_source.setdefault(r["reused_from"], []).append(f"{r['dataset']} λ={r['lambda']:g} seed {r['seed']}")
    return [f"Runs taken from `{src}` (identical commands, not trained again; their fit times are that record's): "
            f"{', '.join(names)}." for src, names in by_source.items()] + ([""] if by_source else [])


def render(rec: dict[str, Any], provenance: Callable[..., list[str]], stem: str | None = None) -> str:
    """Markdown for one RNODE record; `stem`: the record's file name without ``.json`` (default: the runner's)."""
    stem = stem or ("rnode" if rec["mode"] == "reduced" else f"rnode_{rec['mode']}")
    lines = [
        "# RNODE: regularised dynamics (kinetic energy + Jacobian Frobenius norm)",
        "",
        f"Mode **{rec['mode']}**. Finlay et al. (2020): the training loss gains λ_k ∫‖v‖² dt + λ_j ∫‖∂v/∂x‖²_F dt "
        "(Hutchinson estimate, batch means), integrated as augmented states of the solve; here λ_k = λ_j = λ. "
        f"Wall time {rec['wall_seconds'] / 60:.1f} min. Raw record: `{stem}.json`.",
        "",
        *provenance([rec["command"], *(f"{c}   # runs reused from this earlier record"
                                       for c in rec.get("reused_commands", []))],
                    rec["machine"], rec.get("loadavg_end"), rec.get("env")),
        *_reused(rec["runs"]),
        *_choice(rec, "digits", rec["grid"], rec["chosen_lambda"]),
    ]
    lines += _comparison(rec, "digits", "Digits (experiments/configs/digits.yaml, dopri5 rtol 1e-3)",
                         "The unregularised run and the chosen λ, trained from the seeds below (the data split is "
                         "fixed).")
    m = rec.get("mnist")
    if m:
        reduced = m["epochs"] < m["config_epochs"] or m.get("limit_train_batches") is not None
        size = (f"**reduced**: {m['epochs']} epoch(s) of the config's {m['config_epochs']}"
                + (f", limit_train_batches {m['limit_train_batches']:g}" if m.get("limit_train_batches") is not None
                   else "")) if reduced else f"the config's {m['config_epochs']} epochs"
        title = "MNIST ODE-Net (experiments/configs/mnist.yaml with dopri5 rtol 1e-3)"
        source = m.get("lambda_from", "digits")
        if source == "mnist validation":
            lines += _choice(rec, "mnist", m["grid"], m["lambda"])
            origin = "chosen on MNIST's validation figures (above)"
        else:
            origin = ("as chosen on digits" if source == "digits" else "set by --mnist-lambda") + \
                " (not tuned on MNIST)"
        if m["lambda"] is None and source == "mnist validation":
            lines += _unchosen(rec, "mnist", title, size)
        else:
            lam = f"λ = {m['lambda']:g}" if m["lambda"] is not None else "no λ"
            lines += _comparison(rec, "mnist", title, f"Both arms with the adaptive dopri5 (rtol 1e-3, atol 1e-4) "
                                 f"instead of the config's fixed-step rk4, {size}; {lam} {origin}.")
    else:
        lines += ["## MNIST ODE-Net", "", "Not run in this record (`--mnist` runs it).", ""]
    return "\n".join(lines)
