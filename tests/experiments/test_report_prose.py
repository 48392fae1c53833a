"""Every report generator under experiments/ renders from a small hand-built fixture (no training), and each
statement that gives a figure or a comparison follows the fixture: change the fixture and the sentence
changes; drop a row and its sentence disappears."""

from __future__ import annotations

import copy
import re

import pytest
from smoke_runner import experiments_module

MACHINE = {"cpu": "test cpu", "cores": 2, "torch_threads": 1, "torch": "2.x", "python": "3.x",
           "loadavg": [0.0, 0.0, 0.0]}
#: Figures the generators used to print whatever the data said (issue 13, item 4).
STALE = ("about 17 of 100", "0.7 s per epoch", "less than the spread across splits.", "7× slower", "4–10",
         "≈ 1–2.5 × max SE", "≥ 98%", "checked.)", "1797 points", "after seeing the γ = 1 results",
         "effect on accuracy is not measured")


def _no_stale(md: str) -> None:
    for text in STALE:
        assert text not in md, text


# ---------------------------------------------------------------------------------------------------------- covid
def _covid_runs(best: dict[str, list[int]], final: dict[str, float], at_best: dict[str, float]) -> list[dict]:
    runs = []
    for model, epochs in best.items():
        for i, e in enumerate(epochs):
            runs.append({"model": model, "label": model.upper(), "masking": 0, "init_seed": i, "wall_s": 1.0,
                         "best_epoch": e, "val_mse": 0.5, "test_mse": at_best[model],
                         "test_mse_final_epoch": final[model], "nan": False})
    runs.append({"model": "linear", "label": "linear", "masking": 0, "init_seed": None, "best_epoch": None,
                 "val_mse": 1.0, "test_mse": 1.2, "test_mse_final_epoch": None, "nan": False, "wall_s": 0.0})
    return runs


def _covid_payload(epochs: int = 100, best: dict[str, list[int]] | None = None, tasks: bool = True,
                   radius: float = 1.0) -> dict:
    run = experiments_module("covid.run")
    best = best or {"coin": [40, 50], "coin-nodiff": [30, 40], "gcn": [20, 30], "mlp": [10, 20]}
    final = {"coin": 0.8, "coin-nodiff": 1.1, "gcn": 1.6, "mlp": 1.5}
    at_best = {"coin": 0.75, "coin-nodiff": 0.85, "gcn": 0.7, "mlp": 0.7}
    runs = _covid_runs(best, final, at_best)
    payload = {"mode": "reduced", "command": "python -m experiments.covid.run", "machine": MACHINE,
               "loadavg_end": [0.0, 0.0, 0.0], "wall_s": 1.0, "json_name": "covid.json", "mask_attempts": [3],
               "settings": {"maskings": 1, "inits": 2, "lr": 0.01, "weight_decay": 5e-4, "epochs": epochs},
               "summary": run.summarise(runs), "runs": runs}
    if tasks:
        payload["tasks"] = [{"masking": 0, "n_snapshots": 53, "n_regions": 129, "lags": 8, "observed": 684,
                             "train_targets": 141, "val_targets": 139, "test_targets": 3999, "test_snapshots": 31}]
        payload["explicit_step"] = {"tau": 0.5, "days": 53, "radius": radius}
    return payload


def test_covid_report_states_the_fixture():
    run = experiments_module("covid.run")
    md = run.markdown(_covid_payload())
    _no_stale(md)
    assert "Mean best-validation epoch (of 100): COIN 45.0, COIN without diffusion 35.0, GCN 25.0, MLP 15.0." in md
    assert "COIN +0.0500, COIN without diffusion +0.2500, GCN +0.9000, MLP +0.8000" in md
    assert "141 observed training targets per masking" in md
    assert "COIN's mean test MSE is 0.8000 with diffusion and 1.1000 without (n = 0): the diffusion lowers it by " \
           "0.3000." in md
    assert "61 days × 129 regions, 53 snapshots (t = 0…52)" in md
    assert "the largest spectral radius of I − τL_day over the 53 days is 1.0000: stable." in md
    assert "Initialisation i of masking m has seed 1000·m + i." in md
    # other epochs, other best epochs: other sentences
    md = run.markdown(_covid_payload(epochs=30, best={"coin": [4, 6], "coin-nodiff": [1, 3], "gcn": [2, 2],
                                                      "mlp": [9, 9]}))
    assert "Mean best-validation epoch (of 30): COIN 5.0, COIN without diffusion 2.0, GCN 2.0, MLP 9.0." in md
    # an unstable τ is called so; without task records the data sentences are absent
    assert "is 1.0200: **unstable** (> 1)." in run.markdown(_covid_payload(radius=1.02))
    md = run.markdown(_covid_payload(tasks=False))
    assert "Data as run" not in md and "spectral radius" not in md and "observed training targets" not in md
    # without the no-diffusion row, no diffusion comparison
    payload = _covid_payload()
    payload["runs"] = [r for r in payload["runs"] if r["model"] != "coin-nodiff"]
    payload["summary"] = run.summarise(payload["runs"])
    md = run.markdown(payload)
    assert "with diffusion and" not in md and "COIN without diffusion" not in md


# ---------------------------------------------------------------------------------------------------------- graph
def _graph_record(model: str, split: int, init: int, acc: float, protocol: str = "random", **extra) -> dict:
    return {"phase": "main", "dataset": "cora", "split_protocol": protocol, "model": model, "label": model,
            "kwargs": {"tau": 0.35, "n_steps": 20}, "split": split, "split_seed": 1, "init": init,
            "init_seed": 1000 * split + init, "members_in_batch": 2, "batch_wall_s": 2.0, "wall_s": 1.0,
            "pid": 1, "epochs": 100, "best_epoch": 50, "train_acc": 1.0, "val_acc": acc, "val_loss": 0.5,
            "test_acc": acc, "nan": False, **extra}


def _graph_payload(split_delta: float = 0.01, with_split: bool = True, with_cdnet: bool = False,
                   lam_max: float | None = 5.78) -> dict:
    report = experiments_module("graph.report")
    runs = []
    accs = {0: [0.80, 0.82], 1: [0.84, 0.86]}  # per-split means 0.81 / 0.85: spread (std) 2.83 points
    for split, values in accs.items():
        for init, acc in enumerate(values):
            extra = {"negative_u_entries": 2, "min_u": -0.01, "n_nodes": 2485}
            if lam_max is not None:
                extra["lam_max"] = lam_max
            runs.append(_graph_record("coin-explicit", split, init, acc, **extra))
            if with_split:
                runs.append(_graph_record("coin-split", split, init, acc + split_delta, negative_u_entries=0,
                                          min_u=0.001))
    if with_cdnet:
        runs.append(_graph_record("cdnet", 0, 0, 0.7, wall_s=50.0, epochs=100))
    proto = {"name": "reduced", "datasets": ["cora"], "n_splits": 10, "n_inits": 2, "public_inits": 1,
             "tune_splits": 1, "tune_inits": 1, "workers": 1,
             "training": {"lr": 0.01, "weight_decay": 5e-4, "max_epochs": 1000, "patience": 50,
                          "improve_on_tie": False}}
    summary = report.summarise(runs)
    return {"mode": "reduced", "command": "python -m experiments.graph.run", "protocol": proto, "machine": MACHINE,
            "loadavg_end": [0.0, 0.0, 0.0], "wall_s": 60.0, "json_name": "graph.json", "chosen": {},
            "summary": summary, "full_protocol_estimate": report.full_protocol_estimate(summary), "runs": runs}


def test_graph_report_states_the_fixture():
    markdown = experiments_module("graph.markdown").markdown
    md = markdown(_graph_payload())
    _no_stale(md)
    assert "(4 pairs): test accuracy +1.00 points on average (std of the paired differences 0.00), less than the " \
           "spread across splits (std of the explicit row's per-split mean accuracy, 2.83 points over 2 splits)." in md
    md = markdown(_graph_payload(split_delta=0.05))
    assert "test accuracy +5.00 points on average" in md and "not less than the spread across splits" in md
    # no split row (as in graph_full.md): no split sentence
    md = markdown(_graph_payload(with_split=False))
    assert "split integrator" not in md and "Split rows" not in md
    # λ_max from the records: 2/5.78 = 0.346 < τ = 0.35, |1 − 0.35·5.78| = 1.023 grows; 4 of 4 runs negative
    md = markdown(_graph_payload())
    assert "λ_max ≈ 5.780 (Lanczos estimate), so 2/λ_max ≈ 0.346 < τ = 0.35" in md
    assert "|1 − τλ_max| ≈ 1.023 per step (grows)" in md
    assert "u(T) has negative entries in 4 of 4 runs (8 entries, min -0.01)" in md
    assert "negative entries in 0 of 4 runs" in md  # the split rows
    md = markdown(_graph_payload(lam_max=5.0))
    assert "2/λ_max ≈ 0.400 ≥ τ = 0.35" in md and "(decays)" in md
    md = markdown(_graph_payload(lam_max=None))
    assert "λ_max ≈" not in md and "u(T) has negative entries in 4 of 4 runs" in md
    assert "Cora 2,485 nodes" in md
    # the continuous net's cost and share come from its row, and only when it ran: 50 s / 100 epochs
    assert "s per epoch" not in md
    # the single-run timing states the setting it recorded
    payload = _graph_payload()
    payload["timing"] = {"source": "test", "omp_wait_policy": "PASSIVE",
                         "setting": {"dataset": "cora", "tau": 0.3, "n_steps": 7, "split": 4, "split_seed": 99,
                                     "init_seed": 5},
                         "runs": [{"threads": 1, "wall_s": 1.5, "epochs": 100, "ms_per_epoch": 15.0,
                                   "test_acc": 0.8, "loadavg_before": [0.0, 0.0, 0.0]}]}
    md = markdown(payload)
    assert "One Cora COIN run, explicit τ = 0.3 × 7 steps, split 4 (seed 99), initialisation seed 5" in md
    assert "| 1 | 1.50 | 100 | 15.0 | 0.8000 |" in md
    md = markdown(_graph_payload(with_cdnet=True))
    assert "Cora: 0.50 s per epoch (wall time per run / mean epochs), 1 of 10 splits × 1 initialisation(s), not " \
           "on the public split" in md


# --------------------------------------------------------------------------------------------------------- images
def _images_payload(report, runs: list[dict]) -> dict:
    selection = experiments_module("images.selection").select(runs)
    return {"machine": MACHINE, "wall_s": 2.0, "command": "python -m experiments.images.run --smoke",
            "loadavg_end": [0.0, 0.0, 0.0], "env": {}, "selection": selection,
            "summary": report.summarise(runs, selection), "runs": runs}


def _images_runs(val: dict[float, tuple[float, float]]) -> list[dict]:
    """none (0.5) and graph at each γ of `val` (validation accuracies of seeds 0 and 1; test accuracy 0.6 + γ/100)."""
    runs = [{"dataset": "digits", "kind": "none", "labels_per_class": 1, "seed": s, "n_points": 500, "n_val": 100,
             "val_acc": 0.5, "unlabelled_acc": 0.5, "test_acc": 0.5, "wall_s": 1.0} for s in (0, 1)]
    for gamma, accs in val.items():
        runs += [{"dataset": "digits", "kind": "graph", "labels_per_class": 1, "seed": s, "gamma": gamma,
                  "n_steps": 2, "n_points": 500, "n_val": 100, "val_acc": acc, "unlabelled_acc": 0.6 + gamma / 100,
                  "test_acc": 0.6 + gamma / 100, "wall_s": 2.0} for s, acc in enumerate(accs)]
    return runs


def test_images_report_states_the_fixture():
    report = experiments_module("images.report")
    config = experiments_module("images.config")
    settings = config.Settings("smoke", seeds=(0, 1), mnist_seeds=(0,), labels=(1,), kinds=("none", "graph"))
    # γ = 3 has the best mean validation accuracy (0.8); γ = 10 the best test accuracy (0.7)
    runs = _images_runs({1.0: (0.6, 0.7), 3.0: (0.8, 0.8), 10.0: (0.9, 0.5)})
    md = report.markdown(_images_payload(report, runs), settings)
    _no_stale(md)
    assert "(mean ± std (n runs); 500 points)" in md and "500 points, 64 pixel features" in md
    assert "stratified 20% validation split (100 labelled points)" in md
    # columns: none, graph at the default γ = 1, graph at the γ chosen on validation (3, not the test-best 10)
    assert "| no diffusion | graph diffusion γ=1 (default) | graph diffusion, γ chosen on validation |" in md
    assert "| 1 | 0.500 ± 0.000 (2) | 0.610 ± 0.000 (2) | 0.630 ± 0.000 (2) γ=3 |" in md
    assert "trained at every γ ∈ {1, 3, 10};" in md
    assert "Strang splitting with 2 steps (fixed beforehand for cost, not chosen on any accuracy; the library " \
           "default is 10)" in md
    # the grid table: each point's validation accuracy over the seeds, the chosen one in bold
    assert "| labels / class | γ=1 | γ=3 | γ=10 | chosen |" in md
    assert "| 1 | 0.650 ± 0.071 (2) | **0.800 ± 0.000 (2)** | 0.700 ± 0.283 (2) | γ=3 |" in md
    assert "* Digits, 1 label per class: γ=3 chosen, mean validation accuracy 0.800 over 2 seeds." in md
    assert "edge of the grid" not in md
    assert "Choosing the graph model trains it at each of the 3 grid points: 3 such runs per seed." in md
    # a record of one dataset says so, and how to add the other
    assert "digits seeds [0, 1]; labels per class [1]" in md and "MNIST seeds" not in md and "* **MNIST**" not in md
    assert "MNIST is not in this record: `python -m experiments.images.run --only mnist --merge` adds its runs." in md
    # another fixture, another choice: γ = 10 best on validation, at the edge of the grid
    runs = _images_runs({1.0: (0.6, 0.7), 3.0: (0.8, 0.8), 10.0: (0.9, 0.9)})
    md = report.markdown(_images_payload(report, runs), settings)
    assert "| 1 | 0.500 ± 0.000 (2) | 0.610 ± 0.000 (2) | 0.700 ± 0.000 (2) γ=10 |" in md
    assert "* Digits, 1 label per class: γ=10 chosen, mean validation accuracy 0.900 over 2 seeds. It is at the " \
           "edge of the grid" in md and "| γ=10 (edge of the grid) |" in md
    # a steps grid: the points and the chosen step count are named
    runs = _images_runs({1.0: (0.6, 0.7)}) + [dict(r, n_steps=4, val_acc=0.95) for r in _images_runs({3.0: (0, 0)})
                                              if r["kind"] == "graph"]
    md = report.markdown(_images_payload(report, runs), settings)
    assert "n_steps ∈ {2, 4} (chosen with γ)" in md and "| γ=1, 2 steps | γ=3, 4 steps | chosen |" in md
    assert "graph diffusion, γ and steps chosen on validation" in md and "γ=3, 4 steps chosen" in md
    # no graph runs: no grid prose
    runs = [r for r in runs if r["kind"] != "graph"]
    for r in runs:
        r["n_points"] = 300
    md = report.markdown(_images_payload(report, runs), settings)
    assert "300 points" in md and "chosen on validation" not in md.split("## Digits")[1]
    assert "trained at every γ" not in md and "Choosing the graph model" not in md
    runs.append(dict(runs[0], dataset="mnist", n_points=600))
    md = report.markdown(_images_payload(report, runs), settings)
    assert "digits seeds [0, 1], MNIST seeds [0]" in md and "not in this record" not in md and "* **MNIST**" in md


# ----------------------------------------------------------------------------------------------------------- toys
def test_toys_report_states_the_fixture():
    report = experiments_module("toys.report")
    config = experiments_module("toys.config")
    settings = config.settings_for("smoke")
    runs = []
    for ds in config.DATASETS:
        for diffusion in (False, True):
            for protocol in ("split", "all"):
                runs.append({"dataset": ds, "seed": 0, "diffusion": diffusion, "protocol": protocol,
                             "test_acc_final": 0.9 if diffusion else 0.6, "test_acc_best_val": 0.8,
                             "propagator_vs_explicit_max_abs_diff": 3e-6 if diffusion else None})
    curves = [{"seed": 0, "l": [1.0, 1.0, 1.2], "d": [2.0, 1.0, 0.6], "ratio": [0.5, 1.0, 2.0]}]
    payload = {"machine": MACHINE, "wall_s": 1.0, "json_name": "toys_smoke.json", "command": "toys",
               "summary": report.summarise(runs, curves), "runs": runs}
    md = report.markdown(payload, settings, curves)
    _no_stale(md)
    r = config.RECIPES
    assert f"k = {r['moons'].k} / {r['circles'].k} / {r['spirals'].k} for moons / circles / spirals" in md
    assert f"n = {r['moons'].n_steps} / {r['circles'].n_steps} / {r['spirals'].n_steps}" in md
    assert f"{4 * settings.xor.n_per_disk} XOR points" in md and "at most 3e-06 here" in md
    assert f"{settings.sgd_steps} steps as in the reference" in md
    assert "| moons | 25 | 60 | 0.600 ± 0.000 | 0.900 ± 0.000 |" in md
    assert "l/d non-decreasing in k for every seed: True" in md
    curves[0]["ratio"] = [0.5, 2.0, 1.0]
    payload["summary"] = report.summarise(runs, curves)
    assert "for every seed: False" in report.markdown(payload, settings, curves)


# ------------------------------------------------------------------------------------------------ feynman–kac
def _fk_payload(gap_at_floor: float) -> tuple[dict, object, object]:
    problem_mod = experiments_module("feynman_kac.problem")
    settings = problem_mod.Settings("smoke", ns=(2, 8), ms=(100, 1000), seeds=(0,))
    bias = {"2": 0.04, "8": 0.02}
    max_se = {100: 0.05, 1000: 0.015}
    cells = {}
    for n in settings.ns:
        for m in settings.ms:
            gap = gap_at_floor * max_se[m] if bias[str(n)] < max_se[m] else bias[str(n)]
            cells[f"{n}/{m}"] = {"gap_mean": gap, "gap_std": 0.0, "max_se_mean": max_se[m], "max_se_std": 0.0,
                                 "mc_error_mean": 0.0, "mc_error_std": 0.0, "runs": 1}
    result = {"pde_error_estimate": 1e-5, "bias_M_inf": bias,
              "pde_validation": [{"dx": 0.04, "dt": 0.02, "max_error": 1e-4, "observed_order": None}],
              "library_check": {"n": 8, "M": 500, "max_abs_diff_to_M_inf": 0.01, "max_se": 0.01,
                                "within_4_max_se": True}}
    payload = {"machine": MACHINE, "wall_s": 1.0, "json_name": "fk.json", "command": "fk",
               "summary": {"cells": cells, "weak_orders": [0.95]}, "result": result}
    return payload, problem_mod.Problem(), settings


def test_feynman_kac_report_states_the_fixture():
    report = experiments_module("feynman_kac.report")
    payload, problem, settings = _fk_payload(1.5)
    md = report.markdown(payload, problem, settings)
    _no_stale(md)
    # cells with bias < max SE: (2, 100), (8, 100) → gap = 1.5·SE
    assert "In the 2 cells where the M = ∞ bias is below the max SE, gap / max SE is 1.50–1.50." in md
    assert "At M = 100, n = 8: gap 0.0750, bias 0.0200 (3.8×)." in md
    assert "Weak order from the M = ∞ bias between consecutive n: 0.95" in md
    assert "(v = 0.7 constant, f = exp(−x²/(2·0.5²))" in md and "|x| ≤ 3)" in md
    payload, problem, settings = _fk_payload(3.0)
    assert "gap / max SE is 3.00–3.00" in report.markdown(payload, problem, settings)


# ------------------------------------------------------------------------------------------------------ robustness
@pytest.mark.parametrize("with_conv", [False, True])
def test_robustness_report_states_the_fixture(with_conv):
    report = experiments_module("robustness.report")
    config = experiments_module("robustness.config")
    models = experiments_module("robustness.models")
    settings = config.settings_for("smoke")
    keys = ["clean", *(f"noise_{v:g}" for v in settings.noise_sigmas)]
    runs = [{"model": "ode", "seed": 0, "acc": {**dict.fromkeys(keys, 0.8), **{f"pgd_{e:g}_det": 0.3
                                                                               for e in settings.eps}},
             "epoch_s": [1.0], "nfe_forward_per_step": 10, "eval_s": 1.0},
            {"model": "sde_s0.5", "seed": 0, "acc": {**dict.fromkeys(keys, 0.85), **{f"pgd_{e:g}_{m}": 0.4
                                                                                    for e in settings.eps
                                                                                    for m in settings.paths}},
             "epoch_s": [2.0], "nfe_forward_per_step": 10, "eval_s": 1.0}]
    if with_conv:
        runs.append({"model": "conv_ode", "seed": 0, "acc": {"clean": 0.9871}, "eval_s": 1.0})
    payload = {"machine": MACHINE, "wall_s": 1.0, "command": "python -m experiments.robustness.run --smoke",
               "loadavg_end": [0.0, 0.0, 0.0], "env": {}, "summary": report.summarise(copy.deepcopy(runs)),
               "runs": runs}
    md = report.markdown(payload, settings)
    _no_stale(md)
    assert f"(x − {models.MEAN}) / {models.STD}" in md
    steps = round(config.HPARAMS["t1"] / config.HPARAMS["step_size"])
    assert f"step {config.HPARAMS['step_size']} ({steps} steps)" in md
    assert "clean: +0.050 vs ODE" in md and re.search(r"pgd 0\.1: \+0\.100 vs ODE", md)
    conv = "clean accuracy here 0.9871 on 1 run(s)"
    assert (conv in md) == with_conv and ("conv neural ODE row" in md) == with_conv
