"""``python -m experiments.graph.search_cdnet [--smoke] [--datasets ...] [--workers W] [--out DIR]``: the continuous
convection–diffusion net's settings, chosen on validation accuracy only.

Per dataset, a greedy coordinate search from `BASE`: for each factor of `FACTORS` in turn, every value is tried
with the other settings at the current choice, and the factor takes the value of the best mean validation
accuracy over the screening splits (random splits 0..screen_splits−1, one initialisation, seed 1000·s);
values within `TIE` of the best count as tied and the fastest of them (mean wall time per run) is taken. Then
the `refine` best points of the whole screen run on more splits (0..refine_splits−1) and the best mean
validation accuracy over those is the chosen point. Runs are the protocol's (`experiments.graph.units.run_unit`:
its training, early stopping and restore); their test accuracy is dropped from the records unread.

Stage 2 (``--stage2 RECORD``) starts each dataset from the chosen point of a stage-1 record and tries `STAGE2`,
every point scored on 10 splits; it writes ``DIR/cdnet_search_stage2[_<mode>].json``. Stage 3 (``--stage3
RECORD``) does the same from a stage-2 record with `STAGE3` (the training objective: consistency regularisation
over dropout draws) and writes ``DIR/cdnet_search_stage3[_<mode>].json``.

Writes ``DIR/cdnet_search[_<mode>].json``: the factors, every point's per-split validation accuracy and wall
time, the choice after each factor, the refinement and the chosen point per dataset, the total wall time.
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from experiments.common import artefact, machine_info, mode_of, runner_parser
from experiments.graph.configs import COIN_CORA, ModelSpec, Training, model_specs
from experiments.graph.units import Unit, run_unit, task

Point = dict[str, Any]

#: The starting point: Strang splitting with exact (Chebyshev) diffusion sub-steps, two Euler convection steps.
BASE: Point = dict(gamma=5.0, t1=1.0, hidden=64, input_dropout=0.5, hidden_dropout=0.5, head_dropout=0.0,
                   encoder_activation="relu", propagate="features", integrator="split", method="chebyshev",
                   n_steps=2, convection="euler", encoder="mlp")
#: Values within this much mean validation accuracy of the best are tied; the fastest tied value is taken.
TIE = 0.0025
#: Explicit diffusion steps are stable for γT/n ≤ 2/λ_max; the search takes n for γT/n ≤ STABLE/λ_max.
STABLE = 1.9


def _set(**values: Any) -> Callable[[Point, dict[str, float]], Point]:
    return lambda p, _: {**p, **values}


def _convection_time(t1: float) -> Callable[[Point, dict[str, float]], Point]:
    """T with the diffusion time γT kept: a shorter T weakens the convection only."""
    return lambda p, _: {**p, "t1": t1, "gamma": p["gamma"] * p["t1"] / t1}


def _diffusion_time(gt: float) -> Callable[[Point, dict[str, float]], Point]:
    """γT with T kept (explicit / drift step counts follow stability)."""
    return lambda p, info: _stable({**p, "gamma": gt / p["t1"]}, info)


def _stable(p: Point, info: dict[str, float]) -> Point:
    """Explicit diffusion steps (integrator explicit) and fixed-step drift solves need γT/n below the stability
    bound: n is raised to the least stable count (rk4's real stability interval is 2.78, Euler's 2)."""
    bound = {"explicit": STABLE, "drift": 2.5 if p["convection"] == "rk4" else STABLE}.get(p["integrator"])
    if bound is None or p["convection"] == "dopri5":
        return p
    need = math.ceil(p["gamma"] * p["t1"] * info["lam_max"] / bound)
    return {**p, "n_steps": max(p["n_steps"], need)}


def _integrator(integrator: str, method: str = "chebyshev", convection: str = "euler"
                ) -> Callable[[Point, dict[str, float]], Point]:
    def apply(p: Point, info: dict[str, float]) -> Point:
        q = {**p, "integrator": integrator, "method": method, "convection": convection}
        if integrator == "split":
            q["n_steps"] = BASE["n_steps"] if p["integrator"] != "split" else p["n_steps"]
        else:
            q["n_steps"] = 1
        return _stable(q, info)
    return apply


def _convection(method: str) -> Callable[[Point, dict[str, float]], Point]:
    return lambda p, info: _stable({**p, "convection": method}, info)


def _steps(n: int) -> Callable[[Point, dict[str, float]], Point]:
    return lambda p, info: _stable({**p, "n_steps": n}, info)


@dataclass(frozen=True)
class Factor:
    """One coordinate of the search: named values, each a map from the current point to a new one."""

    name: str
    values: tuple[tuple[str, Callable[[Point, dict[str, float]], Point]], ...]


FACTORS: tuple[Factor, ...] = (
    Factor("head position (propagate)", (("features", _set(propagate="features")),
                                         ("logits", _set(propagate="logits", head_dropout=0.0)),
                                         ("probabilities", _set(propagate="probabilities", head_dropout=0.0)))),
    Factor("input encoder", (("mlp", _set(encoder="mlp")), ("residual (F-wide)", _set(encoder="residual")))),
    Factor("convection time T (γT kept)", tuple((f"T={t:g}", _convection_time(t)) for t in (0.1, 0.3, 1.0))),
    Factor("diffusion time γT", tuple((f"γT={g:g}", _diffusion_time(g)) for g in (2.0, 5.0, 8.0, 12.0))),
    Factor("dropout (input / h(0) / head)", tuple(
        (f"{a:g}/{b:g}/{c:g}", _set(input_dropout=a, hidden_dropout=b, head_dropout=c))
        for a, b, c in ((0.5, 0.5, 0.0), (0.5, 0.0, 0.0), (0.0, 0.5, 0.0), (0.8, 0.5, 0.0), (0.5, 0.5, 0.5),
                        (0.0, 0.0, 0.0), (0.0, 0.25, 0.0)))),
    Factor("input encoder activation", tuple((a, _set(encoder_activation=a)) for a in ("relu", "tanh", "identity"))),
    Factor("hidden width", tuple((str(h), _set(hidden=h)) for h in (32, 64, 128))),
    Factor("integrator", (("split strang chebyshev", _integrator("split", "chebyshev")),
                          ("split strang krylov", _integrator("split", "krylov")),
                          ("explicit (lie, explicit diffusion steps)", _integrator("explicit")),
                          ("drift rk4", _integrator("drift", convection="rk4")))),
    Factor("steps n", tuple((f"n={n}", _steps(n)) for n in (1, 2, 4))),
    Factor("convection sub-solver", tuple((c, _convection(c)) for c in ("euler", "rk4"))),
)


#: COIN's row per dataset: Cora the authors' (τ = 0.35, n = 20), Citeseer the protocol's validation choice
#: (τ = 0.3, n = 5: `make reproduce-graph`'s COIN search, experiments/results/graph.json). Its total diffusion
#: time τ·n sets COIN's form (stage 2); its time per run, the stage-3 budget.
COIN_ROWS: dict[str, dict[str, Any]] = {"cora": COIN_CORA, "citeseer": {"tau": 0.3, "n_steps": 5}}
COIN_TIME = {ds: row["tau"] * row["n_steps"] for ds, row in COIN_ROWS.items()}


def _coin_form(keep_dropout: bool) -> Callable[[Point, dict[str, float]], Point]:
    """COIN's form around the current point: the class probabilities propagated, the convection's output layer
    zero (so the net starts as COIN's network → diffusion), γT = COIN's; no dropout (COIN's) or the current."""
    def apply(p: Point, info: dict[str, float]) -> Point:
        q = {**p, "propagate": "probabilities", "convection_init": "zero", "head_dropout": 0.0,
             "gamma": info["coin_time"] / p["t1"]}
        if not keep_dropout:
            q.update(input_dropout=0.0, hidden_dropout=0.0)
        return _stable(q, info)
    return apply


#: Stage 2 (``--stage2``): from stage 1's chosen point, what stage 1's greedy order could not reach. Its first
#: factor compares whole forms: stage 1's point, the same with the convection's output layer zero-initialised,
#: and COIN's form (probabilities propagated from a zero convection: stage 1 tried probabilities only with a
#: default-initialised convection, which pushed them off the simplex and collapsed training on 3 of 5 splits);
#: then the dropout, γT (holding stage 1's 8 and 2 and COIN's 7 and 1.5), and the convection's initialisation.
STAGE2: tuple[Factor, ...] = (
    Factor("form", (("stage 1's point", _set()),
                    ("stage 1's, zero convection output", _set(convection_init="zero")),
                    ("COIN's form (probabilities, v₀ = 0, COIN's γT, no dropout)", _coin_form(False)),
                    ("COIN's form with the current dropout", _coin_form(True)))),
    Factor("dropout (input / h(0) / head)", tuple(
        (f"{a:g}/{b:g}/0", _set(input_dropout=a, hidden_dropout=b, head_dropout=0.0))
        for a, b in ((0.0, 0.0), (0.5, 0.5), (0.8, 0.5)))),
    Factor("diffusion time γT", tuple((f"γT={g:g}", _diffusion_time(g)) for g in (1.5, 2.0, 5.0, 7.0, 8.0))),
    Factor("convection initialisation", (("default", _set(convection_init="default")),
                                         ("zero output layer", _set(convection_init="zero")))),
)


#: Stage 3 (``--stage3``): from stage 2's chosen point, the training objective. Consistency regularisation
#: (`cdflow.training.consistency`, Feng et al. 2020): S = 2 training passes under independent dropout draws, their
#: mean NLL on the training nodes plus λ times the squared distance of each pass's class probabilities to their
#: sharpened mean (τ = 0.5) on every node. One joint factor, λ × the h(0) dropout: the passes cost time, the h(0)
#: mask is the costly part of a pass, and the stage keeps to a time budget (`STAGES`), so each λ is tried with and
#: without it.
STAGE3_START = {"consistency": 0.0, "consistency_samples": 2, "consistency_temperature": 0.5}
STAGE3: tuple[Factor, ...] = (
    Factor("consistency weight λ (S = 2 passes, τ = 0.5) × h(0) dropout", tuple(
        (f"λ={w:g}, h(0) dropout {b:g}", _set(consistency=w, hidden_dropout=b))
        for w in (0.0, 1.0, 1.5, 2.0) for b in (0.5, 0.0))),
)


@dataclass(frozen=True)
class SearchSize:
    """Splits and epochs of one mode; factors: how many of FACTORS run (the smoke test runs two)."""

    screen_splits: int = 5
    refine_splits: int = 10
    refine: int = 3
    max_epochs: int = Training().max_epochs
    factors: int = len(FACTORS)
    datasets: tuple[str, ...] = ("cora", "citeseer")


SIZES = {"smoke": SearchSize(1, 2, 2, max_epochs=2, factors=2, datasets=("cora",)), "reduced": SearchSize()}
#: Stage 2 scores every point on 10 splits (the refinement re-reads the same runs).
STAGE2_SIZES = {"smoke": SearchSize(1, 1, 1, max_epochs=2, factors=1, datasets=("cora",)),
                "reduced": SearchSize(10, 10, 3, factors=len(STAGE2))}
STAGE3_SIZES = {"smoke": SearchSize(1, 1, 1, max_epochs=2, factors=1, datasets=("cora",)),
                "reduced": SearchSize(10, 10, 3, factors=len(STAGE3), datasets=("cora",))}
#: Per stage: its factors, sizes, the settings it adds (their defaults, so that a point is named one way only),
#: and its time budget in multiples of COIN's time per run (issue 14's floor: the continuous net's time per run
#: ≤ 3× COIN's; stage 3's passes cost time, so only points within it compete).
STAGES = {1: (FACTORS, SIZES, {}, None), 2: (STAGE2, STAGE2_SIZES, {"convection_init": "default"}, None),
          3: (STAGE3, STAGE3_SIZES, STAGE3_START, 3.0)}


def point_key(p: Point) -> str:
    return json.dumps(p, sort_keys=True)


def _valid(p: Point, info: dict[str, float]) -> str | None:
    """Why a point cannot be built (None if it can)."""
    if p["propagate"] != "features" and p["head_dropout"] > 0:
        return f"head dropout acts after the solve; with propagate={p['propagate']} the head comes first"
    return None


@dataclass
class Search:
    """The runs of one dataset's search, cached by (point, split)."""

    dataset: str
    size: SearchSize
    workers: int
    info: dict[str, float] = field(default_factory=dict)
    runs: dict[tuple[str, int], dict[str, Any]] = field(default_factory=dict)

    def evaluate(self, points: list[Point], splits: range) -> list[dict[str, Any]]:
        """Mean validation accuracy and wall time of each point over `splits` (missing runs are run)."""
        todo = [(p, s) for p in points for s in splits if (point_key(p), s) not in self.runs]
        todo = list({(point_key(p), s): (p, s) for p, s in todo}.values())
        training = Training(max_epochs=self.size.max_epochs)
        units = [Unit(self.dataset, False, ModelSpec("cdnet", "cdnet search", "cdnet", p), s, (0,), training,
                      phase="search") for p, s in todo]
        for (p, s), records in zip(todo, _execute(units, self.workers)):
            r = records[0]
            self.runs[(point_key(p), s)] = {"split": s, "val_acc": r["val_acc"], "val_loss": r["val_loss"],
                                            "epochs": r["epochs"], "wall_s": r["wall_s"], "nan": r["nan"]}
            print(f"[search] {self.dataset:8s} split {s} val {r['val_acc']:.3f} epochs {r['epochs']:4d} "
                  f"{r['wall_s']:5.1f} s  {point_key(p)}", flush=True)
        return [self.score(p, splits) for p in points]

    def score(self, p: Point, splits: range) -> dict[str, Any]:
        rs = [self.runs[(point_key(p), s)] for s in splits]
        return {"point": p, "splits": list(splits), "val_acc": [r["val_acc"] for r in rs],
                "val_mean": statistics.fmean(0.0 if r["nan"] else r["val_acc"] for r in rs),
                "wall_mean_s": statistics.fmean(r["wall_s"] for r in rs),
                "epochs_mean": statistics.fmean(r["epochs"] for r in rs)}


def pick(scores: list[dict[str, Any]], tie: float = TIE, budget_s: float | None = None) -> int:
    """Index of the best mean validation accuracy; among those within `tie` of it, the fastest. With a budget,
    only points whose mean time per run is within it compete (all of them if none is)."""
    eligible = [i for i, s in enumerate(scores) if budget_s is None or s["wall_mean_s"] <= budget_s]
    eligible = eligible or list(range(len(scores)))
    best = max(scores[i]["val_mean"] for i in eligible)
    tied = [i for i in eligible if scores[i]["val_mean"] >= best - tie]
    return min(tied, key=lambda i: (scores[i]["wall_mean_s"], -scores[i]["val_mean"]))


def coin_time_per_run(dataset: str, size: SearchSize, workers: int) -> dict[str, Any]:
    """COIN's row (the protocol's `coin-explicit`, with this search's training) on the screening splits, one
    initialisation each, run like the points: its mean wall time per run is the budget's unit."""
    spec = next(m for m in model_specs(dataset, COIN_ROWS[dataset])
                if m.key == "coin-explicit")
    training = Training(max_epochs=size.max_epochs)
    units = [Unit(dataset, False, spec, s, (0,), training, phase="search") for s in range(size.screen_splits)]
    walls = [records[0]["wall_s"] for records in _execute(units, workers)]
    return {"model": spec.label, "splits": list(range(size.screen_splits)), "wall_s": walls,
            "wall_mean_s": statistics.fmean(walls)}


def search(dataset: str, size: SearchSize, workers: int, start: Point | None = None,
           factors: tuple[Factor, ...] = FACTORS, budget_x: float | None = None) -> dict[str, Any]:
    """The greedy screen from `start` (default BASE), then the refinement of its best points (see the module
    docstring). budget_x: only points within budget_x × COIN's time per run (`coin_time_per_run`) compete."""
    t = task(dataset, False)
    s = Search(dataset, size, workers, info={"lam_max": t.lam_max, "coin_time": COIN_TIME.get(dataset, 0.0)})
    screen = range(size.screen_splits)
    budget: dict[str, Any] | None = None
    if budget_x is not None:
        budget = {"times_coin": budget_x, "coin": coin_time_per_run(dataset, size, workers)}
        budget["budget_s"] = budget_x * budget["coin"]["wall_mean_s"]
        print(f"[search] {dataset}: budget {budget['budget_s']:.1f} s per run ({budget_x:g}× COIN's "
              f"{budget['coin']['wall_mean_s']:.2f} s)", flush=True)
    budget_s = None if budget is None else budget["budget_s"]
    current = dict(BASE if start is None else start)
    steps = []
    for factor in factors[:size.factors]:
        tried, refused = [], []
        for label, apply in factor.values:
            p = apply(current, s.info)
            why = _valid(p, s.info)
            if why:
                refused.append({"value": label, "why": why})
            else:
                tried.append((label, p))
        scores = s.evaluate([p for _, p in tried], screen)
        best = pick(scores, budget_s=budget_s)
        current = tried[best][1]
        values = [{"value": label, **sc} for (label, _), sc in zip(tried, scores)]
        steps.append({"factor": factor.name, "values": values, "refused": refused, "chosen": tried[best][0]})
    screened = {point_key(p): s.score(p, screen) for (key, split), _ in s.runs.items()
                for p in [json.loads(key)] if split in screen}
    top = sorted(screened.values(), key=lambda sc: (-sc["val_mean"], sc["wall_mean_s"]))[:size.refine]
    refine = range(size.refine_splits)
    refined = s.evaluate([sc["point"] for sc in top], refine)
    chosen = refined[pick(refined, budget_s=budget_s)]
    return {"dataset": dataset, "lam_max": t.lam_max, "start": dict(BASE if start is None else start),
            "screen_splits": list(screen), "steps": steps,
            "refine_splits": list(refine), "refined": refined, "chosen": chosen, "budget": budget,
            "runs": [{"point": json.loads(k), **r} for (k, _), r in s.runs.items()]}


def _execute(units: list[Unit], workers: int) -> Iterator[list[dict[str, Any]]]:
    """Units in this process or a pool of forked ones (one torch thread each), in order; test accuracy removed."""
    def clean(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [{k: v for k, v in r.items() if k != "test_acc"} for r in records]
    if workers <= 1:
        for u in units:
            yield clean(run_unit(u))
        return
    from experiments.graph.run import _init_worker
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("fork"),
                             initializer=_init_worker) as pool:
        for records in pool.map(run_unit, units):
            yield clean(records)


def _parse(argv: list[str] | None) -> argparse.Namespace:
    p = runner_parser(__doc__, "tiny search for CI (seconds)", "not defined: the reduced search is the search")
    p.add_argument("--datasets", nargs="+", choices=("cora", "citeseer"), help="default: both (smoke: cora)")
    p.add_argument("--workers", type=int, default=1, help="processes (one run per task; default 1)")
    stage = p.add_mutually_exclusive_group()
    stage.add_argument("--stage2", type=Path, default=None, metavar="RECORD",
                       help="stage 2: start each dataset from the chosen point of this stage-1 record and try the "
                            "STAGE2 factors (writes cdnet_search_stage2[_smoke].json)")
    stage.add_argument("--stage3", type=Path, default=None, metavar="RECORD",
                       help="stage 3: start from the chosen point of this stage-2 record and try the STAGE3 "
                            "factors, consistency regularisation (writes cdnet_search_stage3[_smoke].json)")
    p.add_argument("--merge", action="store_true",
                   help="keep the other datasets of an existing record (datasets run now replace theirs)")
    return p.parse_args(argv)


def merge(old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """`new` with the datasets of `old` that it did not run; commands, wall times and workers of both kept."""
    kept = {ds: res for ds, res in old["datasets"].items() if ds not in new["datasets"]}
    if not kept:
        return new
    return {**new, "datasets": {**kept, **new["datasets"]}, "wall_s": old["wall_s"] + new["wall_s"],
            "command": "; ".join((old["command"], new["command"])),
            "workers": max(old["workers"], new["workers"])}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = _parse(argv)
    mode = mode_of(args)
    if mode == "full":
        raise SystemExit("search_cdnet has no --full mode: the reduced search is the search")
    stage, record = (3, args.stage3) if args.stage3 else ((2, args.stage2) if args.stage2 else (1, None))
    factors, sizes, added, budget_x = STAGES[stage]
    size = sizes[mode]
    datasets = tuple(args.datasets) if args.datasets else size.datasets
    starts: dict[str, Point] = {}
    if record is not None:
        flag = f"--stage{stage}"
        if not record.is_file():
            raise SystemExit(f"{flag}: no stage-{stage - 1} record at {record}")
        previous = json.loads(record.read_text())
        if previous.get("stage", 1) != stage - 1:
            raise SystemExit(f"{flag}: {record} is a stage-{previous.get('stage', 1)} record; it takes a "
                             f"stage-{stage - 1} record")
        missing = [ds for ds in datasets if ds not in previous.get("datasets", {})]
        if missing:
            raise SystemExit(f"{flag}: {record} has no search of {', '.join(missing)}")
        # settings the earlier stage did not have take their defaults, so that a point is named one way only
        starts = {ds: {**added, **previous["datasets"][ds]["chosen"]["point"]} for ds in datasets}
    start_info, start = machine_info(), time.perf_counter()
    results = {}
    for ds in datasets:
        t0 = time.perf_counter()
        results[ds] = search(ds, size, args.workers, starts.get(ds), factors, budget_x)
        results[ds]["wall_s"] = time.perf_counter() - t0
    payload = {
        "mode": mode,
        "command": "python -m experiments.graph.search_cdnet" + "".join(
            f" {a}" for a in (sys.argv[1:] if argv is None else argv)),
        "machine": start_info, "loadavg_end": machine_info()["loadavg"], "wall_s": time.perf_counter() - start,
        "workers": args.workers, "base": BASE, "tie": TIE, "stage": stage,
        **({f"stage{stage - 1}_record": str(record)} if record is not None else {"stage1_record": None}),
        "factors": [{"name": f.name, "values": [v for v, _ in f.values]} for f in factors[:size.factors]],
        "size": {"screen_splits": size.screen_splits, "refine_splits": size.refine_splits, "refine": size.refine,
                 "max_epochs": size.max_epochs, "inits": 1, "init_seed": "1000·split"},
        "training": vars(Training(max_epochs=size.max_epochs)),
        "datasets": results,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / artefact("cdnet_search" if stage == 1 else f"cdnet_search_stage{stage}", mode, "json")
    if args.merge and path.exists():
        payload = merge(json.loads(path.read_text()), payload)
    path.write_text(json.dumps(payload, indent=1, default=str))
    print(f"wrote {path} ({payload['wall_s']:.0f} s)")
    return payload


if __name__ == "__main__":
    main()
