"""One rank of the DDP equivalence test (not a test module: ``test_ddp_equivalence.py`` launches it).

Started once per rank with the torchrun environment (``RANK``, ``LOCAL_RANK``, ``WORLD_SIZE``,
``MASTER_ADDR``, ``MASTER_PORT``), so Lightning sees externally created processes and several fits can
share one gloo process group. For each case it trains with ``strategy='ddp'`` in float64 and saves, per
rank, ``<out>/<case>_rank<r>.pt``: the initial weights, each step's batch and (all-reduced) gradients,
the final weights, and the validation metrics as Lightning reduced them next to this rank's own sums.

    python ddp_worker.py OUT_DIR [CASE ...]      # cases: plain, gather, pergraph, noise
"""

from __future__ import annotations

import sys
import warnings
from pathlib import Path
from typing import Any

import lightning as L
import torch

from cdflow.data.modules import DigitsDataModule
from cdflow.models import DiffusionSpec, GraphSpec
from cdflow.solvers import SolverSpec
from cdflow.training import ContinuousDepthClassifier

STEPS, BATCH = 3, 16


def build_model(case: str) -> ContinuousDepthClassifier:
    """The network of a case (seeded: every process builds the same initial weights)."""
    L.seed_everything(0, verbose=False)
    common: dict[str, Any] = {"hidden": 8, "width": 8, "lr": 0.05, "optimizer": "adam"}
    if case == "plain":
        return ContinuousDepthClassifier(10, (64,), solver=SolverSpec(method="rk4", step_size=0.5), **common)
    if case in ("gather", "pergraph"):
        graph = GraphSpec(source="knn", knn_k=5, knn_k_scale=3, per_batch=True, gather=case == "gather")
        diffusion = DiffusionSpec(kind="graph", integrator="split", gamma=0.5, n_steps=2, method="krylov")
        return ContinuousDepthClassifier(10, (64,), solver=SolverSpec(method="rk4", step_size=0.5),
                                         diffusion=diffusion, graph=graph, **common)
    if case == "noise":
        diffusion = DiffusionSpec(kind="noise", sigma=0.3, n_samples=2)
        return ContinuousDepthClassifier(10, (64,), solver=SolverSpec(method="euler", step_size=0.25),
                                         diffusion=diffusion, seed=7, **common)
    raise ValueError(case)


def probe_input() -> torch.Tensor:
    """A fixed input on which the noise case compares the Brownian paths of the ranks."""
    return torch.linspace(-1, 1, 4 * 64, dtype=torch.float64).reshape(4, 64)


class Recorder(L.Callback):
    """Records what the equivalence test compares."""

    def __init__(self) -> None:
        self.record: dict[str, Any] = {"batches": [], "grads": [], "val_sum": 0.0, "val_correct": 0, "val_n": 0}

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.record["initial"] = {k: v.detach().clone() for k, v in pl_module.state_dict().items()}

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        net = pl_module.net
        self.record["seed"] = getattr(net, "seed", None)
        if getattr(net, "noise", None) is not None:
            probe = __import__("copy").deepcopy(net).train()
            with torch.no_grad():
                self.record["noise_probe"] = probe(probe_input())

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.record["batches"].append([t.detach().clone() for t in batch])

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        self.record["grads"].append({n: p.grad.detach().clone() for n, p in pl_module.named_parameters()
                                     if p.grad is not None})

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        n = int(outputs["target"].shape[0])
        self.record["val_sum"] += float(outputs["loss"]) * n
        self.record["val_correct"] += int((outputs["preds"] == outputs["target"]).sum())
        self.record["val_n"] += n

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.record["final"] = {k: v.detach().clone() for k, v in pl_module.state_dict().items()}
        self.record["logged"] = {k: float(v) for k, v in trainer.callback_metrics.items()}
        self.record["rank"], self.record["world_size"] = trainer.global_rank, trainer.world_size


def run_case(case: str, out: Path) -> None:
    """Train one case with DDP on CPU (gloo) and save this rank's record."""
    model = build_model(case)
    recorder = Recorder()
    trainer = L.Trainer(
        accelerator="cpu", devices=2, num_nodes=1, strategy="ddp", precision="64-true",
        max_steps=STEPS, limit_train_batches=STEPS, limit_val_batches=2, num_sanity_val_steps=0,
        logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
        callbacks=[recorder],
    )
    trainer.fit(model, DigitsDataModule(batch_size=BATCH))
    torch.save(recorder.record, out / f"{case}_rank{trainer.global_rank}.pt")


def main() -> None:
    warnings.filterwarnings("ignore")
    out = Path(sys.argv[1])
    for case in sys.argv[2:] or ["plain", "gather", "pergraph", "noise"]:
        run_case(case, out)


if __name__ == "__main__":
    main()
