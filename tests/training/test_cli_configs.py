"""Every shipped config in experiments/configs runs one fast_dev_run step through the CLI."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from cdflow.cli import run_cli

CONFIGS = sorted((Path(__file__).resolve().parents[2] / "experiments" / "configs").glob("*.yaml"))
# Smaller batches keep the conv ODE of the image configs cheap on CPU; the model is the configured one.
SMALL_BATCH = {"mnist.yaml": 8, "fashion_mnist.yaml": 8}
DATA = {"mnist.yaml": ("mnist",), "fashion_mnist.yaml": ("fashion-mnist",), "cora.yaml": ("gnn-benchmark", "cora.npz")}


@pytest.mark.parametrize("config", CONFIGS, ids=lambda p: p.name)
def test_config_fast_dev_run(config, tmp_path, monkeypatch, require_data):
    if config.name in DATA:
        require_data(*DATA[config.name])
    monkeypatch.setenv("WANDB_MODE", "disabled")
    monkeypatch.setattr(sys, "argv", ["cdflow"])
    args = ["fit", "--config", str(config), "--trainer.default_root_dir", str(tmp_path),
            "--trainer.fast_dev_run", "true", "--trainer.enable_progress_bar", "false"]
    if config.name in SMALL_BATCH:
        args += ["--data.init_args.batch_size", str(SMALL_BATCH[config.name])]
    cli = run_cli(args)
    assert cli.test_results and "test/acc" in cli.test_results[0]
    assert cli.trainer.global_step == 1


def test_digits_default_config_matches_make_train():
    text = (CONFIGS[0].parent / "digits.yaml").read_text()
    assert "DigitsDataModule" in text and "default_root_dir: runs/digits" in text
