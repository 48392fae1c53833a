"""The run summary tells the truth: this run's epochs and the total after a resume, the last checkpoint it
wrote, and after Ctrl-C where the run stopped and the exact command that resumes it."""

from __future__ import annotations

import shlex
import signal
import sys
from pathlib import Path

import pytest
import torch

from cdflow.cli import run_cli
from cdflow.training.summary import resume_command

CONFIGS = Path(__file__).resolve().parents[2] / "experiments" / "configs"


def _quick(root: Path, epochs: int, *extra: str) -> list[str]:
    return [
        "fit", "--config", str(CONFIGS / "digits.yaml"), "--trainer.default_root_dir", str(root),
        "--trainer.max_epochs", str(epochs), "--trainer.limit_train_batches", "2", "--trainer.limit_val_batches", "1",
        "--trainer.limit_test_batches", "1", "--trainer.enable_progress_bar", "false",
        "--trainer.enable_model_summary", "false", "--model.hidden", "8", "--model.width", "8",
        "--model.solver.method", "euler", "--model.solver.step_size", "0.5", *extra,
    ]


@pytest.fixture(autouse=True)
def _csv_logging(monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "disabled")
    monkeypatch.setattr(sys, "argv", ["cdflow"])


def _line(out: str, key: str) -> str:
    """The last summary line starting with `key` (e.g. ``fit:``)."""
    return [line.strip() for line in out.splitlines() if line.strip().startswith(key)][-1]


def test_resumed_run_counts_this_run_and_the_total_and_names_the_last_checkpoint(tmp_path, capsys):
    root = tmp_path / "run"
    run_cli(_quick(root, 1, "--trainer.callbacks", "[]"))
    first = capsys.readouterr().out
    assert _line(first, "fit:").startswith("fit:         1 epoch, 2 steps in ")
    # The test of the best checkpoint restores the callbacks' state of that older file: last is still shown.
    hint = _line(first, "checkpoints:")
    assert "last: last.ckpt); train on to epoch 2: cdflow fit " in hint and "--trainer.max_epochs 2 " in hint
    assert hint.endswith(f"--ckpt_path {root / 'checkpoints' / 'last.ckpt'}") or hint.endswith("checkpoints/last.ckpt")

    run_cli(_quick(root, 3, "--trainer.callbacks", "[]", "--ckpt_path", "last"))
    fit = _line(capsys.readouterr().out, "fit:")
    print(fit)
    assert fit.startswith("fit:         2 epochs, 4 steps this run in ")
    assert fit.endswith("(3 epochs, 6 steps in total, resumed from epoch 1, step 2)")


def test_ctrl_c_prints_the_summary_and_the_command_that_resumes(tmp_path, capsys):
    root = tmp_path / "run"
    args = _quick(root, 3, "--trainer.callbacks", "[{class_path: ctrl_c.CtrlC, init_args: {epoch: 1}}]",
                  "--test_after_fit", "false")
    sigint = signal.getsignal(signal.SIGINT)
    try:
        with pytest.raises(SystemExit) as info:
            run_cli(args)
    finally:
        signal.signal(signal.SIGINT, sigint)  # Lightning ignores further Ctrl-C once interrupted
    assert info.value.code == 130  # the shell's status for Ctrl-C
    out = capsys.readouterr().out
    print(out)
    assert "cdflow run summary" in out
    fit = _line(out, "fit:")
    assert fit.startswith("fit:         interrupted (Ctrl-C) in epoch 1 at step 4: 1 epoch completed, 4 steps in")
    last = root / "checkpoints" / "last.ckpt"
    assert torch.load(last, weights_only=True)["global_step"] == 2  # epoch 1 was not validated nor saved
    resume = _line(out, "resume:")
    assert resume.endswith("(last.ckpt holds step 2)")
    command = shlex.split(resume.removeprefix("resume:").split("  (")[0])
    assert command[:2] == ["cdflow", "fit"] and command[-2:] == ["--ckpt_path", str(last)]
    assert command[1:-2] == args  # the original command line, with the checkpoint added

    cli = run_cli(command[1:])  # the printed command resumes and finishes the run
    assert cli.trainer.current_epoch == 3 and cli.trainer.global_step == 6
    assert "resumed from epoch 1, step 2" in _line(capsys.readouterr().out, "fit:")


def test_resume_command_replaces_ckpt_path_and_falls_back_to_the_config():
    assert resume_command(["fit", "--ckpt_path", "old.ckpt", "--x", "a b"], "r/last.ckpt") == \
        "cdflow fit --x 'a b' --ckpt_path r/last.ckpt"
    assert resume_command(["fit", "--ckpt_path=old.ckpt"], "r/last.ckpt") == "cdflow fit --ckpt_path r/last.ckpt"
    assert resume_command(None, "r/last.ckpt", "r/config.yaml") == \
        "cdflow fit --config r/config.yaml --ckpt_path r/last.ckpt"
    # a finished run trains on only with a larger epoch limit: the given one is replaced
    assert resume_command(["fit", "--trainer.max_epochs", "3", "--x", "1"], "l.ckpt", max_epochs=6) == \
        "cdflow fit --x 1 --trainer.max_epochs 6 --ckpt_path l.ckpt"
    assert resume_command(["fit", "--trainer.max_epochs=3"], "l.ckpt", max_epochs=6) == \
        "cdflow fit --trainer.max_epochs 6 --ckpt_path l.ckpt"
    assert resume_command(None, "l.ckpt", "c.yaml", max_epochs=4) == \
        "cdflow fit --config c.yaml --trainer.max_epochs 4 --ckpt_path l.ckpt"
