"""The graph model's (γ, n_steps) chosen on validation accuracy only, per dataset and labels per class.

Every graph run records its grid point (``gamma``, ``n_steps``) and its accuracy on labelled validation points
(``val_acc``). For each ``dataset/labels`` the chosen point is

    argmax over grid points p of  mean over seeds s of val_acc(p, s),

ties going to the earlier point in grid order (ascending γ, then ascending n_steps: the weaker diffusion). No
other accuracy of a run (unlabelled points, test split) enters the choice.
"""

from __future__ import annotations

from typing import Any

from experiments.common import mean_std


def grid_point(run: dict[str, Any]) -> tuple[float, int]:
    """A graph run's grid point ``(gamma, n_steps)``."""
    return float(run["gamma"]), int(run["n_steps"])


def select(runs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per ``"dataset/labels"`` with graph runs: the grid with each point's validation accuracy (mean, std, seeds)
    and the chosen point; ``at_edge`` says whether the chosen γ is the smallest or largest of the grid."""
    groups: dict[str, dict[tuple[float, int], list[dict[str, Any]]]] = {}
    for r in runs:
        if r["kind"] == "graph":
            key = f"{r['dataset']}/{r['labels_per_class']}"
            groups.setdefault(key, {}).setdefault(grid_point(r), []).append(r)
    out: dict[str, dict[str, Any]] = {}
    for key, points in groups.items():
        grid = []
        for (gamma, n_steps), rs in sorted(points.items()):
            mean, std = mean_std([r["val_acc"] for r in rs])
            grid.append({"gamma": gamma, "n_steps": n_steps, "val_mean": mean, "val_std": std,
                         "seeds": sorted(r["seed"] for r in rs), "n": len(rs)})
        best = max(range(len(grid)), key=lambda i: (grid[i]["val_mean"], -i))
        gammas = sorted({p["gamma"] for p in grid})
        chosen = {"gamma": grid[best]["gamma"], "n_steps": grid[best]["n_steps"], "val_mean": grid[best]["val_mean"]}
        out[key] = {"grid": grid, "chosen": chosen,
                    "at_edge": len(gammas) > 1 and chosen["gamma"] in (gammas[0], gammas[-1])}
    return out


def chosen_runs(runs: list[dict[str, Any]], selection: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """The graph runs at their ``dataset/labels``'s chosen point."""
    out = []
    for r in runs:
        sel = selection.get(f"{r['dataset']}/{r['labels_per_class']}")
        if r["kind"] == "graph" and sel is not None:
            if grid_point(r) == (sel["chosen"]["gamma"], sel["chosen"]["n_steps"]):
                out.append(r)
    return out

