"""The XOR distance–diameter ratio under diffusion (Diff-ResNet ``xor_example.py``; arXiv 2403.15726).

Four disks (diameter 1.5, centres (0,0), (2,2), (2,0), (0,2)); the raw points are diffused on their kNN
graph, x ← x − τ L x with L = I − P. After k steps,

    l_k = min ‖x_i − x_j‖ over points of different disks,   d_k = max ‖x_i − x_j‖ over points of one disk,

and the theory says diffusion raises l/d: it contracts each cluster faster than it brings clusters together.
"""

from __future__ import annotations

import torch
from torch import Tensor

from cdflow.data.toys import make_xor
from cdflow.heat import explicit_diffusion
from experiments.toys.config import XorRecipe
from experiments.toys.model import toy_laplacian


def distance_diameter(x: Tensor, disk: Tensor) -> tuple[float, float]:
    """(l, d): minimum distance across disks, maximum diameter within a disk."""
    dist = torch.cdist(x.double(), x.double())
    same = disk[:, None] == disk[None, :]
    return float(dist[~same].min()), float(dist[same].max())


def xor_curve(seed: int, recipe: XorRecipe, keep: tuple[int, ...] = ()) -> dict:
    """l_k, d_k and l_k/d_k for k = 0..n_steps, plus the point clouds at the steps in `keep`."""
    x, y = make_xor(n_per_disk=recipe.n_per_disk, seed=seed)
    disk = torch.arange(4).repeat_interleave(recipe.n_per_disk)
    l_mat = toy_laplacian(x, recipe.k, recipe.eps)
    ls, ds, snaps = [], [], {}
    for k in range(recipe.n_steps + 1):
        if k > 0:
            x, _ = explicit_diffusion(x, l_mat, recipe.tau, 1)
        lk, dk = distance_diameter(x, disk)
        ls.append(lk)
        ds.append(dk)
        if k in keep:
            snaps[k] = x.clone()
    return {"seed": seed, "l": ls, "d": ds, "ratio": [a / b for a, b in zip(ls, ds)], "labels": y,
            "snapshots": snaps}
