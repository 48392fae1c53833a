"""Protocol settings of the robustness experiment, per mode (smoke / reduced / full)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Settings:
    """What one mode runs.

    seeds: training seeds (each trains one ODE and one SDE model).
    train_images: training images used (None: all 60,000); epochs: passes over them (batch 128).
    eval_images: first test images evaluated (None: all 10,000).
    noise_sigmas: std of the Gaussian input noise, in [0, 1] pixel units (added before normalisation).
    eps: L∞ PGD radii, in [0, 1] pixel units; pgd_steps: iterations, step eps/4, random start.
    sde_sigmas: noise ς of the SDE models (one SDE model per value, trained and evaluated with it).
    n_samples: Monte Carlo paths of the SDE's Feynman–Kac mean at evaluation (and inside the attack).
    paths: how the attack sees the SDE's paths: ``fixed`` (the evaluation's own paths at every step) and/or
        ``fresh`` (new paths every step, and unseen paths for the final evaluation).
    """

    mode: str
    seeds: tuple[int, ...]
    train_images: int | None
    epochs: int
    eval_images: int | None
    noise_sigmas: tuple[float, ...] = (0.1, 0.2, 0.3)
    eps: tuple[float, ...] = (0.1, 0.2)
    pgd_steps: int = 20
    sde_sigmas: tuple[float, ...] = (0.5, 1.0)
    n_samples: int = 8
    paths: tuple[str, ...] = ("fixed", "fresh")
    batch_size: int = 128
    eval_batch: int = 500


#: The architecture shared by both models (a `ConvectionDiffusionNet` on flattened, normalised pixels).
HPARAMS: dict = {
    "hidden": 128, "width": 128, "depth": 2, "activation": "tanh", "dropout": 0.0,
    "method": "euler", "step_size": 0.1, "t1": 1.0, "noise_type": "diagonal",
    "lr": 1e-3, "lr_schedule": "cosine",
}


def settings_for(mode: str) -> Settings:
    """The settings of `mode`: ``smoke``, ``reduced`` or ``full``."""
    if mode == "smoke":
        return Settings(mode, seeds=(0,), train_images=2000, epochs=1, eval_images=200, noise_sigmas=(0.1, 0.3),
                        eps=(0.1,), pgd_steps=3, sde_sigmas=(0.5,), n_samples=4, paths=("fixed", "fresh"))
    if mode == "reduced":
        return Settings(mode, seeds=(0, 1), train_images=None, epochs=2, eval_images=1000)
    if mode == "full":
        return Settings(mode, seeds=(0, 1, 2), train_images=None, epochs=3, eval_images=None)
    raise ValueError(f"unknown mode {mode!r}; choose smoke, reduced or full")
