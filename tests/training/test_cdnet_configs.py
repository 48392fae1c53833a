"""The ready configs of the continuous convection–diffusion net (`experiments/configs/cdnet_<dataset>.yaml`):
they parse, train two epochs through `cdflow fit`, and build the network of the graph protocol's row
(`experiments.graph.configs.CDNET`, chosen on validation accuracy by `experiments.graph.search_cdnet`)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from cdflow.cli import run_cli

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = ROOT / "experiments" / "configs"
SHAPES = {"cora": (1433, 7), "citeseer": (3703, 6)}


@pytest.fixture(autouse=True)
def _quiet(monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "disabled")
    monkeypatch.setattr(sys, "argv", ["cdflow"])


def _protocol_net(dataset: str):
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    from experiments.graph.configs import CDNET, CONSISTENCY_KEYS, continuous_net

    f, c = SHAPES[dataset]
    return continuous_net(f, c, 0, **{k: v for k, v in CDNET[dataset].items() if k not in CONSISTENCY_KEYS})


def _protocol_consistency(dataset: str):
    """The row's training objective: its consistency regularisation (off unless its point sets it)."""
    from experiments.graph.configs import CDNET, ModelSpec, Training

    return ModelSpec("cdnet", "cdnet", "cdnet", dict(CDNET[dataset])).training(Training()).consistency_spec()


def _settings(net) -> dict:
    """Everything that defines the network apart from its weights."""
    return {"solver": net.solver, "diffusion": net.diffusion, "propagate": net.propagate,
            "input_dropout": net.input_dropout, "hidden_dropout": net.hidden_dropout.p,
            "head_dropout": net.head_dropout.p, "encoder_activation": type(net.encoder_activation).__name__,
            "encoder": (net.encoder_kind, tuple(net.encoder.weight.shape)), "head": tuple(net.head.weight.shape),
            "velocity": str(net.velocity), "graph": net.graph}


@pytest.mark.parametrize("dataset", ["cora", "citeseer"])
def test_cdnet_config_is_the_protocol_row_and_trains(tmp_path, dataset, require_data):
    require_data("gnn-benchmark", f"{dataset}.npz")
    cli = run_cli(["fit", "--config", str(CONFIGS / f"cdnet_{dataset}.yaml"), "--trainer.default_root_dir",
                   str(tmp_path), "--trainer.max_epochs", "2", "--trainer.enable_progress_bar", "false"])
    net = cli.model.net
    assert _settings(net) == _settings(_protocol_net(dataset))
    assert cli.model.consistency == _protocol_consistency(dataset)
    assert cli.trainer.current_epoch == 2
    assert 0.0 <= cli.trainer.callback_metrics["test/acc"].item() <= 1.0
