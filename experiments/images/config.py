"""Protocol settings of the semi-supervised image experiments, per mode (smoke / reduced / full)."""

from __future__ import annotations

from dataclasses import dataclass, field

#: Models: no diffusion, graph diffusion with γ = 1 and with γ = 10 (``graph_strong``), SDE noise.
KINDS: tuple[str, ...] = ("none", "graph", "graph_strong", "noise")
#: Extra digits model: the LightningModule's default network with ``--model.diffusion.kind none``.
EXTRA_KINDS: tuple[str, ...] = ("none_default",)


@dataclass(frozen=True)
class Settings:
    """What one mode runs.

    mode: ``smoke`` (CI, seconds), ``reduced`` (default) or ``full``.
    seeds: seeds of the digits runs (each seed draws the split, the labelled subset and the init).
    mnist_seeds: seeds of the MNIST runs.
    labels: labels per class.
    digits_epochs, mnist_epochs: full-batch optimisation steps (one per epoch).
    mnist_points: MNIST points in the transductive set (None: all 70,000, train + test files).
    pca_dim: PCA dimension of the MNIST pixels.
    digits_default_none: also run the LightningModule's default encoder → ODE → head network (the
        ``--model.diffusion.kind none`` path of the CLI) on digits, for comparison with the README check run.
    """

    mode: str
    seeds: tuple[int, ...]
    mnist_seeds: tuple[int, ...]
    labels: tuple[int, ...] = (1, 5, 10)
    digits_epochs: int = 100
    mnist_epochs: int = 100
    mnist_points: int | None = 10_000
    pca_dim: int = 50
    digits_default_none: bool = True
    kinds: tuple[str, ...] = field(default=KINDS)


#: Model hyper-parameters shared by every run (the README's digits check run).
HPARAMS: dict = {
    "hidden": 64, "width": 64, "depth": 2, "activation": "tanh", "dropout": 0.2,
    "lr": 1e-2, "weight_decay": 5e-4,
    "ode_solver": {"method": "dopri5", "rtol": 1e-3, "atol": 1e-4},
    "sde_solver": {"method": "euler", "step_size": 0.1},
    "sigma": 0.5, "n_samples": 8,
    "graph": {"source": "knn", "knn_k": 8, "knn_k_scale": 4},
    # n_steps and gamma_strong: see UNMEASURED (the report prints those notes as they are)
    "diffusion_graph": {"integrator": "split", "gamma": 1.0, "n_steps": 2, "scheme": "strang", "method": "krylov"},
    "gamma_strong": 10.0,
}

#: The one statement of choices these runs do not measure (the report prints them as they are): no figure from
#: a check that no runner logs.
UNMEASURED: dict[str, str] = {
    "graph_steps": "fewer steps for cost; their effect on accuracy is not measured by these runs",
    "gamma_strong": "tried once after seeing the γ = 1 results, not tuned further",
}


def settings_for(mode: str) -> Settings:
    """The settings of `mode`: ``smoke``, ``reduced`` or ``full``."""
    if mode == "smoke":
        return Settings(mode, seeds=(0,), mnist_seeds=(0,), labels=(1,), digits_epochs=2, mnist_epochs=2,
                        mnist_points=600, pca_dim=20, digits_default_none=False,
                        kinds=("none", "graph", "noise"))
    if mode == "reduced":
        return Settings(mode, seeds=(0, 1, 2), mnist_seeds=(0, 1))
    if mode == "full":
        return Settings(mode, seeds=(0, 1, 2, 3, 4), mnist_seeds=(0, 1, 2), mnist_points=None)
    raise ValueError(f"unknown mode {mode!r}; choose smoke, reduced or full")
