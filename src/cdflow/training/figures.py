"""Matplotlib figures of trained classifiers: confusion matrix, 2-D decision boundary, depth trajectories.

Pure functions of arrays returning `matplotlib.figure.Figure` objects (no pyplot state, any backend).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from matplotlib import colormaps
from matplotlib.figure import Figure

_CMAP = "tab10"


def confusion_matrix_figure(cm: np.ndarray, title: str = "Confusion matrix (test)") -> Figure:
    """Counts ``cm[true, predicted]`` as an image, annotated when there are at most 20 classes."""
    k = cm.shape[0]
    fig = Figure(figsize=(1.0 + 0.45 * k, 0.8 + 0.45 * k), layout="constrained")
    ax = fig.add_subplot()
    im = ax.imshow(cm, cmap="Blues")
    fig.colorbar(im, ax=ax, shrink=0.8)
    ax.set(xlabel="predicted", ylabel="true", title=title, xticks=range(k), yticks=range(k))
    if k <= 20:
        threshold = cm.max() / 2 if cm.size else 0
        for i in range(k):
            for j in range(k):
                color = "white" if cm[i, j] > threshold else "black"
                ax.text(j, i, str(int(cm[i, j])), ha="center", va="center", color=color, fontsize=8)
    return fig


def decision_boundary_figure(
    predict_proba: Callable[[np.ndarray], np.ndarray],
    x: np.ndarray,
    y: np.ndarray,
    grid_size: int = 200,
    margin: float = 0.25,
    title: str = "Decision boundary (test points)",
) -> Figure:
    """Predicted class regions of a 2-D classifier over the data's bounding box, with the points on top.

    `predict_proba` maps ``[M, 2]`` points to ``[M, C]`` class probabilities.
    """
    lo, hi = x.min(axis=0), x.max(axis=0)
    pad = margin * (hi - lo + 1e-12)
    g0 = np.linspace(lo[0] - pad[0], hi[0] + pad[0], grid_size)
    g1 = np.linspace(lo[1] - pad[1], hi[1] + pad[1], grid_size)
    xx, yy = np.meshgrid(g0, g1)
    probs = predict_proba(np.stack([xx.ravel(), yy.ravel()], axis=1).astype(np.float32))
    pred = probs.argmax(axis=1).reshape(xx.shape)
    fig = Figure(figsize=(5.5, 5), layout="constrained")
    ax = fig.add_subplot()
    k = probs.shape[1]
    ax.contourf(xx, yy, pred, levels=np.arange(k + 1) - 0.5, cmap=_CMAP, vmin=0, vmax=9, alpha=0.25)
    ax.contour(xx, yy, pred, levels=np.arange(k) + 0.5, colors="k", linewidths=0.6, alpha=0.6)
    ax.scatter(x[:, 0], x[:, 1], c=y, cmap=_CMAP, vmin=0, vmax=9, s=10, edgecolors="k", linewidths=0.3)
    ax.set(title=title, xlabel="$x_1$", ylabel="$x_2$")
    return fig


def project_2d(points: np.ndarray) -> tuple[np.ndarray, str]:
    """``[..., D]`` points as ``[..., 2]``: themselves when D = 2, else their top two principal components."""
    d = points.shape[-1]
    if d == 2:
        return points, "state"
    flat = points.reshape(-1, d)
    centred = flat - flat.mean(axis=0)
    _, _, vt = np.linalg.svd(centred, full_matrices=False)
    basis = vt[:2].T if vt.shape[0] >= 2 else np.pad(vt.T, ((0, 0), (0, 2 - vt.shape[0])))
    return (points - flat.mean(axis=0)) @ basis, "PCA of the state"


def trajectories_figure(
    traj: np.ndarray, y: np.ndarray, ts: np.ndarray, title: str = "Particle trajectories through depth"
) -> Figure:
    """Paths x(t) of ``traj[T, N, D]`` (2-D, or projected on two principal components), coloured by class.

    Circles mark x(0), crosses x(T).
    """
    paths, what = project_2d(traj.reshape(traj.shape[0], traj.shape[1], -1))
    fig = Figure(figsize=(5.5, 5), layout="constrained")
    ax = fig.add_subplot()
    cmap = colormaps[_CMAP]
    for i in range(paths.shape[1]):
        ax.plot(paths[:, i, 0], paths[:, i, 1], color=cmap(int(y[i]) % 10), lw=0.6, alpha=0.6)
    ax.scatter(paths[0, :, 0], paths[0, :, 1], c=y, cmap=_CMAP, vmin=0, vmax=9, s=8, marker="o")
    ax.scatter(paths[-1, :, 0], paths[-1, :, 1], c=y, cmap=_CMAP, vmin=0, vmax=9, s=14, marker="x")
    ax.set(title=f"{title} (t = {ts[0]:g} … {ts[-1]:g})", xlabel=f"{what} 1", ylabel=f"{what} 2")
    return fig
