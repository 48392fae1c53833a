"""The results page of the node-classification runs (``experiments/results/graph*.md``)."""

from __future__ import annotations

from typing import Any

from experiments.common import provenance
from experiments.graph import report
from experiments.graph.configs import ROW_KEYS as ORDER


def _timing_lines(timing: dict[str, Any] | None) -> list[str]:
    if not timing:
        return ["Not measured in this run (`python -m experiments.graph.timing` measures it)."]
    lines = [f"Source: {timing.get('source', '')}. One Cora COIN run, explicit τ = 0.35 × 20 steps, split 0 "
             "(seed 121958), initialisation seed 0, from fresh weights to early stopping, after one warm-up run "
             "(data loading excluded); OpenMP wait policy "
             f"{timing.get('omp_wait_policy', 'not recorded')}. The thread counts may take different numbers of "
             "epochs: a different summation order changes the trajectory and the early-stopping epoch.", "",
             "| torch threads | wall s | epochs | ms / epoch | test acc | load average before (1/5/15 min) |",
             "|---|---|---|---|---|---|"]
    for r in timing["runs"]:
        lines.append(f"| {r['threads']} | {r['wall_s']:.2f} | {r['epochs']} | {r['ms_per_epoch']:.1f} | "
                     f"{r['test_acc']:.4f} | {r['loadavg_before']} |")
    return lines


def markdown(payload: dict[str, Any]) -> str:
    """Tables (mean ± std, runs, seeds, wall time), floors, machine and command."""
    s, m, proto = payload["summary"], payload["machine"], payload["protocol"]
    chosen = payload.get("chosen", {})
    coin = chosen.get("coin", {})
    tune_chosen, tune_lines = report.tuning_table(payload["runs"])
    full_run = payload.get("full_run")
    floor_rows, floor_lines = report.floors(s, payload.get("timing"), payload.get("full_protocol_estimate"),
                                            full_run)
    train = proto["training"]
    out = [
        "# Node classification on Cora and Citeseer",
        "",
        f"Mode **{payload['mode']}**: random splits {proto['n_splits']} × {proto['n_inits']} initialisations per row "
        f"(slow rows run fewer: see the *splits × inits* column), Planetoid public split × {proto['public_inits']} "
        f"initialisations. Total wall time {payload['wall_s'] / 60:.1f} min with {proto['workers']} process(es). "
        f"Raw per-run records: `{payload['json_name']}`.",
        "",
        *provenance([payload["command"], *[mg["command"] + f"   # merged: {', '.join(mg['groups'])}"
                                           for mg in payload.get("merged", [])]], m, payload["loadavg_end"]),
        "## Protocol",
        "",
        "* Data: gnn-benchmark `cora.npz` / `citeseer.npz`, largest connected component (Cora 2,485 nodes, "
        "Citeseer 2,110), binarised + row-normalised bag-of-words; split s = `random_split(labels, seed_s)`: "
        "20 training and 30 validation nodes per class, the rest test, with seed_s the s-th split seed of the "
        "Diff-ResNet reference code (`np.random.RandomState(42).randint(0, 10**6, 100)`: 121958, 671155, …), "
        "so split s is the reference's split s. Initialisation i of split s has seed 1000·s + i, shared by every "
        "row (rows are paired by initialisation).",
        f"* Training: Adam (lr {train['lr']}, weight decay {train['weight_decay']}), full batch, at most "
        f"{train['max_epochs']} epochs, early stopping with patience {train['patience']}: the counter resets when "
        + ("the validation loss *or* accuracy improves or ties (val_loss ≤ min or val_acc ≥ max, as in the older "
           "Diff-ResNet reference `graph/train.py`)" if train.get("improve_on_tie", True) else
           "the validation loss *or* accuracy strictly improves (val_loss < min or val_acc > max, as in the COIN "
           "reference `graph/train.py`)")
        + ", and the weights of the last such epoch are restored and tested.",
        "* The initialisations of one split train together as one model with a member axis (`cdflow.models.COIN` "
        "and `DiffResNet` with `members=K`, the baselines of `cdflow.models.baselines`: stacked weights, one "
        "sparse graph product for all members; the continuous net as `cdflow.models.Members`), by the library "
        "loop `cdflow.training.fit_members` with per-member early stopping and restore "
        "(`cdflow.training.member_stopping`); members are tested equal to separate models "
        "(`tests/models/test_coin.py`, `test_diffresnet.py`, `test_members.py`).",
        "* Graph operators: L = diag(Â·1) − Â with Â = D̃^{-1/2}(A+I)D̃^{-1/2} (COIN / Diff-ResNet / continuous "
        "net); Â itself for GCN / APPNP / SGC.",
        f"* COIN: h = x + ReLU(W₁x + b₁) (W₁ is F×F), u⁰ = softmax(W₂h + b₂), no dropout; explicit: "
        "u ← u − τLu n times (the authors'); split: u(T) = exp(−nτL)u⁰ by Krylov "
        "(`cdflow.heat.diffuse`), same total time; loss NLL of log max(u, 1e-8). "
        f"Settings used: {coin}.",
        "* Continuous convection–diffusion net (`cdflow.models.ConvectionDiffusionNet`): "
        "h(0) = dropout(ReLU(dropout(x) W_in + b_in)), dh/dt = W₂ tanh(W₁h + b₁) + b₂ − γLh "
        "on [0, 1] by dopri5 (rtol 1e-3, atol 1e-4; one solve per member), "
        "linear head; γ = Diff-ResNet's total diffusion time τ·n, dropout 0.5 twice. Slow on 2 cores (about "
        "0.7 s per epoch), so it runs 20% of the splits with one initialisation, and not on the public split.",
        "",
        "## Floors",
        "",
        *floor_lines,
        "",
    ]
    for split_protocol, title in (("random", "random splits"), ("public", "Planetoid public split")):
        for ds in proto["datasets"]:
            lines = report.model_table(s, f"{split_protocol}/{ds}", ORDER)
            if len(lines) > 2:
                out += [f"## {ds.capitalize()}, {title}", "", *lines, ""]
    if tune_lines:
        out += [
            f"## COIN search on {chosen.get('tuning', {}).get('dataset', 'citeseer')} (validation accuracy only)",
            "",
            "Explicit COIN, mean validation accuracy over "
            f"{proto['tune_splits']} splits × {proto['tune_inits']} initialisation(s) per grid point; the "
            "chosen point is used for every COIN row of that dataset (test accuracy is not looked at).",
            "",
            *tune_lines,
            "",
            f"Chosen: τ = {tune_chosen.get('tau')}, n = {tune_chosen.get('n_steps')}.",
            "",
        ]
    out += ["## Single-run timing", "", *_timing_lines(payload.get("timing")), ""]
    est = payload.get("full_protocol_estimate")
    if full_run:
        out += [
            "## Full protocol (measured)",
            "",
            f"Cora COIN (explicit), {full_run['splits']} splits × 20 initialisations = {full_run['runs']} runs, "
            f"run by `{full_run['command']}` (results in `graph_full.md` / `graph_full.json`): "
            f"{full_run['wall_s'] / 60:.1f} min wall time with {full_run['workers']} process(es), load average "
            f"{full_run['loadavg_start']} at start and {full_run['loadavg_end']} at end; test accuracy "
            f"{100 * full_run['test_mean']:.2f} ± {100 * full_run['test_std']:.2f}%.",
            "",
        ]
    elif est:
        out += [
            "## Full protocol (estimate, not run)",
            "",
            "Cora COIN (explicit), 100 splits × 20 initialisations = 2,000 runs × "
            f"{est['per_run_s']:.2f} s per run (measured in this run, members together, under the load above) ≈ "
            f"{est['minutes_one_process']:.0f} min in one process, ≈ {est['minutes_two_processes']:.0f} min with "
            "`--workers 2` on two free cores. This is an estimate from the measured per-split time, not a run "
            "of the full protocol.",
            "",
        ]
    out += [
        "## Notes",
        "",
        "* Negative probabilities: the explicit step is stable only for τ ≤ 2/λ_max(L); on Cora λ_max ≈ 5.78, so "
        "2/λ_max ≈ 0.346 < 0.35 and the highest-frequency mode grows by |1 − 0.35 λ_max| ≈ 1.02 per step: u(T) "
        "gets negative entries (counted in the table; the log is clamped at 1e-8, so no NaN). The split "
        "integrator applies exp(−nτL), which keeps u(T) ≥ 0 and rows summing to one.",
        "* Diff-ResNet is the reference code's F-wide graph network (`cdflow.models.DiffResNet`, hidden=None): "
        "h = x + ReLU(W₁x + b₁) with W₁ F×F, then n × [dropout → h ← h − τLh], then a linear head, trained "
        "with cross-entropy; its backward keeps only the dropout masks (the layers are linear in h). "
        "The no-diffusion rows are the same networks with n = 0 (no dropout then).",
        "* COIN's explicit and split rows share initialisations (paired): the split integrator's exact "
        "exp(−nτL) changes accuracy by less than the spread across splits.",
        f"* Floors met: {sum(r['met'] for r in floor_rows)} / {len(floor_rows)}.",
        "",
    ]
    return "\n".join(out)
