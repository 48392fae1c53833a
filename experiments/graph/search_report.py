"""The continuous net's search in the graph report: its grid, validation scores and chosen point, from the
record `cdnet_search.json` (`experiments.graph.search_cdnet`)."""

from __future__ import annotations

from typing import Any


def describe(p: dict[str, Any]) -> str:
    """A search point in words: head position, T, γ, width, dropouts, encoder, integrator and steps."""
    if p["integrator"] == "split":
        integ = f"Strang splitting, {p['method']} diffusion sub-steps"
    elif p["integrator"] == "explicit":
        integ = "Lie splitting, explicit diffusion steps"
    else:
        integ = "−γLh in the drift"
    conv = p["convection"] if p["convection"] == "dopri5" else f"{p['convection']}, n = {p['n_steps']}"
    head = {"logits": "predict then propagate (head before the solve)",
            "probabilities": "propagate the class probabilities (head and softmax before the solve)"}.get(
        p["propagate"], "head after the solve")
    encoder = "F-wide residual encoder h = x + act(Wx + b), " if p.get("encoder", "mlp") == "residual" else ""
    init = " (output layer zero-initialised)" if p.get("convection_init", "default") == "zero" else ""
    cons = ""
    if p.get("consistency", 0.0) > 0:
        cons = (f"; consistency regularisation λ = {p['consistency']:g} over S = {p['consistency_samples']} "
                f"dropout passes (τ = {p['consistency_temperature']:g})")
    return (f"{head}; T = {p['t1']:g}, γ = {p['gamma']:g} (γT = {p['gamma'] * p['t1']:g}); {encoder}convection "
            f"width {p['hidden']}{init}; dropout {p['input_dropout']:g} / {p['hidden_dropout']:g} / "
            f"{p['head_dropout']:g} (input / h(0) / head); encoder activation {p['encoder_activation']}; {integ} "
            f"({conv}){cons}")


def short(p: dict[str, Any]) -> str:
    """A table label for a point: head position, integrator, T and γT."""
    integ = {"split": f"split {p['method']}", "explicit": "explicit", "drift": f"drift {p['convection']}"}
    head = {"logits": "head first, ", "probabilities": "probabilities, "}.get(p["propagate"], "")
    head += "residual encoder, " if p.get("encoder", "mlp") == "residual" else ""
    head += "v₀ = 0, " if p.get("convection_init", "default") == "zero" else ""
    head += f"consistency λ={p['consistency']:g}, " if p.get("consistency", 0.0) > 0 else ""
    return f"{head}{integ[p['integrator']]}, T={p['t1']:g}, γT={p['gamma'] * p['t1']:g}, n={p['n_steps']}"


def _scored(res: dict[str, Any]) -> list[dict[str, Any]]:
    """Every scored point of a dataset's search (screen and refinement)."""
    return [v for step in res["steps"] for v in step["values"]] + list(res["refined"])


def _pct(v: float) -> str:
    return f"{100 * v:.2f}"


def search_section(search: dict[str, Any] | None) -> list[str]:
    """Markdown: per dataset, every factor's values with their mean validation accuracy and time per run, the
    refinement of the best points, and the chosen point (empty without a record). A stage-n record (``stage``
    n > 1) starts from stage n−1's chosen point; a record with a time budget says which points it left out."""
    if not search:
        return []
    size = search["size"]
    stage = search.get("stage", 1)
    title = "## Continuous net: validation-only search" + (f", stage {stage}" if stage > 1 else "")
    name = f"cdnet_search_stage{stage}.json" if stage > 1 else "cdnet_search.json"
    start = f"stage {stage - 1}'s chosen point (above)" if stage > 1 else "a base point"
    out = [
        title,
        "",
        f"`{search['command']}` ({search['wall_s'] / 60:.1f} min, {search['workers']} process(es); raw record "
        f"`{name}`). Greedy coordinate search from {start}: each factor in turn tries its values "
        f"with the others at the current choice, scored by mean validation accuracy over random splits "
        f"0–{size['screen_splits'] - 1} (one initialisation each); values within {100 * search['tie']:g} points of "
        "the best are tied and the fastest is taken. The "
        f"{size['refine']} best points of the screen then run on splits 0–{size['refine_splits'] - 1} and the best "
        "mean validation accuracy there is chosen. Test accuracy is not recorded. *s per run*: wall time per run "
        "under the load of the moment (a shared machine; a point keeps the time of its first runs), so times "
        "of points run at different moments compare only roughly.",
        "",
    ]
    for ds, res in search["datasets"].items():
        out += [f"### {ds.capitalize()}", ""]
        budget = res.get("budget")
        if budget:
            over = sorted({describe(r["point"]) for r in _scored(res) if r["wall_mean_s"] > budget["budget_s"]})
            out += [f"Time budget: {budget['times_coin']:g}× COIN's time per run, measured in this search on the "
                    f"same splits ({budget['coin']['model']}: {budget['coin']['wall_mean_s']:.2f} s per run), "
                    f"so {budget['budget_s']:.1f} s per run; only points within it compete "
                    f"({len(over)} point(s) over it).", ""]
        out += ["| factor | value | val acc % (mean) | per split | s per run | |", "|---|---|---|---|---|---|"]
        for step in res["steps"]:
            for v in step["values"]:
                mark = "**chosen**" if v["value"] == step["chosen"] else ""
                splits = " ".join(_pct(a) for a in v["val_acc"])
                out.append(f"| {step['factor']} | {v['value']} | {_pct(v['val_mean'])} | {splits} | "
                           f"{v['wall_mean_s']:.1f} | {mark} |")
            for r in step.get("refused", []):
                out.append(f"| {step['factor']} | {r['value']} | refused: {r['why']} | | | |")
        chosen = res["chosen"]
        out += ["", f"Refinement on {len(res['refine_splits'])} splits:", "",
                "| point | val acc % (mean) | s per run | |", "|---|---|---|---|"]
        for r in res["refined"]:
            mark = "**chosen**" if r["point"] == chosen["point"] else ""
            out.append(f"| {describe(r['point'])} | {_pct(r['val_mean'])} | {r['wall_mean_s']:.1f} | {mark} |")
        out += ["", f"Chosen for {ds.capitalize()}: {describe(chosen['point'])}; mean validation accuracy "
                    f"{_pct(chosen['val_mean'])}% over {len(chosen['splits'])} splits.", ""]
    return out
