"""The ``cdflow`` CLI: solver flags reach the model, bad settings fail before training, fit → test → summary."""

from __future__ import annotations

import csv
import sys
from pathlib import Path

import pytest

from cdflow.cli import run_cli
from cdflow.training import ContinuousDepthClassifier

CONFIGS = Path(__file__).resolve().parents[2] / "experiments" / "configs"


def _quick(root: Path, config: str = "digits.yaml", epochs: int = 1) -> list[str]:
    return [
        "--config", str(CONFIGS / config), "--trainer.default_root_dir", str(root),
        "--trainer.max_epochs", str(epochs), "--trainer.limit_train_batches", "2", "--trainer.limit_val_batches", "1",
        "--trainer.limit_test_batches", "1", "--trainer.enable_progress_bar", "false",
        "--trainer.enable_model_summary", "false", "--model.hidden", "16", "--model.width", "16",
    ]


@pytest.fixture(autouse=True)
def _csv_logging(monkeypatch):
    """CSV logs (W&B is tested in test_wandb_logging.py); no stray command-line arguments."""
    monkeypatch.setenv("WANDB_MODE", "disabled")
    monkeypatch.setattr(sys, "argv", ["cdflow"])


def _metrics(root: Path, version: int = 0) -> list[dict[str, str]]:
    with open(root / "csv" / f"version_{version}" / "metrics.csv") as fh:
        return list(csv.DictReader(fh))


def _column(rows: list[dict[str, str]], key: str) -> list[float]:
    return [float(r[key]) for r in rows if r.get(key)]


def test_solver_flags_change_the_method_actually_used(tmp_path):
    euler = run_cli(["fit", *_quick(tmp_path / "euler"), "--model.solver.method", "euler",
                     "--model.solver.step_size", "0.25"])
    dopri = run_cli(["fit", *_quick(tmp_path / "dopri"), "--model.solver.method", "dopri5"])
    assert euler.model.net.block.solver.method == "euler" and dopri.model.net.block.solver.method == "dopri5"
    nfe_euler = _column(_metrics(tmp_path / "euler"), "train/nfe_forward")
    nfe_dopri = _column(_metrics(tmp_path / "dopri"), "train/nfe_forward")
    assert nfe_euler == [4.0, 4.0]  # 1 / 0.25 steps, one evaluation each
    assert len(nfe_dopri) == 2 and all(n >= 8 and n != 4.0 for n in nfe_dopri)  # 6 per step + 2
    assert _column(_metrics(tmp_path / "euler"), "train/nfe_backward") == [4.0, 4.0]


@pytest.mark.parametrize("where", ["flag", "config file"])
def test_unknown_solver_fails_before_training_listing_valid_methods(tmp_path, capsys, where):
    root = tmp_path / "run"
    args = ["fit", *_quick(root)]
    if where == "flag":
        args += ["--model.solver.method", "dopri9"]
    else:
        bad = tmp_path / "bad.yaml"
        bad.write_text("model:\n  solver:\n    method: dopri9\n")
        args += ["--config", str(bad)]
    with pytest.raises(SystemExit) as exit_info:
        run_cli(args)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "unknown solver method 'dopri9'; ODE methods: " in err and "dopri5" in err and "rk4" in err
    assert "; SDE methods (with a noise term): " in err  # milstein is named as an SDE method, not an ODE one
    assert "Traceback" not in err
    assert not root.exists()  # nothing ran: no logs, no checkpoints


def test_fixed_step_method_without_step_size_fails_at_instantiation(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        run_cli(["fit", *_quick(tmp_path / "run"), "--model.solver.method", "rk4"])
    assert exit_info.value.code == 2 and "set step_size" in capsys.readouterr().err


def test_invalid_choice_fails_at_parse_time_with_the_choices(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        run_cli(["fit", *_quick(tmp_path / "run"), "--model.optimizer", "adamx"])
    assert exit_info.value.code != 0
    err = capsys.readouterr().err
    assert "adamx" in err and "sgd" in err


def test_print_config(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        run_cli(["fit", *_quick(tmp_path / "run"), "--model.solver.method", "rk4", "--model.solver.step_size",
                 "0.1", "--print_config"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert "method: rk4" in out and "step_size: 0.1" in out and "DigitsDataModule" in out
    assert "monitor: val/acc" in out and "project: cdflow" in out


def test_fit_then_tests_best_checkpoint_and_reports_where_things_went(tmp_path, capsys):
    root = tmp_path / "run"
    cli = run_cli(["fit", *_quick(root, epochs=2)])
    out = capsys.readouterr().out
    ckpts = root / "checkpoints"
    assert (ckpts / "last.ckpt").is_file() and list(ckpts.glob("best-epoch*.ckpt"))
    assert cli.test_results and {"test/acc", "test/loss"} <= cli.test_results[0].keys()
    assert "cdflow run summary" in out and "test/acc =" in out and "best checkpoint" in out
    assert "checkpoints:" in out and "metrics.csv" in out
    assert (root / "csv" / "version_0" / "config.yaml").is_file()
    assert (root / "figures" / "confusion_matrix.png").is_file()
    assert _column(_metrics(root), "test/acc")  # the test after fit was logged
    restored = ContinuousDepthClassifier.load_from_checkpoint(ckpts / "last.ckpt")  # from the CLI's hparams
    assert restored.net_config["hidden"] == 16 and restored.input_shape == (64,) and restored.num_classes == 10


def test_ckpt_path_last_resumes_the_run(tmp_path):
    root = tmp_path / "run"
    run_cli(["fit", *_quick(root, epochs=1), "--test_after_fit", "false"])
    cli = run_cli(["fit", *_quick(root, epochs=2), "--test_after_fit", "false", "--ckpt_path", "last"])
    assert cli.trainer.current_epoch == 2 and cli.trainer.global_step == 4
    resumed = _metrics(root, version=1)
    assert {r["epoch"] for r in resumed if r.get("train/loss")} == {"1"}  # only the second epoch was trained


def test_logger_false_and_test_subcommand(tmp_path):
    root = tmp_path / "run"
    run_cli(["fit", *_quick(root), "--trainer.logger", "false", "--test_after_fit", "false"])
    assert not (root / "csv").exists() and not (root / "wandb").exists()
    cli = run_cli(["test", *_quick(root), "--trainer.logger", "false", "--ckpt_path",
                   str(root / "checkpoints" / "last.ckpt")])
    assert cli.trainer.state.fn == "test"


def test_a_ready_model_plugs_in_from_the_command_line(tmp_path, require_data):
    require_data("gnn-benchmark", "cora.npz")
    root = tmp_path / "coin"
    cli = run_cli(["fit", "--config", str(CONFIGS / "cora.yaml"), "--trainer.default_root_dir", str(root),
                   "--trainer.max_epochs", "2", "--trainer.enable_progress_bar", "false",
                   "--model.model", "cdflow.models.coin.COIN", "--model.model.in_features", "1433",
                   "--model.model.num_classes", "7"])
    assert type(cli.model.net).__name__ == "COIN"
    rows = _metrics(root)
    assert _column(rows, "train/laplacian_products") and _column(rows, "test/acc")


def test_coin_config_members_summary_and_per_member_metrics(tmp_path, capsys):
    """`cdflow fit --config coin_cora.yaml --model.members 2`: a member axis in the rebuilt COIN, each member's
    test accuracy in the metrics and the summary, their mean as test/acc, the restored best weights tested."""
    cli = run_cli(["fit", "--config", str(CONFIGS / "coin_cora.yaml"), "--trainer.default_root_dir", str(tmp_path),
                   "--trainer.max_epochs", "3", "--trainer.enable_progress_bar", "false", "--model.members", "2"])
    assert cli.model.net.members == 2 and cli.model.restored_best
    test = [r for r in _metrics(tmp_path) if r.get("test/acc")][-1]
    accs = [float(test["test/acc_member00"]), float(test["test/acc_member01"])]
    assert float(test["test/acc"]) == pytest.approx(sum(accs) / 2, abs=1e-6)
    assert _column(_metrics(tmp_path), "time/epoch_s") and len(_column(_metrics(tmp_path), "time/epoch_s")) == 3
    out = capsys.readouterr().out
    assert "diffusing over the edges graph, gcn Laplacian, 2485 nodes" in out
    assert "over 2 members" in out and "restored by MemberEarlyStopping and saved as" in out
    best = tmp_path / "checkpoints" / "best.ckpt"  # the tested weights, weights only
    tested = run_cli(["test", "--config", str(CONFIGS / "coin_cora.yaml"), "--trainer.default_root_dir",
                      str(tmp_path / "test"), "--model.members", "2", "--ckpt_path", str(best)])
    assert tested.trainer.callback_metrics["test/acc"].item() == pytest.approx(float(test["test/acc"]), abs=1e-6)
