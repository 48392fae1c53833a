"""MNIST pixels in [0, 1], flattened: the attacks and the input noise act in this space."""

from __future__ import annotations

import torch

from cdflow.data.idx import load_mnist


def mnist_pixels(split: str, n: int | None = None, root: str | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The first `n` images of `split` (all with None) as float ``[n, 784]`` in [0, 1], and their labels."""
    images, labels = load_mnist(root, split)
    if n is not None:
        images, labels = images[:n], labels[:n]
    x = torch.from_numpy(images.reshape(len(labels), -1)).to(torch.float32) / 255.0
    return x, torch.from_numpy(labels)
