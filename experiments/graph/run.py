"""``python -m experiments.graph.run [--smoke|--full] [--out DIR] [--workers W] ...``: node classification.

Cora and Citeseer, random splits (LCC; 20 train / 30 validation per class) and the Planetoid public split.
Modes: smoke (CI: Cora, 1 split, 3 epochs), reduced (default: 10 splits × 3 initialisations), full (the
paper's 100 × 20). Writes ``DIR/graph[_<mode>].json`` (every run) and ``DIR/graph[_<mode>].md`` (tables).
``--report-only`` rebuilds the markdown from the json (and a newer ``graph_timing.json``, if any).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import sys
import time
from collections.abc import Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import torch

from cdflow.training.alloc import keep_freed_memory
from experiments.common import artefact, machine_info, mode_of, runner_parser
from experiments.graph import report, timing
from experiments.graph.configs import COIN_CORA, ModelSpec, Protocol, model_specs, protocol
from experiments.graph.data import SEED_RULES
from experiments.graph.markdown import markdown
from experiments.graph.units import Unit, run_unit

DEFAULT_CITESEER_COIN = {"tau": 0.35, "n_steps": 20}


def _parse(argv: list[str] | None) -> argparse.Namespace:
    p = runner_parser(__doc__, "tiny run for CI (seconds)", "100 splits × 20 initialisations (the paper's)")
    p.add_argument("--datasets", nargs="+", choices=("cora", "citeseer"), help="default: both (smoke: cora)")
    p.add_argument("--models", nargs="+", help="row keys to run (default: all), e.g. coin-explicit gcn")
    p.add_argument("--splits", type=int, help="random splits per row (overrides the mode)")
    p.add_argument("--inits", type=int, help="initialisations per split (overrides the mode)")
    p.add_argument("--no-public", action="store_true", help="skip the Planetoid public split")
    p.add_argument("--init-seeds", choices=SEED_RULES, default="paired",
                   help="initialisation i of split s: paired = seed 1000·s + i (default, as the committed results); "
                        "authors = the Diff-ResNet reference's seed RandomState(split seed) continued after drawing "
                        "the split, .randint(0, 10**6, inits)[i], and Diff-ResNet weights drawn as its nn.Linear "
                        "layers (each run pairs with the reference's run of that split and initialisation)")
    p.add_argument("--tune", choices=("coin", "none"), default="coin",
                   help=f"run Citeseer's COIN search (none: COIN {DEFAULT_CITESEER_COIN})")
    p.add_argument("--no-timing", action="store_true", help="skip the single-run timing")
    p.add_argument("--workers", type=int, default=1, help="processes (one split per task; default 1)")
    p.add_argument("--report-only", action="store_true", help="rebuild the markdown from the json")
    p.add_argument("--merge", action="store_true",
                   help="merge into the existing json: runs of the (dataset, split, model) groups run now replace "
                        "the old ones, the rest are kept")
    return p.parse_args(argv)


def _init_worker() -> None:
    torch.set_num_threads(1)
    keep_freed_memory()


def _execute(units: list[Unit], workers: int) -> Iterator[list[dict[str, Any]]]:
    """Run units in this process or a pool of forked ones; yields each unit's records as it finishes."""
    if workers <= 1:
        for u in units:
            yield run_unit(u)
        return
    ctx = multiprocessing.get_context("fork")
    with ProcessPoolExecutor(workers, mp_context=ctx, initializer=_init_worker) as pool:
        yield from pool.map(run_unit, units)


def _groups(n: int, size: int) -> Iterable[tuple[int, ...]]:
    for start in range(0, n, size):
        yield tuple(range(start, min(n, start + size)))


def plan(proto: Protocol, dataset: str, specs: list[ModelSpec], public: bool) -> list[Unit]:
    """Units of one dataset: every row × split × group of initialisations."""
    units = []
    wanted = proto.models
    if public and proto.public_models is not None:
        wanted = tuple(k for k in proto.public_models if proto.models is None or k in proto.models)
    for spec in specs:
        if wanted is not None and spec.key not in wanted:
            continue
        n_inits = proto.public_inits if public else proto.n_inits
        n_inits = min(n_inits, spec.max_inits or n_inits)
        splits = [0] if public else range(max(1, round(proto.n_splits * spec.split_fraction)))
        for split in splits:
            for inits in _groups(n_inits, spec.max_members):
                units.append(Unit(dataset, public, spec, split, inits, proto.training, seed_rule=proto.init_seeds))
    return units


def tune_units(proto: Protocol, dataset: str) -> list[Unit]:
    """Citeseer's COIN search (selection on validation accuracy only): explicit COIN for every (τ, steps)."""
    specs = [model_specs(dataset, {"tau": tau, "n_steps": steps})[0]
             for tau in proto.tune_grid["tau"] for steps in proto.tune_grid["n_steps"]]
    units = []
    for spec in specs:
        for split in range(proto.tune_splits):
            for inits in _groups(proto.tune_inits, spec.max_members):
                units.append(Unit(dataset, False, spec, split, inits, proto.training, phase="tune",
                                  seed_rule=proto.init_seeds))
    return units


def _log(records: list[dict[str, Any]]) -> None:
    r0 = records[0]
    accs = " ".join(f"{r['test_acc']:.3f}" for r in records)
    print(f"[{r0['phase']}] {r0['dataset']:8s} {r0['split_protocol']:6s} {r0['model']:14s} split {r0['split']:3d} "
          f"test {accs}  epochs {[r['epochs'] for r in records]}  {r0['batch_wall_s']:.1f} s", flush=True)


def run(proto: Protocol, workers: int, public: bool, tune: str) -> tuple[list[dict], dict[str, Any]]:
    runs: list[dict] = []
    coin = {"cora": dict(COIN_CORA), "citeseer": dict(DEFAULT_CITESEER_COIN)}
    chosen: dict[str, Any] = {}
    tune_ds = "citeseer" if "citeseer" in proto.datasets else proto.datasets[0] if proto.name == "smoke" else None
    if tune != "none" and tune_ds is not None:
        for records in _execute(tune_units(proto, tune_ds), workers):
            _log(records)
            runs.extend(records)
        chosen, _ = report.tuning_table(runs)
        chosen["dataset"] = tune_ds
        if tune_ds == "citeseer" and "tau" in chosen:
            coin["citeseer"] = {"tau": chosen["tau"], "n_steps": chosen["n_steps"]}
    units = []
    for ds in proto.datasets:
        specs = model_specs(ds, coin[ds])
        units += plan(proto, ds, specs, public=False)
        if public:
            units += plan(proto, ds, specs, public=True)
    for records in _execute(units, workers):
        _log(records)
        runs.extend(records)
    return runs, {"coin": coin, "tuning": chosen, "tuned": tune}


def _group(r: dict[str, Any]) -> tuple:
    """A table row's runs: a row has one setting, so a merged run of the row replaces its runs of any other
    setting (keyed on the settings too, a re-tuned row kept its old runs beside the new ones)."""
    return r["phase"], r["dataset"], r["split_protocol"], r["model"]


def merge(old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """`old` with the runs of every group present in `new` replaced by new's; summaries recomputed. Refuses
    runs of another initialisation seed rule (their rows would no longer be paired by initialisation)."""
    rules = [p.get("protocol", {}).get("init_seeds", "paired") for p in (old, new)]
    if rules[0] != rules[1]:
        raise SystemExit(f"--merge: the existing json used --init-seeds {rules[0]}, this run {rules[1]}; "
                         "run with the same rule or write to another --out")
    groups = {_group(r) for r in new["runs"]}
    runs = [r for r in old["runs"] if _group(r) not in groups] + new["runs"]
    chosen = dict(old.get("chosen", {}))
    tuned = new.get("chosen", {}).get("tuned", "none")
    if tuned == "coin":
        chosen["coin"] = new["chosen"]["coin"]
        chosen["tuning"] = new["chosen"]["tuning"]
    summary = report.summarise(runs)
    merged = {**old, "runs": runs, "chosen": chosen, "summary": summary,
              "full_protocol_estimate": report.full_protocol_estimate(summary),
              "wall_s": old["wall_s"] + new["wall_s"], "loadavg_end": new["loadavg_end"]}
    merged["merged"] = old.get("merged", []) + [{"command": new["command"], "wall_s": new["wall_s"],
                                                  "loadavg_start": new["machine"]["loadavg"],
                                                  "groups": sorted({"/".join(g[:4]) for g in groups})}]
    if "timing" in new:
        merged["timing"] = new["timing"]
    return merged


def _attach_full_run(payload: dict[str, Any], out: Path, json_name: str) -> None:
    """The measured full-protocol Cora COIN run for the floors: this payload's own (full mode), or the one
    in `out/graph_full.json` (reduced mode), if there is one."""
    full = out / "graph_full.json"
    if json_name == "graph_full.json":
        payload["full_run"] = report.full_run_summary(payload)
    elif full.exists():
        payload["full_run"] = report.full_run_summary(json.loads(full.read_text()))


def _attach_search(payload: dict[str, Any], out: Path, mode: str) -> None:
    """The continuous net's validation search (`cdnet_search[_stage2|_stage3][_smoke].json` in `out`), for the
    report only."""
    for stem in ("cdnet_search", "cdnet_search_stage2", "cdnet_search_stage3"):
        path = out / artefact(stem, "smoke" if mode == "smoke" else "reduced", "json")
        if path.exists():
            payload[stem] = json.loads(path.read_text())


def _names(mode: str) -> tuple[str, str]:
    return artefact("graph", mode, "json"), artefact("graph", mode, "md")


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = _parse(argv)
    mode = mode_of(args)
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    json_name, md_name = _names(mode)
    if args.report_only:
        payload = json.loads((out / json_name).read_text())
        timing_file = out / "graph_timing.json"
        if timing_file.exists() and timing_file.stat().st_mtime > (out / json_name).stat().st_mtime:
            payload["timing"] = json.loads(timing_file.read_text())
            payload["timing"]["source"] = "graph_timing.json (python -m experiments.graph.timing)"
            (out / json_name).write_text(json.dumps(payload, indent=1))
        _attach_full_run(payload, out, json_name)
        _attach_search(payload, out, payload["mode"])
        (out / md_name).write_text(markdown(payload))
        return payload
    proto = protocol(mode, datasets=tuple(args.datasets) if args.datasets else None, n_splits=args.splits,
                     n_inits=args.inits, public_inits=args.inits, models=tuple(args.models) if args.models else None,
                     init_seeds=args.init_seeds)
    keep_freed_memory()
    start_info = machine_info()
    start = time.perf_counter()
    runs, chosen = run(proto, args.workers, public=not args.no_public, tune=args.tune)
    wall = time.perf_counter() - start
    summary = report.summarise(runs)
    payload: dict[str, Any] = {
        "mode": mode,
        "command": "python -m experiments.graph.run" + "".join(f" {a}" for a in (sys.argv[1:] if argv is None
                                                                                  else argv)),
        "protocol": {"name": proto.name, "datasets": proto.datasets, "n_splits": proto.n_splits,
                     "n_inits": proto.n_inits, "public_inits": proto.public_inits, "tune_splits": proto.tune_splits,
                     "tune_inits": proto.tune_inits, "tune_grid": proto.tune_grid,
                     "training": vars(proto.training), "init_seeds": proto.init_seeds, "workers": args.workers},
        "machine": start_info,
        "loadavg_end": machine_info()["loadavg"],
        "wall_s": wall,
        "json_name": json_name,
        "chosen": chosen,
        "summary": summary,
        "full_protocol_estimate": report.full_protocol_estimate(summary),
        "runs": runs,
    }
    if proto.timing and not args.no_timing:
        payload["timing"] = timing.measure()
        payload["timing"]["source"] = "measured at the end of this run"
    if args.merge and (out / json_name).exists():
        payload = merge(json.loads((out / json_name).read_text()), payload)
    (out / json_name).write_text(json.dumps(payload, indent=1))
    _attach_full_run(payload, out, json_name)
    _attach_search(payload, out, mode)
    (out / md_name).write_text(markdown(payload))
    print(f"wrote {out / json_name} and {out / md_name} ({wall:.0f} s)")
    return payload


if __name__ == "__main__":
    main()
