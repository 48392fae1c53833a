"""`ContinuousDepthClassifier`: the LightningModule that trains any continuous-depth classifier.

Batches follow the two conventions of :mod:`cdflow.data.base`: inductive mini-batches ``(x, y)``, or one
transductive full batch ``{"x", "y", "train_mask", "val_mask", "test_mask", "edge_index"}`` per stage, where
each stage scores only the nodes of its own mask.
"""

from __future__ import annotations

import dataclasses
import inspect
import math
import time
import warnings
from copy import deepcopy
from typing import Any, Literal

import lightning as L
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.parameter import is_lazy
from torch.optim import Optimizer
from torchmetrics.classification import MulticlassAccuracy

from cdflow.errors import ConfigError, DataError, SolverError
from cdflow.graph import Graph
from cdflow.models.cdnet import ConvectionDiffusionNet
from cdflow.models.diffusion_spec import DiffusionSpec
from cdflow.models.graph_source import GraphSpec
from cdflow.models.layers import member_mean
from cdflow.models.members import Members
from cdflow.noise import NoiseDiffusion
from cdflow.regularization import RegularizationSpec, clear_regularization, collect_regularization
from cdflow.sde import StochasticDepth
from cdflow.solve import ContinuousDepth
from cdflow.solvers import SolverSpec, ode_method, ode_methods
from cdflow.sparse import SparseMatrix
from cdflow.stats import SolveStats
from cdflow.training.consistency import ConsistencySpec, consistency_objective
from cdflow.training.distributed import fold_rank
from cdflow.training.fault import (
    FailureGuard,
    FailureMode,
    StepContext,
    latest_checkpoint,
    loss_failure,
    nonfinite_grads,
)
from cdflow.training.member_stopping import stacked_members
from cdflow.training.networks import ActivationName, EncoderKind, VelocityKind, build_classifier
from cdflow.training.optim import OptimizerName, SchedulerName, build_optimizer, build_scheduler, replan_cosine
from cdflow.training.resume import KEY as RNG_KEY
from cdflow.training.resume import restore_rng_state, rng_state
from cdflow.training.stats import (
    CallCounters,
    calls_diffusion_products,
    calls_solve_stats,
    diffusion_products,
    solve_stats,
)

_MASKS = {"train": "train_mask", "val": "val_mask", "test": "test_mask"}


def _member_acc(logits: Tensor, y: Tensor) -> Tensor:
    """Per-member accuracy [K] of logits [N, K, C] (or [1] for [N, C])."""
    lg = logits if logits.ndim == 3 else logits[:, None]
    return member_mean((lg.argmax(-1) == y[:, None]).to(torch.float32))


def _stochastic_parts(net: nn.Module) -> list[str]:
    """Names of what makes a network's training forward differ from its evaluation (dropout > 0)."""
    found = []
    for name, module in net.named_modules():
        if isinstance(module, nn.Dropout) and module.p > 0:
            found.append(f"{name or 'net'} (dropout {module.p})")
        for attr in ("dropout", "input_dropout", "diffusion_dropout"):
            value = getattr(module, attr, None)
            if isinstance(value, float) and value > 0:
                found.append(f"{name or type(module).__name__}.{attr} = {value}")
    return found


def _noise_parts(net: nn.Module) -> list[str]:
    """Names of the SDE noise in a network that draws something: a continuous net's ``diffusion.kind noise``
    with σ > 0 (the default network is one), or a `StochasticDepth` block unless its noise is a `NoiseDiffusion`
    of fixed σ = 0."""
    found = []
    for name, module in net.named_modules():
        spec = getattr(module, "diffusion", None)
        noise = module.noise if isinstance(module, StochasticDepth) else None
        silent = (isinstance(noise, NoiseDiffusion) and getattr(noise, "raw_sigma", None) is None
                  and not bool((noise.sigma != 0).any()))
        if (isinstance(spec, DiffusionSpec) and spec.kind == "noise" and spec.sigma > 0) or (
                noise is not None and not silent):
            found.append(name or type(module).__name__)
    return found


FLOAT16_PRECISIONS = ("16-true", "16-mixed", "16", "transformer-engine-float16")
#: The float16 precisions on any device (``16-mixed`` is bf16 on a CPU: known once the trainer has its device).
FLOAT16_ON_ANY_DEVICE = ("16-true", "transformer-engine-float16")


def solver_adapts(spec: SolverSpec) -> bool:
    """Whether a solve chooses its own steps: an adaptive ODE method (dopri5, bosh3, …), an adaptive SDE solve,
    or an adaptive adjoint."""
    table = ode_methods()
    methods = [spec.method] + ([spec.adjoint_method or spec.method] if spec.adjoint != "none" else [])
    return bool(spec.adaptive) or any(m in table and ode_method(m).adaptive for m in methods)


def adaptive_solvers(net: nn.Module) -> list[SolverSpec]:
    """The `SolverSpec` of every block of `net` that adapts its steps (see `solver_adapts`)."""
    specs = [m.solver for m in net.modules() if isinstance(getattr(m, "solver", None), SolverSpec)]
    return [s for s in specs if solver_adapts(s)]


def check_precision(precision: Any, solvers: list[SolverSpec], solver_flag: str = "--model.solver") -> None:
    """Refuse float16 (``--trainer.precision 16-true``; ``16-mixed`` on a GPU) for adaptive solvers: their error
    estimates need more than float16's ~3 significant digits, so the step size underflows at once. `solver_flag`:
    where the solver's settings are given (``--model.model.solver`` for a ready network)."""
    if str(precision) not in FLOAT16_PRECISIONS or not solvers:
        return
    methods = ", ".join(sorted({s.method for s in solvers}))
    raise ConfigError(
        f"--trainer.precision {precision} computes in float16 (about 3 significant digits), too coarse for the "
        f"adaptive solver ({methods}, rtol={solvers[0].rtol}): its steps would underflow at once. Use "
        "--trainer.precision 32-true (or 64-true, or bf16-true / bf16-mixed to save memory), or a fixed-step "
        f"method ({solver_flag}.method rk4 {solver_flag}.step_size 0.1)"
    )


def _shape(t: Any) -> str:
    return "[" + ", ".join(str(d) for d in t.shape) + "]"


def _reset_outermost(module: nn.Module) -> None:
    """Re-initialise `module` by its own `reset_parameters` if it has one (which then owns its sub-modules: e.g. a
    velocity whose output layer starts at zero, an encoder stored in another layout), else each child in turn."""
    if hasattr(module, "reset_parameters"):
        module.reset_parameters()
        return
    for child in module.children():
        _reset_outermost(child)


def with_members(net: nn.Module, members: int, seed: int = 0) -> nn.Module:
    """`net` with `members` initialisations: a model with a member axis (COIN, DiffResNet) is rebuilt with
    ``members=K``; any other network is stacked by `Members` (member 0 is `net`, member k a copy whose
    layers are re-initialised from seed + k, each by the outermost module that has `reset_parameters`)."""
    native = getattr(net, "members", None)
    if isinstance(native, int):
        if native == members:
            return net
        if not hasattr(net, "init_kwargs"):
            raise ConfigError(f"{type(net).__name__} has {native} members and cannot be rebuilt with {members}")
        return type(net)(**{**net.init_kwargs, "members": members})
    if members == 1:
        return net

    def factory(k: int) -> nn.Module:
        if k == 0:
            return net
        copy = deepcopy(net)
        with torch.random.fork_rng():
            torch.manual_seed(seed + k)
            for child in copy.children():
                _reset_outermost(child)
        return copy

    return Members(factory, members)


class ContinuousDepthClassifier(L.LightningModule):
    """Cross-entropy classification with a continuous-depth network, and its solver statistics.

    The network is, by default, encoder → `ContinuousDepth` → head (see
    :func:`cdflow.training.networks.build_classifier`). To train another network, either pass it as
    ``model`` (any ``nn.Module`` mapping ``x`` to logits; from the CLI: ``--model.model
    some.module.Class --model.model.init_args...``) or subclass and override :meth:`build_model`. A
    network that needs the graph declares an ``edge_index`` keyword in its ``forward``; it then receives
    the batch's ``edge_index`` (``None`` for mini-batches). Dense features of another dtype (float64 from
    numpy, integers) are cast to the network's dtype; ``predict_step`` gives class probabilities (and their
    Monte Carlo spread for SDE noise), which ``cdflow predict`` writes to a CSV.

    Logged: ``{train,val,test}/loss`` and ``/acc``; after every training step ``train/nfe_forward``,
    ``train/steps`` (and ``train/steps_rejected`` for adaptive methods), and after its backward pass
    ``train/nfe_backward``, summed over all blocks exposing ``.stats``; with RNODE regularisation also
    ``train/reg_kinetic`` and / or ``train/reg_jacobian`` (the batch means of the integrals) and ``train/reg_loss``
    (their λ-weighted sum, added to ``train/loss`` for the update: ``train/loss`` itself stays the classification
    loss, comparable between runs with and without the penalty); ``val/nfe_forward`` and
    ``test/nfe_forward`` per epoch; ``time/epoch_s``, the wall time of every epoch; for networks exposing
    ``.diffusion_stats`` (COIN, Diff-ResNet) also
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
        diffusion: ``--model.diffusion.kind none|noise|graph`` and its integrator
            (``drift|explicit|split|exponential``), γ, steps, noise ς and Monte Carlo samples (see
            `cdflow.models.DiffusionSpec`); with a kind other than ``none`` the network is a
            `ConvectionDiffusionNet` on vector states.
        graph: where the Laplacian comes from (``--model.graph.source knn|edges``, k, Laplacian kind).
        regularization: RNODE (Finlay et al. 2020): ``--model.regularization.kinetic λ_k`` and
            ``--model.regularization.jacobian λ_j`` add λ_k ∫‖v‖² dt + λ_j ∫‖∂v/∂x‖²_F dt (batch means) to the
            training loss, integrated as augmented states of every `ContinuousDepth` block during training only
            (validation, test and prediction solve for the state alone). Refused for networks without such a
            block (``network cdnet``, diffusion kinds other than ``none``, COIN, Diff-ResNet).
        consistency: consistency regularisation over dropout draws (Feng et al. 2020;
            `cdflow.training.consistency`): with ``--model.consistency.weight λ`` > 0 each training step takes
            ``samples`` passes; the loss is their mean loss on the training examples plus λ times the squared distance
            of every pass's probabilities to their sharpened mean (``temperature``) over every example of the batch
            (all nodes of a graph, labelled or not); logged as ``train/consistency``. Refused for a network without
            dropout or noise.
        seed: seed of the SDE's Brownian paths; under DDP each rank r > 0 draws from its own stream derived
            from (seed, r) (see :func:`cdflow.training.distributed.fold_rank`), set in :meth:`setup`.
        on_failure: ``stop`` (raise `TrainingDiverged` naming epoch, batch and solver statistics) or ``skip``
            (no update for that step; counted in ``train/skipped_steps``).
        max_consecutive_skips: with ``skip``, stop anyway after this many failed steps in a row.
        network: ``default`` (encoder → ContinuousDepth → head of `build_classifier`) or ``cdnet`` (the
            `ConvectionDiffusionNet` that graph and noise diffusion use, here also with diffusion kind
            ``none``, so that the three kinds can be compared on one network).
        model: a ready network replacing the default one.
        members: K initialisations of the network trained together (``--model.members 20``): COIN and
            DiffResNet are rebuilt with a member axis (member k seeded ``seed + k`` of the model), any other
            network is stacked by `cdflow.models.Members`. The loss is Σ_k loss_k over members still training;
            ``{stage}/acc`` is the members' mean, and the test also logs ``test/acc_std`` and every
            ``test/acc_memberNN``. With `MemberEarlyStopping` each member stops on its own.
        validate_on_train_forward: score the validation nodes from the training forward pass (before the
            update), saving one forward per epoch; exact only for a deterministic network (refused with dropout).
            Transductive full batches only; set ``trainer.limit_val_batches: 0`` with it.
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
        graph: GraphSpec = GraphSpec(),  # noqa: B008 — config value, copied below
        regularization: RegularizationSpec = RegularizationSpec(),  # noqa: B008 — config value, copied below
        consistency: ConsistencySpec = ConsistencySpec(),  # noqa: B008 — config value, copied below
        seed: int = 0,
        on_failure: FailureMode = "stop",
        max_consecutive_skips: int = 20,
        network: Literal["default", "cdnet"] = "default",
        model: nn.Module | None = None,
        members: int = 1,
        validate_on_train_forward: bool = False,
    ) -> None:
        super().__init__()
        spec = SolverSpec(**solver) if isinstance(solver, dict) else dataclasses.replace(solver)
        diff_spec = DiffusionSpec(**diffusion) if isinstance(diffusion, dict) else dataclasses.replace(diffusion)
        graph_spec = GraphSpec(**graph) if isinstance(graph, dict) else dataclasses.replace(graph)
        reg_spec = (RegularizationSpec(**regularization) if isinstance(regularization, dict)
                    else dataclasses.replace(regularization))
        cons_spec = (ConsistencySpec(**consistency) if isinstance(consistency, dict)
                     else dataclasses.replace(consistency))
        # Plain values in the hyper-parameters, so that checkpoints load with torch.load(weights_only=True).
        solver = dataclasses.asdict(spec)  # noqa: F841 — read by save_hyperparameters from this frame
        diffusion = dataclasses.asdict(diff_spec)  # noqa: F841 — read by save_hyperparameters
        graph = dataclasses.asdict(graph_spec)  # noqa: F841 — read by save_hyperparameters
        regularization = dataclasses.asdict(reg_spec)  # noqa: F841 — read by save_hyperparameters
        consistency = dataclasses.asdict(cons_spec)  # noqa: F841 — read by save_hyperparameters
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
        for flag, value, ok, rule in (
            ("lr", lr, lr > 0, "> 0"), ("weight_decay", weight_decay, weight_decay >= 0, "≥ 0"),
            ("momentum", momentum, momentum >= 0, "≥ 0"), ("lr_gamma", lr_gamma, lr_gamma > 0, "> 0"),
            ("label_smoothing", label_smoothing, 0 <= label_smoothing < 1, "in [0, 1)"),
        ):
            if not ok or not math.isfinite(value):
                raise ConfigError(f"--model.{flag} must be {rule}, got {value!r}")
        for flag, value in (("hidden", hidden), ("width", width), ("depth", depth)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"--model.{flag} must be an int ≥ 1, got {value!r}")
        self.guard = FailureGuard(on_failure, max_consecutive_skips)
        if isinstance(members, bool) or not isinstance(members, int) or members < 1:
            raise ConfigError(f"--model.members must be an int ≥ 1 (initialisations trained together), got {members!r}")
        self.members = members
        self.validate_on_train_forward = validate_on_train_forward
        if model is not None:
            self._warn_default_network_flags(model, spec, diff_spec, graph_spec)
        self.net = with_members(model if model is not None else self.build_model(), members, seed)
        self.regularization = reg_spec
        self._apply_regularization(reg_spec)
        params = inspect.signature(self.net.forward).parameters
        if isinstance(self.net, Members):
            params = inspect.signature(self.net.models[0].forward).parameters
        self._graph_arg = "graph" if "graph" in params else ("edge_index" if "edge_index" in params else None)
        first = self.net.models[0] if isinstance(self.net, Members) else self.net
        self._nll = getattr(first, "output", "") == "log_probs"
        self._sparse_input = bool(getattr(first, "sparse_input", False))
        self._check_sizes(first)
        self.member_running: Tensor | None = None  # set by MemberEarlyStopping: members still training
        self._train_calls: list[CallCounters] | None = None  # the S passes of a consistency step
        self.member_scores: dict[str, tuple[Tensor, Tensor]] = {}
        self.restored_best = False
        self._graph_reported = False
        if validate_on_train_forward:
            noisy = _stochastic_parts(self.net) + (["diffusion.kind noise"] if self.diffusion.kind == "noise" else [])
            if noisy:
                raise ConfigError(
                    "validate_on_train_forward scores validation on the training forward pass, which is exact only "
                    f"for a deterministic network; this one has {', '.join(noisy)}: set it to 0 or drop the flag"
                )
        self.consistency = cons_spec
        if cons_spec.enabled and not (_stochastic_parts(self.net) or _noise_parts(self.net)):
            how = ("give the network dropout through its own settings (--model.model.init_args.<name>: dropout, "
                   "or COIN's diffusion_dropout)" if model is not None
                   else "give it dropout (--model.dropout 0.5) or noise (--model.diffusion.kind noise, sigma > 0)")
            raise ConfigError(
                f"--model.consistency.weight {cons_spec.weight:g} compares {cons_spec.samples} training passes under "
                "independent dropout or noise draws, and this network has neither (its passes would be identical): "
                f"{how}, or set --model.consistency.weight 0"
            )
        self.train_acc = MulticlassAccuracy(num_classes=self.num_classes, average="micro")
        self.val_acc = MulticlassAccuracy(num_classes=self.num_classes, average="micro")
        self.test_acc = MulticlassAccuracy(num_classes=self.num_classes, average="micro")

    # -- network ----------------------------------------------------------------------------------------
    def _warn_default_network_flags(self, model: nn.Module, solver: SolverSpec, diffusion: DiffusionSpec,
                                      graph: GraphSpec) -> None:
        """With a network given (``--model.model``), the flags that build the default network do nothing: warn,
        naming every one set away from its default (a config written for the default network, such as
        experiments/configs/cora.yaml, may carry them while another network is plugged in)."""
        defaults = inspect.signature(ContinuousDepthClassifier.__init__).parameters
        set_flags = [f"--model.{name}={value!r}" for name, value in self.net_config.items()
                     if value != defaults[name].default]
        if self.network != defaults["network"].default:
            set_flags.append(f"--model.network={self.network!r}")
        for group, spec, default in (("solver", solver, SolverSpec()), ("diffusion", diffusion, DiffusionSpec()),
                                     ("graph", graph, GraphSpec())):
            set_flags += [f"--model.{group}.{f.name}={getattr(spec, f.name)!r}" for f in dataclasses.fields(spec)
                          if getattr(spec, f.name) != getattr(default, f.name)]
        if set_flags:
            warnings.warn(
                f"{', '.join(set_flags)}: these build the default network, and the network is given (--model.model "
                f"{type(model).__name__}), so they do nothing; set them on the network itself (--model.model.<name>, "
                "e.g. --model.model.hidden or --model.model.solver.method) or drop them",
                UserWarning, stacklevel=2,
            )

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

    def _apply_regularization(self, spec: RegularizationSpec) -> None:
        """Give every `ContinuousDepth` block of the network the RNODE penalty (a no-op when it is off)."""
        if not spec.active:
            return
        blocks = [m for m in self.net.modules() if isinstance(m, ContinuousDepth)]
        if not blocks:
            raise ConfigError(
                f"--model.regularization (kinetic={spec.kinetic}, jacobian={spec.jacobian}) integrates the penalty "
                f"in ContinuousDepth blocks, and this network ({type(self.net).__name__}) has none: its solves are "
                "graph diffusion, SDE noise or split integrators, where the penalty is not implemented. Use the "
                "default network (--model.network default --model.diffusion.kind none) or drop the flag"
            )
        for block in blocks:
            block.regularization = spec

    def setup(self, stage: str) -> None:
        """Give this rank its own noise seed (rank 0 keeps ``seed``; see `fold_rank`); refuse float16 for
        adaptive solvers (see `check_precision`)."""
        fold_rank(self.net, self.global_rank)
        if self._trainer is not None:
            check_precision(self._trainer.precision, adaptive_solvers(self.net), self.solver_flag)
            if stage == "fit":
                self.check_validation_loop(self._trainer.limit_val_batches, self._trainer.fast_dev_run)

    def check_validation_loop(self, limit_val_batches: Any, fast_dev_run: Any = False) -> None:
        """With `validate_on_train_forward` the training step scores the validation nodes; a validation loop as
        well would score them a second time, on the weights after the update, into the same metrics (and the
        early stopping): refused unless it is off (``limit_val_batches 0``) or the run is a ``fast_dev_run``."""
        if self.validate_on_train_forward and not fast_dev_run and limit_val_batches not in (0, 0.0):
            shown = "its default, every batch" if limit_val_batches is None else f"{limit_val_batches:g}"
            raise ConfigError(
                "--model.validate_on_train_forward scores validation on the training forward pass, and the "
                f"validation loop (--trainer.limit_val_batches {shown}) would score it again on other weights into "
                "the same metrics: set --trainer.limit_val_batches 0, or --model.validate_on_train_forward false"
            )

    @property
    def solver_flag(self) -> str:
        """Where this module's solver settings are given on the command line."""
        return "--model.model.solver" if self.hparams.get("model") is not None else "--model.solver"

    def forward(self, x: Tensor, graph: Any = None) -> Tensor:
        """Logits of every row of `x` ([N, K, C] with K members); the batch's graph goes to networks whose
        forward takes ``graph`` (a `cdflow.graph.Graph`) or ``edge_index``."""
        if isinstance(x, SparseMatrix) and not self._sparse_input:
            x = x.to_dense()
        if isinstance(x, Tensor) and x.dtype != torch.bool and not x.is_complex():
            dtype = self._input_dtype()
            if dtype is not None and x.dtype != dtype:  # float64 / integer features of a user's data module
                x = x.to(dtype)
        if self._graph_arg == "graph":
            return self.net(x, graph=graph)
        if self._graph_arg == "edge_index":
            return self.net(x, edge_index=graph.edge_index if isinstance(graph, Graph) else graph)
        return self.net(x)

    def _input_dtype(self) -> torch.dtype | None:
        """The dtype the network computes in (that of its first floating parameter), or None without one."""
        return next((p.dtype for p in self.net.parameters() if p.is_floating_point()), None)

    def _batch_graph(self, batch: dict) -> Any:
        graph = batch.get("graph")
        return graph if graph is not None else batch.get("edge_index")

    # -- steps ------------------------------------------------------------------------------------------
    def _logits_targets(self, batch: Any, stage: str) -> tuple[Tensor, Tensor]:
        """(logits, labels) of the examples this stage scores."""
        if isinstance(batch, dict):
            logits = self(self._check_shape(batch["x"]), self._batch_graph(batch))
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

    def _work(self, stage: str) -> tuple[SolveStats | None, tuple[int, int] | None]:
        """Solver statistics and Laplacian products of this step: of all its training passes (consistency
        regularisation takes S), else of the network's last call."""
        calls = self._train_calls if stage == "train" else None
        if calls:
            return calls_solve_stats(calls), calls_diffusion_products(calls)
        return solve_stats(self.net), diffusion_products(self.net)

    def _log_forward_stats(self, stage: str, on_step: bool) -> None:
        opts = {"on_step": on_step, "on_epoch": not on_step, "batch_size": 1, "sync_dist": not on_step}
        stats, products = self._work(stage)
        if products is not None:
            self.log(f"{stage}/laplacian_products", float(products[0]), **opts)
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
        running = self.member_running
        if hasattr(self.net, "active"):  # members that stopped early cost nothing
            self.net.active = None if running is None else running.nonzero().flatten().tolist()
        reg = None
        self._train_calls = None
        clear_regularization(self.net)  # blocks that do not run in this step leave no stale penalty
        try:
            if self.validate_on_train_forward:
                logits, y = self._train_and_val(batch)
                losses = self._member_losses(logits, y, self.label_smoothing)
            elif self.consistency.enabled:
                logits, y, losses = self._consistency_losses(batch)
            else:
                logits, y = self._logits_targets(batch, "train")
                losses = self._member_losses(logits, y, self.label_smoothing)
            if running is not None:
                losses = torch.where(running.to(losses.device), losses, torch.zeros_like(losses))
            loss = losses.sum()
            reg = collect_regularization(self.net)
            failure = loss_failure(loss if reg is None else loss + reg.penalty)
        except SolverError as err:
            failure = f"the solve failed ({type(err).__name__}: {err})"
        if self._world_size() > 1 and self.trainer.strategy.reduce_boolean_decision(failure is not None, all=False):
            failure = failure or "the step failed on another rank"
        if failure is not None:
            self._step_failed(failure, batch_idx, stats_are_current=failure.startswith("the loss"))
            return None  # on_failure='skip' (with 'stop' the line above raised)
        self.guard.succeeded()
        n = int(y.shape[0])
        self._report_graph()
        if logits.ndim == 2:
            self.train_acc(logits.detach(), y)
            self.log("train/acc", self.train_acc, on_step=False, on_epoch=True, batch_size=n)
        else:
            self.log("train/acc", _member_acc(logits.detach(), y).mean(), on_step=False, on_epoch=True, batch_size=n)
        shown = loss if running is None else loss / running.sum().clamp(min=1)  # mean over members still training
        self.log("train/loss", shown if logits.ndim == 3 else loss, prog_bar=True, on_step=True, on_epoch=False,
                 batch_size=n)
        if running is not None and logits.ndim == 3:
            self.log("train/members_running", float(running.sum()), on_step=False, on_epoch=True, batch_size=1)
        self._log_forward_stats("train", on_step=True)
        if reg is None:
            return loss
        for name, value in (("reg_kinetic", reg.kinetic), ("reg_jacobian", reg.jacobian), ("reg_loss", reg.penalty)):
            if value is not None:
                self.log(f"train/{name}", value.detach(), on_step=True, on_epoch=False, batch_size=1)
        return loss + reg.penalty

    def _check_sizes(self, net: nn.Module) -> None:
        """A ready network built for other data (e.g. after ``--data.name citeseer`` on a Cora config) is refused
        now, naming the flags, instead of failing inside the first step."""
        fixes = []
        features = getattr(net, "in_features", None)
        if isinstance(features, int) and self.input_shape is not None and math.prod(self.input_shape) != features:
            fixes.append(f"in_features {math.prod(self.input_shape)} (the model has {features})")
        classes = getattr(net, "num_classes", None)
        if isinstance(classes, int) and classes != self.num_classes:
            fixes.append(f"num_classes {self.num_classes} (the model has {classes})")
        if fixes:
            raise ConfigError(
                f"the model was built for other data: the data module gives {' and '.join(fixes)}; set "
                + " ".join(f"--model.model.init_args.{fix.split(' (')[0]}" for fix in fixes)
                + " (or use the config made for this data set, e.g. experiments/configs/coin_citeseer.yaml)"
            )

    def _train_and_val(self, batch: Any) -> tuple[Tensor, Tensor]:
        """`validate_on_train_forward`: one forward of the full batch gives the training nodes' logits and the
        validation scores of the weights before this step's update (exact for a deterministic network)."""
        if not isinstance(batch, dict):
            raise ConfigError("validate_on_train_forward needs a transductive full batch (a graph data module)")
        logits = self(self._check_shape(batch["x"]), self._batch_graph(batch))
        vmask, y = batch["val_mask"], batch["y"]
        self._score("val", logits.detach()[vmask], y[vmask])
        return logits[batch["train_mask"]], y[batch["train_mask"]]

    def _consistency_losses(self, batch: Any) -> tuple[Tensor, Tensor, Tensor]:
        """S training passes (independent dropout / noise draws): per-member losses = the mean over the passes of
        the loss on the training examples + λ · `consistency_loss` over every example of the batch (all nodes of a
        graph). Returns the first pass's training logits, their labels and the losses [K]."""
        spec = self.consistency
        args = ((self._check_shape(batch["x"]), self._batch_graph(batch)) if isinstance(batch, dict)
                else (self._check_shape(batch[0]),))
        outs, self._train_calls = [], []
        for _ in range(spec.samples):  # the step's work is every pass's: their counters are kept
            outs.append(self(*args))
            self._train_calls.append(CallCounters.of(self.net))
        if isinstance(batch, dict):
            mask = batch[_MASKS["train"]]
            logits, y = [o[mask] for o in outs], batch["y"][mask]
        else:
            logits, y = outs, batch[1]
        losses, term = consistency_objective([self._member_losses(lg, y, self.label_smoothing) for lg in logits],
                                             outs, spec)
        self.log("train/consistency", term.detach().mean(), on_step=True, on_epoch=False, batch_size=1)
        return logits[0], y, losses

    def _member_losses(self, logits: Tensor, y: Tensor, smoothing: float = 0.0) -> Tensor:
        """Per-member mean loss [K] (K = 1 for [N, C] logits): NLL for networks that return log-probabilities
        (COIN), else cross-entropy."""
        lg = logits if logits.ndim == 3 else logits[:, None]
        target = y[:, None].expand(-1, lg.shape[1])
        if self._nll:
            return member_mean(F.nll_loss(lg.permute(0, 2, 1), target, reduction="none"))
        return member_mean(F.cross_entropy(lg.permute(0, 2, 1), target, reduction="none", label_smoothing=smoothing))

    def _report_graph(self) -> None:
        """Say once which graph the run diffuses over (the model's `last_graph`) and whether its members share a
        solve."""
        if self._graph_reported:
            return
        self._graph_reported = True
        net = self.net.models[0] if isinstance(self.net, Members) else self.net
        desc = next((m.last_graph for m in net.modules() if getattr(m, "last_graph", None)), None)
        if desc is not None and self.global_rank == 0:
            print(f"cdflow: diffusing over the {desc}")
            for logger in self.loggers:  # W&B config / hparams.yaml: which graph this run used
                logger.log_hyperparams({"graph": desc})
        if isinstance(self.net, Members) and self.global_rank == 0:
            why = self.net.joint_refusal
            how = "share one solve (solver and Laplacian counts are the shared solve's)" if why is None else \
                f"run one by one, their solver and Laplacian counts summed ({why})"
            print(f"cdflow: the {self.net.members} members {how}")

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

    def on_train_start(self) -> None:
        """A resumed run with another ``max_epochs``: the cosine schedule restored from the checkpoint was planned
        over the old number of epochs (at its end the rate is 0, after it it climbs back); it is re-planned over
        ``trainer.max_epochs`` from the epoch reached (the closed-form rate there), and said so."""
        for config in self.trainer.lr_scheduler_configs:
            old = replan_cosine(config.scheduler, self.trainer.max_epochs)
            if old is not None and self.global_rank == 0:
                epochs = f"{old} epoch{'s' if old != 1 else ''}"
                print(f"cdflow: the cosine learning-rate schedule of the checkpoint was planned over {epochs}; "
                      f"re-planned over --trainer.max_epochs {self.trainer.max_epochs} from epoch "
                      f"{config.scheduler.last_epoch} (rate now {config.scheduler.get_last_lr()[0]:.3g})")

    def on_train_epoch_start(self) -> None:
        self._epoch_started = time.perf_counter()

    def on_train_epoch_end(self) -> None:
        """Log ``time/epoch_s``: the wall time of the epoch, its validation included (Lightning validates before
        this hook); under DDP the slowest rank's."""
        started = getattr(self, "_epoch_started", None)
        if started is not None:
            self.log("time/epoch_s", time.perf_counter() - started, on_step=False, on_epoch=True, batch_size=1,
                     sync_dist=True, reduce_fx="max")

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
        stats, products = self._work("train")
        if stats is not None:
            self.log("train/nfe_backward", float(stats.nfe_backward), prog_bar=True, on_step=True, on_epoch=False,
                     batch_size=1)
        if products is not None:
            self.log("train/laplacian_products_backward", float(products[1]), on_step=True, on_epoch=False,
                     batch_size=1)

    def _eval_step(self, batch: Any, stage: str) -> dict[str, Tensor]:
        if hasattr(self.net, "active"):
            self.net.active = None
        logits, y = self._logits_targets(batch, stage)
        self._score(stage, logits, y)
        self._log_forward_stats(stage, on_step=False)
        return {"loss": self.member_scores[stage][0].mean(), "preds": logits.argmax(dim=-1), "target": y}

    def _score(self, stage: str, logits: Tensor, y: Tensor) -> None:
        """Per-member loss and accuracy of a stage (kept in `member_scores` for `MemberEarlyStopping`), logged
        as their means (and, for the test, each member's accuracy and their spread)."""
        losses = self._member_losses(logits, y)
        accs = _member_acc(logits, y)
        self.member_scores[stage] = (losses.detach(), accs.detach())
        running = self.member_running
        if stage == "val" and running is not None and bool(running.any()):  # the curves of members still training
            keep = running.to(losses.device)
            loss, shown_acc = losses[keep].mean(), accs[keep].mean()
        else:
            loss, shown_acc = losses.mean(), accs.mean()
        n = int(y.shape[0])
        self.log(f"{stage}/loss", loss, on_step=False, on_epoch=True, batch_size=n, sync_dist=True)
        if logits.ndim == 2:
            metric = self.val_acc if stage == "val" else self.test_acc
            metric(logits, y)
            self.log(f"{stage}/acc", metric, on_step=False, on_epoch=True, prog_bar=stage == "val", batch_size=n)
        else:
            opts = {"on_step": False, "on_epoch": True, "batch_size": n, "sync_dist": True}
            self.log(f"{stage}/acc", shown_acc, prog_bar=stage == "val", **opts)
            if stage == "test":
                self.log("test/acc_std", accs.std(), **opts)
                for k, acc in enumerate(accs):
                    self.log(f"test/acc_member{k:02d}", acc, **opts)

    def validation_step(self, batch: Any, batch_idx: int) -> dict[str, Tensor]:
        return self._eval_step(batch, "val")

    def test_step(self, batch: Any, batch_idx: int) -> dict[str, Tensor]:
        """Test loss and accuracy; returns predictions and targets (for the confusion-matrix callback)."""
        return self._eval_step(batch, "test")

    def predict_step(self, batch: Any, batch_idx: int) -> dict[str, Tensor]:
        """Every example's (every node's, for a full batch) ``logits``, class ``probs`` [N, C] (the members'
        mean for a model with several), ``preds`` and, when known, ``labels`` and ``splits`` (codes of
        `cdflow.training.predictions.SPLITS`); for SDE noise averaged over Monte Carlo paths also ``spread``
        [N, C], the standard deviation of each probability across the paths. All but ``logits`` on the CPU."""
        from cdflow.training.predictions import split_codes

        if hasattr(self.net, "active"):
            self.net.active = None
        labels = None
        if isinstance(batch, dict):
            logits = self(self._check_shape(batch["x"]), self._batch_graph(batch))
            labels = batch.get("y")
        elif isinstance(batch, (tuple, list)):
            logits = self(self._check_shape(batch[0]))
            labels = batch[1] if len(batch) > 1 else None
        else:
            logits = self(self._check_shape(batch))
        probs = torch.softmax(logits.detach().float(), dim=-1)  # logits or log-probabilities alike
        if probs.ndim == 3:
            probs = probs.mean(dim=1)
        out = {"logits": logits, "probs": probs.cpu(), "preds": probs.argmax(dim=-1).cpu()}
        spread = None if logits.ndim == 3 else next(
            (m.last_uncertainty for m in self.net.modules() if getattr(m, "last_uncertainty", None) is not None), None)
        if spread is not None and spread.shape == probs.shape:
            out["spread"] = spread.detach().float().cpu()
        if isinstance(labels, Tensor) and labels.ndim == 1 and labels.shape[0] == probs.shape[0]:
            out["labels"] = labels.detach().cpu()
        if isinstance(batch, dict):
            out["splits"] = split_codes(probs.shape[0], batch.get("train_mask"), batch.get("val_mask"),
                                        batch.get("test_mask"))
        return out

    # -- checkpoints ------------------------------------------------------------------------------------
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Store the global RNG states (see :mod:`cdflow.training.resume`)."""
        checkpoint[RNG_KEY] = rng_state()

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Refuse a checkpoint of a model with other sizes (see `check_checkpoint_fits`); resuming a
        single-process fit: restore the RNG states (not on `load_from_checkpoint`, not under DDP)."""
        trainer = self._trainer
        self.check_checkpoint_fits(checkpoint, getattr(trainer, "ckpt_path", None) if trainer is not None else None)
        if RNG_KEY in checkpoint and trainer is not None and trainer.state.fn == "fit" and trainer.world_size == 1:
            restore_rng_state(checkpoint[RNG_KEY])

    def check_checkpoint_fits(self, checkpoint: dict[str, Any], path: Any = None) -> None:
        """A `ConfigError` naming the parameters whose shapes differ (and, with strict loading, those missing or
        unexpected) when `checkpoint` was written by a model of other sizes, instead of PyTorch's ``size
        mismatch`` traceback; it names the data sizes that differ and the run's ``config.yaml`` to use."""
        saved = checkpoint.get("state_dict")
        if not isinstance(saved, dict):
            return
        own = self.state_dict()
        diffs = [f"{k} is {_shape(v)} in the checkpoint but {_shape(own[k])} here" for k, v in saved.items()
                 if k in own and hasattr(v, "shape") and not is_lazy(own[k]) and tuple(v.shape) != tuple(own[k].shape)]
        if self.strict_loading:
            missing = [k for k in own if k not in saved]
            unexpected = [k for k in saved if k not in own]
            if missing:
                diffs.append(f"{len(missing)} parameter(s) missing from the checkpoint ({', '.join(missing[:3])}"
                             + (", …" if len(missing) > 3 else "") + ")")
            if unexpected:
                diffs.append(f"{len(unexpected)} parameter(s) this model does not have ({', '.join(unexpected[:3])}"
                             + (", …" if len(unexpected) > 3 else "") + ")")
        if not diffs:
            return
        where = f"the checkpoint {path}" if path else "the checkpoint"
        hp = checkpoint.get("hyper_parameters") or {}
        data = []
        if isinstance(hp.get("num_classes"), int) and hp["num_classes"] != self.num_classes:
            data.append(f"{hp['num_classes']} classes (the data module gives {self.num_classes})")
        shape = hp.get("input_shape")
        shape = (shape,) if isinstance(shape, int) else (tuple(shape) if isinstance(shape, (list, tuple)) else None)
        if shape is not None and self.input_shape is not None and shape != self.input_shape:
            data.append(f"examples of shape {shape} (the data module gives {self.input_shape})")
        fix = "the config it was written with"
        if path:
            from cdflow.training.predictions import run_config_of

            config = run_config_of(path)
            if config is not None:
                fix = f"the config beside it: --config {config}"
        shown = "; ".join(diffs[:5]) + (f"; and {len(diffs) - 5} more" if len(diffs) > 5 else "")
        raise ConfigError(
            f"{where} was written by a model with other sizes"
            + (f", trained on {' and '.join(data)}" if data else "")
            + f": {shown}. Use {fix} (same data and model options), or a checkpoint of this configuration"
        )

    # -- optimisation -----------------------------------------------------------------------------------
    def configure_optimizers(self) -> Any:
        cfg = self.optim_config
        opt = build_optimizer(self.parameters(), cfg["name"], cfg["lr"], cfg["weight_decay"], cfg["momentum"],
                              members=stacked_members(self.net))
        sched = build_scheduler(opt, cfg["scheduler"], cfg["milestones"], cfg["lr_gamma"], self.trainer.max_epochs)
        return opt if sched is None else {"optimizer": opt, "lr_scheduler": sched}
