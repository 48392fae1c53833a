"""Solver flags that cannot act on the chosen method stop `cdflow fit` before training, naming the reason."""

from __future__ import annotations

import sys

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
