"""Summary statistics and the markdown / JSON results of the semi-supervised image experiments."""

from __future__ import annotations

import inspect
import statistics
from typing import Any

from cdflow.data.modules import DigitsDataModule
from cdflow.models import DiffusionSpec
from experiments.common import machine_info, mean_std, provenance  # noqa: F401 — re-exported for the runners
from experiments.images.config import EXTRA_KINDS, HPARAMS, KINDS, UNMEASURED, Settings

KIND_LABELS = {
    "none": "no diffusion",
    "graph": f"graph diffusion γ={HPARAMS['diffusion_graph']['gamma']:g}",
    "graph_strong": f"graph diffusion γ={HPARAMS['gamma_strong']:g}",
    "noise": "SDE noise (Feynman–Kac)",
    "none_default": "no diffusion, module default net",
}


def summarise(runs: list[dict]) -> dict[str, Any]:
    """Per ``dataset/labels/kind``: accuracies on the unlabelled points (and the digits test split), mean ± std."""
    out: dict[str, Any] = {}
    for r in runs:
        key = f"{r['dataset']}/{r['labels_per_class']}/{r['kind']}"
        entry = out.setdefault(key, {"unlabelled_acc": [], "test_acc": [], "seeds": [], "wall_s": []})
        entry["unlabelled_acc"].append(r["unlabelled_acc"])
        if "test_acc" in r:
            entry["test_acc"].append(r["test_acc"])
        entry["seeds"].append(r["seed"])
        entry["wall_s"].append(r["wall_s"])
    for entry in out.values():
        entry["n"] = len(entry["seeds"])
        entry["unlabelled_mean"], entry["unlabelled_std"] = mean_std(entry["unlabelled_acc"])
        if entry["test_acc"]:
            entry["test_mean"], entry["test_std"] = mean_std(entry["test_acc"])
        entry["wall_s_mean"] = statistics.fmean(entry["wall_s"])
    return out


def _cell(entry: dict | None, field: str) -> str:
    if entry is None or f"{field}_mean" not in entry:
        return "–"
    return f"{entry[f'{field}_mean']:.3f} ± {entry[f'{field}_std']:.3f} ({entry['n']})"


def table(summary: dict[str, Any], dataset: str, labels: tuple[int, ...], kinds: list[str], field: str) -> list[str]:
    """Markdown table: one row per labels-per-class, one column per model; cells ``mean ± std (n runs)``."""
    head = "| labels / class | " + " | ".join(KIND_LABELS[k] for k in kinds) + " | mean fit time (s) |"
    lines = [head, "|" + "---|" * (len(kinds) + 2)]
    for lab in labels:
        entries = [summary.get(f"{dataset}/{lab}/{k}") for k in kinds]
        if all(e is None for e in entries):
            continue
        times = " / ".join(f"{e['wall_s_mean']:.1f}" if e else "–" for e in entries)
        lines.append(f"| {lab} | " + " | ".join(_cell(e, field) for e in entries) + f" | {times} |")
    return lines


def n_points(runs: list[dict], dataset: str) -> str | None:
    """The transductive set's size as recorded by the runs ("1,797"; sizes joined by "/" if they differ)."""
    sizes = sorted({r["n_points"] for r in runs if r["dataset"] == dataset and "n_points" in r})
    return "/".join(f"{n:,}" for n in sizes) or None


def _solver(spec: dict) -> str:
    return spec["method"] + (f" (rtol {spec['rtol']:g}, atol {spec['atol']:g})" if "rtol" in spec
                             else f" with step {spec['step_size']:g}")


def markdown(payload: dict[str, Any], settings: Settings) -> str:
    """The results page ``images.md``."""
    s, m, summary = settings, payload["machine"], payload["summary"]
    hp = HPARAMS
    present = {k.split("/")[2] for k in summary}
    digits_kinds = [k for k in (*KINDS, *EXTRA_KINDS) if k in present and any(
        key.startswith("digits/") and key.endswith(f"/{k}") for key in summary)]
    mnist_kinds = [k for k in KINDS if any(key.startswith("mnist/") and key.endswith(f"/{k}") for key in summary)]
    runs = payload.get("runs", [])
    n_digits = n_points(runs, "digits")
    n_mnist = n_points(runs, "mnist") or ("all" if s.mnist_points is None else f"{s.mnist_points:,}")
    test_pct = f"{100 * inspect.signature(DigitsDataModule).parameters['test_fraction'].default:.0f}%"
    graph_steps = hp["diffusion_graph"]["n_steps"]
    steps_note = (f" (the library default is {DiffusionSpec().n_steps}: {UNMEASURED['graph_steps']})"
                  if graph_steps < DiffusionSpec().n_steps else "")
    lines = [
        "# Semi-supervised images: no diffusion vs graph diffusion vs SDE noise",
        "",
        f"Mode **{s.mode}**: digits seeds {list(s.seeds)}, MNIST seeds {list(s.mnist_seeds)}; labels per class "
        f"{list(s.labels)}. Total wall time {payload['wall_s']:.0f} s. Raw per-run records: "
        f"`images_{s.mode}.json`.",
        "",
        *provenance(payload.get("commands", [payload["command"]]), m, payload["loadavg_end"], payload.get("env", {})),
        "## Protocol",
        "",
        "* Transductive: all points in one full batch; the loss sees the labels of the labelled subset only "
        "(`labels_per_class` per class, drawn with the seed); accuracy is measured on **every unlabelled point** "
        "with the weights after the last step (no checkpoint selection on labelled validation data).",
        f"* One network for every model: `cdflow.models.ConvectionDiffusionNet` — dropout {hp['dropout']} → linear → "
        f"tanh encoder to {hp['hidden']} features, convection dz = MLP(z, t) dt (width {hp['width']}, depth "
        f"{hp['depth']}, tanh) over t ∈ [0, 1], linear head. Adam lr {hp['lr']}, weight decay {hp['weight_decay']}, "
        "one full-batch step per epoch.",
        f"  * **no diffusion**: {_solver(hp['ode_solver'])}.",
        f"  * **graph diffusion**: + −γLz with γ = {hp['diffusion_graph']['gamma']:g} (and γ = "
        f"{hp['gamma_strong']:g}: {UNMEASURED['gamma_strong']}), L the combinatorial Laplacian "
        f"of the self-tuning Gaussian kNN graph (k = {hp['graph']['knn_k']}, scale from the "
        f"{hp['graph']['knn_k_scale']}th neighbour; `knn_gaussian_graph`) over the input features, built once; "
        f"Strang splitting with {graph_steps} steps{steps_note}, exact Krylov diffusion sub-steps, "
        f"{hp['ode_solver']['method']} convection sub-steps.",
        f"  * **SDE noise**: dZ = v dt + ς dW, ς = {hp['sigma']} (diagonal), Euler–Maruyama with step "
        f"{hp['sde_solver']['step_size']:g}; one "
        f"path per training step; evaluation = Feynman–Kac Monte Carlo mean of the softmax over "
        f"{hp['n_samples']} paths.",
        f"* **digits** (scikit-learn 8×8{f', {n_digits} points' if n_digits else ''}, 64 pixel features in "
        "[0, 1]): `DigitsDataModule("
        f"transductive=True, labels_per_class=L, seed)` trained by a Lightning `Trainer` on "
        f"`ContinuousDepthClassifier` for {s.digits_epochs} epochs. The data module's stratified split also "
        f"holds out a {test_pct} test split; its accuracy is the second table (what `cdflow fit` reports).",
        f"* **MNIST**: {n_mnist} images drawn stratified (seeded) from the train + test files, pixels / 255, "
        f"PCA to {s.pca_dim} dimensions (`torch.pca_lowrank`, centred, scaled to unit overall std), kNN graph over "
        f"the PCA features; plain full-batch torch loop, {s.mnist_epochs} Adam steps.",
        "",
    ]
    if any(k.startswith("digits/") for k in summary):
        lines += ["## Digits: accuracy on the unlabelled points (mean ± std (n runs)"
                  + (f"; {n_digits} points)" if n_digits else ")"), ""]
        lines += table(summary, "digits", s.labels, digits_kinds, "unlabelled")
        lines += ["", f"## Digits: accuracy on the held-out {test_pct} test split (the CLI's test/acc)", ""]
        lines += table(summary, "digits", s.labels, digits_kinds, "test")
        lines += [""]
    if any(k.startswith("mnist/") for k in summary):
        lines += [f"## MNIST ({n_mnist} points, PCA {s.pca_dim}): accuracy on the unlabelled points", ""]
        lines += table(summary, "mnist", s.labels, mnist_kinds, "unlabelled")
        lines += [""]
    lines += [
        "The last column gives the mean training time of one run per model, in the column order.",
        "Digits models are built by the LightningModule with `network=\"cdnet\"` (`--model.network cdnet`), i.e. "
        "the same `ConvectionDiffusionNet` for every diffusion kind; `no diffusion, module default net` is "
        "`network=\"default\"` with `--model.diffusion.kind none` (linear encoder without tanh, dropout after it, "
        "`build_classifier`).",
        "",
    ]
    return "\n".join(lines)
