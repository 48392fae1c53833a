"""Recipes and run settings of the 2-D toy experiments (Diff-ResNet ``synthetic/*_example.py``).

Per dataset: kNN graph on the 2-D inputs with k neighbours (self included), Gaussian weights
w_ij = exp(−‖x_i − x_j‖²/ε²), rows normalised to P (P·1 = 1), L = I − P; n diffusion layers
x ← x − τ L x after the residual block; full-batch SGD with learning rate ``lr``, weight decay 5e-4.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

DATASETS: tuple[str, ...] = ("moons", "circles", "spirals")


@dataclass(frozen=True)
class Recipe:
    """Graph and optimiser recipe of one toy dataset."""

    k: int
    n_steps: int
    lr: float
    eps: float = 0.5
    tau: float = 1.0
    weight_decay: float = 5e-4


RECIPES: dict[str, Recipe] = {
    "moons": Recipe(k=25, n_steps=60, lr=1.0),
    "circles": Recipe(k=50, n_steps=200, lr=1.0),
    "spirals": Recipe(k=25, n_steps=900, lr=0.8),
}


@dataclass(frozen=True)
class XorRecipe:
    """XOR diffusion of the raw points (``xor_example.py``): k = 20, ε = 0.5, τ = 1, 200 steps."""

    k: int = 20
    eps: float = 0.5
    tau: float = 1.0
    n_steps: int = 200
    n_per_disk: int = 100


@dataclass(frozen=True)
class Settings:
    """How much to run: seeds, SGD steps, split fractions, data sizes and figure resolution."""

    mode: str
    seeds: tuple[int, ...]
    sgd_steps: int = 20
    train_frac: float = 0.2
    val_frac: float = 0.2
    n_per_class: int = 500
    grid: int = 150
    xor: XorRecipe = field(default_factory=XorRecipe)


def settings_for(mode: str) -> Settings:
    """``smoke`` (CI, seconds), ``reduced`` (default, minutes) or ``full`` (10 seeds)."""
    if mode == "smoke":
        return Settings(mode, seeds=(0,), n_per_class=100, grid=40, xor=replace(XorRecipe(), n_steps=50, n_per_disk=50))
    if mode == "reduced":
        return Settings(mode, seeds=(0, 1, 2))
    if mode == "full":
        return Settings(mode, seeds=tuple(range(10)), grid=200)
    raise ValueError(f"unknown mode {mode!r}; choose smoke, reduced or full")
