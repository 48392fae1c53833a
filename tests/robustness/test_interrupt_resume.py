"""A run SIGKILLed mid-epoch and resumed with ``--ckpt_path last`` ends with the uninterrupted run's weights;
checkpoints are written atomically, so a kill or a failure while saving never leaves a broken ``last.ckpt``."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint

import cdflow.training.atomic_checkpoint as atomic
from cdflow.cli import run_cli
from cdflow.data.modules import DigitsDataModule
from cdflow.solvers import SolverSpec
from cdflow.training import ContinuousDepthClassifier
from cdflow.training.atomic_checkpoint import AtomicCheckpointIO, atomic_torch_save
from cdflow.training.last_checkpoint import LastCheckpoint

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
CONFIGS = REPO / "experiments" / "configs"
STEPS_PER_EPOCH, EPOCHS, SAVE_EVERY = 8, 2, 2


def _args(root: Path, *extra: str, dropout: str = "0.0") -> list[str]:
    """Digits, a small model (rk4), 2 epochs of 8 steps, last.ckpt every 2 steps."""
    return [
        "fit", "--config", str(CONFIGS / "digits.yaml"), "--trainer.default_root_dir", str(root),
        "--trainer.max_epochs", str(EPOCHS), "--trainer.limit_train_batches", str(STEPS_PER_EPOCH),
        "--trainer.limit_val_batches", "2", "--trainer.enable_progress_bar", "false",
        "--trainer.enable_model_summary", "false", "--model.hidden", "8", "--model.width", "8",
        "--model.dropout", dropout, "--model.solver.method", "rk4", "--model.solver.step_size", "0.5",
        "--last_checkpoint.every_n_train_steps", str(SAVE_EVERY), "--test_after_fit", "false",
        "--trainer.callbacks", "[]", *extra,
    ]


@pytest.fixture
def one_thread(monkeypatch):
    """The in-process runs use one thread, like the killed subprocess (bitwise-identical arithmetic)."""
    monkeypatch.setenv("WANDB_MODE", "disabled")
    monkeypatch.setattr(sys, "argv", ["cdflow"])
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _final_weights(root: Path) -> dict[str, torch.Tensor]:
    return torch.load(root / "checkpoints" / "last.ckpt", weights_only=True, map_location="cpu")["state_dict"]


def _kill_mid_epoch(root: Path, dropout: str) -> dict:
    """Start the run in a subprocess, slowed down; SIGKILL it once last.ckpt holds step ≥ 4; return that ckpt."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": "disabled", "PYTHONWARNINGS": "ignore",
           "PYTHONPATH": os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")])}
    cmd = [sys.executable, "-m", "cdflow.cli", *_args(root, dropout=dropout), "--trainer.callbacks",
           "[{class_path: slow_steps.SlowSteps, init_args: {seconds: 0.4}}]"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=REPO)
    last = root / "checkpoints" / "last.ckpt"
    deadline = time.monotonic() + 180
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            if last.is_file():
                # Written atomically: whenever it exists, it loads (no half-written file to trip over).
                state = torch.load(last, weights_only=True, map_location="cpu")
                if state["global_step"] >= 4:
                    break
            time.sleep(0.05)
        assert proc.poll() is None, f"the run ended before it could be killed: {proc.stderr.read()[-2000:]}"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL
    return torch.load(last, weights_only=True, map_location="cpu")


@pytest.mark.parametrize("dropout", ["0.0", "0.2"])  # dropout: the restored RNG states give the same masks
def test_killed_mid_epoch_then_resumed_equals_uninterrupted(tmp_path, one_thread, dropout):
    reference = run_cli(_args(tmp_path / "uninterrupted", dropout=dropout))
    assert reference.trainer.global_step == EPOCHS * STEPS_PER_EPOCH
    expected = _final_weights(tmp_path / "uninterrupted")

    root = tmp_path / "interrupted"
    killed_at = _kill_mid_epoch(root, dropout)
    step = killed_at["global_step"]
    assert 4 <= step < STEPS_PER_EPOCH and killed_at["epoch"] == 0  # a mid-epoch checkpoint
    assert killed_at["loops"]["fit_loop"]["state_dict"]["combined_loader"] == [{"batches": step}]

    resumed = run_cli(_args(root, "--ckpt_path", "last", dropout=dropout))
    assert resumed.trainer.global_step == EPOCHS * STEPS_PER_EPOCH
    got = _final_weights(root)
    diff = max(float((got[k] - expected[k]).abs().max()) for k in expected)
    print(f"dropout {dropout}, resumed from step {step}: max |Δparam| vs uninterrupted = {diff:.3g}")
    assert diff == 0.0
    assert not list((root / "checkpoints").glob(".*.tmp"))  # stale temporary files are cleaned up


def test_resume_skips_the_batches_already_trained_on(tmp_path):
    """The loader state in a mid-epoch checkpoint makes the resumed epoch start at the next batch."""
    dm = DigitsDataModule(batch_size=100)
    dm.setup("fit")
    first = dm.train_dataloader()
    first.sampler.set_epoch(1)
    batches = [y for _, y in first]
    it = iter(first)
    next(it), next(it), next(it)
    state = first.state_dict()
    assert state == {"batches": 3}
    again = dm.train_dataloader()
    again.load_state_dict(state)
    again.sampler.set_epoch(1)
    rest = [y for _, y in again]
    assert len(rest) == len(batches) - 3 and all(torch.equal(a, b) for a, b in zip(rest, batches[3:], strict=True))
    assert len([y for _, y in again]) == len(batches)  # the skip applies once: the next epoch is whole


def _trainer(root: Path, max_steps: int) -> L.Trainer:
    return L.Trainer(default_root_dir=root, max_steps=max_steps, limit_val_batches=0, logger=False,
                     enable_progress_bar=False, enable_model_summary=False, plugins=[AtomicCheckpointIO()],
                     callbacks=[LastCheckpoint(dirpath=root / "checkpoints", every_n_train_steps=1)])


def _model() -> ContinuousDepthClassifier:
    L.seed_everything(0, verbose=False)
    return ContinuousDepthClassifier(10, (64,), hidden=8, width=8, solver=SolverSpec(method="euler", step_size=0.5))


def test_a_failure_while_saving_keeps_the_previous_last_checkpoint(tmp_path, monkeypatch):
    root = tmp_path / "run"
    _trainer(root, max_steps=2).fit(_model(), DigitsDataModule(batch_size=64))
    last = root / "checkpoints" / "last.ckpt"
    good = last.read_bytes()
    assert torch.load(last, weights_only=True)["global_step"] == 2

    real_save = torch.save

    def dies_mid_write(obj, handle, *args, **kwargs):
        real_save(obj, handle)
        handle.truncate(handle.tell() // 2)  # half the bytes are on disk...
        raise OSError("disk full (simulated)")  # ...when the process dies

    monkeypatch.setattr(atomic.torch, "save", dies_mid_write)
    with pytest.raises(OSError, match="simulated"):
        _trainer(root, max_steps=4).fit(_model(), DigitsDataModule(batch_size=64), ckpt_path=str(last))
    assert last.read_bytes() == good  # the previous checkpoint, byte for byte
    assert torch.load(last, weights_only=True)["global_step"] == 2
    assert not list(last.parent.glob(".*.tmp"))  # the partial temporary file was removed


def test_plain_lightning_save_would_have_been_torn(tmp_path):
    """Why the temporary file matters: writing in place and dying half-way leaves an unreadable file."""
    path = tmp_path / "last.ckpt"
    atomic_torch_save({"w": torch.ones(1000)}, path)
    with open(path, "r+b") as handle:  # what an in-place write killed half-way leaves behind
        handle.truncate(path.stat().st_size // 2)
    with pytest.raises(Exception):  # noqa: B017 — torch raises RuntimeError or EOFError depending on where it stops
        torch.load(path, weights_only=True)


def test_stale_temporary_files_are_removed_on_the_next_save(tmp_path):
    stale = tmp_path / ".last.ckpt.abc123.tmp"
    stale.write_bytes(b"half a checkpoint")
    atomic_torch_save({"step": 1}, tmp_path / "last.ckpt")
    assert not stale.exists() and torch.load(tmp_path / "last.ckpt")["step"] == 1


def test_the_cli_writes_checkpoints_atomically(tmp_path, one_thread):
    cli = run_cli(_args(tmp_path / "run", "--trainer.max_epochs", "1"))
    assert any(isinstance(p, AtomicCheckpointIO) for p in [cli.trainer.strategy.checkpoint_io])
    assert sum(isinstance(cb, ModelCheckpoint) for cb in cli.trainer.callbacks) == 2  # best + LastCheckpoint
