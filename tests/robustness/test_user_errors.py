"""What a demanding new user types gets a one-line cdflow error naming the fix (exit status 2), not a traceback
or pages of usage: bad checkpoints, a checkpoint of another configuration, float16, bad flags, ``--data
wine.csv``; float64 features just work; ``cdflow --help`` describes cdflow with examples."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
from torch.utils.data import TensorDataset

from cdflow.cli import run_cli
from cdflow.data.base import CdflowDataModule
from cdflow.errors import ConfigError, SolverError
from cdflow.training import ContinuousDepthClassifier
from cdflow.training.module import adaptive_solvers, check_precision

CONFIGS = Path(__file__).resolve().parents[2] / "experiments" / "configs"
QUICK = ["--trainer.max_epochs", "1", "--trainer.limit_train_batches", "2", "--trainer.limit_val_batches", "1",
         "--trainer.logger", "false", "--trainer.callbacks", "[]", "--test_after_fit", "false",
         "--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false",
         "--model.encoder", "linear", "--model.hidden", "4", "--model.width", "4"]


class Float64Points(CdflowDataModule):
    """A user's data module handing float64 features (what numpy arrays give)."""

    def __init__(self, batch_size: int = 32) -> None:
        super().__init__(transductive=False, batch_size=batch_size)
        self.num_features, self.num_classes, self.input_shape = 3, 2, (3,)

    def setup(self, stage: str | None = None) -> None:
        x = torch.randn(96, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
        y = (x[:, 0] > 0).long()
        self.datasets = {split: TensorDataset(x, y) for split in ("train", "val", "test")}


def _env(mp: pytest.MonkeyPatch) -> None:
    mp.setenv("WANDB_MODE", "disabled")
    mp.setattr(sys, "argv", ["cdflow"])


@pytest.fixture(autouse=True)
def _quiet(monkeypatch):
    _env(monkeypatch)


@pytest.fixture(scope="module")
def float64_run(tmp_path_factory) -> Path:
    """A run trained on `Float64Points` (3 features, 2 classes): its folder."""
    mp = pytest.MonkeyPatch()
    _env(mp)
    root = tmp_path_factory.mktemp("f64") / "run"
    try:
        run_cli(["fit", "--data", "test_user_errors.Float64Points", "--trainer.default_root_dir", str(root), *QUICK])
    finally:
        mp.undo()
    return root


def _refused(args: list[str], capsys) -> str:
    """Run the CLI on `args`, expect exit status 2 without traceback or usage text; return stderr."""
    with pytest.raises(SystemExit) as info:
        run_cli(args)
    err = capsys.readouterr().err
    assert info.value.code == 2, err
    assert "Traceback" not in err and "usage:" not in err
    return err


# -- float64 features ---------------------------------------------------------------------------------------
def test_float64_features_are_cast_to_the_model_dtype(float64_run):
    assert (float64_run / "checkpoints" / "last.ckpt").is_file()  # the fit above ran on float64 batches
    model = ContinuousDepthClassifier(2, (3,), hidden=4, width=4)
    x = torch.randn(5, 3, dtype=torch.float64)
    torch.testing.assert_close(model(x), model(x.float()))
    assert model(torch.randint(0, 3, (5, 3))).dtype == torch.float32  # integer features too


# -- checkpoints ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("subcommand", "case"), [
    *(("predict", case) for case in ("truncated", "empty", "yaml", "missing", "folder", "not torch")),
    ("fit", "truncated"), ("fit", "yaml"),  # resuming: refused before any run folder
])
def test_bad_checkpoint_files(float64_run, tmp_path, capsys, case, subcommand):
    good = float64_run / "checkpoints" / "last.ckpt"
    ckpt = tmp_path / "bad.ckpt"
    if case == "truncated":
        ckpt.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    elif case == "empty":
        ckpt.write_bytes(b"")
    elif case == "yaml":
        ckpt = CONFIGS / "moons.yaml"
    elif case == "folder":
        ckpt = float64_run
    elif case == "not torch":
        ckpt.write_bytes(b"\x00\x01 some binary file")
    root = tmp_path / "run"
    err = _refused([subcommand, "--data", "test_user_errors.Float64Points", "--trainer.default_root_dir", str(root),
                    *QUICK, "--ckpt_path", str(ckpt)], capsys)
    expected = {"truncated": "is truncated or corrupt", "empty": "is empty (0 bytes)",
                "yaml": "is not a checkpoint (a config file)", "missing": "does not exist",
                "folder": f"is a folder, not a checkpoint file: give one of its checkpoints, e.g. --ckpt_path {good}",
                "not torch": "is not a checkpoint (not a PyTorch file)"}[case]
    assert f"cdflow {subcommand}: error: ConfigError: --ckpt_path {ckpt} {expected}" in err
    if case == "yaml":
        assert f"a config goes to --config {ckpt}" in err and "weights_only" not in err
    assert not root.exists()


@pytest.mark.parametrize("subcommand", ["test", "predict", "validate"])
def test_evaluating_needs_trained_weights(tmp_path, capsys, subcommand):
    args = [subcommand, "--config", str(CONFIGS / "moons.yaml"), "--trainer.default_root_dir", str(tmp_path)]
    err = _refused(args, capsys)
    assert f"cdflow {subcommand} needs trained weights: give --ckpt_path <run folder>/checkpoints/last.ckpt" in err
    assert "untrained initial weights" in err
    if subcommand == "predict":
        assert "no checkpoints/last.ckpt under --trainer.default_root_dir" in _refused([*args, "--ckpt_path", "last"],
                                                                                       capsys)
        assert "--ckpt_path best names the best checkpoint of a fit" in _refused([*args, "--ckpt_path", "best"],
                                                                                 capsys)


def test_a_checkpoint_of_other_sizes_names_them_and_its_config(float64_run, tmp_path, capsys):
    ckpt = float64_run / "checkpoints" / "last.ckpt"
    err = _refused(["predict", "--config", str(CONFIGS / "moons.yaml"), "--trainer.default_root_dir", str(tmp_path),
                    "--ckpt_path", str(ckpt)], capsys)
    assert f"the checkpoint {ckpt} was written by a model with other sizes" in err
    assert "examples of shape (3,) (the data module gives (2,))" in err
    assert "net.encoder.0.weight is [4, 3] in the checkpoint but [4, 2] here" in err
    assert f"--config {float64_run / 'config.yaml'}" in err and "size mismatch" not in err


# -- precision ------------------------------------------------------------------------------------------------
def test_float16_is_refused_for_adaptive_solvers(tmp_path, capsys):
    root = tmp_path / "run"
    err = _refused(["fit", "--config", str(CONFIGS / "moons.yaml"), "--trainer.default_root_dir", str(root), *QUICK,
                    "--trainer.precision", "16-true"], capsys)
    assert "ConfigError: --trainer.precision 16-true computes in float16" in err
    assert "adaptive solver (dopri5" in err and "--trainer.precision 32-true" in err and "stiff" not in err
    assert not root.exists()
    model = ContinuousDepthClassifier(2, (2,), hidden=4, width=4)
    with pytest.raises(ConfigError, match="16-mixed computes in float16"):  # checked again in setup (GPU AMP)
        check_precision("16-mixed", adaptive_solvers(model.net))
    check_precision("bf16-mixed", adaptive_solvers(model.net))
    with pytest.raises(SolverError, match=r"the state is float16 .*\(--trainer.precision 32-true"):
        model.half()(torch.randn(4, 2))  # the solver's own message, for uses outside the CLI


def test_bfloat16_trains(tmp_path):
    cli = run_cli(["fit", "--config", str(CONFIGS / "moons.yaml"), "--trainer.default_root_dir", str(tmp_path),
                   *QUICK, "--trainer.precision", "bf16-true"])
    assert cli.trainer.global_step == 2 and next(cli.model.parameters()).dtype == torch.bfloat16


# -- flags ----------------------------------------------------------------------------------------------------
FLAG_CASES = {
    "knn_k 0": (["--model.diffusion.kind", "graph", "--model.graph.knn_k", "0"],
                "ConfigError: --model.graph.knn_k must be an int ≥ 2"),
    "negative lr": (["--model.lr", "-1"], "ConfigError: --model.lr must be > 0, got -1.0"),
    "label smoothing 2": (["--model.label_smoothing", "2"], "ConfigError: --model.label_smoothing must be in [0, 1)"),
    "lr_gamma 0": (["--model.lr_gamma", "0"], "ConfigError: --model.lr_gamma must be > 0"),
    "hidden 0": (["--model.hidden", "0"], "ConfigError: --model.hidden must be an int ≥ 1, got 0"),
    "depth 0": (["--model.depth", "0"], "ConfigError: --model.depth must be an int ≥ 1, got 0"),
    "wrong type": (["--model.hidden", "abc"], "cdflow fit: error: --model.hidden: 'abc' is not an int"),
    "a file as --data": (["--data", "wine.csv"], "cdflow fit: error: --data: no data module named 'wine.csv'; to train "
                         "on a file use --data TabularDataModule --data.path wine.csv"),
    "abbreviated flag": (["--trainer.max_epoch", "1"], "unrecognized arguments: --trainer.max_epoch 1"),
    "batch_size 0": (["--data.batch_size", "0"], "ConfigError: --data.batch_size must be an integer ≥ 1, got 0"),
    "unknown --data": (["--data", "Digits"], "no data module named 'Digits'; cdflow's data modules: DigitsDataModule"),
}


@pytest.mark.parametrize("case", list(FLAG_CASES))
def test_bad_flags_stop_at_once_with_a_short_message(tmp_path, capsys, case):
    extra, expected = FLAG_CASES[case]
    root = tmp_path / "run"
    err = _refused(["fit", "--config", str(CONFIGS / "moons.yaml"), "--trainer.default_root_dir", str(root), *extra],
                   capsys)
    assert expected in err and err.rstrip().endswith("(see cdflow fit --help)")
    assert len(err.strip().splitlines()) <= 4  # the message and the hint, not the usage text
    assert not root.exists()


def test_an_existing_data_file_given_to_data(tmp_path, capsys):
    table = tmp_path / "wine.csv"
    table.write_text("alcohol,label\n13.2,a\n")
    err = _refused(["fit", f"--data={table}"], capsys)
    assert f"no data module named '{table}'; to train on a file use --data TabularDataModule --data.path {table}" in err


def test_help_describes_cdflow_with_examples(capsys):
    with pytest.raises(SystemExit) as info:
        run_cli(["--help"])
    out = capsys.readouterr().out
    assert info.value.code == 0 and "Lightning Trainer command line tool" not in out
    assert "continuous-depth networks written as convection-diffusion equations" in out
    lines = out.splitlines()
    for example in ("cdflow fit --config experiments/configs/digits.yaml",
                    "cdflow fit --config experiments/configs/coin_cora.yaml",
                    "cdflow predict --config runs/digits/config.yaml --ckpt_path runs/digits/checkpoints/last.ckpt"):
        assert any(line.strip().startswith(example) for line in lines), example  # one line each, not re-wrapped
