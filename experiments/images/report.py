"""Summary statistics and the markdown / JSON results of the semi-supervised image experiments."""

from __future__ import annotations

import inspect
import statistics
from typing import Any

from cdflow.data.modules import DigitsDataModule
from cdflow.models import DiffusionSpec
from experiments.common import machine_info, mean_std, provenance  # noqa: F401 — re-exported for the runners
from experiments.images.config import EXTRA_KINDS, HPARAMS, Settings
from experiments.images.selection import chosen_runs, grid_point

DEFAULT_POINT = (float(HPARAMS["diffusion_graph"]["gamma"]), int(HPARAMS["diffusion_graph"]["n_steps"]))
#: The table's models in column order: ``graph`` is the graph model at the library-default γ (fixed before any
#: run), ``graph_val`` the graph model at the grid point chosen on validation accuracy.
ROWS: tuple[str, ...] = ("none", "graph", "graph_val", "noise", *EXTRA_KINDS)
KIND_LABELS = {
    "none": "no diffusion",
    "graph": f"graph diffusion γ={DEFAULT_POINT[0]:g} (default)",
    "graph_val": "graph diffusion, γ chosen on validation",
    "noise": "SDE noise (Feynman–Kac)",
    "none_default": "no diffusion, module default net",
}


def _rows_of(runs: list[dict], selection: dict[str, Any]) -> list[tuple[str, dict]]:
    """(row, run) pairs: a graph run counts for ``graph`` at the default point and for ``graph_val`` at its
    dataset/labels's chosen point (both if they coincide); every other run for its own kind."""
    chosen = {id(r) for r in chosen_runs(runs, selection)}
    out = []
    for r in runs:
        if r["kind"] != "graph":
            out.append((r["kind"], r))
            continue
        if grid_point(r) == DEFAULT_POINT:
            out.append(("graph", r))
        if id(r) in chosen:
            out.append(("graph_val", r))
    return out


def summarise(runs: list[dict], selection: dict[str, Any]) -> dict[str, Any]:
    """Per ``dataset/labels/row`` (rows: `ROWS`): accuracies on the validation points, on the unlabelled points
    outside validation (and the digits test split), mean ± std; ``graph_val`` also names its grid point."""
    out: dict[str, Any] = {}
    for row, r in _rows_of(runs, selection):
        key = f"{r['dataset']}/{r['labels_per_class']}/{row}"
        entry = out.setdefault(key, {"val_acc": [], "unlabelled_acc": [], "test_acc": [], "seeds": [],
                                     "wall_s": []})
        for field in ("val_acc", "unlabelled_acc", "test_acc"):
            if field in r:
                entry[field].append(r[field])
        entry["seeds"].append(r["seed"])
        entry["wall_s"].append(r["wall_s"])
        if row == "graph_val":
            entry["gamma"], entry["n_steps"] = grid_point(r)
    for entry in out.values():
        entry["n"] = len(entry["seeds"])
        for field in ("val", "unlabelled", "test"):
            if entry[f"{field}_acc"]:
                entry[f"{field}_mean"], entry[f"{field}_std"] = mean_std(entry[f"{field}_acc"])
        entry["wall_s_mean"] = statistics.fmean(entry["wall_s"])
    return out


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" + ("" if n == 1 else "s")


def _point(gamma: float, n_steps: int, steps_vary: bool) -> str:
    return f"γ={gamma:g}" + (f", {_plural(n_steps, 'step')}" if steps_vary else "")


def _cell(entry: dict | None, field: str, steps_vary: bool = False) -> str:
    if entry is None or f"{field}_mean" not in entry:
        return "–"
    point = f" {_point(entry['gamma'], entry['n_steps'], steps_vary)}" if "gamma" in entry else ""
    return f"{entry[f'{field}_mean']:.3f} ± {entry[f'{field}_std']:.3f} ({entry['n']}){point}"


def table(summary: dict[str, Any], dataset: str, labels: tuple[int, ...], kinds: list[str], field: str,
          steps_vary: bool = False, names: dict[str, str] | None = None) -> list[str]:
    """Markdown table: one row per labels-per-class, one column per model; cells ``mean ± std (n runs)``, the
    validation-chosen graph model's followed by its grid point."""
    names = KIND_LABELS if names is None else names
    head = "| labels / class | " + " | ".join(names[k] for k in kinds) + " | mean fit time (s) |"
    lines = [head, "|" + "---|" * (len(kinds) + 2)]
    for lab in labels:
        entries = [summary.get(f"{dataset}/{lab}/{k}") for k in kinds]
        if all(e is None for e in entries):
            continue
        times = " / ".join(f"{e['wall_s_mean']:.1f}" if e else "–" for e in entries)
        lines.append(f"| {lab} | " + " | ".join(_cell(e, field, steps_vary) for e in entries) + f" | {times} |")
    return lines


def selection_table(selection: dict[str, Any], dataset: str, labels: tuple[int, ...], steps_vary: bool) -> list[str]:
    """Markdown table of the choice: one row per labels-per-class, one column per grid point with its mean ± std
    validation accuracy over the seeds (the chosen point in bold), then the chosen point."""
    keys = [f"{dataset}/{lab}" for lab in labels if f"{dataset}/{lab}" in selection]
    if not keys:
        return []
    points = sorted({(p["gamma"], p["n_steps"]) for k in keys for p in selection[k]["grid"]})
    head = "| labels / class | " + " | ".join(_point(g, n, steps_vary) for g, n in points) + " | chosen |"
    lines = [head, "|" + "---|" * (len(points) + 2)]
    for key in keys:
        sel = selection[key]
        by_point = {(p["gamma"], p["n_steps"]): p for p in sel["grid"]}
        best = (sel["chosen"]["gamma"], sel["chosen"]["n_steps"])
        cells = []
        for pt in points:
            p = by_point.get(pt)
            text = "–" if p is None else f"{p['val_mean']:.3f} ± {p['val_std']:.3f} ({p['n']})"
            cells.append(f"**{text}**" if pt == best else text)
        edge = " (edge of the grid)" if sel["at_edge"] else ""
        lines.append(f"| {key.split('/')[1]} | " + " | ".join(cells) + f" | {_point(*best, steps_vary)}{edge} |")
    return lines


def n_points(runs: list[dict], dataset: str, field: str = "n_points") -> str | None:
    """A size the runs record (`field`: the transductive set's ``n_points`` by default) as "1,797"; sizes joined
    by "/" if they differ; None if no run of `dataset` records it."""
    sizes = sorted({r[field] for r in runs if r["dataset"] == dataset and field in r})
    return "/".join(f"{n:,}" for n in sizes) or None


def _solver(spec: dict) -> str:
    return spec["method"] + (f" (rtol {spec['rtol']:g}, atol {spec['atol']:g})" if "rtol" in spec
                             else f" with step {spec['step_size']:g}")


def _rows_present(summary: dict[str, Any], dataset: str) -> list[str]:
    return [k for k in ROWS if any(key.startswith(f"{dataset}/") and key.endswith(f"/{k}") for key in summary)]


def _numbers(values: list[float]) -> str:
    return "{" + ", ".join(f"{v:g}" for v in values) + "}"


def _selection_prose(selection: dict[str, Any], dataset: str, labels: tuple[int, ...], name: str,
                     steps_vary: bool) -> list[str]:
    """One sentence per labels-per-class: the chosen point and its validation accuracy; the edge warning."""
    out = []
    for lab in labels:
        sel = selection.get(f"{dataset}/{lab}")
        if sel is None:
            continue
        c = sel["chosen"]
        n = max(p["n"] for p in sel["grid"])
        edge = (" It is at the edge of the grid: a wider grid might choose a more extreme γ."
                if sel["at_edge"] else "")
        out.append(f"* {name}, {_plural(lab, 'label')} per class: {_point(c['gamma'], c['n_steps'], steps_vary)} "
                   f"chosen, mean validation accuracy {c['val_mean']:.3f} over {_plural(n, 'seed')}.{edge}")
    return out


def markdown(payload: dict[str, Any], settings: Settings) -> str:
    """The results page ``images.md``."""
    s, m, summary = settings, payload["machine"], payload["summary"]
    selection: dict[str, Any] = payload.get("selection", {})
    hp = HPARAMS
    digits_kinds, mnist_kinds = _rows_present(summary, "digits"), _rows_present(summary, "mnist")
    runs = payload.get("runs", [])
    n_digits = n_points(runs, "digits")
    n_mnist = n_points(runs, "mnist") or ("all" if s.mnist_points is None else f"{s.mnist_points:,}")
    defaults = inspect.signature(DigitsDataModule).parameters
    test_pct = f"{100 * defaults['test_fraction'].default:.0f}%"
    val_pct = f"{100 * defaults['val_fraction'].default:.0f}%"
    n_val_digits, n_val_mnist = n_points(runs, "digits", "n_val"), n_points(runs, "mnist", "n_val")
    gammas = sorted({p["gamma"] for sel in selection.values() for p in sel["grid"]})
    steps = sorted({p["n_steps"] for sel in selection.values() for p in sel["grid"]})
    steps_vary = len(steps) > 1
    lib_steps = DiffusionSpec().n_steps
    if steps_vary:
        steps_text = f"n_steps ∈ {_numbers(steps)} (chosen with γ)"
    elif steps:
        steps_text = f"{steps[0]} steps" + (f" (fixed beforehand for cost, not chosen on any accuracy; the library "
                                            f"default is {lib_steps})" if steps[0] < lib_steps else "")
    else:
        steps_text = f"{hp['diffusion_graph']['n_steps']} steps"
    names = dict(KIND_LABELS)
    if steps_vary:
        names["graph_val"] = "graph diffusion, γ and steps chosen on validation"
    chosen_what = "γ and n_steps" if steps_vary else "γ"
    grid_text = (f"trained at every γ ∈ {_numbers(gammas)}" + (f" × n_steps ∈ {_numbers(steps)}" if steps_vary else "")
                 + "; " if gammas else "")
    val_parts = []
    if n_val_digits:
        val_parts.append(f"digits: the data module's stratified {val_pct} validation split ({n_val_digits} "
                         "labelled points), disjoint from the labelled training points and from the test split")
    if n_val_mnist:
        val_parts.append(f"MNIST: {s.mnist_val_per_class} points per class ({n_val_mnist}) drawn (seeded) from the "
                         "points not labelled for training")
    ran = {ds: any(k.startswith(f"{ds}/") for k in summary) for ds in ("digits", "mnist")}
    seeds_text = ", ".join(f"{name} seeds {list(seeds)}" for name, seeds, ds in
                           (("digits", s.seeds, "digits"), ("MNIST", s.mnist_seeds, "mnist")) if ran[ds])
    absent = [(name, ds) for name, ds in (("Digits", "digits"), ("MNIST", "mnist")) if not ran[ds]]
    lines = [
        "# Semi-supervised images: no diffusion vs graph diffusion vs SDE noise",
        "",
        f"Mode **{s.mode}**: {seeds_text}; labels per class "
        f"{list(s.labels)}. Total wall time {payload['wall_s']:.0f} s. Raw per-run records: "
        f"`images_{s.mode}.json`.",
        "",
        *provenance(payload.get("commands", [payload["command"]]), m, payload["loadavg_end"], payload.get("env", {})),
        "## Protocol",
        "",
        "* Transductive: all points in one full batch; the loss sees the labels of the labelled subset only "
        "(`labels_per_class` per class, drawn with the seed); accuracy is measured on **every point that is "
        "neither labelled nor in validation**, with the weights after the last step (no checkpoint selection).",
    ]
    if val_parts:
        lines.append(f"* Validation (it chooses the graph model's {chosen_what} and nothing else): "
                     + "; ".join(val_parts) + ". Validation points are never trained on and are left out of the "
                     "unlabelled-point accuracy.")
    lines += [
        f"* One network for every model: `cdflow.models.ConvectionDiffusionNet` — dropout {hp['dropout']} → linear → "
        f"tanh encoder to {hp['hidden']} features, convection dz = MLP(z, t) dt (width {hp['width']}, depth "
        f"{hp['depth']}, tanh) over t ∈ [0, 1], linear head. Adam lr {hp['lr']}, weight decay {hp['weight_decay']}, "
        "one full-batch step per epoch.",
        f"  * **no diffusion**: {_solver(hp['ode_solver'])}.",
        "  * **graph diffusion**: + −γLz, L the combinatorial Laplacian "
        f"of the self-tuning Gaussian kNN graph (k = {hp['graph']['knn_k']}, scale from the "
        f"{hp['graph']['knn_k_scale']}th neighbour; `knn_gaussian_graph`) over the input features, built once; "
        f"Strang splitting with {steps_text}, exact Krylov diffusion sub-steps, "
        f"{hp['ode_solver']['method']} convection sub-steps; {grid_text}"
        f"**{names['graph_val']}**: per dataset and labels per class, the grid point of highest validation "
        "accuracy averaged over the seeds (ties: the smaller γ, then fewer steps); no accuracy on unlabelled or "
        f"test points enters the choice. **{names['graph']}**: fixed before any run (the library default is γ = "
        f"{DiffusionSpec().gamma:g}).",
        f"  * **SDE noise**: dZ = v dt + ς dW, ς = {hp['sigma']} (diagonal), Euler–Maruyama with step "
        f"{hp['sde_solver']['step_size']:g}; one "
        f"path per training step; evaluation = Feynman–Kac Monte Carlo mean of the softmax over "
        f"{hp['n_samples']} paths.",
    ]
    if ran["digits"]:
        lines.append(
            f"* **digits** (scikit-learn 8×8{f', {n_digits} points' if n_digits else ''}, 64 pixel features in "
            "[0, 1]): `DigitsDataModule("
            f"transductive=True, labels_per_class=L, seed)` trained by a Lightning `Trainer` on "
            f"`ContinuousDepthClassifier` for {s.digits_epochs} epochs. The data module's stratified split also "
            f"holds out a {test_pct} test split; its accuracy is the second table (what `cdflow fit` reports).")
    if ran["mnist"]:
        lines.append(
            f"* **MNIST**: {n_mnist} images drawn stratified (seeded) from the train + test files, pixels / 255, "
            f"PCA to {s.pca_dim} dimensions (`torch.pca_lowrank`, centred, scaled to unit overall std), kNN graph "
            f"over the PCA features; plain full-batch torch loop, {s.mnist_epochs} Adam steps.")
    lines.append("")
    for name, flag in absent:
        lines += [f"{name} is not in this record: `python -m experiments.images.run --only {flag} --merge` adds "
                  "its runs.", ""]
    sel_head = ("validation accuracy of the graph model over the grid (mean ± std (n seeds); bold: chosen)")
    if any(k.startswith("digits/") for k in summary):
        lines += ["## Digits: accuracy on the unlabelled points outside validation (mean ± std (n runs)"
                  + (f"; {n_digits} points)" if n_digits else ")"), ""]
        lines += table(summary, "digits", s.labels, digits_kinds, "unlabelled", steps_vary, names)
        lines += ["", f"## Digits: accuracy on the held-out {test_pct} test split (the CLI's test/acc)", ""]
        lines += table(summary, "digits", s.labels, digits_kinds, "test", steps_vary, names)
        lines += [""]
        if any(k.startswith("digits/") for k in selection):
            lines += [f"## Digits: {sel_head}", ""]
            lines += selection_table(selection, "digits", s.labels, steps_vary)
            lines += ["", *_selection_prose(selection, "digits", s.labels, "Digits", steps_vary), ""]
    if any(k.startswith("mnist/") for k in summary):
        lines += [f"## MNIST ({n_mnist} points, PCA {s.pca_dim}): accuracy on the unlabelled points outside "
                  "validation", ""]
        lines += table(summary, "mnist", s.labels, mnist_kinds, "unlabelled", steps_vary, names)
        lines += [""]
        if any(k.startswith("mnist/") for k in selection):
            lines += [f"## MNIST: {sel_head}", ""]
            lines += selection_table(selection, "mnist", s.labels, steps_vary)
            lines += ["", *_selection_prose(selection, "mnist", s.labels, "MNIST", steps_vary), ""]
    n_grid = len({(p["gamma"], p["n_steps"]) for sel in selection.values() for p in sel["grid"]})
    grid_cost = (f" Choosing the graph model trains it at each of the {n_grid} grid points: {n_grid} such runs per "
                 "seed." if n_grid > 1 else "")
    lines += [
        "The last column of the accuracy tables gives the mean training time of one run per model, in the column "
        f"order.{grid_cost}",
        "Digits models are built by the LightningModule with `network=\"cdnet\"` (`--model.network cdnet`), i.e. "
        "the same `ConvectionDiffusionNet` for every diffusion kind; `no diffusion, module default net` is "
        "`network=\"default\"` with `--model.diffusion.kind none` (linear encoder without tanh, dropout after it, "
        "`build_classifier`).",
        "",
    ]
    return "\n".join(lines)
