"""The node-classification and COVID runners in smoke mode: well-formed results, no NaN, valid ranges."""

import json
import math

import pytest
from smoke_runner import experiments_module, run_smoke

from cdflow.data.paths import data_root


def _have(*parts: str) -> bool:
    try:
        return data_root().joinpath(*parts).exists()
    except Exception:
        return False


@pytest.mark.skipif(not _have("gnn-benchmark", "cora.npz"), reason="Cora not in the data folder")
def test_graph_runner_smoke(tmp_path):
    run_smoke("experiments.graph.run", tmp_path)
    saved = json.loads((tmp_path / "graph_smoke.json").read_text())
    md = (tmp_path / "graph_smoke.md").read_text()
    assert saved["mode"] == "smoke" and saved["runs"]
    for key in ("command", "machine", "protocol", "summary", "runs", "wall_s", "chosen"):
        assert key in saved
    assert {"cpu", "cores", "torch"} <= set(saved["machine"])
    models = {r["model"] for r in saved["runs"] if r["phase"] == "main"}
    assert {"coin-explicit", "coin-split", "coin-nodiff", "diffresnet", "resnet", "cdnet", "mlp", "gcn", "appnp",
            "sgc"} <= models
    assert {r["split_protocol"] for r in saved["runs"]} == {"random", "public"}
    assert any(r["phase"] == "tune" for r in saved["runs"])
    for r in saved["runs"]:
        assert not r["nan"]
        for k in ("train_acc", "val_acc", "test_acc"):
            assert 0.0 <= r[k] <= 1.0
        assert math.isfinite(r["val_loss"]) and r["epochs"] >= 1
        if r["model"].startswith("coin"):
            assert r["nonfinite_u_entries"] == 0 and "negative_u_entries" in r
    for s in saved["summary"].values():
        assert 0.0 <= s["test_mean"] <= 1.0 and s["n"] >= 1
    assert "| model |" in md and "## Floors" in md


@pytest.mark.skipif(not _have("covid", "england_covid.json"), reason="COVID data not in the data folder")
def test_covid_runner_smoke(tmp_path):
    run_smoke("experiments.covid.run", tmp_path)
    saved = json.loads((tmp_path / "covid_smoke.json").read_text())
    assert {"coin", "coin-nodiff", "mlp", "gcn", "linear"} == {r["model"] for r in saved["runs"]}
    for r in saved["runs"]:
        assert not r["nan"] and math.isfinite(r["test_mse"]) and r["test_mse"] >= 0
    assert all(a >= 1 for a in saved["mask_attempts"])
    assert "| model |" in (tmp_path / "covid_smoke.md").read_text()


def test_early_stopping_is_per_member_and_restores_the_best_epoch():
    import torch

    from cdflow.graph import laplacian_from_edges
    from cdflow.models.batched import BatchedDiffResNet, SparseRows, member_generators

    train_mod = experiments_module("graph.train")
    configs = experiments_module("graph.configs")
    data = experiments_module("graph.data")
    n = 60
    src = torch.arange(n)
    ei = torch.stack([src, (src + 1) % n])
    y = (src // 20) % 3
    gen = torch.Generator().manual_seed(0)
    x = torch.nn.functional.one_hot(y, 3).float() + 0.8 * torch.rand(n, 3, generator=gen)
    masks = data.Masks(train=src[::5], val=src[1::5], test=src[2::5])
    model = BatchedDiffResNet(3, 3, 3, hidden=8, tau=0.2, n_steps=3, dropout=0.0)
    model.reset_parameters(member_generators([0, 1, 2]))
    lap = SparseRows.from_tensor(laplacian_from_edges(ei, n, kind="gcn"))
    training = configs.Training(lr=0.05, max_epochs=300, patience=7)
    results, wall = train_mod.fit_members(model, SparseRows.from_tensor(x), lap, y, masks, training,
                                          deterministic=True)
    assert len(results) == 3 and wall > 0
    for r in results:
        assert 0.0 <= r.test_acc <= 1.0 and not r.nan
        if r.epochs < training.max_epochs:  # stopped: `patience` epochs without improvement after the best
            assert r.epochs == r.best_epoch + training.patience + 1
    with torch.no_grad():  # the restored weights reproduce the recorded validation metrics
        out = model.eval()(SparseRows.from_tensor(x), lap)
    val = train_mod.accuracy(out, y, masks.val)
    torch.testing.assert_close(val, torch.tensor([r.val_acc for r in results]))
