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
    assert info.value.code == 2
    assert "has trained 3 epochs, and --trainer.max_epochs is 1: nothing is left to train" in err
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


def test_a_resume_of_a_finished_run_at_the_same_epoch_limit_is_refused_not_reported_as_trained(tmp_path, capsys):
    root = tmp_path / "runs"
    table = _table(tmp_path / "wine.csv", ("red", "white"))
    _fit(root, table, "--trainer.max_epochs", "1", "--model.hidden", "8")
    ckpt = root / "checkpoints" / "last.ckpt"
    with pytest.raises(SystemExit) as info:
        _fit(root, table, "--trainer.max_epochs", "1", "--model.hidden", "8", "--ckpt_path", str(ckpt))
    err = capsys.readouterr().err
    assert info.value.code == 2 and "has trained 1 epoch, and --trainer.max_epochs is 1" in err
    assert f"cdflow test --config {root / 'config.yaml'} --ckpt_path {ckpt}" in err
    _fit(root, table, "--trainer.max_epochs", "2", "--model.hidden", "8", "--ckpt_path", str(ckpt))  # one more: runs
    fit = next(line for line in capsys.readouterr().out.splitlines() if line.strip().startswith("fit:"))
    assert "fit:         1 epoch, " in fit and "(2 epochs, " in fit and "resumed from epoch 1" in fit


def test_a_resume_with_more_epochs_replans_the_cosine_schedule_and_trains(tmp_path, capsys):
    """The checkpoint's cosine schedule ends at rate 0 after its 1 epoch: resumed to 3 epochs it is re-planned
    (said so), and the resumed epochs change the weights (they did not: the restored plan's rate was 0)."""
    import torch

    root = tmp_path / "runs"
    table = _table(tmp_path / "wine.csv", ("red", "white"))
    _fit(root, table, "--trainer.max_epochs", "1", "--model.hidden", "8", "--model.scheduler", "cosine")
    ckpt = root / "checkpoints" / "last.ckpt"
    before = torch.load(ckpt, weights_only=False)["state_dict"]
    capsys.readouterr()
    _fit(root, table, "--trainer.max_epochs", "3", "--model.hidden", "8", "--model.scheduler", "cosine",
         "--ckpt_path", str(ckpt))
    out = capsys.readouterr().out
    assert "planned over 1 epoch; re-planned over --trainer.max_epochs 3 from epoch 1" in out
    after = torch.load(ckpt, weights_only=False)["state_dict"]  # the resumed run writes on in its own folder
    moved = max(float((after[k] - before[k]).abs().max()) for k in before if before[k].is_floating_point())
    assert moved > 1e-4


def test_the_run_config_is_found_in_the_csv_loggers_folder_too(tmp_path, capsys):
    """With the CSV logger the run's config.yaml is csv/version_<n>/config.yaml: a resume without an epoch limit is
    refused there too (it ran on towards 1000 epochs when only <run>/config.yaml was looked for)."""
    root = tmp_path / "runs"
    table = _table(tmp_path / "wine.csv", ("red", "white"))
    _fit(root, table, "--trainer.max_epochs", "1", "--model.hidden", "8", "--trainer.logger", "true")
    config = root / "csv" / "version_0" / "config.yaml"
    assert config.is_file() and not (root / "config.yaml").exists()
    with pytest.raises(SystemExit) as info:
        _fit(root, table, "--model.hidden", "8", "--trainer.logger", "true", "--ckpt_path",
             str(root / "checkpoints" / "last.ckpt"))
    err = capsys.readouterr().err
    assert info.value.code == 2 and f"planned for 1 epochs ({config})" in err
