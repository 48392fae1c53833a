"""The COVID runner in smoke mode, and its training over the library loop `cdflow.training.fit_members`:
fixed epochs, the final model's test MSE recorded before the best-validation state is restored."""

import json
import math
import statistics

import pytest
import torch
from smoke_runner import experiments_module, run_smoke

from cdflow.data.paths import data_root


def _have(*parts: str) -> bool:
    try:
        return data_root().joinpath(*parts).exists()
    except Exception:
        return False


@pytest.mark.skipif(not _have("covid", "england_covid.json"), reason="COVID data not in the data folder")
def test_covid_runner_smoke(tmp_path):
    run_smoke("experiments.covid.run", tmp_path)
    saved = json.loads((tmp_path / "covid_smoke.json").read_text())
    assert {"coin", "coin-nodiff", "mlp", "gcn", "linear"} == {r["model"] for r in saved["runs"]}
    for r in saved["runs"]:
        assert not r["nan"] and math.isfinite(r["test_mse"]) and r["test_mse"] >= 0
    assert all(a >= 1 for a in saved["mask_attempts"])
    md = (tmp_path / "covid_smoke.md").read_text()
    assert "| model |" in md
    # values: the summary is the mean of the raw records, epochs are in range, the report states the records
    epochs = saved["settings"]["epochs"]
    for key, entry in saved["summary"].items():
        rs = [r for r in saved["runs"] if r["model"] == key]
        final = [r["test_mse"] if r["test_mse_final_epoch"] is None else r["test_mse_final_epoch"] for r in rs]
        assert entry["n"] == len(rs)
        assert entry["test_mean"] == pytest.approx(statistics.fmean(r["test_mse"] for r in rs))
        assert entry["test_final_mean"] == pytest.approx(statistics.fmean(final))
        assert f"{entry['test_final_mean']:.4f} ± {entry['test_final_std']:.4f}" in md
    for r in saved["runs"]:
        if r["best_epoch"] is not None:
            assert 0 <= r["best_epoch"] <= epochs
            if r["best_epoch"] == epochs:  # the final model is the best: both readings agree
                assert r["test_mse_final_epoch"] == pytest.approx(r["test_mse"])
    best = statistics.fmean(r["best_epoch"] for r in saved["runs"] if r["model"] == "mlp")
    assert f"Mean best-validation epoch (of {epochs}): " in md and f"MLP {best:.1f}" in md
    (task,) = saved["tasks"]
    assert 0 < task["train_targets"] and 0 < task["val_targets"]
    assert task["test_targets"] == task["test_snapshots"] * task["n_regions"]
    assert task["train_targets"] + task["val_targets"] <= task["observed"]



def _toy_task(n_snap: int = 6, regions: int = 5):
    """A small CovidTask: ring graphs, lags from a noisy series, train / val / test rows."""
    from cdflow.graph import Laplacian
    from cdflow.sparse import SparseMatrix

    data = experiments_module("covid.data")
    gen = torch.Generator().manual_seed(0)
    m = n_snap * regions
    src = torch.arange(m)
    ring = (src // regions) * regions + (src % regions + 1) % regions
    adj = torch.zeros(m, m)
    adj[src, ring] = 0.5
    adj[ring, src] = 0.5
    lap = torch.diag(adj.sum(1)) - adj
    x = torch.randn(m, 8, generator=gen)
    y = x[:, -1] + 0.1 * torch.randn(m, generator=gen)
    return data.CovidTask(x=x, y=y, train=src[: m // 3], val=src[m // 3: 2 * m // 3], test=src[2 * m // 3:],
                          lap=Laplacian.from_matrix(lap), adj=SparseMatrix.from_tensor(adj + torch.eye(m)),
                          n_regions=regions, n_snapshots=n_snap, mask_attempts=1, observed=m)


@pytest.mark.parametrize("name", ["CovidCOIN", "CovidMLP", "CovidGCN"])
def test_fit_records_the_final_model_and_restores_the_best_validation_state(name):
    from cdflow.models.layers import member_generators

    models = experiments_module("covid.models")
    train = experiments_module("covid.train")
    task = _toy_task()
    graph = {"CovidCOIN": task.lap, "CovidMLP": None, "CovidGCN": task.adj}[name]
    torch.manual_seed(0)
    model = getattr(models, name)(3)
    model.reset_parameters(member_generators([0, 1, 2]))
    training = train.CovidTraining(lr=0.05, epochs=12)
    records, wall = train.fit(model, task, graph, training)
    assert len(records) == 3 and wall > 0
    with torch.no_grad():
        pred = model.eval()(task.x, graph)
    val = train.member_mse(pred, task.y, task.val)
    test = train.member_mse(pred, task.y, task.test)
    for i, r in enumerate(records):
        assert 0 <= r["best_epoch"] <= training.epochs and not r["nan"]
        assert r["val_mse"] == pytest.approx(float(val[i]), rel=1e-5)  # the restored state is the best one
        assert r["test_mse"] == pytest.approx(float(test[i]), rel=1e-5)
        if r["best_epoch"] == training.epochs:  # the final model is the best: both readings agree
            assert r["test_mse_final_epoch"] == pytest.approx(r["test_mse"], rel=1e-5)


def test_covid_coin_diffuses_with_explicit_steps_and_dropout_only_in_training():
    from cdflow.heat import explicit_diffusion

    models = experiments_module("covid.models")
    task = _toy_task()
    model = models.CovidCOIN(2, tau=0.3, n_steps=4)
    no_diff = models.CovidCOIN(2, n_steps=0)
    no_diff.load_state_dict(model.state_dict())
    with torch.no_grad():
        u0 = no_diff.eval()(task.x, task.lap)
        expected, _ = explicit_diffusion(u0, task.lap, 0.3, 4)
        torch.testing.assert_close(model.eval()(task.x, task.lap), expected)
        torch.manual_seed(1)
        a = model.train()(task.x, task.lap)
        torch.manual_seed(2)
        b = model.train()(task.x, task.lap)
    assert a.shape == (task.x.shape[0], 2) and not torch.equal(a, b)
