"""RNODE in training: the flags reach every ContinuousDepth block and add λ_k E_k + λ_j E_j to the loss, the
integrals are logged beside the NFE, evaluation does not integrate them, zero λ trains exactly as no
regularisation, and networks where the penalty cannot act are refused."""

from __future__ import annotations

import csv
import sys
from pathlib import Path

import lightning as L
import pytest
import torch

from cdflow.cli import run_cli
from cdflow.data.modules import ToyDataModule
from cdflow.errors import ConfigError
from cdflow.regularization import RegularizationSpec
from cdflow.solvers import SolverSpec
from cdflow.training import ContinuousDepthClassifier


@pytest.fixture(autouse=True)
def _quiet(monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "disabled")
    monkeypatch.setattr(sys, "argv", ["cdflow"])


def _toy_batch(n: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    dm = ToyDataModule("moons", batch_size=n)
    dm.setup("fit")
    return next(iter(dm.train_dataloader()))


def _classifier(reg: RegularizationSpec | None = None, **kwargs) -> ContinuousDepthClassifier:
    torch.manual_seed(0)
    opts = dict(hidden=8, width=8, solver=SolverSpec(method="rk4", step_size=0.25))
    if reg is not None:
        opts["regularization"] = reg
    opts.update(kwargs)
    return ContinuousDepthClassifier(2, (2,), **opts)


@pytest.mark.filterwarnings(r"ignore:You are trying to `self.log\(\)`")
def test_training_loss_is_classification_loss_plus_the_weighted_integrals():
    batch = _toy_batch()
    plain = _classifier()
    reg = RegularizationSpec(kinetic=0.3, jacobian=0.7)
    model = _classifier(reg)
    model.load_state_dict(plain.state_dict())
    assert model.net.block.regularization == reg
    torch.manual_seed(1)
    base = plain.training_step(batch, 0)
    torch.manual_seed(1)
    loss = model.training_step(batch, 0)
    values = model.net.block.regularization_values
    assert values.kinetic > 0 and values.jacobian > 0
    torch.testing.assert_close(loss - base, 0.3 * values.kinetic + 0.7 * values.jacobian)
    # the penalty's gradient reaches the velocity's weights
    grad = torch.autograd.grad(loss - base, model.net.block.drift.terms[0].velocity.first.weight)[0]
    assert grad.abs().sum() > 0
    # evaluation solves for the state alone
    model.eval()
    with torch.no_grad():
        model(batch[0])
    assert model.net.block.regularization_values is None


def _fit(tmp_path: Path, reg: RegularizationSpec | None, **solver) -> tuple[ContinuousDepthClassifier, list[dict]]:
    L.seed_everything(0)
    dm = ToyDataModule("moons", batch_size=64)
    model = _classifier(reg, solver=SolverSpec(**(solver or {"method": "dopri5", "rtol": 1e-3, "atol": 1e-4})))
    rows: list[dict] = []

    class Keep(L.Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            rows.append({k: float(v) for k, v in trainer.callback_metrics.items()})

    trainer = L.Trainer(default_root_dir=tmp_path, max_epochs=2, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, callbacks=[Keep()],
                        limit_train_batches=3, limit_val_batches=1)
    trainer.fit(model, dm)
    return model, rows


def test_zero_weights_train_exactly_as_no_regularisation(tmp_path):
    plain, rows_plain = _fit(tmp_path / "a", None)
    zero, rows_zero = _fit(tmp_path / "b", RegularizationSpec(kinetic=0.0, jacobian=0.0))
    for a, b in zip(plain.state_dict().values(), zero.state_dict().values()):
        assert torch.equal(a, b)
    assert [r["train/nfe_forward"] for r in rows_zero] == [r["train/nfe_forward"] for r in rows_plain]
    assert not any(k.startswith("train/reg") for r in rows_zero for k in r)


def test_regularised_fit_logs_integrals_beside_nfe_with_the_backsolve_adjoint(tmp_path):
    model, rows = _fit(tmp_path, RegularizationSpec(kinetic=0.1, jacobian=0.1), method="dopri5",
                       adjoint="backsolve", seminorm=True)
    assert rows and all({"train/reg_kinetic", "train/reg_jacobian", "train/reg_loss", "train/nfe_forward"} <= r.keys()
                        for r in rows)
    assert all(r["train/reg_kinetic"] > 0 and r["train/reg_jacobian"] > 0 for r in rows)
    assert all(r["train/nfe_backward"] > 0 for r in rows)


def test_networks_without_a_continuous_depth_block_are_refused():
    with pytest.raises(ConfigError, match="has none"):
        ContinuousDepthClassifier(2, (2,), network="cdnet", regularization=RegularizationSpec(kinetic=0.1))


def test_the_flags_reach_the_model_and_the_log(tmp_path):
    root = tmp_path / "run"
    cli = run_cli(["fit", "--data", "ToyDataModule", "--trainer.max_epochs", "1", "--trainer.limit_train_batches",
                   "2", "--trainer.limit_val_batches", "1", "--trainer.limit_test_batches", "1",
                   "--trainer.enable_progress_bar", "false", "--trainer.default_root_dir", str(root),
                   "--model.hidden", "8", "--model.width", "8",
                   "--model.regularization.kinetic", "0.05", "--model.regularization.jacobian", "0.02",
                   "--model.regularization.probe", "rademacher"])
    spec = RegularizationSpec(kinetic=0.05, jacobian=0.02, probe="rademacher")
    assert cli.model.regularization == spec and cli.model.net.block.regularization == spec
    assert cli.model.hparams["regularization"] == {"kinetic": 0.05, "jacobian": 0.02, "probe": "rademacher"}
    with open(next(root.rglob("metrics.csv"))) as fh:
        rows = list(csv.DictReader(fh))
    kin = [float(r["train/reg_kinetic"]) for r in rows if r.get("train/reg_kinetic")]
    jac = [float(r["train/reg_jacobian"]) for r in rows if r.get("train/reg_jacobian")]
    assert len(kin) == 2 and len(jac) == 2 and min(kin + jac) > 0


@pytest.mark.parametrize(("flags", "message"), [
    (["--model.regularization.kinetic", "-1"], "kinetic must be a finite number ≥ 0"),
    (["--model.regularization.probe", "rademacher"], "which is off (jacobian = 0)"),
    (["--model.network", "cdnet", "--model.regularization.jacobian", "0.1"], "has none"),
])
def test_bad_regularisation_flags_stop_before_training(tmp_path, capsys, flags, message):
    root = tmp_path / "run"
    with pytest.raises(SystemExit) as exit_info:
        run_cli(["fit", "--data", "ToyDataModule", "--trainer.max_epochs", "1",
                 "--trainer.default_root_dir", str(root), *flags])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert not (root / "checkpoints").exists()
