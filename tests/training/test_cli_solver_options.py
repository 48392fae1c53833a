"""Solver flags that cannot act on the chosen method stop `cdflow fit` before training, naming the reason."""

from __future__ import annotations

import csv
import sys
from pathlib import Path

import pytest

from cdflow.cli import run_cli


@pytest.fixture(autouse=True)
def _quiet(monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "disabled")
    monkeypatch.setattr(sys, "argv", ["cdflow"])


@pytest.mark.parametrize(("flags", "message"), [
    (["--model.solver.method", "rk4", "--model.solver.step_size", "0.25", "--model.solver.adaptive", "true",
      "--model.solver.rtol", "1e-9"], "adaptive=True"),
    (["--model.solver.method", "rk4", "--model.solver.step_size", "0.25", "--model.solver.rtol", "1e-9"],
     "fixed-step method"),
    (["--model.solver.sde_type", "stratonovich"], "sde_type='stratonovich' applies to SDE solves only"),
    (["--model.solver.checkpoints", "3"], "checkpoints=3 applies to adjoint='checkpoint'"),
    (["--model.solver.method", "explicit_adams", "--model.solver.step_size", "0.25", "--model.solver.adjoint",
      "checkpoint"], "'explicit_adams' is a multistep method"),
])
def test_ignored_solver_flags_stop_before_training(tmp_path, capsys, flags, message):
    root = tmp_path / "run"
    with pytest.raises(SystemExit) as exit_info:
        run_cli(["fit", "--data", "ToyDataModule", "--trainer.max_epochs", "1",
                 "--trainer.default_root_dir", str(root), *flags])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert not (root / "checkpoints").exists()  # refused before any training


def test_checkpoint_adjoint_trains_through_cdflow_fit(tmp_path):
    """``--model.solver.adjoint checkpoint`` reaches the solve: euler with 4 steps costs 4 evaluations forward and
    4 replayed + 4 vjps backward (backprop: 4 vjps)."""
    root = tmp_path / "run"
    config = Path(__file__).resolve().parents[2] / "experiments" / "configs" / "digits.yaml"
    cli = run_cli(["fit", "--config", str(config), "--trainer.default_root_dir", str(root), "--trainer.max_epochs",
                   "1", "--trainer.limit_train_batches", "2", "--trainer.limit_val_batches", "1",
                   "--trainer.limit_test_batches", "1", "--trainer.enable_progress_bar", "false",
                   "--model.hidden", "16", "--model.width", "16", "--model.solver.method", "euler",
                   "--model.solver.step_size", "0.25", "--model.solver.adjoint", "checkpoint",
                   "--model.solver.checkpoints", "2"])
    spec = cli.model.net.block.solver
    assert (spec.adjoint, spec.checkpoints) == ("checkpoint", 2)
    with open(root / "csv" / "version_0" / "metrics.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert [float(r["train/nfe_forward"]) for r in rows if r.get("train/nfe_forward")] == [4.0, 4.0]
    assert [float(r["train/nfe_backward"]) for r in rows if r.get("train/nfe_backward")] == [8.0, 8.0]
