"""The three networks compared: one `ConvectionDiffusionNet` with no diffusion, graph diffusion or SDE noise."""

from __future__ import annotations

from cdflow.models import ConvectionDiffusionNet
from cdflow.models.diffusion_spec import DiffusionSpec
from cdflow.models.graph_source import GraphSpec
from cdflow.solvers import SolverSpec
from experiments.images.config import HPARAMS


def solver_spec(kind: str) -> SolverSpec:
    """dopri5 (rtol 1e-3, atol 1e-4) for the ODEs (none, graph); Euler–Maruyama, step 0.1 for the SDE (noise)."""
    return SolverSpec(**(HPARAMS["sde_solver"] if kind == "noise" else HPARAMS["ode_solver"]))


def diffusion_spec(kind: str) -> DiffusionSpec:
    """No diffusion; graph diffusion −γLz by Strang splitting with an exact Krylov sub-step (``graph``: γ = 1,
    ``graph_strong``: γ = 10); or noise ς dW (``noise``)."""
    if kind == "graph":
        return DiffusionSpec(kind="graph", **HPARAMS["diffusion_graph"])
    if kind == "graph_strong":
        return DiffusionSpec(kind="graph", **{**HPARAMS["diffusion_graph"], "gamma": HPARAMS["gamma_strong"]})
    if kind == "noise":
        return DiffusionSpec(kind="noise", sigma=HPARAMS["sigma"], n_samples=HPARAMS["n_samples"])
    return DiffusionSpec(kind="none")


def graph_spec() -> GraphSpec:
    """Self-tuning Gaussian kNN graph of the input features (COIN / Diff-ResNet recipe), built once and cached."""
    return GraphSpec(**HPARAMS["graph"])


def build_net(kind: str, in_features: int, num_classes: int, seed: int) -> ConvectionDiffusionNet:
    """encoder (dropout, linear, tanh) → convection[–diffusion] solve over [0, 1] → linear head."""
    hp = HPARAMS
    return ConvectionDiffusionNet(
        in_features, num_classes, hidden=hp["hidden"], width=hp["width"], depth=hp["depth"],
        activation=hp["activation"], solver=solver_spec(kind), diffusion=diffusion_spec(kind), graph=graph_spec(),
        dropout=hp["dropout"], seed=seed,
    )
