"""2-D toy classification sets following the Diff-ResNet recipes (``synthetic/*_example.py``), seeded.

Each returns ``(x float32 [N, 2], y int64 [N])`` with the points of class 0 first:

* ``moons``: scikit-learn two moons, 500 + 500 points, Gaussian noise 0.05;
* ``circles``: radii 2 (class 0) and 1 (class 1), 500 evenly spaced angles each, noise 0.05;
* ``spirals``: ``r = +(1 + t)`` (class 0) and ``r = -(1 + t)`` (class 1), ``t`` evenly spaced in
  ``[0, 2 pi]``, 500 each, noise 0.1;
* ``xor``: four disks of diameter 1.5, uniform inside, 100 points each, centred at (0,0), (2,2)
  (class 0) and (2,0), (0,2) (class 1).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

import numpy as np
import torch
from sklearn.datasets import make_moons as _sk_make_moons

from cdflow.errors import DataError

ToyName = Literal["moons", "circles", "spirals", "xor"]


def _pack(points: np.ndarray, labels: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.from_numpy(points.astype(np.float32)), torch.from_numpy(labels.astype(np.int64))


def _two_classes(n_per_class: int) -> np.ndarray:
    return np.repeat(np.arange(2), n_per_class)


def make_moons(
    n_per_class: int = 500, noise: float = 0.05, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Two interleaving half circles (scikit-learn ``make_moons``), class 0 = upper moon."""
    seed_int = int(np.random.default_rng(seed).integers(2**31 - 1))
    points, labels = _sk_make_moons(
        n_samples=2 * n_per_class, noise=noise, shuffle=False, random_state=seed_int
    )
    return _pack(points, labels)


def make_circles(
    n_per_class: int = 500, noise: float = 0.05, seed: int = 0, radii: tuple[float, float] = (2.0, 1.0)
) -> tuple[torch.Tensor, torch.Tensor]:
    """Two concentric circles: class 0 on radius ``radii[0]`` (outer), class 1 on ``radii[1]``."""
    rng = np.random.default_rng(seed)
    theta = np.linspace(0.0, 2.0 * np.pi, n_per_class)
    ring = np.stack([np.cos(theta), np.sin(theta)], axis=1)
    points = np.concatenate([radii[0] * ring, radii[1] * ring])
    points += noise * rng.standard_normal(points.shape)
    return _pack(points, _two_classes(n_per_class))


def make_spirals(
    n_per_class: int = 500, noise: float = 0.1, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Two interleaved spirals ``r = +-(1 + t)``, ``t`` in ``[0, 2 pi]``."""
    rng = np.random.default_rng(seed)
    theta = np.linspace(0.0, 2.0 * np.pi, n_per_class)
    arm = (1.0 + theta)[:, None] * np.stack([np.cos(theta), np.sin(theta)], axis=1)
    points = np.concatenate([arm, -arm])
    points += noise * rng.standard_normal(points.shape)
    return _pack(points, _two_classes(n_per_class))


XOR_CENTRES = ((0.0, 0.0), (2.0, 2.0), (2.0, 0.0), (0.0, 2.0))


def make_xor(
    n_per_disk: int = 100, diameter: float = 1.5, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Four uniform disks; (0,0) and (2,2) are class 0, (2,0) and (0,2) class 1."""
    rng = np.random.default_rng(seed)
    total = 4 * n_per_disk
    radius = np.sqrt(rng.uniform(0.0, (diameter / 2.0) ** 2, total))  # sqrt: uniform in area
    angle = rng.uniform(0.0, 2.0 * np.pi, total)
    points = np.stack([radius * np.cos(angle), radius * np.sin(angle)], axis=1)
    points += np.repeat(np.asarray(XOR_CENTRES), n_per_disk, axis=0)
    labels = np.repeat(np.array([0, 0, 1, 1]), n_per_disk)
    return _pack(points, labels)


TOYS: dict[str, Callable[..., tuple[torch.Tensor, torch.Tensor]]] = {
    "moons": make_moons,
    "circles": make_circles,
    "spirals": make_spirals,
    "xor": make_xor,
}


def make_toy(name: ToyName, seed: int = 0, **kwargs: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """Build toy set ``name`` with the Diff-ResNet defaults (override them through ``kwargs``)."""
    if name not in TOYS:
        raise DataError(f"Unknown toy dataset {name!r}; choose one of {sorted(TOYS)}.")
    return TOYS[name](seed=seed, **kwargs)
