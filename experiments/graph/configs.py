"""Model recipes and protocol sizes of the node-classification experiments.

Training (every model): Adam, learning rate 0.01, weight decay 5e-4 (L2 in the gradient), full batch, at
most 10,000 epochs, early stopping with patience 50 whose counter resets when the validation loss or the
validation accuracy strictly improves (< / >, as the COIN reference code `graph/train.py`); the state of the
last such epoch is restored and tested. A row may set its own rule (`ModelSpec.improve_on_tie`): the row
`diffresnet-own-rule` uses the Diff-ResNet reference's (github.com/shwangtangjun/Diff-ResNet, `graph/train.py`:
``val_loss <= val_loss_min or val_acc >= val_acc_max``, patience 50, ties count). The loop and the rule are the
library's (`cdflow.training.fit_members`, `StoppingRule`); the rule each run used is in its record.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import torch
from torch import nn

from cdflow.errors import ConfigError
from cdflow.models import COIN, ConvectionDiffusionNet, DiffResNet, DiffusionSpec, Members
from cdflow.models.baselines import APPNP, GCN, MLP, SGC
from cdflow.models.layers import member_generators
from cdflow.solvers import SolverSpec
from cdflow.training import MemberTraining, StoppingRule
from cdflow.training.consistency import ConsistencySpec
from experiments.graph.search_report import short


@dataclass(frozen=True)
class Training:
    """The protocol's training settings (recorded as they are in the results json)."""

    lr: float = 0.01
    weight_decay: float = 5e-4
    max_epochs: int = 10_000
    patience: int = 50
    improve_on_tie: bool = False
    #: consistency regularisation over dropout draws (`cdflow.training.consistency`): weight λ (0: off),
    #: passes S, temperature τ; a row sets it through its point (`CONSISTENCY_KEYS`)
    consistency: float = 0.0
    consistency_samples: int = 2
    consistency_temperature: float = 0.5

    def member_training(self) -> MemberTraining:
        """The same settings for `cdflow.training.fit_members`."""
        return MemberTraining(lr=self.lr, weight_decay=self.weight_decay, max_epochs=self.max_epochs,
                              rule=StoppingRule(self.patience, self.improve_on_tie),
                              consistency=self.consistency_spec())

    def consistency_spec(self) -> ConsistencySpec:
        return ConsistencySpec(self.consistency, self.consistency_samples, self.consistency_temperature)

    def stopping(self) -> dict[str, Any]:
        """The stopping rule as recorded with every run: patience, ties, and whose rule it is."""
        return {"rule": stopping_rule_name(self.improve_on_tie), "patience": self.patience,
                "improve_on_tie": self.improve_on_tie}


def stopping_rule_name(improve_on_tie: bool) -> str:
    """Whose reference code uses the rule: "COIN" (strict: val loss < min or val acc > max resets the counter)
    or "Diff-ResNet" (ties count: ≤ / ≥)."""
    return "Diff-ResNet" if improve_on_tie else "COIN"


@dataclass(frozen=True)
class ModelSpec:
    """One table row: a model family with its hyper-parameters.

    graph: which operator the model takes ("lap" = L of COIN / Diff-ResNet, "adj" = Â, "none").
    deterministic: no dropout, so the training forward also gives the validation metrics.
    max_members: most initialisations per model (memory: COIN's W₁ is F×F per member).
    split_fraction, max_inits: the share of the protocol's splits and the most initialisations per split
    this row runs (slow rows run fewer).
    improve_on_tie: this row's stopping rule (None: the protocol's; True: Diff-ResNet's own, ties count).
    """

    key: str
    label: str
    family: str
    kwargs: dict[str, Any] = field(default_factory=dict)
    graph: str = "lap"
    deterministic: bool = False
    max_members: int = 20
    split_fraction: float = 1.0
    max_inits: int | None = None
    improve_on_tie: bool | None = None

    def training(self, protocol: Training) -> Training:
        """The protocol's training settings with this row's stopping rule and, for the continuous net, the
        consistency regularisation of its point (`CONSISTENCY_KEYS`)."""
        out = protocol if self.improve_on_tie is None else replace(protocol, improve_on_tie=self.improve_on_tie)
        if self.family == "cdnet":
            out = replace(out, **{k: self.kwargs[k] for k in CONSISTENCY_KEYS if k in self.kwargs})
        return out

    def row_label(self, training: Training) -> str:
        """The label of this row's runs: Diff-ResNet rows name the stopping rule they trained with."""
        if self.family != "diffresnet":
            return self.label
        return f"{self.label}; stopping: {stopping_rule_name(training.improve_on_tie)}'s rule " + \
            ("(ties count)" if training.improve_on_tie else "(strict)")

    def build(self, seeds: Sequence[int], in_features: int, num_classes: int,
              reference_init: bool = False) -> nn.Module:
        """The library model with one member per initialisation seed, member k initialised from seeds[k]
        only (the global random state, which draws the dropout masks, is left as it was).

        reference_init: Diff-ResNet rows draw W₁, b₁, W₂, b₂ as the reference's ``nn.Linear(F, F)``,
        ``nn.Linear(F, C)`` under ``torch.manual_seed(seed)`` (`reference_diffresnet_init`), so that a seed gives
        the reference's initial weights (COIN's own initialisation already draws in that layout)."""
        k, f, c = len(seeds), in_features, num_classes
        if self.family == "cdnet":
            net_kwargs = {key: v for key, v in self.kwargs.items() if key not in CONSISTENCY_KEYS}
            return Members(lambda i: continuous_net(f, c, seeds[i], **net_kwargs), k)
        if self.family == "coin":
            model: nn.Module = COIN(f, c, members=k, **self.kwargs)
        elif self.family == "diffresnet":  # the reference code's F-wide network
            model = DiffResNet(f, c, members=k, hidden=None, **self.kwargs)
            if reference_init:
                reference_diffresnet_init(model, seeds)
                return model
        else:
            model = BASELINES[self.family](f, c, k=k, **self.kwargs)
        model.reset_parameters(member_generators(seeds))
        return model


def reference_diffresnet_init(model: DiffResNet, seeds: Sequence[int]) -> None:
    """Member k of the F-wide `DiffResNet` gets the weights of the reference's ``DiffusionNet`` built after
    ``torch.manual_seed(seeds[k])``: ``nn.Linear(F, F)`` then ``nn.Linear(F, C)`` draw W₁ [F, F], b₁, W₂ [C, F],
    b₂ in that order, each U(±1/√F), from one generator; the model stores W₁ᵀ and W₂ᵀ. (`DiffResNet`'s own
    `reset_parameters` draws the same numbers into the stored [in, out] layout, which is not nn.Linear's.)"""
    f, c = model.in_features, model.num_classes
    bound = 1.0 / math.sqrt(f)
    with torch.no_grad():
        for k, gen in enumerate(member_generators(seeds)):
            w1, b1, w2, b2 = [torch.empty(shape, dtype=model.w1.dtype).uniform_(-bound, bound, generator=gen)
                              for shape in ((f, f), (f,), (c, f), (c,))]
            model.w1[k].copy_(w1.t())
            model.b1[k].copy_(b1)
            model.w2[k].copy_(w2.t())
            model.b2[k].copy_(b2)


BASELINES: dict[str, type[nn.Module]] = {"mlp": MLP, "gcn": GCN, "appnp": APPNP, "sgc": SGC}


#: Convection solvers of the continuous net: fixed-step methods take T/n_steps steps; dopri5 is adaptive.
CONVECTION_METHODS = ("euler", "rk4", "dopri5")


#: Keys of a continuous-net point that set its training objective, not the network (`Training`'s fields).
CONSISTENCY_KEYS = ("consistency", "consistency_samples", "consistency_temperature")


def continuous_net(in_features: int, num_classes: int, seed: int, *, gamma: float, t1: float = 1.0,
                   hidden: int = 64, input_dropout: float = 0.5, hidden_dropout: float = 0.5,
                   head_dropout: float = 0.0, encoder_activation: str = "relu", propagate: str = "features",
                   integrator: str = "split", method: str = "chebyshev", n_steps: int = 2,
                   convection: str = "euler", encoder: str = "mlp", convection_init: str = "default"
                   ) -> ConvectionDiffusionNet:
    """One member of the continuous row from a point of its search (`experiments.graph.search_cdnet`):
    dh/dt = v(h) − γLh on [0, t1] (v: a tanh MLP of width `hidden`, no time input), integrated by `integrator`
    (split: Strang splitting with `method` diffusion sub-steps, the only integrator `method` acts on; explicit: Lie
    splitting with explicit diffusion steps; drift: −γLh inside the ODE) in `n_steps` steps, the convection
    sub-solves by `convection` (one step of T/n_steps each for fixed-step methods; dopri5 at rtol 1e-3, atol 1e-4).
    `encoder`: ``mlp`` (one layer of `hidden` units) or ``residual`` (the F-wide h = x + act(Wx + b) of COIN and
    Diff-ResNet; `hidden` is then the convection's width only). `convection_init`: ``default`` or ``zero`` (the
    convection's output layer zeroed). Weights are drawn by torch's default initialisation under
    torch.manual_seed(seed) (in a forked random state)."""
    if convection not in CONVECTION_METHODS:
        raise ConfigError(f"convection={convection!r} is invalid; valid: {', '.join(CONVECTION_METHODS)}")
    if convection == "dopri5":
        solver = SolverSpec(method="dopri5", rtol=1e-3, atol=1e-4, t1=t1)
    else:
        solver = SolverSpec(method=convection, step_size=t1 / n_steps, t1=t1)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return ConvectionDiffusionNet(
            in_features, num_classes, hidden=in_features if encoder == "residual" else hidden, width=hidden,
            depth=2, activation="tanh", time_input=False, encoder=encoder,  # type: ignore[arg-type]
            encoder_activation=encoder_activation, dropout=input_dropout, hidden_dropout=hidden_dropout,
            head_dropout=head_dropout, propagate=propagate,  # type: ignore[arg-type]
            convection_init=convection_init,  # type: ignore[arg-type]
            diffusion=DiffusionSpec(kind="graph", integrator=integrator, gamma=gamma, n_steps=n_steps,  # type: ignore[arg-type]
                                    **({"method": method} if integrator == "split" else {})),  # type: ignore[arg-type]
            solver=solver,
        )


#: Diff-ResNet recipes per dataset (τ, steps, dropout before every diffusion step) of the reference code's
#: F-wide network h = x + ReLU(W₁x + b₁) (`cdflow.models.DiffResNet` with hidden=None).
DIFFRESNET = {"cora": dict(tau=0.25, n_steps=20, dropout=0.25), "citeseer": dict(tau=0.20, n_steps=20, dropout=0.35)}
#: COIN on Cora (the authors' setting); Citeseer's τ and steps are tuned on validation accuracy.
COIN_CORA = dict(tau=0.35, n_steps=20)
COIN_TUNE_GRID = {"tau": (0.1, 0.2, 0.3, 0.35), "n_steps": (5, 10, 20)}
#: Continuous network: the points chosen on validation accuracy only by `experiments.graph.search_cdnet`, stage 2
#: from stage 1's choice, stage 3 (Cora: consistency regularisation, within 3× COIN's time) from stage 2's (grids,
#: scores and choices in `experiments/results/cdnet_search.json`, `cdnet_search_stage2.json`,
#: `cdnet_search_stage3.json` and the graph report; a test holds them equal).
CDNET: dict[str, dict[str, Any]] = {
    "cora": dict(consistency=2.0, consistency_samples=2, consistency_temperature=0.5,
             convection="euler", convection_init="default", encoder="residual", encoder_activation="relu",
             gamma=26.666666666666668, head_dropout=0.0, hidden=64, hidden_dropout=0.0,
             input_dropout=0.8, integrator="split", method="chebyshev", n_steps=2,
             propagate="logits", t1=0.3),
    "citeseer": dict(convection="euler", convection_init="default", encoder="residual", encoder_activation="identity",
                 gamma=6.666666666666667, head_dropout=0.0, hidden=64, hidden_dropout=0.0,
                 input_dropout=0.0, integrator="explicit", method="chebyshev", n_steps=5,
                 propagate="probabilities", t1=0.3),
}


def model_specs(dataset: str, coin: dict[str, Any]) -> list[ModelSpec]:
    """The rows of one dataset's table; `coin` holds COIN's τ and steps (explicit and split share them).

    Diff-ResNet trains 20 dropout + diffusion layers on F-wide features (about 0.3 s per epoch on Cora and
    0.8 s on Citeseer, one core), so its rows (the protocol's stopping rule and its own) run 30% of the splits
    with one initialisation each."""
    ds = dataset.split("-")[0]
    members = 20 if ds == "cora" else 4  # Citeseer's W₁ is 3703×3703 (55 MB per member, ×5 with Adam)
    tau, steps = coin["tau"], coin["n_steps"]
    diff = DIFFRESNET[ds]
    return [
        ModelSpec("coin-explicit", f"COIN, explicit steps u ← u − τLu (τ={tau}, n={steps})", "coin",
                  dict(tau=tau, n_steps=steps, integrator="explicit"), deterministic=True, max_members=members),
        ModelSpec("coin-split", f"COIN, split integrator exp(−{tau * steps:g}L) (Krylov)", "coin",
                  dict(tau=tau, n_steps=steps, integrator="split"), deterministic=True, max_members=members),
        ModelSpec("coin-nodiff", "COIN network without diffusion (n=0)", "coin", dict(tau=tau, n_steps=0),
                  deterministic=True, max_members=members),
        ModelSpec("diffresnet", f"Diff-ResNet (τ={diff['tau']}, n={diff['n_steps']}, dropout {diff['dropout']})",
                  "diffresnet", dict(diff), max_members=1, split_fraction=0.3, max_inits=1),
        ModelSpec("diffresnet-own-rule", f"Diff-ResNet (τ={diff['tau']}, n={diff['n_steps']}, dropout "
                  f"{diff['dropout']})", "diffresnet", dict(diff), max_members=1, split_fraction=0.3, max_inits=1,
                  improve_on_tie=True),
        ModelSpec("resnet", "ResNet: Diff-ResNet without diffusion (n=0)", "diffresnet",
                  dict(diff, n_steps=0), deterministic=True, max_members=members),
        ModelSpec("cdnet", f"Continuous conv.–diff. net ({short(CDNET[ds])})", "cdnet", dict(CDNET[ds]),
                  max_members=3),
        ModelSpec("mlp", "MLP (hidden 64, dropout 0.5)", "mlp", dict(hidden=64, dropout=0.5), graph="none"),
        ModelSpec("gcn", "GCN (hidden 64, dropout 0.8)", "gcn", dict(hidden=64, dropout=0.8), graph="adj"),
        ModelSpec("appnp", "APPNP (hidden 64, dropout 0.5, α=0.1, 10 iterations)", "appnp",
                  dict(hidden=64, dropout=0.5, alpha=0.1, n_iter=10), graph="adj"),
        ModelSpec("sgc", "SGC (K=2)", "sgc", dict(hops=2), graph="adj", deterministic=True),
    ]


ROW_KEYS = ("coin-explicit", "coin-split", "coin-nodiff", "diffresnet", "diffresnet-own-rule", "resnet", "cdnet",
            "mlp", "gcn", "appnp", "sgc")


@dataclass(frozen=True)
class Protocol:
    """How much to run. splits × inits per row on the random splits; public_inits on the Planetoid split;
    tune_splits × tune_inits per grid point of Citeseer's COIN search."""

    name: str
    datasets: tuple[str, ...] = ("cora", "citeseer")
    n_splits: int = 10
    n_inits: int = 3
    public_inits: int = 3
    tune_splits: int = 3
    tune_inits: int = 1
    tune_grid: dict[str, tuple] = field(default_factory=lambda: dict(COIN_TUNE_GRID))
    training: Training = Training()
    timing: bool = True
    init_seeds: str = "paired"  # how initialisation i of split s is seeded (`experiments.graph.data.init_seeds`)
    models: tuple[str, ...] | None = None  # None: every row
    public_models: tuple[str, ...] | None = None  # rows on the public split (None: the same as `models`)


PROTOCOLS: dict[str, Protocol] = {
    "smoke": Protocol("smoke", datasets=("cora",), n_splits=1, n_inits=2, public_inits=1, tune_splits=1,
                      tune_grid={"tau": (0.2,), "n_steps": (5, 10)},
                      training=Training(max_epochs=2),
                      timing=False, public_models=("coin-explicit", "gcn")),
    "reduced": Protocol("reduced", public_models=tuple(k for k in ROW_KEYS if k != "cdnet")),
    "full": Protocol("full", n_splits=100, n_inits=20, public_inits=20, tune_splits=10, tune_inits=2),
}


def protocol(name: str, **overrides: Any) -> Protocol:
    """A named protocol with fields replaced (None values are ignored)."""
    return replace(PROTOCOLS[name], **{k: v for k, v in overrides.items() if v is not None})
