"""Summary statistics and the markdown results page of the robustness experiment."""

from __future__ import annotations

import statistics
from typing import Any

from experiments.common import machine_info, mean_std, provenance  # noqa: F401 — re-exported for the runners
from experiments.robustness.attacks import STEP_FRACTION
from experiments.robustness.config import HPARAMS, Settings
from experiments.robustness.models import MEAN, STD


def row_label(model: str) -> str:
    """Table label of a model key: ``ode``, ``sde_s<σ>``, ``sde_s<σ>_mean_field``, ``conv_ode``."""
    if model == "ode":
        return "neural ODE (MLP, Euler)"
    if model == "conv_ode":
        return "conv neural ODE (mnist.yaml checkpoint)"
    sigma = model.split("_")[1][1:]
    if model.endswith("_mean_field"):
        return f"SDE-trained ς={sigma}, mean-field ODE eval"
    return f"SDE ς={sigma}, Feynman–Kac mean"


def _order(models: list[str]) -> list[str]:
    """ode first, then each SDE with its mean-field row, then the conv ODE."""
    def key(m: str) -> tuple:
        if m == "ode":
            return (0, 0.0, 0)
        if m == "conv_ode":
            return (2, 0.0, 0)
        return (1, float(m.split("_")[1][1:]), int(m.endswith("_mean_field")))
    return sorted(models, key=key)
PATH_LABELS = {"det": "–", "fixed": "fixed (the evaluation's paths)", "fresh": "fresh every step"}


def summarise(runs: list[dict]) -> dict[str, Any]:
    """Per model: every accuracy as mean ± std over its runs, and the seeds."""
    out: dict[str, Any] = {}
    for r in runs:
        entry = out.setdefault(r["model"], {"seeds": [], "acc": {}})
        entry["seeds"].append(r["seed"])
        for key, value in r["acc"].items():
            entry["acc"].setdefault(key, []).append(value)
    for entry in out.values():
        entry["n"] = len(entry["seeds"])
        entry["mean"] = {k: mean_std(v)[0] for k, v in entry["acc"].items()}
        entry["std"] = {k: mean_std(v)[1] for k, v in entry["acc"].items()}
    return out


def _cell(entry: dict, key: str) -> str:
    if key not in entry["mean"]:
        return "–"
    return f"{entry['mean'][key]:.3f} ± {entry['std'][key]:.3f}"


def accuracy_table(summary: dict[str, Any], settings: Settings) -> list[str]:
    """Rows: model × attack path mode; columns: clean, each noise σ, each PGD ε."""
    cols = ["clean", *(f"noise_{s:g}" for s in settings.noise_sigmas)]
    heads = ["clean", *(f"noise σ={s:g}" for s in settings.noise_sigmas), *(f"PGD ε={e:g}" for e in settings.eps)]
    lines = ["| model | PGD sees paths | n | " + " | ".join(heads) + " |", "|" + "---|" * (len(heads) + 3)]
    for model in _order(list(summary)):
        entry = summary[model]
        modes = sorted({k.rsplit("_", 1)[1] for k in entry["mean"] if k.startswith("pgd_")},
                       key=list(PATH_LABELS).index)
        for mode in modes:
            cells = [_cell(entry, c) for c in cols] + [_cell(entry, f"pgd_{e:g}_{mode}") for e in settings.eps]
            lines.append(f"| {row_label(model)} | {PATH_LABELS[mode]} | {entry['n']} | " + " | ".join(cells) + " |")
    return lines


def cost_table(runs: list[dict]) -> list[str]:
    """Training time per epoch and NFE per step, and evaluation time, mean over runs per model."""
    lines = ["| model | train s / epoch | drift evaluations per training step | eval s (all attacks) |",
             "|---|---|---|---|"]
    for model in _order(sorted({r["model"] for r in runs})):
        rs = [r for r in runs if r["model"] == model]
        ep = [s for r in rs for s in r.get("epoch_s", [])]
        nfe = {r.get("nfe_forward_per_step") for r in rs}
        ev = statistics.fmean(r["eval_s"] for r in rs)
        lines.append(f"| {row_label(model)} | {statistics.fmean(ep):.1f} | {', '.join(map(str, nfe))} | {ev:.0f} |"
                     if ep else f"| {row_label(model)} | – | – | {ev:.0f} |")
    return lines


def findings(summary: dict[str, Any], settings: Settings) -> list[str]:
    """Data-driven reading of the table: each SDE against the ODE, and path averaging against the mean field."""
    ode = summary.get("ode")
    if ode is None:
        return []
    keys = ["clean", *(f"noise_{v:g}" for v in settings.noise_sigmas), *(f"pgd_{e:g}" for e in settings.eps)]
    lines = []
    for model in _order(list(summary)):
        if not model.startswith("sde_") or model.endswith("_mean_field"):
            continue
        fk, mf = summary[model]["mean"], summary.get(f"{model}_mean_field", {}).get("mean", {})
        parts = []
        for key in keys:
            ode_key = f"{key}_det" if key.startswith("pgd_") else key
            fk_key = f"{key}_fixed" if key.startswith("pgd_") else key
            if ode_key in ode["mean"] and fk_key in fk:
                diff = fk[fk_key] - ode["mean"][ode_key]
                mf_diff = fk[fk_key] - mf[ode_key] if ode_key in mf else float("nan")
                parts.append(f"{key.replace('_', ' ')}: {diff:+.3f} vs ODE, {mf_diff:+.3f} vs its mean field")
        lines.append(f"* {row_label(model)} (PGD with fixed paths) — " + "; ".join(parts) + ".")
    return lines


def conv_ode_lines(summary: dict[str, Any]) -> list[str]:
    """The conv neural ODE row's note, with its measured clean accuracy (none when the row is absent)."""
    entry = summary.get("conv_ode")
    if entry is None or "clean" not in entry["mean"]:
        return []
    return [f"* The conv neural ODE row is a different, larger-capacity model (the ODE-Net of "
            f"`experiments/configs/mnist.yaml`; clean accuracy here {entry['mean']['clean']:.4f} on "
            f"{entry['n']} run(s)): one trained network, for reference only."]


def markdown(payload: dict[str, Any], settings: Settings) -> str:
    """The results page ``robustness.md``."""
    s, m, hp = settings, payload["machine"], HPARAMS
    n_train = "all 60,000" if s.train_images is None else f"the first {s.train_images:,}"
    n_eval = "all 10,000" if s.eval_images is None else f"the first {s.eval_images:,}"
    lines = [
        "# Robustness on MNIST: neural ODE vs convection–diffusion SDE with Feynman–Kac averaging",
        "",
        f"Mode **{s.mode}**: seeds {list(s.seeds)}; {s.epochs} epochs on {n_train} training images; evaluation on "
        f"{n_eval} test images. Total wall time {payload['wall_s']:.0f} s. Raw per-run records: "
        f"`robustness_{s.mode}.json`.",
        "",
        *provenance([payload["command"]], m, payload["loadavg_end"], payload.get("env", {})),
        "## Protocol",
        "",
        f"* Both models are the same `cdflow.models.ConvectionDiffusionNet` on flattened MNIST (an MLP-style model, "
        "for a like-for-like comparison; the conv ODE block has no noise variant): pixels in [0, 1] → "
        f"(x − {MEAN}) / {STD} → linear 784 → {hp['hidden']} → tanh → dz = MLP(z, t) dt [+ ς dW] over [0, "
        f"{hp['t1']}] (width {hp['width']}, depth {hp['depth']}, {hp['activation']}) → linear head. The "
        "normalisation is inside the model, so noise and attacks act on [0, 1] pixels.",
        f"* **neural ODE**: {hp['method'].capitalize()}, step {hp['step_size']} ({round(hp['t1'] / hp['step_size'])} "
        "steps). **SDE**: Euler–Maruyama with the same step, "
        f"ς ∈ {list(s.sde_sigmas)} (one model each; {hp['noise_type']}), Itô; trained with one Brownian path per "
        "step; evaluated by the "
        f"Feynman–Kac Monte Carlo mean of the softmax over {s.n_samples} paths (scores = log of that mean). "
        "**SDE-trained, mean-field ODE eval**: the same SDE weights evaluated by the noise-free ODE (separates "
        "training with noise from averaging over paths at test time).",
        f"* Training: Adam lr {hp['lr']}, {hp['lr_schedule']} to 0, batch {s.batch_size}, {s.epochs} epochs, no "
        "augmentation.",
        "* **Gaussian noise**: x' = clip(x + σ ε, 0, 1), ε ~ N(0, I), σ in [0, 1] pixel units (before the "
        "normalisation); one noise draw per image (seeded).",
        f"* **PGD** (L∞): ε in [0, 1] pixel units; uniform random start in the ε-ball; {s.pgd_steps} signed-gradient "
        f"steps of {STEP_FRACTION:g}·ε on the cross-entropy of the model's evaluation scores; projection onto the "
        "ε-ball ∩ [0, 1]; "
        "the last iterate is scored. For the SDE the attack differentiates through the Monte Carlo mean (log of "
        f"the mean softmax over {s.n_samples} paths, backpropagated through the Euler–Maruyama solve): *fixed* — "
        "every step uses the very paths the evaluation then uses (white-box, including the randomness: the "
        "strongest setting); *fresh* — new paths at every step (expectation over transformation), scored on "
        "evaluation paths the attack never saw.",
        *conv_ode_lines(payload["summary"]),
        "",
        "## Accuracy (mean ± std over seeds)",
        "",
        *accuracy_table(payload["summary"], s),
        "",
        "Differences of the means (accuracy points as fractions; std over seeds in the table above):",
        "",
        *findings(payload["summary"], s),
        "",
        "## Cost",
        "",
        *cost_table(payload["runs"]),
        "",
    ]
    return "\n".join(lines)
