"""Protocol settings of the semi-supervised image experiments, per mode (smoke / reduced / full)."""

from __future__ import annotations

from dataclasses import dataclass, field

from cdflow.errors import ConfigError

#: Models: no diffusion, graph diffusion (trained at every point of the mode's γ × n_steps grid; the report shows
#: the library-default γ and the point chosen on validation accuracy), SDE noise.
KINDS: tuple[str, ...] = ("none", "graph", "noise")
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
    gamma_grid, steps_grid: the graph model is trained at every (γ, n_steps) of their product; per dataset and
        labels per class the point of highest mean validation accuracy over the seeds is the reported one
        (``selection.py``).
    mnist_val_per_class: labelled MNIST validation points per class, drawn (seeded) from the points that are
        not labelled for training; digits use the data module's stratified validation split instead.
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
    gamma_grid: tuple[float, ...] = (0.3, 1.0, 3.0, 10.0, 30.0, 100.0)
    steps_grid: tuple[int, ...] = (2,)
    mnist_val_per_class: int = 50

    def __post_init__(self) -> None:
        if not self.gamma_grid or any(g < 0 for g in self.gamma_grid):
            raise ConfigError(f"gamma_grid must hold values ≥ 0, got {self.gamma_grid}")
        if not self.steps_grid or any(n < 1 for n in self.steps_grid):
            raise ConfigError(f"steps_grid must hold values ≥ 1, got {self.steps_grid}")
        if self.mnist_val_per_class < 1:
            raise ConfigError(f"mnist_val_per_class must be ≥ 1, got {self.mnist_val_per_class}")


#: Model hyper-parameters shared by every run (the README's digits check run).
HPARAMS: dict = {
    "hidden": 64, "width": 64, "depth": 2, "activation": "tanh", "dropout": 0.2,
    "lr": 1e-2, "weight_decay": 5e-4,
    "ode_solver": {"method": "dopri5", "rtol": 1e-3, "atol": 1e-4},
    "sde_solver": {"method": "euler", "step_size": 0.1},
    "sigma": 0.5, "n_samples": 8,
    "graph": {"source": "knn", "knn_k": 8, "knn_k_scale": 4},
    # gamma and n_steps: the library defaults' γ and the cheaper step count; the reported graph model is trained
    # over Settings.gamma_grid × Settings.steps_grid and chosen on validation accuracy
    "diffusion_graph": {"integrator": "split", "gamma": 1.0, "n_steps": 2, "scheme": "strang", "method": "krylov"},
}


def settings_for(mode: str) -> Settings:
    """The settings of `mode`: ``smoke``, ``reduced`` or ``full``."""
    if mode == "smoke":
        return Settings(mode, seeds=(0,), mnist_seeds=(0,), labels=(1,), digits_epochs=2, mnist_epochs=2,
                        mnist_points=600, pca_dim=20, digits_default_none=False,
                        kinds=("none", "graph", "noise"), gamma_grid=(1.0, 10.0), steps_grid=(1, 2),
                        mnist_val_per_class=5)
    if mode == "reduced":
        return Settings(mode, seeds=(0, 1, 2), mnist_seeds=(0, 1))
    if mode == "full":
        return Settings(mode, seeds=(0, 1, 2, 3, 4), mnist_seeds=(0, 1, 2), mnist_points=None)
    raise ValueError(f"unknown mode {mode!r}; choose smoke, reduced or full")
