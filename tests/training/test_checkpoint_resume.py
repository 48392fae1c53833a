"""Resuming from ``last.ckpt`` continues at the saved epoch with the saved optimiser state."""

from __future__ import annotations

import copy

import lightning as L
import torch
from lightning.pytorch.callbacks import ModelCheckpoint

from cdflow.data.modules import DigitsDataModule
from cdflow.solvers import SolverSpec
from cdflow.training import ContinuousDepthClassifier


class StartState(L.Callback):
    """The epoch, global step and optimiser state when training (re)starts."""

    def on_train_start(self, trainer, pl_module) -> None:
        self.epoch, self.step = trainer.current_epoch, trainer.global_step
        self.optimizer = copy.deepcopy(trainer.optimizers[0].state_dict())
        self.lr = trainer.optimizers[0].param_groups[0]["lr"]


def _run(tmp_path, max_epochs: int, ckpt_path: str | None = None) -> tuple[L.Trainer, StartState]:
    L.seed_everything(0, verbose=False)
    dm = DigitsDataModule(batch_size=128)
    model = ContinuousDepthClassifier(dm.num_classes, dm.input_shape, hidden=16, width=16,
                                      solver=SolverSpec(method="euler", step_size=0.5), scheduler="cosine")
    start = StartState()
    # No monitor: with one, Lightning ≥ 2.6 writes last.ckpt only when the metric improves.
    ckpt = ModelCheckpoint(dirpath=tmp_path / "checkpoints", save_last=True)
    trainer = L.Trainer(
        default_root_dir=tmp_path, max_epochs=max_epochs, limit_train_batches=3, limit_val_batches=1,
        logger=False, enable_progress_bar=False, enable_model_summary=False, callbacks=[ckpt, start],
    )
    trainer.fit(model, dm, ckpt_path=ckpt_path)
    return trainer, start


def test_resume_from_last_checkpoint(tmp_path):
    first, _ = _run(tmp_path, max_epochs=2)
    last = tmp_path / "checkpoints" / "last.ckpt"
    saved = torch.load(last, weights_only=False, map_location="cpu")
    assert saved["epoch"] == 1 and saved["global_step"] == 6

    resumed, start = _run(tmp_path, max_epochs=3, ckpt_path="last")
    assert (start.epoch, start.step) == (2, 6)  # continues after the saved epoch, not from scratch
    saved_opt = saved["optimizer_states"][0]
    assert start.optimizer["state"].keys() == saved_opt["state"].keys() and saved_opt["state"]
    for key, state in saved_opt["state"].items():
        for name, value in state.items():
            assert torch.equal(torch.as_tensor(start.optimizer["state"][key][name]), torch.as_tensor(value)), name
    assert start.lr == saved_opt["param_groups"][0]["lr"]  # the schedule resumes too
    assert resumed.current_epoch == 3 and resumed.global_step == 9


def test_checkpoints_load_weights_only_and_round_trip(tmp_path):
    trainer, _ = _run(tmp_path, max_epochs=1)
    last = tmp_path / "checkpoints" / "last.ckpt"
    ckpt = torch.load(last, weights_only=True, map_location="cpu")  # plain hyper-parameters only
    assert ckpt["hyper_parameters"]["solver"]["method"] == "euler"
    restored = ContinuousDepthClassifier.load_from_checkpoint(last).eval()
    trained = trainer.lightning_module.eval()
    x = torch.rand(3, 64)
    with torch.no_grad():
        assert torch.allclose(restored(x), trained(x))
    assert restored.net.block.solver == trained.net.block.solver
