"""The results page of the node-classification runs (``experiments/results/graph*.md``)."""

from __future__ import annotations

import inspect
import json
import statistics
from collections import defaultdict
from typing import Any

from cdflow.data.graphs import random_split
from experiments.common import mean_std, provenance
from experiments.graph import report
from experiments.graph.configs import CDNET
from experiments.graph.configs import ROW_KEYS as ORDER
from experiments.graph.data import SPLIT_SEEDS
from experiments.graph.search_report import describe, search_section
from experiments.graph.timing import timing_setting


def _timing_lines(timing: dict[str, Any] | None) -> list[str]:
    if not timing:
        return ["Not measured in this run (`python -m experiments.graph.timing` measures it)."]
    st = timing.get("setting") or timing_setting()  # older timings: the setting `timing.py` times
    lines = [f"Source: {timing.get('source', '')}. One {st['dataset'].capitalize()} COIN run, explicit τ = "
             f"{st['tau']} × {st['n_steps']} steps, split {st['split']} (seed {st['split_seed']}), initialisation "
             f"seed {st['init_seed']}, from fresh weights to early stopping, after one warm-up run "
             "(data loading excluded); OpenMP wait policy "
             f"{timing.get('omp_wait_policy', 'not recorded')}. The thread counts may take different numbers of "
             "epochs: a different summation order changes the trajectory and the early-stopping epoch.", "",
             "| torch threads | wall s | epochs | ms / epoch | test acc | load average before (1/5/15 min) |",
             "|---|---|---|---|---|---|"]
    for r in timing["runs"]:
        lines.append(f"| {r['threads']} | {r['wall_s']:.2f} | {r['epochs']} | {r['ms_per_epoch']:.1f} | "
                     f"{r['test_acc']:.4f} | {r['loadavg_before']} |")
    return lines


def _default(fn: Any, name: str) -> Any:
    """A keyword's default in the function that uses it (the one source of the number)."""
    return inspect.signature(fn).parameters[name].default


def _main_runs(runs: list[dict[str, Any]], protocol: str, ds: str, model: str) -> list[dict[str, Any]]:
    return [r for r in runs if r["phase"] == "main" and r["split_protocol"] == protocol and r["dataset"] == ds
            and r["model"] == model]


def data_sentence(runs: list[dict[str, Any]], datasets: list[str]) -> str:
    """Node counts of the largest connected components, from the records (absent in older records)."""
    nodes = {}
    for ds in datasets:
        counts = {r["n_nodes"] for r in runs if r["dataset"] == ds and r["split_protocol"] == "random"
                  and "n_nodes" in r}
        if len(counts) == 1:
            nodes[ds] = counts.pop()
    if not nodes:
        return ""
    return " (" + ", ".join(f"{ds.capitalize()} {n:,} nodes" for ds, n in nodes.items()) + ")"


SEED_RULE_TEXT = {
    "paired": "initialisation i of split s has seed 1000·s + i",
    "authors": "initialisation i of split s has the Diff-ResNet reference's seed for it "
               "(`graph/train.py`: `np.random.RandomState(seed_s)`, continued after drawing split s, "
               "`.randint(0, 10**6, inits)[i]`)",
}


def _seed_rule(r: dict[str, Any]) -> str:
    """The record's seed rule; older records (no `init_seed_rule`) follow "paired" if their seed fits it."""
    rule = r.get("init_seed_rule")
    if rule is None:
        return "paired" if r["init_seed"] == 1000 * r["split"] + r["init"] else "recorded"
    return rule


def seed_sentence(runs: list[dict[str, Any]]) -> str:
    """The initialisation seed rule(s) of the random-split runs, from their records: the rule each record names
    (checked against its seed where the records suffice: 1000·s + i), whether the rows share the seeds, and,
    under the authors' rule, example seeds and the Diff-ResNet runs whose weights are drawn as the reference's."""
    rs = [r for r in runs if r["phase"] == "main" and r["split_protocol"] == "random"]
    if not rs:
        return "Initialisation seeds: the `init_seed` of each record."
    by_rule: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in rs:
        rule = _seed_rule(r)
        if rule == "paired" and r["init_seed"] != 1000 * r["split"] + r["init"]:
            rule = "recorded"
        by_rule[rule].append(r)
    parts = []
    for rule, group in sorted(by_rule.items()):
        text = SEED_RULE_TEXT.get(rule, "the `init_seed` of each record")
        if rule == "authors":
            r0 = min(group, key=lambda r: (r["dataset"], r["split"], r["init"]))
            eg = sorted({(r["init"], r["init_seed"]) for r in group
                         if r["dataset"] == r0["dataset"] and r["split"] == r0["split"]})
            text += (f", e.g. {r0['dataset'].capitalize()} split {r0['split']} (seed {r0['split_seed']}): "
                     + ", ".join(f"init {i} → {seed}" for i, seed in eg))
        parts.append(f"{text} ({len(group)} run{'s' if len(group) != 1 else ''})")
    seeds: dict[tuple, set[int]] = defaultdict(set)
    for r in rs:
        seeds[(r["dataset"], r["split"], r["init"])].add(r["init_seed"])
    shared = all(len(v) == 1 for v in seeds.values())
    out = "Initialisation seeds of the random-split runs (from the records): " + "; ".join(parts) + (
        ", the same for every row (rows are paired by initialisation)." if shared else
        "; not the same for every row.")
    ref = [r for r in rs if r.get("reference_init")]
    if ref:
        rows = sorted({r["model"] for r in ref})
        out += (f" The Diff-ResNet rows ({', '.join(rows)}; {len(ref)} runs) draw their weights as the reference's "
                "`nn.Linear(F, F)`, `nn.Linear(F, C)` after `torch.manual_seed(seed)`, so they start from the "
                "reference's initial weights; their dropout masks are not the reference's (it draws them on the GPU).")
    return out


def stopping_sentence(runs: list[dict[str, Any]]) -> str:
    """Which stopping rule each row trained with, from the records (empty for records without one)."""
    rows: dict[tuple[str, int, bool], set[str]] = defaultdict(set)
    for r in runs:
        st = r.get("stopping")
        if r["phase"] == "main" and st:
            rows[(st["rule"], st["patience"], st["improve_on_tie"])].add(r["model"])
    if not rows:
        return ""
    order = {k: i for i, k in enumerate(ORDER)}
    parts = [f"{name}'s rule ({'ties count' if ties else 'strict'}, patience {patience}): "
             + ", ".join(sorted(models, key=lambda m: (order.get(m, len(order)), m)))
             for (name, patience, ties), models in sorted(rows.items())]
    text = "* Stopping rule of each row (from the records): " + "; ".join(parts) + "."
    if any(ties for _, _, ties in rows):
        text += (" The Diff-ResNet reference's loop (`graph/train.py`) also differs from the library's in when it "
                 "scores: after each optimiser step (its first candidate is the weights after one step), where the "
                 "library scores before the step (its first candidate is the initial weights); and when it reaches "
                 "max_epochs without stopping it tests the last weights, where the library restores the best.")
    return text


def cdnet_sentence(summary: dict[str, dict[str, Any]], proto: dict[str, Any]) -> str:
    """The continuous net's cost and share of the protocol, from its rows (empty when it did not run)."""
    parts = []
    for ds in proto["datasets"]:
        s = summary.get(f"random/{ds}/cdnet")
        if not s:
            continue
        per_epoch = s["wall_per_run_s"] / s["epochs_mean"]
        inits = s["n"] / max(1, len(s["splits"]))
        public = "also" if summary.get(f"public/{ds}/cdnet") else "not"
        parts.append(f"{ds.capitalize()}: {per_epoch:.2f} s per epoch (wall time per run / mean epochs), "
                     f"{len(s['splits'])} of {proto['n_splits']} splits × {inits:g} initialisation(s), {public} on "
                     "the public split")
    return ("; ".join(parts) + ".") if parts else ""


def cdnet_settings(runs: list[dict[str, Any]], datasets: list[str]) -> str:
    """The continuous net's settings per dataset, from its records when it ran (older records, before the
    search, ran dopri5 with −γLh in the drift), else the configured point (`configs.CDNET`)."""
    parts = []
    for ds in datasets:
        kws = {json.dumps(r["kwargs"], sort_keys=True) for r in runs
               if r["phase"] == "main" and r["dataset"] == ds and r["model"] == "cdnet"}
        if len(kws) > 1:
            parts.append(f"{ds.capitalize()}: {len(kws)} settings (see the records)")
            continue
        if not kws:
            if ds in CDNET:
                parts.append(f"{ds.capitalize()} (configured, not run here): {describe(CDNET[ds])}")
            continue
        kw = json.loads(kws.pop())
        if "integrator" in kw:
            parts.append(f"{ds.capitalize()}: {describe(kw)}")
        elif "gamma" in kw:
            parts.append(f"{ds.capitalize()}: dopri5 (rtol 1e-3, atol 1e-4) with −γLh in the drift on [0, 1], "
                         f"γ = {kw['gamma']:g}, dropout {kw['input_dropout']:g} / {kw['dropout']:g} (input / h(0))")
    return "; ".join(parts)


def stability_notes(runs: list[dict[str, Any]], summary: dict[str, dict[str, Any]], datasets: list[str]) -> list[str]:
    """Negative probabilities of the explicit COIN rows, with λ_max when the records carry it."""
    out = []
    for ds in datasets:
        rs = _main_runs(runs, "random", ds, "coin-explicit")
        s = summary.get(f"random/{ds}/coin-explicit")
        if not rs or not s:
            continue
        taus = {r["kwargs"]["tau"] for r in rs}
        lams = {round(r["lam_max"], 6) for r in rs if "lam_max" in r}
        text = f"{ds.capitalize()}, explicit COIN: "
        if len(taus) == 1 and len(lams) == 1:
            tau, lam = taus.pop(), lams.pop()
            growth = abs(1 - tau * lam)
            text += (f"λ_max ≈ {lam:.3f} (Lanczos estimate), so 2/λ_max ≈ {2 / lam:.3f} "
                     f"{'<' if 2 / lam < tau else '≥'} τ = {tau} and the highest-frequency mode is multiplied by "
                     f"|1 − τλ_max| ≈ {growth:.3f} per step ({'grows' if growth > 1 else 'decays'}); ")
        text += (f"u(T) has negative entries in {s['negative_u_runs']} of {s['n']} runs "
                 f"({s['negative_u_entries']} entries" + ("" if s["min_u"] is None else f", min {s['min_u']:.3g}")
                 + f"); NaN runs: {s['n_nan']}.")
        split = summary.get(f"random/{ds}/coin-split")
        if split:
            text += (f" Split rows (exp(−nτL), which keeps u ≥ 0): negative entries in {split['negative_u_runs']} of "
                     f"{split['n']} runs.")
        out.append(f"* {text}")
    if out:
        out.insert(0, "* Negative probabilities: the explicit step u ← u − τLu is stable only for τ ≤ 2/λ_max(L); "
                      "beyond it the highest-frequency mode grows and u(T) can get negative entries (the loss "
                      "takes log max(u, 1e-8), so no NaN from them).")
    return out


def _test_acc(runs: list[dict[str, Any]], protocol: str, ds: str, model: str) -> dict[tuple[int, int], float]:
    """Test accuracy per (split, initialisation seed) of one row's finite runs."""
    return {(r["split"], r["init_seed"]): r["test_acc"] for r in _main_runs(runs, protocol, ds, model) if not r["nan"]}


def paired_split_notes(runs: list[dict[str, Any]], datasets: list[str]) -> list[str]:
    """Split against explicit COIN on the runs both rows have (same split and initialisation seed): the mean
    paired difference of test accuracy, against the spread of the explicit row's per-split mean accuracy."""
    out = []
    for protocol in ("random", "public"):
        for ds in datasets:
            ex, sp = (_test_acc(runs, protocol, ds, m) for m in ("coin-explicit", "coin-split"))
            pairs = sorted(set(ex) & set(sp))
            if not pairs:
                continue
            diff = [sp[k] - ex[k] for k in pairs]
            d_mean, d_std = mean_std(diff)
            text = (f"* {ds.capitalize()}, {protocol} split{'s' if protocol == 'random' else ''}: COIN's split "
                    f"integrator (exact exp(−nτL)) against the explicit steps, paired by split and initialisation "
                    f"({len(pairs)} pairs): test accuracy {100 * d_mean:+.2f} points on average (std of the paired "
                    f"differences {100 * d_std:.2f})")
            per_split: dict[int, list[float]] = defaultdict(list)
            for (split, _), v in ex.items():
                per_split[split].append(v)
            if len(per_split) > 1:
                spread = statistics.stdev(statistics.fmean(v) for v in per_split.values())
                rel = "less than" if abs(d_mean) < spread else "not less than"
                text += (f", {rel} the spread across splits (std of the explicit row's per-split mean accuracy, "
                         f"{100 * spread:.2f} points over {len(per_split)} splits)")
            out.append(text + ".")
    return out


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
        "* Data: gnn-benchmark `cora.npz` / `citeseer.npz`, largest connected component"
        f"{data_sentence(payload['runs'], proto['datasets'])}, binarised + row-normalised bag-of-words; split s = "
        f"`random_split(labels, seed_s)`: {_default(random_split, 'train_per_class')} training and "
        f"{_default(random_split, 'val_per_class')} validation nodes per class, the rest test, with seed_s "
        "the s-th split seed of the Diff-ResNet reference code (`np.random.RandomState(42).randint(0, 10**6, 100)`: "
        f"{SPLIT_SEEDS[0]}, {SPLIT_SEEDS[1]}, …), so split s is the reference's split s. "
        f"{seed_sentence(payload['runs'])}",
        f"* Training: Adam (lr {train['lr']}, weight decay {train['weight_decay']}), full batch, at most "
        f"{train['max_epochs']} epochs, early stopping with patience {train['patience']} (the protocol's rule; a row "
        "may set its own): the counter resets when "
        + ("the validation loss *or* accuracy improves or ties (val_loss ≤ min or val_acc ≥ max, as in the "
           "Diff-ResNet reference `graph/train.py`)" if train.get("improve_on_tie", True) else
           "the validation loss *or* accuracy strictly improves (val_loss < min or val_acc > max, as in the COIN "
           "reference `graph/train.py`)")
        + ", and the weights of the last such epoch are restored and tested.",
        *[line for line in (stopping_sentence(payload["runs"]),) if line],
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
        "h = dropout(act(dropout(x) W_in + b_in)) (or, with the residual encoder, the F-wide "
        "h = dropout(x + act(dropout(x) W_in + b_in)) of COIN and Diff-ResNet), dz/dt = f(z) − γLz with "
        "f(z) = W₂ tanh(W₁z + b₁) + b₂ (on class probabilities the replicator field z ⊙ (f(z) − ⟨z, f(z)⟩), which "
        "keeps them probabilities) "
        "on [0, T] (the initialisations of a split through one solve, side by side, where that cannot couple "
        "them: `ConvectionDiffusionNet.forward_members`, tested equal to separate models in "
        "`tests/models/test_cdnet_members.py`), linear head before the solve (logits or their softmax propagated) "
        "or after it; settings chosen on validation accuracy only (sections "
        f"*Continuous net: validation-only search*). {cdnet_settings(payload['runs'], proto['datasets'])}. "
        f"{cdnet_sentence(s, proto)}".rstrip(),
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
    out += search_section(payload.get("cdnet_search"))
    out += search_section(payload.get("cdnet_search_stage2"))
    out += search_section(payload.get("cdnet_search_stage3"))
    out += ["## Single-run timing", "", *_timing_lines(payload.get("timing")), ""]
    est = payload.get("full_protocol_estimate")
    if full_run:
        out += [
            "## Full protocol (measured)",
            "",
            f"Cora COIN (explicit), {full_run['splits']} splits × {full_run['runs'] // max(1, full_run['splits'])} "
            f"initialisations = {full_run['runs']} runs, "
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
            f"Cora COIN (explicit), {report.FULL_SPLITS} splits × {report.FULL_INITS} initialisations = "
            f"{est['runs']:,} runs × "
            f"{est['per_run_s']:.2f} s per run (measured in this run, members together, under the load above) ≈ "
            f"{est['minutes_one_process']:.0f} min in one process, ≈ {est['minutes_two_processes']:.0f} min with "
            "`--workers 2` on two free cores. This is an estimate from the measured per-split time, not a run "
            "of the full protocol.",
            "",
        ]
    out += [
        "## Notes",
        "",
        *stability_notes(payload["runs"], s, proto["datasets"]),
        "* Diff-ResNet is the reference code's F-wide graph network (`cdflow.models.DiffResNet`, hidden=None): "
        "h = x + ReLU(W₁x + b₁) with W₁ F×F, then n × [dropout → h ← h − τLh], then a linear head, trained "
        "with cross-entropy; its backward keeps only the dropout masks (the layers are linear in h). "
        "The no-diffusion rows are the same networks with n = 0 (no dropout then).",
        *paired_split_notes(payload["runs"], proto["datasets"]),
        f"* Floors met: {sum(r['met'] for r in floor_rows)} / {len(floor_rows)}.",
        "",
    ]
    return "\n".join(out)
