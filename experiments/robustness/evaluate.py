"""Clean, Gaussian-noise and PGD accuracies of one model on a fixed set of test images."""

from __future__ import annotations

import time
from typing import Any

import torch
from torch import Tensor, nn

from experiments.robustness.attacks import gaussian_noise, pgd_linf
from experiments.robustness.config import Settings
from experiments.robustness.models import accuracy, is_stochastic, set_paths

#: Seeds of the SDE's paths: the evaluation's own, and the attack's fresh ones (step k: FRESH + k).
EVAL_PATHS, FRESH_PATHS = 10_000, 20_000


def _batched_pgd(model: nn.Module, x: Tensor, y: Tensor, eps: float, settings: Settings, seed: int,
                 paths: str) -> Tensor:
    """Adversarial images, batch by batch; the SDE sees its evaluation paths (fixed) or new ones (fresh)."""
    gen = torch.Generator().manual_seed(seed)
    out = []
    for i in range(0, len(y), settings.eval_batch):
        xb, yb = x[i:i + settings.eval_batch], y[i:i + settings.eval_batch]
        hook = None
        if paths == "fresh":
            def hook(k: int, _i: int = i) -> None:
                set_paths(model, FRESH_PATHS + 1000 * seed + 100 * k + _i // settings.eval_batch)
        else:
            set_paths(model, EVAL_PATHS + seed)
        out.append(pgd_linf(model, xb, yb, eps, settings.pgd_steps, gen, before_step=hook))
    set_paths(model, EVAL_PATHS + seed)
    return torch.cat(out)


def evaluate(model: nn.Module, x: Tensor, y: Tensor, settings: Settings, seed: int) -> dict[str, Any]:
    """Accuracies: ``clean``, ``noise_<σ>`` (clipped Gaussian input noise), ``pgd_<ε>_<paths>``.

    Deterministic models get one PGD entry per ε (``paths`` = ``det``); the SDE gets ``fixed`` and/or
    ``fresh`` per `settings.paths`. Every accuracy is measured with the evaluation paths (seed
    EVAL_PATHS + seed), which the ``fresh`` attack never used.
    """
    start = time.perf_counter()
    model.eval()
    set_paths(model, EVAL_PATHS + seed)
    acc: dict[str, float] = {"clean": accuracy(model, x, y, settings.eval_batch)}
    gen = torch.Generator().manual_seed(1_000 + seed)
    for sigma in settings.noise_sigmas:
        acc[f"noise_{sigma:g}"] = accuracy(model, gaussian_noise(x, sigma, gen), y, settings.eval_batch)
    modes = settings.paths if is_stochastic(model) else ("det",)
    for eps in settings.eps:
        for paths in modes:
            x_adv = _batched_pgd(model, x, y, eps, settings, 2_000 + seed, paths)
            assert float((x_adv - x).abs().max()) <= eps + 1e-6
            acc[f"pgd_{eps:g}_{paths}"] = accuracy(model, x_adv, y, settings.eval_batch)
    return {"acc": acc, "eval_s": time.perf_counter() - start}
