"""A resume that cannot go on stops before it touches the run folder (its config.yaml stays the one that
describes its checkpoints), and settings a checkpoint replaces are printed, not silently dropped."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from cdflow.cli import run_cli

QUICK = ["--trainer.limit_train_batches", "2", "--trainer.limit_val_batches", "1", "--trainer.logger", "false",
         "--trainer.callbacks", "[]", "--test_after_fit", "false", "--trainer.enable_progress_bar", "false",
         "--trainer.enable_model_summary", "false", "--model.encoder", "linear", "--model.width", "4"]


@pytest.fixture(autouse=True)
def _quiet(monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "disabled")
    monkeypatch.setattr(sys, "argv", ["cdflow"])


def _table(path: Path, names: tuple[str, str]) -> Path:
    rows = ["a,b,label"] + [f"{i % 7},{(3 * i) % 5},{names[i % 2]}" for i in range(60)]
    path.write_text("\n".join(rows) + "\n")
    return path


def _fit(root: Path, table: Path, *extra: str) -> None:
    run_cli(["fit", "--data", "TabularDataModule", "--data.path", str(table), "--trainer.default_root_dir", str(root),
             *QUICK, *extra])


def test_a_refused_resume_leaves_the_run_folder_as_it_was(tmp_path, capsys):
    root = tmp_path / "runs"
    _fit(root, _table(tmp_path / "wine.csv", ("red", "white")), "--trainer.max_epochs", "1", "--model.hidden", "8")
    _fit(root, _table(tmp_path / "other.csv", ("3", "7")), "--trainer.max_epochs", "3", "--model.hidden", "4")
    newest = root / "version_1"
    config_before = (newest / "config.yaml").read_bytes()
    # `last` is the newest run (version_1, trained on other classes): refused before its config.yaml is touched
    with pytest.raises(SystemExit) as info:
        _fit(root, tmp_path / "wine.csv", "--trainer.max_epochs", "4", "--ckpt_path", "last")
    err = capsys.readouterr().err
    assert info.value.code == 2 and "trained with the classes ['3', '7']" in err and "Traceback" not in err
    assert (newest / "config.yaml").read_bytes() == config_before
    # fewer epochs than the checkpoint has done: refused, naming the flag, the folder untouched
    with pytest.raises(SystemExit) as info:
        _fit(root, tmp_path / "other.csv", "--trainer.max_epochs", "1", "--ckpt_path",
             str(newest / "checkpoints" / "last.ckpt"))
    err = capsys.readouterr().err
    assert info.value.code == 2 and "resumes at epoch 2 (counting from 0), past --trainer.max_epochs 1" in err
    assert (newest / "config.yaml").read_bytes() == config_before


def test_settings_a_checkpoint_replaces_are_printed(tmp_path, capsys):
    root = tmp_path / "runs"
    table = _table(tmp_path / "wine.csv", ("red", "white"))
    _fit(root, table, "--trainer.max_epochs", "1", "--model.hidden", "8", "--model.lr", "0.001")
    capsys.readouterr()
    cli = run_cli(["fit", "--data", "TabularDataModule", "--data.path", str(table), "--trainer.default_root_dir",
                   str(root), *QUICK, "--trainer.max_epochs", "2", "--model.hidden", "32", "--model.lr", "0.5",
                   "--ckpt_path", str(root / "checkpoints" / "last.ckpt")])
    err = capsys.readouterr().err
    assert "the checkpoint's model settings replace the given ones" in err
    assert "--model.hidden 32 → 8" in err and "--model.lr 0.5 → 0.001" in err
    assert cli.model.hparams["hidden"] == 8  # the checkpoint's model, as printed


def test_a_resume_without_an_epoch_limit_is_refused_not_run_to_lightnings_default(tmp_path, capsys):
    root = tmp_path / "runs"
    table = _table(tmp_path / "wine.csv", ("red", "white"))
    _fit(root, table, "--trainer.max_epochs", "1", "--model.hidden", "8")
    ckpt = root / "checkpoints" / "last.ckpt"
    assert ckpt.is_file()
    with pytest.raises(SystemExit) as info:
        _fit(root, table, "--model.hidden", "8", "--ckpt_path", str(ckpt))
    err = capsys.readouterr().err
    assert info.value.code == 2 and "planned for 1 epochs" in err and "no --trainer.max_epochs is given" in err
    assert f"--config {root / 'config.yaml'}" in err and "1000 epochs" in err and "Traceback" not in err
    assert not (root / "version_1").exists()  # refused before a run folder was claimed
