"""`make reproduce-rnode`: RNODE (Finlay et al. 2020) against no regularisation, every run a `cdflow fit`.

Digits (experiments/configs/digits.yaml, dopri5 rtol 1e-3): one unregularised run and one run per weight of the
grid (``--model.regularization.kinetic λ --model.regularization.jacobian λ``) with seed 0; λ is chosen on figures
known before any test: among the λ whose forward NFE is at least 1.5× lower than the unregularised run's in the
last validation and the last epoch's training steps, and whose best validation accuracy is within `--val-margin`
points of it, the one of best validation accuracy (`experiments.rnode.report.choose_lambda`). The unregularised
run and the chosen λ are then trained with the other seeds (initialisation and dropout; the data split is fixed),
and the report compares the forward NFE at the end of training (training steps of the last epoch, the last
validation, the test of the tested checkpoint) and the test accuracy of the checkpoint `cdflow fit` tests (its
best-validation one).

MNIST (``--mnist``): the ODE-Net of experiments/configs/mnist.yaml with an adaptive solver for both arms
(dopri5 rtol 1e-3, atol 1e-4 instead of the config's fixed rk4), without regularisation and with each λ of
`MNIST_GRID` (seed 0), λ chosen among them on MNIST's validation figures by the same rule (the weights that suit
the digits' small ODE do not suit MNIST's: 0.01 there, 3e-4 here); ``--mnist-grid`` tries other values,
``--mnist-lambda`` sets one without a choice; ``--mnist-epochs`` and ``--mnist-batches`` reduce it (the
report says so). Expensive on CPU: about 6+ minutes per epoch and arm on 2 cores.

Writes ``rnode.json`` (every run's record) and ``rnode.md`` (rendered from the record only; ``rnode_smoke.*``
with ``--smoke``).
"""

from __future__ import annotations

import csv
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from experiments.common import RESULTS, artefact, machine_info, mode_of, provenance, runner_parser
from experiments.rnode.report import choose_lambda, render

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
ROOT = CONFIGS.parents[1]
GRID = (0.001, 0.003, 0.01, 0.03, 0.1)
SEEDS = (0, 1)
#: λ tried on MNIST (chosen among on MNIST's validation): the grid that chose 3e-4 in experiments/results/rnode.md.
MNIST_GRID = (0.0001, 0.0003, 0.001)
ADAPTIVE = ["--model.solver.method", "dopri5", "--model.solver.rtol", "1e-3", "--model.solver.atol", "1e-4",
            "--model.solver.step_size", "null"]
SMOKE = ["--trainer.max_epochs", "1", "--trainer.limit_train_batches", "2", "--trainer.limit_val_batches", "1",
         "--trainer.limit_test_batches", "1"]


def read_metrics(metrics_csv: Path) -> dict[str, Any]:
    """From a run's CSV log: validation accuracy and NFE per epoch, and the last epoch's training-step NFE and
    regularisation integrals (means over its steps)."""
    with open(metrics_csv, newline="") as fh:
        rows = [r for r in csv.DictReader(fh) if r.get("epoch", "") != ""]
    val = {}
    steps: dict[int, list[dict[str, str]]] = {}
    for r in rows:
        epoch = int(float(r["epoch"]))
        if r.get("val/acc", ""):
            val[epoch] = {"epoch": epoch, "val/acc": float(r["val/acc"]),
                          "val/nfe_forward": float(r["val/nfe_forward"])}
        if r.get("train/nfe_forward", ""):
            steps.setdefault(epoch, []).append(r)
    last = steps[max(steps)] if steps else []

    def mean(key: str) -> float | None:
        values = [float(r[key]) for r in last if r.get(key, "")]
        return statistics.fmean(values) if values else None

    return {
        "epochs": [val[e] for e in sorted(val)],
        "train_nfe_forward_last_epoch": mean("train/nfe_forward"),
        "train_nfe_forward_per_epoch": [statistics.fmean(float(r["train/nfe_forward"]) for r in steps[e])
                                        for e in sorted(steps)],
        "reg_kinetic_last_epoch": mean("train/reg_kinetic"),
        "reg_jacobian_last_epoch": mean("train/reg_jacobian"),
    }


def fit_args(config: Path, root: Path, seed: int, lam: float, extra: list[str]) -> list[str]:
    """The `cdflow fit` arguments of one run."""
    reg = [] if lam == 0 else ["--model.regularization.kinetic", f"{lam:g}", "--model.regularization.jacobian",
                               f"{lam:g}"]
    return ["fit", "--config", str(config), "--seed_everything", str(seed), "--trainer.default_root_dir", str(root),
            "--trainer.enable_progress_bar", "false", "--trainer.callbacks", "[]", "--trainer.log_every_n_steps", "1",
            *extra, *reg]


def one_run(dataset: str, config: Path, root: Path, seed: int, lam: float, extra: list[str],
            reuse: dict[str, dict[str, Any]] | None = None) -> dict[str, Any]:
    """Train and test one arm; its record, or the record of the identical command in `reuse` (the runs of a
    ``--reuse`` record by their command: not trained again)."""
    from cdflow.cli import run_cli

    args = fit_args(config, root / f"{dataset}-lam{lam:g}-seed{seed}", seed, lam, extra)
    command = "cdflow " + " ".join(args).replace(str(ROOT) + os.sep, "")
    if reuse and command in reuse:
        print(f"{dataset} λ={lam:g} seed {seed}: reused from {reuse[command]['reused_from']}", flush=True)
        return dict(reuse[command])
    started = time.perf_counter()
    script_argv, sys.argv = sys.argv, sys.argv[:1]  # this script's flags are not the fit's (Lightning warns)
    try:
        cli = run_cli(args)
    finally:
        sys.argv = script_argv
    wall = time.perf_counter() - started
    test = {k: float(v) for r in (cli.test_results or []) for k, v in r.items()}
    metrics = read_metrics(Path(cli.trainer.logger.log_dir) / "metrics.csv")
    accs = [e["val/acc"] for e in metrics["epochs"]]
    rec = {
        "dataset": dataset, "lambda": lam, "seed": seed,
        "command": command,
        "best_val_acc": max(accs) if accs else None,
        "final_val_nfe_forward": metrics["epochs"][-1]["val/nfe_forward"] if metrics["epochs"] else None,
        "test_acc": test.get("test/acc"), "test_loss": test.get("test/loss"),
        "test_nfe_forward": test.get("test/nfe_forward"), "fit_seconds": wall,
        "solver": dict(cli.model.hparams["solver"]), "regularization": dict(cli.model.hparams["regularization"]),
        **metrics,
    }
    print(f"{dataset} λ={lam:g} seed {seed}: best val {rec['best_val_acc']}, test {rec['test_acc']}, NFE train "
          f"{rec['train_nfe_forward_last_epoch']} val {rec['final_val_nfe_forward']} test {rec['test_nfe_forward']} "
          f"({wall:.0f} s)", flush=True)
    return rec


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = runner_parser(__doc__, "digits: one epoch of 2 batches, grid of 1, one seed (checks the pipeline)",
                      "same as the default")
    p.add_argument("--root", type=Path, default=Path("runs/reproduce-rnode"), help="run folder root")
    p.add_argument("--grid", type=float, nargs="+", default=list(GRID), help="λ = λ_k = λ_j values tried on digits")
    p.add_argument("--seeds", type=int, nargs="+", default=list(SEEDS), help="seeds of the final comparison")
    p.add_argument("--val-margin", type=float, default=0.5, help="validation points λ may cost (selection rule)")
    p.add_argument("--mnist", action="store_true", help="also the MNIST ODE-Net arms (expensive)")
    p.add_argument("--mnist-epochs", type=int, default=5, help="MNIST epochs (the config's 5 by default)")
    p.add_argument("--mnist-lambda", type=float, default=None,
                   help="λ of the MNIST RNODE arm, without a choice (default: chosen on MNIST validation)")
    p.add_argument("--mnist-grid", type=float, nargs="+", default=None,
                   help="λ values tried on MNIST, chosen among on MNIST validation by the digits rule (default: "
                        f"{' '.join(f'{v:g}' for v in MNIST_GRID)})")
    p.add_argument("--reuse", type=Path, default=None, metavar="RECORD",
                   help="take the runs of this earlier record whose command is identical instead of training them "
                        "again (each is marked reused_from)")
    p.add_argument("--mnist-batches", type=float, default=None,
                   help="limit_train_batches of the MNIST runs (a fraction or a count; default: all)")
    args = p.parse_args(argv)
    if not args.mnist and (args.mnist_grid is not None or args.mnist_lambda is not None):
        p.error("--mnist-grid / --mnist-lambda set the MNIST arms: add --mnist to run them")
    if args.mnist_grid is not None and args.mnist_lambda is not None:
        p.error("--mnist-grid and --mnist-lambda exclude each other (a grid chooses λ on MNIST validation)")
    mode = mode_of(args)
    smoke = mode == "smoke"
    grid = args.grid[:1] if smoke else args.grid
    seeds = args.seeds[:1] if smoke else args.seeds
    os.environ["WANDB_MODE"] = "disabled"  # metrics from the CSV logs
    reused_commands: list[str] = []  # the commands of the records whose runs are reused (provenance)
    reuse: dict[str, dict[str, Any]] = {}
    if args.reuse is not None:
        if not args.reuse.is_file():
            p.error(f"--reuse: no record at {args.reuse}")
        try:
            earlier = json.loads(args.reuse.read_text())
            reused_commands = [earlier["command"], *earlier.get("reused_commands", [])]
            earlier_runs = {r["command"]: r for r in earlier["runs"]}
        except (json.JSONDecodeError, UnicodeDecodeError, TypeError, KeyError, AttributeError) as err:
            p.error(f"--reuse: {args.reuse} is not an RNODE record (a rnode.json with a command and runs): "
                    f"{type(err).__name__}: {err}")
        for command, r in earlier_runs.items():
            reuse[command] = {**r, "reused_from": r.get("reused_from", str(args.reuse))}
    machine = machine_info()
    started = time.perf_counter()
    extra = SMOKE if smoke else []
    digits = CONFIGS / "digits.yaml"
    runs = [one_run("digits", digits, args.root, seeds[0], lam, extra, reuse) for lam in (0.0, *grid)]
    chosen = choose_lambda(runs, args.val_margin)
    for seed in seeds[1:]:
        runs += [one_run("digits", digits, args.root, seed, lam, extra, reuse) for lam in (0.0, chosen)
                 if lam is not None]
    mnist_settings = None
    if args.mnist:
        mnist_extra = [*ADAPTIVE, "--trainer.max_epochs", str(args.mnist_epochs)]
        if args.mnist_batches is not None:
            mnist_extra += ["--trainer.limit_train_batches", f"{args.mnist_batches:g}"]
        if smoke:
            mnist_extra += SMOKE
        given = args.mnist_lambda is not None
        mnist_grid = [args.mnist_lambda] if given else list(args.mnist_grid or MNIST_GRID)
        runs += [one_run("mnist", CONFIGS / "mnist.yaml", args.root, 0, lam, mnist_extra, reuse)
                 for lam in (0.0, *mnist_grid)]
        mnist_lam = args.mnist_lambda if given else choose_lambda(runs, args.val_margin, "mnist")
        mnist_settings = {"epochs": 1 if smoke else args.mnist_epochs, "config_epochs": 5, "lambda": mnist_lam,
                          "limit_train_batches": 2 if smoke else args.mnist_batches, "grid": mnist_grid,
                          "lambda_from": "--mnist-lambda" if given else "mnist validation"}
    rec = {
        "mode": mode, "grid": grid, "seeds": seeds, "val_margin": args.val_margin, "chosen_lambda": chosen,
        "mnist": mnist_settings,
        "command": " ".join(["python -m experiments.rnode.run", *(argv if argv is not None else sys.argv[1:])]),
        "reused_commands": reused_commands,
        "wall_seconds": time.perf_counter() - started, "machine": machine,
        "loadavg_end": [round(v, 2) for v in os.getloadavg()],
        "env": {k: os.environ.get(k, "") for k in ("OMP_NUM_THREADS", "OMP_WAIT_POLICY")},
        "runs": runs,
    }
    out = args.out if args.out is not None else RESULTS
    out.mkdir(parents=True, exist_ok=True)
    (out / artefact("rnode", mode, "json")).write_text(json.dumps(rec, indent=1) + "\n")
    (out / artefact("rnode", mode, "md")).write_text(render(rec, provenance))
    print(f"wrote {out / artefact('rnode', mode, 'md')}")
    return rec


if __name__ == "__main__":
    main(sys.argv[1:])
