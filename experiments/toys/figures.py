"""Figures of the toy experiments (matplotlib, Agg backend): decision regions, trajectories, XOR l/d."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch import Tensor  # noqa: E402

from cdflow.heat import explicit_diffusion  # noqa: E402
from experiments.toys.config import RECIPES  # noqa: E402
from experiments.toys.extension import diffuse_with_queries, query_weights  # noqa: E402
from experiments.toys.model import ToyDiffResNet  # noqa: E402

COLORS = np.array(["tab:red", "tab:blue"])


def _grid(x: Tensor, size: int) -> tuple[np.ndarray, np.ndarray, Tensor]:
    lo, hi = x.min(0).values - 0.5, x.max(0).values + 0.5
    gx, gy = np.meshgrid(np.linspace(float(lo[0]), float(hi[0]), size), np.linspace(float(lo[1]), float(hi[1]), size))
    return gx, gy, torch.tensor(np.stack([gx.ravel(), gy.ravel()], 1), dtype=torch.float32)


@torch.no_grad()
def class1_probability(model: ToyDiffResNet, dataset: str, x: Tensor, l_mat: Tensor, query: Tensor) -> Tensor:
    """P(class 1) at the query points; with diffusion through the out-of-sample extension."""
    if model.propagator is None:
        return torch.softmax(model(query), 1)[:, 1]
    recipe = RECIPES[dataset]
    q_mat, p_self = query_weights(query, x, recipe.k, recipe.eps)
    _, zq = diffuse_with_queries(model.block(x), model.block(query), l_mat, q_mat, p_self, recipe.tau, recipe.n_steps)
    return torch.softmax(model.head(zq), 1)[:, 1]


def decision_boundaries(cases: dict[str, dict[str, Any]], grid: int, path: Path) -> None:
    """Rows: datasets; columns: without / with diffusion. cases[ds] has x, y, laplacian, models, accs."""
    fig, axes = plt.subplots(len(cases), 2, figsize=(8, 4 * len(cases)), squeeze=False)
    for row, (ds, case) in enumerate(cases.items()):
        x, y = case["x"], case["y"]
        gx, gy, query = _grid(x, grid)
        for col, diffusion in enumerate((False, True)):
            ax = axes[row, col]
            prob = class1_probability(case["models"][diffusion], ds, x, case["laplacian"], query)
            ax.contourf(gx, gy, prob.reshape(gx.shape).numpy(), levels=np.linspace(0, 1, 11), cmap="RdBu", alpha=0.5)
            ax.contour(gx, gy, prob.reshape(gx.shape).numpy(), levels=[0.5], colors="k", linewidths=1)
            ax.scatter(x[:, 0], x[:, 1], c=COLORS[y.numpy()], s=3)
            steps = RECIPES[ds].n_steps if diffusion else 0
            ax.set_title(f"{ds}, {'with' if diffusion else 'without'} diffusion ({steps} steps)\n"
                         f"test acc {case['accs'][diffusion]:.3f}", fontsize=9)
            ax.set_xticks([])
            ax.set_yticks([])
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


@torch.no_grad()
def depth_snapshots(model: ToyDiffResNet, x: Tensor, l_mat: Tensor, dataset: str) -> tuple[list[int], list[Tensor]]:
    """Features at depth: input, block output (diffusion step 0), then diffusion steps n/20, n/5, n; and the
    whole path (input, block, every diffusion step) for the trajectories."""
    recipe = RECIPES[dataset]
    keep = sorted({0, max(1, recipe.n_steps // 20), recipe.n_steps // 5, recipe.n_steps})
    z = model.block(x)
    path = [x, z]
    for _ in range(recipe.n_steps):
        z, _ = explicit_diffusion(z, l_mat, recipe.tau, 1)
        path.append(z)
    return keep, path


def trajectories(cases: dict[str, dict[str, Any]], path: Path, n_tracks: int = 40) -> None:
    """Rows: datasets; columns: the features of every point at increasing depth (diffusion model) on the
    axes of the block output (so the contraction shows), then the paths of `n_tracks` particles."""
    ncol = 6
    fig, axes = plt.subplots(len(cases), ncol, figsize=(3.0 * ncol, 3.0 * len(cases)), squeeze=False)
    for row, (ds, case) in enumerate(cases.items()):
        keep, track = depth_snapshots(case["models"][True], case["x"], case["laplacian"], ds)
        colors = COLORS[case["y"].numpy()]
        panels = [("input x", track[0])] + [(f"block + {k} diffusion steps", track[1 + k]) for k in keep]
        stacked = torch.stack(track).numpy()
        lo, hi = stacked[1:].min((0, 1)), stacked[1:].max((0, 1))
        pad = 0.05 * (hi - lo)
        for col, (title, z) in enumerate(panels[: ncol - 1]):
            ax = axes[row, col]
            ax.scatter(z[:, 0], z[:, 1], c=colors, s=3)
            ax.set_title(f"{ds}: {title}", fontsize=8)
        ax = axes[row, ncol - 1]
        pick = np.random.default_rng(0).choice(stacked.shape[1], n_tracks, replace=False)
        for i in pick:
            ax.plot(stacked[1:, i, 0], stacked[1:, i, 1], color=colors[i], lw=0.6, alpha=0.7)
            ax.plot(*stacked[-1, i], "o", color=colors[i], ms=2)
        ax.set_title(f"{ds}: paths of {n_tracks} points through the diffusion layers", fontsize=8)
        for col, ax in enumerate(axes[row]):
            if col > 0:
                ax.set_xlim(lo[0] - pad[0], hi[0] + pad[0])
                ax.set_ylim(lo[1] - pad[1], hi[1] + pad[1])
            ax.set_xticks([])
            ax.set_yticks([])
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def xor_figure(curves: list[dict], path: Path) -> None:
    """l and d against diffusion steps (seed 0), l/d per seed and its median, and the points of seed 0 at 3 depths."""
    ratio = np.array([c["ratio"] for c in curves])
    steps = np.arange(ratio.shape[1])
    first = curves[0]
    snaps = sorted(first["snapshots"])
    fig, axes = plt.subplots(1, 2 + len(snaps), figsize=(4 * (2 + len(snaps)), 3.6))
    axes[0].plot(steps, first["l"], label="l (min distance across disks)")
    axes[0].plot(steps, first["d"], label="d (max disk diameter)")
    axes[0].set_yscale("log")
    axes[0].set_xlabel("diffusion steps k")
    axes[0].legend(fontsize=8)
    axes[0].set_title(f"seed {first['seed']}")
    for c in curves:
        axes[1].plot(steps, c["ratio"], color="tab:gray", lw=0.7, alpha=0.7)
    axes[1].plot(steps, np.median(ratio, 0), color="k", lw=2, label="median")
    axes[1].set_yscale("log")
    axes[1].set_xlabel("diffusion steps k")
    axes[1].legend(fontsize=8)
    axes[1].set_title(f"l/d, {len(curves)} seeds (grey) and median")
    colors = COLORS[first["labels"].numpy()]
    for ax, k in zip(axes[2:], snaps):
        z = first["snapshots"][k]
        ax.scatter(z[:, 0], z[:, 1], c=colors, s=4)
        ax.set_title(f"XOR after {k} steps, l/d = {first['ratio'][k]:.3g}", fontsize=9)
        ax.set_xlim(-1.0, 3.0)
        ax.set_ylim(-1.0, 3.0)
        ax.set_aspect("equal")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
