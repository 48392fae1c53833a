"""``cdflow predict`` writes a CSV of predictions (class names, probabilities, Monte Carlo spread) and says where."""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

import pytest
import torch

from cdflow.cli import run_cli
from cdflow.data.modules import ToyDataModule
from cdflow.training.predictions import SPLITS, default_predictions_path, split_codes, write_predictions

CONFIGS = Path(__file__).resolve().parents[2] / "experiments" / "configs"
QUIET = ["--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false"]


class NamedMoons(ToyDataModule):
    """Moons whose classes have names (as the file data modules give them)."""

    label_names = ["upper", "lower"]


@pytest.fixture(autouse=True)
def _quiet(monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "disabled")
    monkeypatch.setattr(sys, "argv", ["cdflow"])


def _fit(root: Path, *extra: str) -> Path:
    """One quick moons fit into `root`; returns its last.ckpt."""
    run_cli(["fit", "--config", str(CONFIGS / "moons.yaml"), "--trainer.default_root_dir", str(root),
             "--trainer.max_epochs", "1", "--trainer.limit_train_batches", "2", "--trainer.limit_val_batches", "1",
             "--trainer.logger", "false", "--trainer.callbacks", "[]", "--test_after_fit", "false",
             "--model.encoder", "linear", "--model.hidden", "4", "--model.width", "8", *QUIET, *extra])
    return root / "checkpoints" / "last.ckpt"


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


@pytest.fixture(scope="module")
def moons_run(tmp_path_factory) -> Path:
    mp = pytest.MonkeyPatch()
    mp.setenv("WANDB_MODE", "disabled")
    mp.setattr(sys, "argv", ["cdflow"])
    try:
        return _fit(tmp_path_factory.mktemp("moons") / "run").parents[1]
    finally:
        mp.undo()


def test_predict_writes_one_row_per_test_example_beside_the_run(moons_run, capsys):
    ckpt = moons_run / "checkpoints" / "last.ckpt"
    config = (moons_run / "config.yaml").read_text()
    cli = run_cli(["predict", "--config", str(moons_run / "config.yaml"), "--ckpt_path", str(ckpt), *QUIET])
    assert (moons_run / "config.yaml").read_text() == config  # still the fit's config
    path = moons_run / "predictions-last.csv"
    assert cli.predictions_path == path == default_predictions_path(ckpt)
    assert f"written to {path}" in capsys.readouterr().out
    rows = _rows(path)
    assert len(rows) == 200  # the test split of 1,000 moons
    assert list(rows[0]) == ["index", "label", "prediction", "p_0", "p_1"]
    assert [int(r["index"]) for r in rows] == list(range(200))
    for r in rows:
        p = [float(r["p_0"]), float(r["p_1"])]
        assert abs(sum(p) - 1) < 1e-4 and r["prediction"] == str(int(p[1] > p[0]))


def test_class_names_come_from_labels_json_beside_the_checkpoints(moons_run, tmp_path):
    (moons_run / "labels.json").write_text(json.dumps({"label_names": ["north", "south"]}))
    try:
        out = tmp_path / "named.csv"
        run_cli(["predict", "--config", str(moons_run / "config.yaml"), "--ckpt_path", "last",
                 "--predictions_file", str(out), *QUIET])
    finally:
        (moons_run / "labels.json").unlink()
    rows = _rows(out)
    assert list(rows[0]) == ["index", "label", "prediction", "p_north", "p_south"]
    assert {r["label"] for r in rows} == {"north", "south"} and {r["prediction"] for r in rows} <= {"north", "south"}


def test_class_names_of_the_data_module_win(moons_run):
    run_cli(["predict", "--config", str(moons_run / "config.yaml"), "--data", "test_predict.NamedMoons",
             "--ckpt_path", str(moons_run / "checkpoints" / "last.ckpt"), *QUIET])
    rows = _rows(moons_run / "predictions-last.csv")
    assert list(rows[0])[-2:] == ["p_upper", "p_lower"] and {r["label"] for r in rows} == {"upper", "lower"}


def test_graph_data_predicts_every_node_with_its_split(tmp_path):
    ckpt = _fit(tmp_path / "run", "--data.transductive", "true")
    run_cli(["predict", "--config", str(tmp_path / "run" / "config.yaml"), "--ckpt_path", str(ckpt), *QUIET])
    rows = _rows(tmp_path / "run" / "predictions-last.csv")
    assert len(rows) == 1000 and list(rows[0])[:3] == ["index", "split", "label"]
    counts = {s: sum(r["split"] == s for r in rows) for s in ("train", "val", "test")}
    assert counts == {"train": 600, "val": 200, "test": 200}


def test_sde_noise_adds_the_monte_carlo_spread(tmp_path):
    ckpt = _fit(tmp_path / "run", "--model.diffusion.kind", "noise", "--model.solver.method", "euler",
                "--model.solver.step_size", "0.25", "--model.diffusion.n_samples", "4",
                "--model.diffusion.sigma", "0.5")
    run_cli(["predict", "--config", str(tmp_path / "run" / "config.yaml"), "--ckpt_path", str(ckpt), *QUIET])
    rows = _rows(tmp_path / "run" / "predictions-last.csv")
    assert list(rows[0])[-4:] == ["p_0", "p_1", "std_0", "std_1"]
    spread = torch.tensor([[float(r["std_0"]), float(r["std_1"])] for r in rows])
    assert (spread >= 0).all() and (spread > 0).any()
    torch.testing.assert_close(spread[:, 0], spread[:, 1], rtol=1e-4, atol=1e-6)  # two classes: p_1 = 1 − p_0


def test_writer_columns_names_and_splits(tmp_path):
    probs = torch.tensor([[0.7, 0.2, 0.1], [0.1, 0.1, 0.8]])
    splits = split_codes(2, torch.tensor([True, False]), None, torch.tensor([False, True]))
    path = write_predictions(tmp_path / "sub" / "p.csv", probs, spread=torch.full((2, 3), 0.01),
                             labels=torch.tensor([0, -1]), splits=splits, label_names=["a", "b", "c,d"])
    rows = _rows(path)
    assert list(rows[0]) == ["index", "split", "label", "prediction", "p_a", "p_b", "p_c,d", "std_a", "std_b",
                             "std_c,d"]
    assert [r["split"] for r in rows] == ["train", "test"] and SPLITS[0] == "none"
    assert [r["label"] for r in rows] == ["a", "-1"] and [r["prediction"] for r in rows] == ["a", "c,d"]
    with pytest.raises(Exception, match="3 class names were given for a model with 2 classes"):
        write_predictions(tmp_path / "q.csv", probs[:, :2], label_names=["a", "b", "c"])
