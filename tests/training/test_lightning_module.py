"""ContinuousDepthClassifier: one fast_dev_run per DataModule and batch convention, stats, plug-in models."""

from __future__ import annotations

import lightning as L
import pytest
import torch
from lightning.pytorch.loggers import CSVLogger
from torch import Tensor, nn

from cdflow.data.modules import DigitsDataModule, GraphDataModule, MNISTDataModule, ToyDataModule
from cdflow.errors import ConfigError
from cdflow.solve import ContinuousDepth
from cdflow.solvers import SolverSpec
from cdflow.terms import Convection
from cdflow.training import ContinuousDepthClassifier
from cdflow.velocity import MLPVelocity


def _trainer(tmp_path, **kwargs) -> L.Trainer:
    opts = dict(
        default_root_dir=tmp_path, logger=CSVLogger(tmp_path), enable_progress_bar=False,
        enable_model_summary=False, enable_checkpointing=False, log_every_n_steps=1,
    )
    opts.update(kwargs)
    return L.Trainer(**opts)


def _classifier(dm, **kwargs) -> ContinuousDepthClassifier:
    opts = dict(hidden=16, width=16, solver=SolverSpec(method="rk4", step_size=0.5))
    opts.update(kwargs)
    return ContinuousDepthClassifier(dm.num_classes, dm.input_shape, **opts)


class Recorder(L.Callback):
    """Keeps the logged metrics after each training batch and at the end of validation / test."""

    def __init__(self) -> None:
        self.train: list[dict[str, float]] = []
        self.val: dict[str, float] = {}
        self.test: dict[str, float] = {}

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.train.append({k: float(v) for k, v in trainer.callback_metrics.items()})

    def on_validation_epoch_end(self, trainer, pl_module) -> None:
        self.val = {k: float(v) for k, v in trainer.callback_metrics.items()}

    def on_test_epoch_end(self, trainer, pl_module) -> None:
        self.test = {k: float(v) for k, v in trainer.callback_metrics.items()}


def _fit_and_test(tmp_path, model, dm, **trainer_kwargs) -> Recorder:
    rec = Recorder()
    trainer = _trainer(tmp_path, callbacks=[rec], **trainer_kwargs)
    trainer.fit(model, dm)
    trainer.test(model, dm, verbose=False)
    return rec


@pytest.mark.parametrize("transductive", [False, True])
def test_digits_fast_dev_run_logs_losses_accuracies_and_nfe(tmp_path, transductive):
    dm = DigitsDataModule(transductive=transductive, batch_size=64)
    rec = _fit_and_test(tmp_path, _classifier(dm), dm, fast_dev_run=True)
    step = rec.train[-1]
    # rk4 with step 0.5 over [0, 1]: 2 steps × 4 evaluations, each backpropagated once.
    assert step["train/nfe_forward"] == 8 and step["train/nfe_backward"] == 8 and step["train/steps"] == 2
    assert "train/loss" in step
    assert {"val/loss", "val/acc", "val/nfe_forward"} <= rec.val.keys()
    assert {"test/loss", "test/acc"} <= rec.test.keys() and 0.0 <= rec.test["test/acc"] <= 1.0


@pytest.mark.parametrize("transductive", [False, True])
def test_toys_fast_dev_run(tmp_path, transductive):
    dm = ToyDataModule("moons", transductive=transductive)
    model = _classifier(dm, encoder="none", solver=SolverSpec(method="dopri5"))
    rec = _fit_and_test(tmp_path, model, dm, fast_dev_run=True)
    assert rec.train[-1]["train/nfe_forward"] >= 8  # dopri5: 6 per step + 2 for the initial step size
    assert "train/steps_rejected" in rec.train[-1]


def test_transductive_stages_score_their_own_masks(tmp_path):
    dm = ToyDataModule("moons", transductive=True)
    dm.setup()
    model = _classifier(dm, encoder="none")
    batch = dm.batch
    for stage, key in (("train", "train_mask"), ("val", "val_mask"), ("test", "test_mask")):
        logits, y = model._logits_targets(batch, stage)
        assert logits.shape[0] == int(batch[key].sum()) and torch.equal(y, batch["y"][batch[key]])


def test_cora_full_batch_fast_dev_run(tmp_path, require_data):
    require_data("gnn-benchmark", "cora.npz")
    dm = GraphDataModule("cora")
    rec = _fit_and_test(tmp_path, _classifier(dm, dropout=0.5), dm, fast_dev_run=True)
    assert rec.train[-1]["train/nfe_forward"] == 8 and "test/acc" in rec.test


def test_mnist_conv_ode_limited_batches(tmp_path, require_data):
    require_data("mnist")
    dm = MNISTDataModule(batch_size=32, val_size=100)
    model = _classifier(dm, encoder="conv", velocity="conv", hidden=8, width=8, activation="relu")
    rec = _fit_and_test(
        tmp_path, model, dm, max_epochs=1, limit_train_batches=2, limit_val_batches=1, limit_test_batches=1,
        num_sanity_val_steps=0,
    )
    assert len(rec.train) == 2 and rec.train[-1]["train/nfe_backward"] == 8
    assert "test/acc" in rec.test


class TwoBlocks(nn.Module):
    """A plug-in network with two ODE blocks and a graph-aware forward (records the edge_index it got)."""

    def __init__(self, dim: int, num_classes: int) -> None:
        super().__init__()
        self.first = ContinuousDepth(Convection(MLPVelocity(dim, 8)), SolverSpec(method="euler", step_size=0.25))
        self.second = ContinuousDepth(Convection(MLPVelocity(dim, 8)), SolverSpec(method="rk4", step_size=0.5))
        self.head = nn.Linear(dim, num_classes)
        self.seen_edges: list[Tensor | None] = []

    def forward(self, x: Tensor, edge_index: Tensor | None = None) -> Tensor:
        self.seen_edges.append(edge_index)
        return self.head(self.second(self.first(x)))


def test_plug_in_model_stats_are_summed_over_blocks(tmp_path):
    dm = ToyDataModule("moons")
    net = TwoBlocks(2, dm.num_classes)
    model = ContinuousDepthClassifier(dm.num_classes, model=net)
    assert "model" not in model.hparams  # a Python-built network is in the state dict, not the hparams
    rec = _fit_and_test(tmp_path, model, dm, fast_dev_run=True)
    assert rec.train[-1]["train/nfe_forward"] == 4 + 8  # euler 4 steps + rk4 2 steps × 4
    assert rec.train[-1]["train/nfe_backward"] == 12
    assert model.net is net and net.seen_edges and all(e is None for e in net.seen_edges)


def test_graph_batches_pass_edge_index_to_graph_aware_models(require_data):
    require_data("gnn-benchmark", "cora.npz")
    dm = GraphDataModule("cora")
    dm.setup()
    net = TwoBlocks(dm.num_features, dm.num_classes)
    model = ContinuousDepthClassifier(dm.num_classes, model=net)
    model._logits_targets(dm.batch, "train")
    assert net.seen_edges[-1] is dm.batch["edge_index"]


def test_build_model_hook_in_a_subclass():
    class Linear(ContinuousDepthClassifier):
        def build_model(self) -> nn.Module:
            return nn.Linear(self.input_shape[0], self.num_classes)

    model = Linear(3, input_shape=5)
    assert isinstance(model.net, nn.Linear) and model(torch.zeros(2, 5)).shape == (2, 3)


def test_optimizers_and_schedules(tmp_path):
    dm = ToyDataModule("moons")
    model = _classifier(dm, optimizer="sgd", lr=0.1, momentum=0.5, scheduler="multistep", milestones=[1])
    trainer = _trainer(tmp_path, max_epochs=2, limit_train_batches=1, limit_val_batches=0)
    trainer.fit(model, dm)
    opt = trainer.optimizers[0]
    assert isinstance(opt, torch.optim.SGD) and opt.param_groups[0]["momentum"] == 0.5
    assert opt.param_groups[0]["lr"] == pytest.approx(0.01)  # × 0.1 after epoch 1
    bad = _classifier(dm, scheduler="multistep")
    with pytest.raises(ConfigError, match="milestones"):
        _trainer(tmp_path, max_epochs=1, limit_train_batches=1, limit_val_batches=0).fit(bad, dm)


def test_solver_spec_is_copied_and_dicts_are_accepted():
    spec = SolverSpec(method="rk4", step_size=0.5)
    model = ContinuousDepthClassifier(2, 2, encoder="none", solver=spec)
    assert model.solver == spec and model.solver is not spec
    restored = ContinuousDepthClassifier(2, 2, encoder="none", solver={"method": "euler", "step_size": 0.5})
    assert restored.net.block.solver.method == "euler"


def test_default_network_flags_beside_a_given_network_are_named_in_a_warning():
    """With model=... the flags that build the default network do nothing: each one set is named, none silently
    dropped; with every such flag at its default there is no warning."""
    import warnings

    from cdflow.models import DiffusionSpec

    net = nn.Linear(4, 3)
    with pytest.warns(UserWarning) as record:
        ContinuousDepthClassifier(3, model=net, hidden=10, dropout=0.5,
                                  solver=SolverSpec(method="rk4", step_size=0.1), diffusion=DiffusionSpec(gamma=2.0))
    msg = " ".join(str(w.message) for w in record)
    for flag in ("--model.hidden=10", "--model.dropout=0.5", "--model.solver.method='rk4'",
                 "--model.solver.step_size=0.1", "--model.diffusion.gamma=2.0", "--model.model Linear"):
        assert flag in msg
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        ContinuousDepthClassifier(3, model=net, lr=0.01, weight_decay=5e-4)
