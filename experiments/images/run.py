"""``python -m experiments.images.run [--smoke|--full] [--out DIR]``: semi-supervised digits and MNIST.

``--report-only`` rebuilds the markdown from the json.

Writes ``DIR/images.md`` (``images_<mode>.md`` in smoke and full mode) and ``DIR/images_<mode>.json`` (every run's
record, and the graph model's γ chosen on validation accuracy per dataset and labels per class). Default DIR:
experiments/results. Modes: smoke (CI, seconds), reduced (default: digits 3 seeds, MNIST 10,000 points 2 seeds;
the graph model at every γ of the grid), full (digits 5 seeds, MNIST all 70,000 points 3 seeds).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import sys
import time
from pathlib import Path
from typing import Any

import torch

from cdflow.errors import ConfigError
from experiments.common import artefact, mode_of, runner_parser
from experiments.images.config import EXTRA_KINDS, KINDS, Settings, settings_for
from experiments.images.digits import run_digits
from experiments.images.mnist import run_mnist
from experiments.images.mnist_data import mnist_points, pca_features
from experiments.images.report import machine_info, markdown, summarise
from experiments.images.selection import select


def _parse(argv: list[str] | None) -> argparse.Namespace:
    p = runner_parser(__doc__, "tiny run for CI (< 20 s)", "more seeds, all 70,000 MNIST points")
    p.add_argument("--only", choices=("digits", "mnist"), default=None, help="run one dataset only")
    p.add_argument("--kinds", nargs="+", choices=(*KINDS, *EXTRA_KINDS), default=None,
                   help="run only these models (default: the mode's models)")
    p.add_argument("--labels", nargs="+", type=int, default=None,
                   help="run only these labels per class (default: the mode's); with --merge, one budget at a time "
                        "keeps what finished")
    p.add_argument("--report-only", action="store_true",
                   help="rebuild DIR's markdown from DIR/images_<mode>.json (its settings, choice and summary); "
                        "runs nothing")
    p.add_argument("--merge", action="store_true",
                   help="add to the runs of DIR/images_<mode>.json (replacing runs with the same dataset, labels, "
                        "model, seed and graph grid point) instead of starting afresh; the choice on validation is "
                        "made again over all runs")
    return p.parse_args(argv)


def _kinds(args: argparse.Namespace, settings: Any, dataset: str) -> list[str]:
    """The models to run on `dataset`: --kinds, else the mode's (plus none_default on digits)."""
    if args.kinds is not None:
        return [k for k in args.kinds if dataset == "digits" or k not in EXTRA_KINDS]
    extra = list(EXTRA_KINDS) if dataset == "digits" and settings.digits_default_none else []
    return [*settings.kinds, *extra]


def _points(kind: str, settings: Any) -> list[tuple[float | None, int | None]]:
    """The (γ, n_steps) a model is trained at: every point of the mode's grid for graph, the model's own else."""
    if kind == "graph":
        return [(g, n) for g in settings.gamma_grid for n in settings.steps_grid]
    return [(None, None)]


def _key(r: dict[str, Any]) -> tuple:
    return r["dataset"], r["labels_per_class"], r["kind"], r["seed"], r.get("gamma"), r.get("n_steps")


def _log(r: dict[str, Any]) -> None:
    test = f" test {r['test_acc']:.3f}" if "test_acc" in r else ""
    point = f" γ={r['gamma']:g} n={r['n_steps']}" if "gamma" in r else ""
    print(f"{r['dataset']:6s} L={r['labels_per_class']:<3d} seed {r['seed']} {r['kind']:12s}{point} "
          f"val {r['val_acc']:.3f} unlabelled {r['unlabelled_acc']:.3f}{test} ({r['wall_s']:.1f} s)", flush=True)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = _parse(argv)
    settings = settings_for(mode_of(args))
    if args.report_only:
        if args.only or args.kinds or args.labels or args.merge:
            raise ConfigError("--report-only runs nothing: --only, --kinds, --labels and --merge do not apply")
        payload = json.loads((args.out / f"images_{settings.mode}.json").read_text())
        settings = Settings(**{k: tuple(v) if isinstance(v, list) else v for k, v in payload["settings"].items()})
        (args.out / artefact("images", settings.mode, "md")).write_text(markdown(payload, settings))
        return payload
    if args.labels is not None:
        if any(n < 1 for n in args.labels):
            raise ConfigError(f"--labels takes labels per class ≥ 1, got {args.labels}")
        settings = dataclasses.replace(settings, labels=tuple(args.labels))
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    info = machine_info()
    start = time.perf_counter()
    runs: list[dict[str, Any]] = []
    if args.only in (None, "digits"):
        kinds = _kinds(args, settings, "digits")
        for labels in settings.labels:
            for seed in settings.seeds:
                for kind in kinds:
                    for gamma, n_steps in _points(kind, settings):
                        runs.append(run_digits(kind, labels, seed, settings, gamma, n_steps))
                        _log(runs[-1])
    kinds = _kinds(args, settings, "mnist")
    if args.only in (None, "mnist") and kinds:
        for seed in settings.mnist_seeds:
            x, y = mnist_points(settings.mnist_points, seed)
            z = pca_features(x, settings.pca_dim, seed)
            for labels in settings.labels:
                for kind in kinds:
                    for gamma, n_steps in _points(kind, settings):
                        runs.append(run_mnist(kind, labels, seed, z, y, settings, gamma, n_steps))
                        _log(runs[-1])
    bad = [r for r in runs if not math.isfinite(r["unlabelled_acc"])]
    if bad:
        raise RuntimeError(f"non-finite accuracies in {len(bad)} runs: {bad[:2]}")
    argv_str = " ".join(sys.argv[1:]) if argv is None else " ".join(argv)
    command = f"python -m experiments.images.run {argv_str}".strip()
    json_path = out / f"images_{settings.mode}.json"
    commands, wall = [command], time.perf_counter() - start
    if args.merge and json_path.is_file():
        old = json.loads(json_path.read_text())
        if any("val_acc" not in r for r in old["runs"]):
            raise ConfigError(f"{json_path} holds runs without a validation accuracy (recorded before the "
                              "validation split): run without --merge")
        new_keys = {_key(r) for r in runs}
        runs = [r for r in old["runs"] if _key(r) not in new_keys] + runs
        commands = [*old.get("commands", [old["command"]]), command]
        wall += old.get("wall_s", 0.0)
        info = old["machine"]
    # the settings record the labels per class of every run kept (several --labels invocations merged)
    settings = dataclasses.replace(settings, labels=tuple(sorted({r["labels_per_class"] for r in runs})))
    selection = select(runs)
    payload = {
        "mode": settings.mode, "seeds": list(settings.seeds), "mnist_seeds": list(settings.mnist_seeds),
        "command": command, "commands": commands,
        "env": {k: os.environ.get(k) for k in ("OMP_NUM_THREADS", "OMP_WAIT_POLICY")},
        "machine": info, "loadavg_end": [round(v, 2) for v in os.getloadavg()],
        "wall_s": wall, "settings": settings.__dict__,
        "selection": selection, "summary": summarise(runs, selection), "runs": runs,
    }
    payload["settings"] = {k: (list(v) if isinstance(v, tuple) else v) for k, v in payload["settings"].items()}
    md = out / artefact("images", settings.mode, "md")
    json_path.write_text(json.dumps(payload, indent=1))
    md.write_text(markdown(payload, settings))
    print(f"wrote {md} and images_{settings.mode}.json ({payload['wall_s']:.1f} s)")
    return payload


if __name__ == "__main__":
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    main()
