"""``python -m experiments.toys.run [--smoke|--full] [--out DIR]``: toys table, XOR l/d, figures.

Writes ``DIR/toys.md`` (``toys_full.md`` with --full), ``DIR/toys_<mode>.json`` (every run's record) and
``DIR/figures/toys_*.png`` (``toys_*_full.png``).
Default DIR: experiments/results. Modes: smoke (CI, seconds), reduced (default, 3 seeds), full (10 seeds).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path
from typing import Any

import torch

from experiments.common import artefact, mode_of, runner_parser
from experiments.toys import figures
from experiments.toys.config import DATASETS, settings_for
from experiments.toys.report import machine_info, markdown, summarise
from experiments.toys.train import prepare, train_run
from experiments.toys.xor import xor_curve


def _parse(argv: list[str] | None) -> argparse.Namespace:
    p = runner_parser(__doc__, "tiny run for CI (< 15 s)", "10 seeds (the paper's count)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = _parse(argv)
    settings = settings_for(mode_of(args))
    out: Path = args.out
    (out / "figures").mkdir(parents=True, exist_ok=True)
    info = machine_info()
    start = time.perf_counter()
    runs: list[dict] = []
    cases: dict[str, dict[str, Any]] = {}
    for ds in DATASETS:
        for seed in settings.seeds:
            prepared = prepare(ds, seed, settings, diffusion=True)
            for diffusion in (False, True):
                prep = prepared if diffusion else {**prepared, "propagator": None, "check": None}
                for protocol in ("split", "all"):
                    record, model = train_run(ds, seed, diffusion, protocol, settings, prep)
                    runs.append(record)
                    print(f"{ds:8s} seed {seed} {'diff' if diffusion else 'none':4s} {protocol:5s} "
                          f"acc {record['test_acc_final']:.3f} ({record['wall_s']:.2f} s)", flush=True)
                    if seed == settings.seeds[0] and protocol == "split":
                        case = cases.setdefault(ds, {"x": prepared["x"], "y": prepared["y"], "models": {},
                                                     "accs": {}, "laplacian": prepared["laplacian"]})
                        case["models"][diffusion] = model
                        case["accs"][diffusion] = record["test_acc_final"]
    keep = (0, 5, settings.xor.n_steps)
    curves = [xor_curve(seed, settings.xor, keep) for seed in settings.seeds]
    summary = summarise(runs, curves)
    fig_start = time.perf_counter()
    mode = settings.mode
    boundaries = out / "figures" / artefact("toys_decision_boundaries", mode, "png")
    figures.decision_boundaries(cases, settings.grid, boundaries)
    figures.trajectories(cases, out / "figures" / artefact("toys_trajectories", mode, "png"))
    figures.xor_figure(curves, out / "figures" / artefact("toys_xor_ld", mode, "png"))
    figure_s = time.perf_counter() - fig_start
    json_name = f"toys_{settings.mode}.json"
    command = "python -m experiments.toys.run" + "".join(f" {a}" for a in (sys.argv[1:] if argv is None else argv))
    payload = {
        "mode": settings.mode, "seeds": list(settings.seeds), "command": command, "machine": info,
        "wall_s": time.perf_counter() - start, "figure_wall_s": figure_s, "json_name": json_name,
        "summary": summary, "runs": runs,
        "xor": [{k: c[k] for k in ("seed", "l", "d", "ratio")} for c in curves],
    }
    bad = [r for r in runs if not all(math.isfinite(v) for v in r["history"]["loss"])]
    if bad:
        print(f"warning: {len(bad)} runs had a non-finite loss", file=sys.stderr)
    (out / json_name).write_text(json.dumps(payload, indent=1))
    md = out / artefact("toys", mode, "md")
    md.write_text(markdown(payload, settings, curves))
    print(md.read_text())
    return payload


if __name__ == "__main__":
    torch.set_num_threads(1)
    main()
