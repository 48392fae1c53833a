"""A NaN loss, NaN gradients or a `SolverError` during training: skipped (``--model.on_failure skip``, no
update, counted in ``train/skipped_steps``) or stopped with a message naming epoch, batch and solver
statistics; either way the last good checkpoint is kept."""

from __future__ import annotations

import csv
import math
import sys
from pathlib import Path

import lightning as L
import pytest
import torch
from flaky_net import FlakyNet
from lightning.pytorch.loggers import CSVLogger

from cdflow.cli import run_cli
from cdflow.data.modules import DigitsDataModule
from cdflow.errors import ConfigError, SolverError
from cdflow.training import ContinuousDepthClassifier
from cdflow.training.atomic_checkpoint import AtomicCheckpointIO
from cdflow.training.fault import TrainingDiverged
from cdflow.training.last_checkpoint import LastCheckpoint

CONFIGS = Path(__file__).resolve().parents[2] / "experiments" / "configs"


class Weights(L.Callback):
    """The weights before and after every training batch."""

    def __init__(self) -> None:
        self.before: list[dict[str, torch.Tensor]] = []
        self.after: list[dict[str, torch.Tensor]] = []

    @staticmethod
    def _copy(module: L.LightningModule) -> dict[str, torch.Tensor]:
        return {k: v.detach().clone() for k, v in module.named_parameters()}

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.before.append(self._copy(pl_module))

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.after.append(self._copy(pl_module))


def _fit(root: Path, net: FlakyNet, steps: int, **module_kwargs) -> tuple[L.Trainer, L.LightningModule, Weights]:
    model = ContinuousDepthClassifier(10, (64,), model=net, lr=0.05, **module_kwargs)
    weights = Weights()
    trainer = L.Trainer(
        default_root_dir=root, max_steps=steps, limit_val_batches=0, logger=CSVLogger(root), log_every_n_steps=1,
        enable_progress_bar=False, enable_model_summary=False, plugins=[AtomicCheckpointIO()],
        callbacks=[weights, LastCheckpoint(dirpath=root / "checkpoints", every_n_train_steps=1)],
    )
    trainer.fit(model, DigitsDataModule(batch_size=32))
    return trainer, model, weights


def _changed(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return any(not torch.equal(a[k], b[k]) for k in a)


def test_skip_mode_drops_failed_steps_and_counts_them(tmp_path):
    net = FlakyNet(nan_at=[1], solver_at=[3], grad_at=[4], backward_at=[6])
    trainer, model, weights = _fit(tmp_path, net, steps=8, on_failure="skip")
    assert trainer.global_step == 8 and model.guard.skipped == 4
    updated = [_changed(b, a) for b, a in zip(weights.before, weights.after, strict=True)]
    assert updated == [True, False, True, False, False, True, False, True]  # no update on the failed steps
    adam_steps = {int(s["step"]) for s in trainer.optimizers[0].state.values()}
    assert adam_steps == {4}  # the optimiser only saw the good steps (its moments are untouched)
    for p in model.parameters():
        assert torch.isfinite(p).all()
    rows = list(csv.DictReader(open(tmp_path / "lightning_logs" / "version_0" / "metrics.csv")))
    skipped = [float(r["train/skipped_steps"]) for r in rows if r.get("train/skipped_steps")]
    assert skipped == [0, 1, 1, 2, 3, 3, 4, 4]
    last = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)
    assert last["global_step"] == 8 and all(torch.isfinite(v).all() for v in last["state_dict"].values()
                                            if v.is_floating_point())


@pytest.mark.parametrize(("fail", "cause"), [
    ({"nan_at": [3]}, "the loss is nan (non-finite)"),
    ({"solver_at": [3]}, "the solve failed (SolverError: max_steps=1 exceeded"),
    ({"grad_at": [3]}, "non-finite gradients in 8 parameter(s): net.net.encoder.0.weight"),
    ({"backward_at": [3]}, "the backward solve failed: step-size underflow at t=0.5"),
])
def test_stop_mode_names_epoch_batch_and_solver_stats_and_keeps_the_checkpoint(tmp_path, fail, cause):
    with pytest.raises(TrainingDiverged) as info:
        _fit(tmp_path, FlakyNet(**fail), steps=6)  # on_failure defaults to "stop"
    msg = str(info.value)
    print(msg)
    assert isinstance(info.value, SolverError)
    assert "training step failed at epoch 0, batch 3 (global step 3)" in msg and cause in msg
    stats = "Solver statistics (last completed solve): " if "solver_at" in fail else "Solver statistics: "
    assert stats + "method 'euler', nfe_forward=2" in msg
    assert "--model.on_failure skip" in msg and "last.ckpt" in msg and "is kept" in msg
    last = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)
    assert last["global_step"] == 3  # written after step 3 of 6; the failed fourth step wrote nothing
    assert all(torch.isfinite(v).all() for v in last["state_dict"].values() if v.is_floating_point())


def test_too_many_consecutive_failures_stop_a_skipping_run(tmp_path):
    with pytest.raises(TrainingDiverged, match=r"3 training steps failed in a row \(max_consecutive_skips=2\)"):
        _fit(tmp_path, FlakyNet(nan_at=[2, 3, 4, 5]), steps=8, on_failure="skip", max_consecutive_skips=2)


def test_failure_mode_is_validated():
    with pytest.raises(ConfigError, match="on_failure must be one of stop, skip, got 'ignore'"):
        ContinuousDepthClassifier(10, (64,), on_failure="ignore")
    with pytest.raises(ConfigError, match="max_consecutive_skips must be an int ≥ 1"):
        ContinuousDepthClassifier(10, (64,), max_consecutive_skips=0)


def test_nonfinite_weights_are_never_written(tmp_path):
    path = tmp_path / "last.ckpt"
    io = AtomicCheckpointIO()
    io.save_checkpoint({"state_dict": {"w": torch.ones(3)}, "global_step": 1}, path)
    good = path.read_bytes()
    with pytest.raises(TrainingDiverged, match=r"refusing to write .*last.ckpt: the weights hold NaN/Inf in w"):
        io.save_checkpoint({"state_dict": {"w": torch.tensor([1.0, math.nan, 0.0])}, "global_step": 2}, path)
    assert path.read_bytes() == good


def test_cli_stop_exits_with_the_message(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("WANDB_MODE", "disabled")
    monkeypatch.setattr(sys, "argv", ["cdflow"])
    root = tmp_path / "run"
    args = ["fit", "--config", str(CONFIGS / "digits.yaml"), "--trainer.default_root_dir", str(root),
            "--trainer.max_epochs", "1", "--trainer.limit_train_batches", "5", "--trainer.limit_val_batches", "1",
            "--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false",
            "--trainer.callbacks", "[]", "--last_checkpoint.every_n_train_steps", "1",
            "--model.model", "flaky_net.FlakyNet", "--model.model.nan_at", "[2]"]
    with pytest.raises(SystemExit) as info:
        run_cli(args)
    assert info.value.code == 1
    err = capsys.readouterr().err
    assert "cdflow: error: TrainingDiverged: training step failed at epoch 0, batch 2 (global step 2)" in err
    assert torch.load(root / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 2

    root = tmp_path / "skip"
    args[args.index(str(tmp_path / "run"))] = str(root)
    cli = run_cli([*args, "--model.on_failure", "skip", "--test_after_fit", "false"])
    assert cli.trainer.global_step == 5 and cli.model.guard.skipped == 1
