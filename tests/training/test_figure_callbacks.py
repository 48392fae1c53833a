"""Figure callbacks: which figures each task gets, PNGs in the run directory, and the figure helpers."""

from __future__ import annotations

import lightning as L
import matplotlib.image as mpimg
import numpy as np
import pytest
from matplotlib import colormaps

from cdflow.data.modules import DigitsDataModule, ToyDataModule
from cdflow.solvers import SolverSpec
from cdflow.training import ContinuousDepthClassifier
from cdflow.training.callbacks import ConfusionMatrixFigure, DecisionBoundaryFigure, TrajectoryFigure
from cdflow.training.figures import confusion_matrix_figure, project_2d, trajectories_figure


def _test_with_figures(tmp_path, dm, **model_kwargs):
    callbacks = [ConfusionMatrixFigure(), DecisionBoundaryFigure(grid_size=20), TrajectoryFigure(num_times=5)]
    model = ContinuousDepthClassifier(dm.num_classes, dm.input_shape, width=8,
                                      solver=SolverSpec(method="euler", step_size=0.25), **model_kwargs)
    trainer = L.Trainer(default_root_dir=tmp_path, logger=False, enable_progress_bar=False,
                        enable_model_summary=False, enable_checkpointing=False, callbacks=callbacks)
    trainer.test(model, dm, verbose=False)
    return sorted(p.name for p in (tmp_path / "figures").glob("*.png"))


@pytest.mark.parametrize("transductive", [False, True])
def test_toys_get_all_figures(tmp_path, transductive):
    dm = ToyDataModule("circles", transductive=transductive)
    names = _test_with_figures(tmp_path, dm, encoder="linear", hidden=6)  # 6-D state: PCA trajectories
    assert names == ["confusion_matrix.png", "decision_boundary.png", "trajectories.png"]


def test_other_inputs_get_only_the_confusion_matrix(tmp_path):
    assert _test_with_figures(tmp_path, DigitsDataModule(), hidden=8) == ["confusion_matrix.png"]


def test_project_2d():
    pts = np.random.default_rng(0).normal(size=(5, 7, 2))
    same, what = project_2d(pts)
    assert same is pts and what == "state"
    line = np.outer(np.linspace(-1, 1, 11), [1.0, 2.0, 0.0, 0.0])  # all variance along one direction
    proj, what = project_2d(line)
    assert proj.shape == (11, 2) and what.startswith("PCA") and np.allclose(proj[:, 1], 0, atol=1e-9)


def _png(fig, path):
    """Save at the figure's own dpi (so pixels match display coordinates) and decode it: RGB floats [H, W, 3]."""
    fig.savefig(path, dpi=fig.dpi)
    img = mpimg.imread(path)
    w, h = fig.get_size_inches() * fig.dpi
    assert img.shape[:2] == (round(h), round(w)), (img.shape, w, h)
    return img[..., :3]


def _pixel(img, fig, ax, x, y):
    """The colour at data point (x, y) of `ax` (display coordinates have their origin at the bottom left)."""
    px, py = ax.transData.transform((x, y))
    return img[img.shape[0] - 1 - int(round(py)), int(round(px))]


def _has_colour(img, rgb, tol=0.02):
    return bool((np.abs(img - np.asarray(rgb)[:3]).max(-1) < tol).any())


def test_figure_helpers_draw(tmp_path):
    """Both PNGs decode at the figure's size; the confusion matrix shades each cell by its count (the largest
    count darkest, zero white-ish); the trajectories draw each class in its tab10 colour."""
    cm = np.array([[3, 1], [0, 4]])
    fig = confusion_matrix_figure(cm)
    img = _png(fig, tmp_path / "cm.png")
    assert img.std() > 0.05  # not blank
    ax = fig.axes[0]
    # sample each cell off-centre (the count is written at its centre)
    shade = {(i, j): _pixel(img, fig, ax, j - 0.3, i - 0.3).mean() for i in range(2) for j in range(2)}
    assert shade[(1, 1)] < shade[(0, 0)] < shade[(0, 1)] < shade[(1, 0)], shade
    assert shade[(1, 0)] > 0.9 and shade[(1, 1)] < 0.3, shade
    traj = np.cumsum(np.random.default_rng(0).normal(size=(6, 4, 3)), axis=0)
    fig = trajectories_figure(traj, np.array([0, 1, 0, 1]), np.linspace(0, 1, 6))
    img = _png(fig, tmp_path / "tr.png")
    tab10 = colormaps["tab10"]
    assert _has_colour(img, tab10(0)) and _has_colour(img, tab10(1))  # class 0 blue, class 1 orange
    assert not _has_colour(img, tab10(2))  # no third class
