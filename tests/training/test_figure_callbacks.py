"""Figure callbacks: which figures each task gets, PNGs in the run directory, and the figure helpers."""

from __future__ import annotations

import lightning as L
import numpy as np
import pytest

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


def test_figure_helpers_draw(tmp_path):
    cm = np.array([[3, 1], [0, 4]])
    confusion_matrix_figure(cm).savefig(tmp_path / "cm.png")
    traj = np.cumsum(np.random.default_rng(0).normal(size=(6, 4, 3)), axis=0)
    trajectories_figure(traj, np.array([0, 1, 0, 1]), np.linspace(0, 1, 6)).savefig(tmp_path / "tr.png")
    assert (tmp_path / "cm.png").stat().st_size > 0 and (tmp_path / "tr.png").stat().st_size > 0
