"""``python -m experiments.feynman_kac.run [--smoke|--full] [--out DIR]``: the Feynman–Kac check.

Writes ``DIR/feynman_kac.md`` (``feynman_kac_full.md`` with --full), ``DIR/feynman_kac_<mode>.json``
(every run's record and the curves) and
``DIR/figures/fk_*.png``. Default DIR: experiments/results. Modes: smoke (CI, seconds), reduced (default,
3 seeds), full (10 seeds, M up to 10⁵).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import torch

from experiments.common import artefact, machine_info, mode_of, runner_parser
from experiments.feynman_kac import figures
from experiments.feynman_kac.experiment import run_experiment, summarise
from experiments.feynman_kac.problem import Problem, settings_for
from experiments.feynman_kac.report import markdown


def _parse(argv: list[str] | None) -> argparse.Namespace:
    p = runner_parser(__doc__, "tiny run for CI (< 15 s)", "10 seeds, M up to 100000")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = _parse(argv)
    settings = settings_for(mode_of(args))
    problem = Problem()
    out: Path = args.out
    (out / "figures").mkdir(parents=True, exist_ok=True)
    info = machine_info()
    start = time.perf_counter()
    result = run_experiment(problem, settings)
    summary = summarise(result, settings)
    mode = settings.mode
    figures.gap_figure(result, summary, problem, settings, out / "figures" / artefact("fk_gap", mode, "png"))
    figures.validation_figure(result, out / "figures" / artefact("fk_pde_validation", mode, "png"))
    json_name = f"feynman_kac_{settings.mode}.json"
    command = "python -m experiments.feynman_kac.run" + "".join(
        f" {a}" for a in (sys.argv[1:] if argv is None else argv))
    payload = {
        "mode": settings.mode, "seeds": list(settings.seeds), "command": command, "machine": info,
        "problem": problem.__dict__, "settings": {k: v for k, v in settings.__dict__.items()},
        "wall_s": time.perf_counter() - start, "json_name": json_name, "summary": summary, "result": result,
    }
    (out / json_name).write_text(json.dumps(payload, indent=1))
    md = out / artefact("feynman_kac", mode, "md")
    md.write_text(markdown(payload, problem, settings))
    print(md.read_text())
    return payload


if __name__ == "__main__":
    torch.set_num_threads(1)
    main()
