"""What every experiment's results file shares: the machine it ran on and mean ± std summaries."""

from __future__ import annotations

import argparse
import math
import os
import statistics
from pathlib import Path
from typing import Any

from benchmarks.common import machine


def machine_info() -> dict[str, Any]:
    """CPU model, cores, torch version and threads, and the 1/5/15-minute load average now."""
    return {**machine(), "loadavg": [round(v, 2) for v in os.getloadavg()]}


def mean_std(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for one value; NaN for none)."""
    if not values:
        return math.nan, math.nan
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def provenance(commands: list[str], m: dict[str, Any], loadavg_end: list[float] | None = None,
               env: dict[str, str] | None = None) -> list[str]:
    """The markdown lines every results file carries: the exact command(s), the environment and the machine."""
    lines = ["Command:", "", "```", *commands, "```", ""]
    if env is not None:
        lines += ["Environment: " + ", ".join(f"{k}={v}" for k, v in env.items()) + ".", ""]
    end = f", at end {loadavg_end}" if loadavg_end is not None else ""
    shared = " (CPU shared with other jobs: times are indicative)" if loadavg_end is not None else \
        " (CPU shared with other jobs)"
    lines += [f"Machine: {m['cpu']}, {m['cores']} cores (torch threads {m['torch_threads']}), torch {m['torch']}, "
              f"python {m['python']}; load average at start {m['loadavg']}{end}{shared}.", ""]
    return lines


RESULTS = Path(__file__).resolve().parent / "results"


def artefact(stem: str, mode: str, ext: str) -> str:
    """A results file's name: `stem.ext` for the default (reduced) protocol, `stem_<mode>.ext` otherwise
    (`graph_full.md`, `toys_smoke.md`), so no mode overwrites another's report."""
    return f"{stem}.{ext}" if mode == "reduced" else f"{stem}_{mode}.{ext}"


def runner_parser(doc: str | None, smoke_help: str, full_help: str) -> argparse.ArgumentParser:
    """The options every experiment runner shares: --smoke | --full (default: the reduced protocol) and --out."""
    p = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--smoke", action="store_true", help=smoke_help)
    mode.add_argument("--full", action="store_true", help=full_help)
    p.add_argument("--out", type=Path, default=RESULTS, help="results folder (default experiments/results)")
    return p


def mode_of(args: argparse.Namespace) -> str:
    """``smoke``, ``full`` or ``reduced`` from the parsed --smoke / --full flags."""
    return "smoke" if args.smoke else "full" if args.full else "reduced"
