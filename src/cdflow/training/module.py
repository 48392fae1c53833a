"""`ContinuousDepthClassifier`: the LightningModule that trains any continuous-depth classifier.

Batches follow the two conventions of :mod:`cdflow.data.base`: inductive mini-batches ``(x, y)``, or one
transductive full batch ``{"x", "y", "train_mask", "val_mask", "test_mask", "edge_index"}`` per stage, where
each stage scores only the nodes of its own mask.
"""

from __future__ import annotations

import dataclasses
import inspect
import math
import warnings
from typing import Any, Literal

import lightning as L
import torch.nn.functional as F
from torch import Tensor, nn
from torch.optim import Optimizer
from torchmetrics.classification import MulticlassAccuracy

from cdflow.errors import ConfigError, DataError, SolverError
from cdflow.models.cdnet import ConvectionDiffusionNet
from cdflow.models.diffusion_spec import DiffusionSpec
from cdflow.models.graph_source import GraphSpec
from cdflow.solvers import SolverSpec
from cdflow.training.distributed import fold_rank
from cdflow.training.fault import (
    FailureGuard,
    FailureMode,
    StepContext,
    latest_checkpoint,
    loss_failure,
    nonfinite_grads,
)
from cdflow.training.networks import ActivationName, EncoderKind, VelocityKind, build_classifier
from cdflow.training.optim import OptimizerName, SchedulerName, build_optimizer, build_scheduler
from cdflow.training.resume import KEY as RNG_KEY
from cdflow.training.resume import restore_rng_state, rng_state
from cdflow.training.stats import diffusion_products, solve_stats

_MASKS = {"train": "train_mask", "val": "val_mask", "test": "test_mask"}


class ContinuousDepthClassifier(L.LightningModule):
    """Cross-entropy classification with a continuous-depth network, and its solver statistics.

    The network is, by default, encoder → `ContinuousDepth` → head (see
    :func:`cdflow.training.networks.build_classifier`). To train another network, either pass it as
    ``model`` (any ``nn.Module`` mapping ``x`` to logits; from the CLI: ``--model.model
    some.module.Class --model.model.init_args...``) or subclass and override :meth:`build_model`. A
    network that needs the graph declares an ``edge_index`` keyword in its ``forward``; it then receives
    the batch's ``edge_index`` (``None`` for mini-batches).

    Logged: ``{train,val,test}/loss`` and ``/acc``; after every training step ``train/nfe_forward``,
    ``train/steps`` (and ``train/steps_rejected`` for adaptive methods), and after its backward pass
    ``train/nfe_backward``, summed over all blocks exposing ``.stats``; ``val/nfe_forward`` and
    ``test/nfe_forward`` per epoch; for networks exposing ``.diffusion_stats`` (COIN, Diff-ResNet) also
    ``{stage}/laplacian_products`` and ``train/laplacian_products_backward``; with ``on_failure='skip'``
    ``train/skipped_steps``. Epoch-level metrics are reduced over all ranks under DDP.

    Failed training steps (non-finite loss or gradients, `SolverError`) stop the run with a message naming
    the epoch, batch and solver statistics, or are skipped (see :mod:`cdflow.training.fault`). Checkpoints
    carry the global RNG states, so a resumed single-process run continues exactly (dropout included).

    Args:
        num_classes: number of classes (linked from the DataModule by the CLI).
        input_shape: one example's shape (linked from the DataModule); an int means ``(input_shape,)``.
        encoder, hidden, velocity, width, depth, activation, time_input, dropout: the default network
            (see :func:`~cdflow.training.networks.build_classifier`); ignored when ``model`` is given.
        solver: how every default block integrates over depth (all `SolverSpec` fields are flags:
            ``--model.solver.method rk4 --model.solver.step_size 0.1``); a dict of its fields also works
            (that is how the hyper-parameters store it).
        optimizer: ``adam``, ``adamw`` or ``sgd``.
        lr, weight_decay, momentum: optimiser settings (momentum: SGD only).
        scheduler: ``none``, ``multistep`` (× `lr_gamma` at each epoch of `milestones`) or ``cosine``
            (to 0 over ``trainer.max_epochs``).
        milestones, lr_gamma: the multistep schedule.
        label_smoothing: cross-entropy label smoothing.
        diffusion: ``--model.diffusion.kind none|noise|graph`` and its integrator (``drift|explicit|split``),
            γ, steps, noise ς and Monte Carlo samples (see `cdflow.models.DiffusionSpec`); with a kind other
            than ``none`` the network is a `ConvectionDiffusionNet` on vector states.
        graph: where the Laplacian comes from (``--model.graph.source knn|edges``, k, Laplacian kind).
        seed: seed of the SDE's Brownian paths; under DDP each rank r > 0 draws from its own stream derived
            from (seed, r) (see :func:`cdflow.training.distributed.fold_rank`), set in :meth:`setup`.
        on_failure: ``stop`` (raise `TrainingDiverged` naming epoch, batch and solver statistics) or ``skip``
            (no update for that step; counted in ``train/skipped_steps``).
        max_consecutive_skips: with ``skip``, stop anyway after this many failed steps in a row.
        network: ``default`` (encoder → ContinuousDepth → head of `build_classifier`) or ``cdnet`` (the
            `ConvectionDiffusionNet` that graph and noise diffusion use, here also with diffusion kind
            ``none``, so that the three kinds can be compared on one network).
        model: a ready network replacing the default one.
    """

    def __init__(
        self,
        num_classes: int,
        input_shape: int | tuple[int, ...] | None = None,
        encoder: EncoderKind = "linear",
        hidden: int = 64,
        velocity: VelocityKind = "mlp",
        width: int = 64,
        depth: int = 2,
        activation: ActivationName = "tanh",
        time_input: bool = True,
        dropout: float = 0.0,
        solver: SolverSpec = SolverSpec(),  # noqa: B008 — a frozen-in-practice config value, copied below
        optimizer: OptimizerName = "adam",
        lr: float = 1e-3,
        weight_decay: float = 0.0,
        momentum: float = 0.9,
        scheduler: SchedulerName = "none",
        milestones: list[int] | None = None,
        lr_gamma: float = 0.1,
        label_smoothing: float = 0.0,
        diffusion: DiffusionSpec = DiffusionSpec(),  # noqa: B008 — config value, copied below
        graph: GraphSpec = GraphSpec(source="knn"),  # noqa: B008 — config value, copied below
        seed: int = 0,
        on_failure: FailureMode = "stop",
        max_consecutive_skips: int = 20,
        network: Literal["default", "cdnet"] = "default",
        model: nn.Module | None = None,
    ) -> None:
        super().__init__()
        spec = SolverSpec(**solver) if isinstance(solver, dict) else dataclasses.replace(solver)
        diff_spec = DiffusionSpec(**diffusion) if isinstance(diffusion, dict) else dataclasses.replace(diffusion)
        graph_spec = GraphSpec(**graph) if isinstance(graph, dict) else dataclasses.replace(graph)
        # Plain values in the hyper-parameters, so that checkpoints load with torch.load(weights_only=True).
        solver = dataclasses.asdict(spec)  # noqa: F841 — read by save_hyperparameters from this frame
        diffusion = dataclasses.asdict(diff_spec)  # noqa: F841 — read by save_hyperparameters
        graph = dataclasses.asdict(graph_spec)  # noqa: F841 — read by save_hyperparameters
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*is an instance of `nn.Module`.*")
            self.save_hyperparameters()
        if isinstance(self.hparams.get("model"), nn.Module):
            # A network passed from Python: its weights are in the state dict, its constructor is unknown.
            self.save_hyperparameters(ignore=["model"])
        self.num_classes = int(num_classes)
        self.input_shape = (input_shape,) if isinstance(input_shape, int) else (
            tuple(input_shape) if input_shape is not None else None
        )
        self.solver = spec  # a copy: the default blocks share it, the caller may reuse theirs
        self.diffusion, self.graph, self.seed, self.network = diff_spec, graph_spec, seed, network
        self.net_config: dict[str, Any] = {
            "encoder": encoder, "hidden": hidden, "velocity": velocity, "width": width, "depth": depth,
            "activation": activation, "time_input": time_input, "dropout": dropout,
        }
        self.optim_config: dict[str, Any] = {
            "name": optimizer, "lr": lr, "weight_decay": weight_decay, "momentum": momentum,
            "scheduler": scheduler, "milestones": list(milestones or ()), "lr_gamma": lr_gamma,
        }
        self.label_smoothing = label_smoothing
        self.guard = FailureGuard(on_failure, max_consecutive_skips)
        self.net = model if model is not None else self.build_model()
        self._wants_edges = "edge_index" in inspect.signature(self.net.forward).parameters
        self.train_acc = MulticlassAccuracy(num_classes=self.num_classes, average="micro")
        self.val_acc = MulticlassAccuracy(num_classes=self.num_classes, average="micro")
        self.test_acc = MulticlassAccuracy(num_classes=self.num_classes, average="micro")

    # -- network ----------------------------------------------------------------------------------------
    def build_model(self) -> nn.Module:
        """The default network from the constructor arguments; override in a subclass to build another."""
        if self.input_shape is None:
            raise ConfigError("input_shape is required to build the default network (or pass model=...)")
        if self.diffusion.kind != "none" or self.network == "cdnet":
            cfg = self.net_config
            if cfg["encoder"] == "conv" or cfg["velocity"] == "conv":
                raise ConfigError(
                    f"diffusion.kind={self.diffusion.kind!r} acts on vector states: use the mlp velocity with a "
                    "linear encoder (images are flattened), or diffusion.kind none for the conv ODE"
                )
            return ConvectionDiffusionNet(
                math.prod(self.input_shape), self.num_classes, hidden=cfg["hidden"], width=cfg["width"],
                depth=cfg["depth"], activation=cfg["activation"], solver=self.solver, diffusion=self.diffusion,
                graph=self.graph, dropout=cfg["dropout"], seed=self.seed,
            )
        return build_classifier(self.input_shape, self.num_classes, self.solver, **self.net_config)

    def setup(self, stage: str) -> None:
        """Give this rank its own noise seed (rank 0 keeps ``seed``; see `fold_rank`)."""
        fold_rank(self.net, self.global_rank)

    def forward(self, x: Tensor, edge_index: Tensor | None = None) -> Tensor:
        """Logits of every row of `x` (the graph goes to networks whose forward takes ``edge_index``)."""
        if self._wants_edges:
            return self.net(x, edge_index=edge_index)
        return self.net(x)

    # -- steps ------------------------------------------------------------------------------------------
    def _logits_targets(self, batch: Any, stage: str) -> tuple[Tensor, Tensor]:
        """(logits, labels) of the examples this stage scores."""
        if isinstance(batch, dict):
            logits = self(self._check_shape(batch["x"]), batch.get("edge_index"))
            mask = batch[_MASKS[stage]]
            return logits[mask], batch["y"][mask]
        x, y = batch[0], batch[1]
        return self(self._check_shape(x)), y

    def _check_shape(self, x: Tensor) -> Tensor:
        """`x`, after checking its examples have the ``input_shape`` the default network was built for."""
        if self.input_shape is not None and tuple(x.shape[1:]) != self.input_shape:
            raise DataError(
                f"the batch holds examples of shape {tuple(x.shape[1:])} but the model was built for input_shape "
                f"{self.input_shape}: pass the data module's input_shape (the CLI links it) or reshape the data"
            )
        return x

    def _log_forward_stats(self, stage: str, on_step: bool) -> None:
        opts = {"on_step": on_step, "on_epoch": not on_step, "batch_size": 1, "sync_dist": not on_step}
        products = diffusion_products(self.net)
        if products is not None:
            self.log(f"{stage}/laplacian_products", float(products[0]), **opts)
        stats = solve_stats(self.net)
        if stats is None:
            return
        self.log(f"{stage}/nfe_forward", float(stats.nfe_forward), prog_bar=stage == "train", **opts)
        if stage == "train":
            self.log("train/steps", float(stats.steps), **opts)
            if stats.steps_rejected is not None:
                self.log("train/steps_rejected", float(stats.steps_rejected), **opts)

    def training_step(self, batch: Any, batch_idx: int) -> Tensor | None:
        """Cross-entropy of the batch; ``None`` (no update) when the step failed and ``on_failure='skip'``."""
        failure: str | None = None
        try:
            logits, y = self._logits_targets(batch, "train")
            loss = F.cross_entropy(logits, y, label_smoothing=self.label_smoothing)
            failure = loss_failure(loss)
        except SolverError as err:
            failure = f"the solve failed ({type(err).__name__}: {err})"
        if self._world_size() > 1 and self.trainer.strategy.reduce_boolean_decision(failure is not None, all=False):
            failure = failure or "the step failed on another rank"
        if failure is not None:
            self._step_failed(failure, batch_idx, stats_are_current=failure.startswith("the loss"))
            return None  # on_failure='skip' (with 'stop' the line above raised)
        self.guard.succeeded()
        n = int(y.shape[0])
        self.train_acc(logits.detach(), y)
        self.log("train/loss", loss, prog_bar=True, on_step=True, on_epoch=False, batch_size=n)
        self.log("train/acc", self.train_acc, on_step=False, on_epoch=True, batch_size=n)
        self._log_forward_stats("train", on_step=True)
        return loss

    # -- failed steps ---------------------------------------------------------------------------------------
    def _world_size(self) -> int:
        return self._trainer.world_size if self._trainer is not None else 1

    def _step_failed(self, cause: str, batch_idx: int | None = None, stats_are_current: bool = True) -> None:
        """Count (skip) or raise (stop) a failed step; names epoch, batch, solver statistics, last checkpoint."""
        trainer = self._trainer
        if batch_idx is None:
            batch_idx = trainer.fit_loop.epoch_loop.batch_idx if trainer is not None else -1
        where = StepContext(self.current_epoch, batch_idx, self.global_step)
        self.guard.failed(cause, where, solve_stats(self.net), latest_checkpoint(trainer), stats_are_current)

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        """With ``on_failure='skip'``: log how many steps were skipped so far (``train/skipped_steps``)."""
        if self.guard.mode == "skip":
            self.log("train/skipped_steps", float(self.guard.skipped), on_step=True, on_epoch=False, batch_size=1)

    def backward(self, loss: Tensor, *args: Any, **kwargs: Any) -> None:
        """Backpropagate; a `SolverError` of the backward solve (adjoint) fails the step like a forward one."""
        try:
            super().backward(loss, *args, **kwargs)
        except SolverError as err:
            if self._world_size() > 1:  # the gradient all-reduce is half done: no rank can go on
                raise
            self.zero_grad(set_to_none=True)
            self._step_failed(f"the backward solve failed: {err}")
            self._skip_update = True

    def on_before_optimizer_step(self, optimizer: Optimizer) -> None:
        """Drop the update of a failed backward pass or of non-finite gradients (all ranks see the same)."""
        if getattr(self, "_skip_update", False):
            self._skip_update = False
            optimizer.zero_grad(set_to_none=True)
            return
        bad = nonfinite_grads(self)
        if bad:
            shown = ", ".join(bad[:5]) + (f" and {len(bad) - 5} more" if len(bad) > 5 else "")
            self._step_failed(f"non-finite gradients in {len(bad)} parameter(s): {shown}")
            optimizer.zero_grad(set_to_none=True)

    def on_after_backward(self) -> None:
        """Log the backward pass's vector–Jacobian products (known only once backward has run)."""
        stats = solve_stats(self.net)
        if stats is not None:
            self.log("train/nfe_backward", float(stats.nfe_backward), prog_bar=True, on_step=True, on_epoch=False,
                     batch_size=1)
        products = diffusion_products(self.net)
        if products is not None:
            self.log("train/laplacian_products_backward", float(products[1]), on_step=True, on_epoch=False,
                     batch_size=1)

    def _eval_step(self, batch: Any, stage: str) -> dict[str, Tensor]:
        logits, y = self._logits_targets(batch, stage)
        loss = F.cross_entropy(logits, y)
        metric = self.val_acc if stage == "val" else self.test_acc
        metric(logits, y)
        n = int(y.shape[0])
        self.log(f"{stage}/loss", loss, on_step=False, on_epoch=True, batch_size=n, sync_dist=True)
        self.log(f"{stage}/acc", metric, on_step=False, on_epoch=True, prog_bar=stage == "val", batch_size=n)
        self._log_forward_stats(stage, on_step=False)
        return {"loss": loss, "preds": logits.argmax(dim=-1), "target": y}

    def validation_step(self, batch: Any, batch_idx: int) -> dict[str, Tensor]:
        return self._eval_step(batch, "val")

    def test_step(self, batch: Any, batch_idx: int) -> dict[str, Tensor]:
        """Test loss and accuracy; returns predictions and targets (for the confusion-matrix callback)."""
        return self._eval_step(batch, "test")

    def predict_step(self, batch: Any, batch_idx: int) -> dict[str, Tensor]:
        """Logits and predicted classes of every example (every node of a full batch)."""
        if isinstance(batch, dict):
            logits = self(batch["x"], batch.get("edge_index"))
        else:
            logits = self(batch[0] if isinstance(batch, (tuple, list)) else batch)
        return {"logits": logits, "preds": logits.argmax(dim=-1)}

    # -- checkpoints ------------------------------------------------------------------------------------
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Store the global RNG states (see :mod:`cdflow.training.resume`)."""
        checkpoint[RNG_KEY] = rng_state()

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Resuming a single-process fit: restore the RNG states (not on `load_from_checkpoint`, not under DDP)."""
        trainer = self._trainer
        if RNG_KEY in checkpoint and trainer is not None and trainer.state.fn == "fit" and trainer.world_size == 1:
            restore_rng_state(checkpoint[RNG_KEY])

    # -- optimisation -----------------------------------------------------------------------------------
    def configure_optimizers(self) -> Any:
        cfg = self.optim_config
        opt = build_optimizer(self.parameters(), cfg["name"], cfg["lr"], cfg["weight_decay"], cfg["momentum"])
        sched = build_scheduler(opt, cfg["scheduler"], cfg["milestones"], cfg["lr_gamma"], self.trainer.max_epochs)
        return opt if sched is None else {"optimizer": opt, "lr_scheduler": sched}
