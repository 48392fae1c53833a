"""`make reproduce-mnist`: the MNIST ODE-Net (experiments/configs/mnist.yaml) trained by `cdflow fit`, its raw
record and a report rendered from that record only.

The default mode is the config as it stands (5 epochs: about 6 CPU-minutes an epoch on 2 cores); ``--smoke``
trains a few batches for one epoch to check the pipeline. Writes ``mnist.json`` (per-epoch validation
accuracy and loss, test accuracy and loss, NFE per step, fit and epoch times, the command, the machine) and
``mnist.md`` (``mnist_smoke.*`` in smoke mode) into the results folder.
"""

from __future__ import annotations

import csv
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from experiments.common import RESULTS, artefact, machine_info, mode_of, provenance, runner_parser
from experiments.mnist.report import render

CONFIG = Path(__file__).resolve().parents[1] / "configs" / "mnist.yaml"
SMOKE = ["--trainer.max_epochs", "1", "--trainer.limit_train_batches", "4", "--trainer.limit_val_batches", "2",
         "--trainer.limit_test_batches", "2"]


def fit_args(root: Path, smoke: bool) -> list[str]:
    """The `cdflow fit` arguments: the config, a run folder of this reproduction, no figures, no progress bar."""
    return ["fit", "--config", str(CONFIG), "--trainer.default_root_dir", str(root),
            "--trainer.enable_progress_bar", "false", "--trainer.callbacks", "[]", *(SMOKE if smoke else [])]


def read_epochs(metrics_csv: Path) -> list[dict[str, float]]:
    """Per-epoch validation metrics and the NFE of the last logged training step of each epoch."""
    with open(metrics_csv, newline="") as fh:
        rows = list(csv.DictReader(fh))
    epochs: dict[int, dict[str, float]] = {}
    for row in rows:
        if row.get("epoch", "") == "":
            continue
        entry = epochs.setdefault(int(float(row["epoch"])), {"epoch": int(float(row["epoch"]))})
        for key in ("val/acc", "val/loss", "val/nfe_forward", "train/acc", "train/nfe_forward", "train/nfe_backward",
                    "time/epoch_s"):
            if row.get(key, "") != "":
                entry[key] = float(row[key])
    return [epochs[e] for e in sorted(epochs)]


def record(cli: Any, args: list[str], fit_seconds: float, smoke: bool, machine: dict[str, Any]) -> dict[str, Any]:
    """The raw record of one reproduction run."""
    log_dir = Path(cli.trainer.logger.log_dir)
    test = {k: float(v) for r in (cli.test_results or []) for k, v in r.items()}
    return {
        "mode": "smoke" if smoke else "reduced",
        "config": str(CONFIG.relative_to(CONFIG.parents[2])),
        "command": "cdflow " + " ".join(args).replace(str(CONFIG.parents[2]) + os.sep, ""),
        "run_folder": str(Path(cli.trainer.default_root_dir)),
        "epochs": read_epochs(log_dir / "metrics.csv"),
        "test": test,
        "fit_seconds": fit_seconds,
        "train_examples": len(cli.datamodule.datasets["train"]),
        "val_examples": len(cli.datamodule.datasets["val"]),
        "test_examples": len(cli.datamodule.datasets["test"]),
        "parameters": sum(p.numel() for p in cli.model.parameters()),
        "solver": dict(cli.model.hparams["solver"]),
        "machine": machine,
        "env": {k: os.environ.get(k, "") for k in ("OMP_NUM_THREADS", "OMP_WAIT_POLICY")},
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = runner_parser(__doc__, "one epoch of 4 batches (checks the pipeline)", "same as the default (the config)")
    p.add_argument("--root", type=Path, default=Path("runs/reproduce-mnist"), help="run folder root")
    args = p.parse_args(argv)
    mode = mode_of(args)
    smoke = mode == "smoke"
    os.environ["WANDB_MODE"] = "disabled"  # metrics from the CSV log
    from cdflow.cli import run_cli

    cli_args = fit_args(args.root, smoke)
    machine = machine_info()
    started = time.perf_counter()
    cli = run_cli(cli_args)
    rec = record(cli, cli_args, time.perf_counter() - started, smoke, machine)
    rec["loadavg_end"] = [round(v, 2) for v in os.getloadavg()]
    out = args.out if args.out is not None else RESULTS
    out.mkdir(parents=True, exist_ok=True)
    stem_mode = "smoke" if smoke else "reduced"
    (out / artefact("mnist", stem_mode, "json")).write_text(json.dumps(rec, indent=1) + "\n")
    (out / artefact("mnist", stem_mode, "md")).write_text(render(rec, provenance))
    acc = rec["test"].get("test/acc", float("nan"))
    print(f"wrote {out / artefact('mnist', stem_mode, 'md')} (test acc {acc:.4f})")
    return rec


if __name__ == "__main__":
    main(sys.argv[1:])
