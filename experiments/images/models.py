"""The three networks compared: one `ConvectionDiffusionNet` with no diffusion, graph diffusion or SDE noise."""

from __future__ import annotations

from cdflow.errors import ConfigError
from cdflow.models import ConvectionDiffusionNet
from cdflow.models.diffusion_spec import DiffusionSpec
from cdflow.models.graph_source import GraphSpec
from cdflow.solvers import SolverSpec
from experiments.images.config import HPARAMS


def solver_spec(kind: str) -> SolverSpec:
    """dopri5 (rtol 1e-3, atol 1e-4) for the ODEs (none, graph); Euler–Maruyama, step 0.1 for the SDE (noise)."""
    return SolverSpec(**(HPARAMS["sde_solver"] if kind == "noise" else HPARAMS["ode_solver"]))


def diffusion_spec(kind: str, gamma: float | None = None, n_steps: int | None = None) -> DiffusionSpec:
    """No diffusion; graph diffusion −γLz by Strang splitting with `n_steps` steps and an exact Krylov sub-step
    (``graph``; `gamma`, `n_steps` default to ``HPARAMS["diffusion_graph"]``); or noise ς dW (``noise``).

    Raises:
        ConfigError: `gamma` or `n_steps` given for a model without graph diffusion (they would not act).
    """
    if kind != "graph" and (gamma is not None or n_steps is not None):
        raise ConfigError(f"gamma and n_steps set the graph model's diffusion; model {kind!r} has none")
    if kind == "graph":
        graph = HPARAMS["diffusion_graph"]
        return DiffusionSpec(kind="graph", **{**graph, "gamma": graph["gamma"] if gamma is None else gamma,
                                              "n_steps": graph["n_steps"] if n_steps is None else n_steps})
    if kind == "noise":
        return DiffusionSpec(kind="noise", sigma=HPARAMS["sigma"], n_samples=HPARAMS["n_samples"])
    return DiffusionSpec(kind="none")


def graph_point(spec: DiffusionSpec) -> dict[str, float | int]:
    """``{"gamma", "n_steps"}`` of a graph diffusion (what a run records as its grid point); ``{}`` otherwise."""
    return {"gamma": spec.gamma, "n_steps": spec.n_steps} if spec.kind == "graph" else {}


def graph_spec() -> GraphSpec:
    """Self-tuning Gaussian kNN graph of the input features (COIN / Diff-ResNet recipe), built once and cached."""
    return GraphSpec(**HPARAMS["graph"])


def build_net(kind: str, in_features: int, num_classes: int, seed: int, gamma: float | None = None,
              n_steps: int | None = None) -> ConvectionDiffusionNet:
    """encoder (dropout, linear, tanh) → convection[–diffusion] solve over [0, 1] → linear head (`gamma`,
    `n_steps`: as in `diffusion_spec`)."""
    hp = HPARAMS
    return ConvectionDiffusionNet(
        in_features, num_classes, hidden=hp["hidden"], width=hp["width"], depth=hp["depth"],
        activation=hp["activation"], solver=solver_spec(kind), diffusion=diffusion_spec(kind, gamma, n_steps),
        graph=graph_spec(), dropout=hp["dropout"], seed=seed,
    )
