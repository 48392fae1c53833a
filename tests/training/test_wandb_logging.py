"""W&B logging: offline by default, metrics/config/figures recorded, CSV fallback when W&B cannot start."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import pytest
import wandb
from lightning.pytorch.loggers import CSVLogger, WandbLogger

from cdflow.cli import run_cli
from cdflow.training.loggers import make_logger, wandb_mode
from cdflow.training.wandb_offline import read_offline_run

CONFIGS = Path(__file__).resolve().parents[2] / "experiments" / "configs"


@pytest.fixture(autouse=True)
def _no_credentials(monkeypatch, tmp_path):
    """No API key, no ~/.netrc, no WANDB_MODE: the defaults a fresh checkout sees."""
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setattr(sys, "argv", ["cdflow"])
    yield
    if wandb.run is not None:
        wandb.finish()


def _moons(root: Path) -> list[str]:
    return [
        "fit", "--config", str(CONFIGS / "moons.yaml"), "--trainer.default_root_dir", str(root),
        "--trainer.max_epochs", "2", "--trainer.limit_train_batches", "2", "--trainer.limit_val_batches", "1",
        "--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false",
        "--model.width", "16", "--wandb.tags", "[test]",
    ]


def test_mode_defaults(monkeypatch):
    assert wandb_mode() == "offline"
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    assert wandb_mode() == "online"
    monkeypatch.setenv("WANDB_MODE", "disabled")
    assert wandb_mode() == "disabled"


def test_offline_run_records_metrics_config_and_figures(tmp_path):
    root = tmp_path / "moons"
    cli = run_cli(_moons(root))  # finishes the W&B run before returning
    assert isinstance(cli.trainer.logger, WandbLogger)
    runs = list((root / "wandb").glob("offline-run-*"))
    assert len(runs) == 1
    run = read_offline_run(runs[0])
    for key in ("train/loss", "train/nfe_forward", "train/nfe_backward", "train/steps", "val/acc", "val/loss",
                "test/acc", "test/loss"):
        assert run.metric(key), key
    assert len(run.metric("train/nfe_backward")) == 4  # every training step
    assert run.summary["test/acc"] == pytest.approx(cli.test_results[0]["test/acc"])
    config = run.config["config"]
    assert config["model"]["solver"]["method"] == "dopri5" and config["trainer"]["max_epochs"] == 2
    assert config["data"]["class_path"].endswith("ToyDataModule") and config["wandb"]["tags"] == ["test"]
    for name in ("confusion_matrix", "decision_boundary", "trajectories"):
        assert (root / "figures" / f"{name}.png").is_file()
        assert list((runs[0] / "files" / "media" / "images" / "figures").glob(f"{name}_*.png")), name
    assert (root / "config.yaml").is_file()


def test_wandb_failure_falls_back_to_csv_with_one_warning(tmp_path, monkeypatch, caplog):
    def broken_init(*args, **kwargs):
        raise RuntimeError("no W&B today\nsecond line")

    monkeypatch.setattr(wandb, "init", broken_init)
    with caplog.at_level(logging.WARNING, logger="cdflow.training.loggers"):
        logger = make_logger(tmp_path / "direct")
    assert isinstance(logger, CSVLogger)
    warnings = [r for r in caplog.records if r.name == "cdflow.training.loggers"]
    assert len(warnings) == 1 and "\n" not in warnings[0].getMessage()
    assert "W&B could not start" in warnings[0].getMessage() and "no W&B today" in warnings[0].getMessage()

    root = tmp_path / "run"
    cli = run_cli(_moons(root))  # the whole run still happens, logged to CSV
    assert isinstance(cli.trainer.logger, CSVLogger)
    assert "test/acc" in (root / "csv" / "version_0" / "metrics.csv").read_text()


def test_disabled_mode_logs_to_csv(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "disabled")
    logger = make_logger(tmp_path)
    assert isinstance(logger, CSVLogger) and not (tmp_path / "wandb").exists()


def _wait_until_written(run_dir: Path, timeout: float = 10.0) -> None:
    """Wait until wandb's service has finished writing the run's transaction log (its size stops changing):
    on a loaded machine wandb.finish() can return while the last records are still being flushed."""
    import time

    deadline, last = time.monotonic() + timeout, -1
    while time.monotonic() < deadline:
        size = sum(f.stat().st_size for f in run_dir.glob("run-*.wandb"))
        if size == last:
            return
        last = size
        time.sleep(0.3)


def test_offline_reader_handles_records_across_blocks(tmp_path):
    run = wandb.init(project="cdflow-test", dir=str(tmp_path), mode="offline", config={"a": {"b": 1}})
    for i in range(1500):  # ~100 KiB of history: records span several 32 KiB blocks
        run.log({"step_value": i, "padding": "x" * 40})
    run_dir = Path(run.dir).parent
    wandb.finish()
    _wait_until_written(run_dir)
    read = read_offline_run(run_dir)
    assert read.metric("step_value") == list(range(1500))
    assert read.config["a"] == {"b": 1} and read.summary["step_value"] == 1499
