"""``python -m experiments.covid.run [--smoke|--full] [--out DIR]``: COVID-19 forecasting, 90% missing targets.

Modes: smoke (CI: 1 masking × 1 initialisation, 5 epochs), reduced (default: 3 maskings × 3
initialisations), full (10 × 10). Writes ``DIR/covid[_<mode>].json`` (every run) and ``.md`` (the table).
Metric: test MSE in standardised units (every target of the test period); lower is better.
"""

from __future__ import annotations

import json
import math
import sys
import time
from dataclasses import dataclass, replace
from typing import Any

import torch

from cdflow.models.layers import member_generators
from experiments.common import artefact, machine_info, mean_std, mode_of, provenance, runner_parser
from experiments.covid.data import CovidTask, build_task, load
from experiments.covid.models import CovidCOIN, CovidGCN, CovidMLP, linear_regression
from experiments.covid.train import CovidTraining, fit, member_mse

MODELS = {
    "coin": ("COIN: linear + MLP (16, ELU), 10 × [dropout 0.25 → u − 0.5 L_day u]", CovidCOIN, "lap"),
    "coin-nodiff": ("COIN network without diffusion (n = 0)", CovidCOIN, "lap"),
    "mlp": ("MLP (hidden 16, dropout 0.25)", CovidMLP, None),
    "gcn": ("GCN, 2 layers (hidden 16, dropout 0.25)", CovidGCN, "adj"),
}
ORDER = ["coin", "coin-nodiff", "gcn", "mlp", "linear"]


@dataclass(frozen=True)
class Settings:
    mode: str
    maskings: int
    inits: int
    training: CovidTraining = CovidTraining()


SETTINGS = {
    "smoke": Settings("smoke", 1, 1, CovidTraining(epochs=5)),
    "reduced": Settings("reduced", 3, 3),
    "full": Settings("full", 10, 10),
}


def run_masking(task: CovidTask, masking: int, settings: Settings) -> list[dict[str, Any]]:
    """Every model on one masking: K initialisations as one model with a member axis
    (trained by `cdflow.training.fit_members`), plus linear regression."""
    records = []
    seeds = [1000 * masking + i for i in range(settings.inits)]
    for key, (label, cls, graph_name) in MODELS.items():
        torch.manual_seed(7919 * (masking + 1))
        model = cls(len(seeds), n_steps=0) if key == "coin-nodiff" else cls(len(seeds))
        model.reset_parameters(member_generators(seeds))
        graph = {"lap": task.lap, "adj": task.adj, None: None}[graph_name]
        results, wall = fit(model, task, graph, settings.training)
        for seed, res in zip(seeds, results):
            records.append({"model": key, "label": label, "masking": masking, "init_seed": seed,
                            "wall_s": wall / len(seeds), **res})
    start = time.perf_counter()
    pred = linear_regression(task.x, task.y, task.train)[:, None]
    records.append({"model": "linear", "label": "Linear regression on the observed targets (8 lags + bias)",
                    "masking": masking, "init_seed": None, "best_epoch": None,
                    "val_mse": float(member_mse(pred, task.y, task.val)[0]),
                    "test_mse": float(member_mse(pred, task.y, task.test)[0]), "test_mse_final_epoch": None,
                    "nan": not bool(torch.isfinite(pred).all()), "wall_s": time.perf_counter() - start})
    return records


def summarise(runs: list[dict]) -> dict[str, dict[str, Any]]:
    """Per model: test MSE after the last epoch and at the best-validation epoch (mean ± std), val MSE."""
    out: dict[str, dict[str, Any]] = {}
    for key in ORDER:
        rs = [r for r in runs if r["model"] == key and not r["nan"]]
        if not rs:
            continue
        final = [r["test_mse"] if r["test_mse_final_epoch"] is None else r["test_mse_final_epoch"] for r in rs]
        fm, fs = mean_std(final)
        m, s = mean_std([r["test_mse"] for r in rs])
        vm, vs = mean_std([r["val_mse"] for r in rs])
        all_rs = [r for r in runs if r["model"] == key]
        out[key] = {"label": rs[0]["label"], "n": len(all_rs), "n_nan": sum(r["nan"] for r in all_rs),
                    "test_final_mean": fm, "test_final_std": fs, "test_mean": m, "test_std": s,
                    "val_mean": vm, "val_std": vs, "wall_s": sum(r["wall_s"] for r in all_rs),
                    "maskings": sorted({r["masking"] for r in all_rs})}
    return out


def floor_met(summary: dict[str, dict[str, Any]], field: str) -> bool | None:
    """COIN's mean test MSE (`field`) below the MLP's and the linear regression's."""
    if not all(k in summary for k in ("coin", "mlp", "linear")):
        return None
    return summary["coin"][field] < min(summary["mlp"][field], summary["linear"][field])


def markdown(payload: dict[str, Any]) -> str:
    s, m, st = payload["summary"], payload["machine"], payload["settings"]
    lines = [
        "# COVID-19 forecasting in England with 90% of the targets missing",
        "",
        f"Mode **{payload['mode']}**: {st['maskings']} maskings × {st['inits']} initialisations "
        f"(linear regression: one fit per masking); {st['epochs']} epochs. Total wall time "
        f"{payload['wall_s']:.1f} s. Raw per-run records: `{payload['json_name']}`.",
        "",
        *provenance([payload["command"]], m, payload["loadavg_end"]),
        "## Protocol (our reading of the issue)",
        "",
        "* `load_covid`: 61 days × 129 NUTS3 regions, one directed weighted mobility graph per day.",
        "* Snapshots t = 0…52 as PyTorch Geometric Temporal: features the 8 previous days, target day t + 8, "
        "graph of day t. 90% of the (snapshot, region) targets are hidden: each kept with probability 0.1 by "
        "`np.random.RandomState(masking)`, redrawn until every region keeps ≥ 2 distinct values "
        f"(attempts per masking: {payload['mask_attempts']}).",
        "* Per-region standardisation over the whole series, as PyTorch Geometric Temporal's loader "
        "(z = (cases − μ_r)/(σ_r + 1e-10)); the 8 lags come from that series (inputs known, targets hidden). "
        "(`build_task(..., standardise='observed')` uses the observed targets' μ_r, σ_r instead — with about "
        "5 observed values per region it makes the targets so noisy that every model's test MSE is 4–10.)",
        "* Temporal split of the snapshots: 11 train / 11 validation / 31 test (20 / 20 / 60%); training and "
        "validation use observed targets only, the test every target of its period (hidden ones restored).",
        f"* Adam (lr {st['lr']}, weight decay {st['weight_decay']}), full batch over all snapshots at once "
        f"(block-diagonal daily operators), {st['epochs']} epochs. Two readings of the protocol are reported: "
        "the test MSE of the model after the last epoch (the paper's protocol: the COIN reference code "
        "`covid/train.py` trains a fixed number of epochs and tests the final model, with no model selection), "
        "and, as an extra reading, the test MSE of each member's epoch of lowest validation MSE (restored). "
        "Initialisation i of masking m has seed 1000·m + i.",
        "* COIN's L_day: zero diagonal, Â = D^{-1/2}A₀D^{-1/2} (D the row sums), L = diag(Â·1) − Â; τ = 0.5 is "
        "stable (max over days of the spectral radius of I − 0.5 L is 1). GCN: D^{-1/2}AD^{-1/2} of the "
        "graph as given (its self-loops included).",
        "",
        "## Test MSE (standardised units; lower is better)",
        "",
        "| model | test MSE after the last epoch | test MSE at the best-validation epoch | runs "
        "| best val MSE | NaN runs | wall s |",
        "|---|---|---|---|---|---|---|",
    ]
    for key in ORDER:
        if key in s:
            r = s[key]
            lines.append(f"| {r['label']} | {r['test_final_mean']:.4f} ± {r['test_final_std']:.4f} | "
                         f"{r['test_mean']:.4f} ± {r['test_std']:.4f} | {r['n']} | "
                         f"{r['val_mean']:.4f} ± {r['val_std']:.4f} | {r['n_nan']} | {r['wall_s']:.1f} |")
    word = {True: "met", False: "**not met**", None: "not measured"}
    lines += ["", "Floor (COIN's test MSE below the MLP's and the linear regression's), judged after the last "
              f"epoch as the paper's protocol: {word[floor_met(s, 'test_final_mean')]}. With model selection on "
              f"validation (not in the protocol): {word[floor_met(s, 'test_mean')].replace('**', '')}. "
              "Linear regression has no epochs (the same value in both "
              "columns). Without model selection the MLP and GCN overfit the ~140 observed training targets "
              "(their best-validation epoch is about 17 of 100); the diffusion regularises COIN.", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = runner_parser(__doc__, "tiny run for CI", "10 maskings × 10 initialisations")
    p.add_argument("--maskings", type=int)
    p.add_argument("--inits", type=int)
    args = p.parse_args(argv)
    name = mode_of(args)
    settings = replace(SETTINGS[name], **{k: v for k, v in (("maskings", args.maskings), ("inits", args.inits))
                                          if v is not None})
    info = machine_info()
    start = time.perf_counter()
    data = load()
    runs, attempts = [], []
    for masking in range(settings.maskings):
        task = build_task(data, masking)
        attempts.append(task.mask_attempts)
        recs = run_masking(task, masking, settings)
        runs += recs
        print(f"masking {masking}: " + ", ".join(f"{r['model']} {r['test_mse']:.3f}" for r in recs), flush=True)
    json_name, md_name = artefact("covid", name, "json"), artefact("covid", name, "md")
    payload = {
        "mode": name,
        "command": "python -m experiments.covid.run" + "".join(f" {a}" for a in (sys.argv[1:] if argv is None
                                                                                  else argv)),
        "settings": {"maskings": settings.maskings, "inits": settings.inits, **vars(settings.training)},
        "machine": info,
        "loadavg_end": machine_info()["loadavg"],
        "wall_s": time.perf_counter() - start,
        "json_name": json_name,
        "mask_attempts": attempts,
        "summary": summarise(runs),
        "runs": runs,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / json_name).write_text(json.dumps(payload, indent=1, allow_nan=True))
    (args.out / md_name).write_text(markdown(payload))
    if any(math.isnan(r["test_mse"]) for r in runs):
        print("warning: NaN test MSE in some runs", file=sys.stderr)
    return payload


if __name__ == "__main__":
    main()
