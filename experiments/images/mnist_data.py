"""MNIST as one transductive point set: a stratified subset of the 70,000 images, PCA-reduced pixels."""

from __future__ import annotations

import numpy as np
import torch

from cdflow.data.idx import load_mnist
from cdflow.data.splits import labelled_subset


def mnist_points(n_points: int | None, seed: int, root: str | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Pixels in [0, 1] ``[N, 784]`` and labels of `n_points` images drawn stratified from train + test files.

    ``n_points=None`` keeps all 70,000. The subset depends on `seed`.
    """
    xs, ys = zip(*(load_mnist(root, split) for split in ("train", "test")))
    images, labels = np.concatenate(xs), np.concatenate(ys)
    if n_points is not None and n_points < len(labels):
        rng = np.random.default_rng(seed)
        per_class = np.bincount(labels, minlength=10) * n_points / len(labels)
        counts = np.floor(per_class).astype(int)
        counts[np.argsort(per_class - counts)[::-1][: n_points - counts.sum()]] += 1
        keep = np.concatenate([rng.choice(np.flatnonzero(labels == c), counts[c], replace=False) for c in range(10)])
        keep.sort()
        images, labels = images[keep], labels[keep]
    x = torch.from_numpy(images.reshape(len(labels), -1)).to(torch.float32) / 255.0
    return x, torch.from_numpy(labels)


def pca_features(x: torch.Tensor, dim: int, seed: int) -> torch.Tensor:
    """Centred projection of `x` on its first `dim` principal directions (`torch.pca_lowrank`), scaled to unit
    overall standard deviation."""
    gen_state = torch.random.get_rng_state()
    torch.manual_seed(seed)  # pca_lowrank's randomised range finder
    try:
        mean = x.mean(dim=0, keepdim=True)
        _, _, v = torch.pca_lowrank(x - mean, q=dim, center=False, niter=4)
    finally:
        torch.random.set_rng_state(gen_state)
    z = (x - mean) @ v[:, :dim]
    return z / z.std()


def labelled_mask(y: torch.Tensor, per_class: int, seed: int) -> torch.Tensor:
    """Boolean mask of `per_class` labelled points per class (seeded); every other point is unlabelled."""
    pool = np.ones(len(y), dtype=bool)
    return torch.from_numpy(labelled_subset(y.numpy(), pool, per_class, seed))


def validation_mask(y: torch.Tensor, labelled: torch.Tensor, per_class: int, seed: int) -> torch.Tensor:
    """Boolean mask of `per_class` validation points per class drawn (seeded) from the points outside `labelled`;
    they are scored for model selection only, never trained on and never in the reported accuracy."""
    return torch.from_numpy(labelled_subset(y.numpy(), ~labelled.numpy(), per_class, seed))
