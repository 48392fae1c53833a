"""The node-classification runner in smoke mode (well-formed results, no NaN, valid ranges), and its training
adapter over the library loop `cdflow.training.fit_members`."""

import json
import math
import statistics

import pytest
from smoke_runner import experiments_module, run_smoke

from cdflow.data.paths import data_root
from cdflow.models.layers import member_accuracy


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
    assert {"coin-explicit", "coin-split", "coin-nodiff", "diffresnet", "diffresnet-own-rule", "resnet", "cdnet", "mlp",
            "gcn", "appnp", "sgc"} <= models
    # every run records its seed rule (the default, paired) and stopping rule; Diff-ResNet rows name it in their label
    assert saved["protocol"]["init_seeds"] == "paired"
    for r in saved["runs"]:
        assert r["init_seed_rule"] == "paired" and r["init_seed"] == 1000 * r["split"] + r["init"]
        assert r["stopping"]["improve_on_tie"] == (r["model"] == "diffresnet-own-rule")
        if r["family"] == "diffresnet":
            assert r["label"].endswith(f"; stopping: {r['stopping']['rule']}'s rule "
                                       + ("(ties count)" if r["stopping"]["improve_on_tie"] else "(strict)"))
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
    # values: each summary is the mean of its raw records, and the table prints it
    for key, s in saved["summary"].items():
        protocol, ds, model = key.split("/")
        rs = [r for r in saved["runs"] if r["phase"] == "main" and r["split_protocol"] == protocol
              and r["dataset"] == ds and r["model"] == model]
        assert s["n"] == len(rs)
        assert s["test_mean"] == pytest.approx(statistics.fmean(r["test_acc"] for r in rs))
        assert s["epochs_mean"] == pytest.approx(statistics.fmean(r["epochs"] for r in rs))
        assert f"| {s['label']} | {100 * s['test_mean']:.2f} ± {100 * s['test_std']:.2f} | {s['n']} |" in md
    training = saved["protocol"]["training"]
    for r in saved["runs"]:  # patience > max_epochs: every run trains max_epochs, the restored epoch before
        assert r["epochs"] == training["max_epochs"] and 0 <= r["best_epoch"] < r["epochs"]
    # the tuned point is the grid point of highest mean validation accuracy over the tuning runs
    tune: dict[str, list[float]] = {}
    for r in saved["runs"]:
        if r["phase"] == "tune":
            tune.setdefault(f"{r['kwargs']['tau']}/{r['kwargs']['n_steps']}", []).append(r["val_acc"])
    chosen = saved["chosen"]["tuning"]
    best = max(tune, key=lambda k: statistics.fmean(tune[k]))
    assert f"{chosen['tau']}/{chosen['n_steps']}" == best
    # paired rows: explicit and split COIN share the initialisation seeds of each split
    seeds = {m: {(r["split"], r["init_seed"]) for r in saved["runs"] if r["phase"] == "main" and r["model"] == m
                 and r["split_protocol"] == "random"} for m in ("coin-explicit", "coin-split")}
    assert seeds["coin-explicit"] == seeds["coin-split"]


@pytest.mark.parametrize("members", [1, 3])
def test_early_stopping_is_per_member_and_restores_the_best_epoch(members):
    import torch

    from cdflow.graph import Laplacian
    from cdflow.models import DiffResNet
    from cdflow.models.layers import member_generators
    from cdflow.sparse import SparseMatrix

    units = experiments_module("graph.units")
    configs = experiments_module("graph.configs")
    data = experiments_module("graph.data")
    n = 60
    src = torch.arange(n)
    ei = torch.stack([src, (src + 1) % n])
    y = (src // 20) % 3
    gen = torch.Generator().manual_seed(0)
    x = SparseMatrix.from_tensor(torch.nn.functional.one_hot(y, 3).float() + 0.8 * torch.rand(n, 3, generator=gen))
    masks = data.Masks(train=src[::5], val=src[1::5], test=src[2::5])
    model = DiffResNet(3, 3, members=members, hidden=8, tau=0.2, n_steps=3, dropout=0.0)
    model.reset_parameters(member_generators(range(members)))
    lap = Laplacian.from_edges(ei, n, kind="gcn")
    training = configs.Training(lr=0.05, max_epochs=300, patience=7)
    results, fit = units.train(model, x, lap, y, masks, training, deterministic=True)
    assert len(results) == members and fit.wall_s > 0
    for r in results:
        assert 0.0 <= r.test_acc <= 1.0 and not r.nan
        if r.epochs < training.max_epochs:  # stopped: `patience` epochs without improvement after the best
            assert r.epochs == r.best_epoch + training.patience + 1
    with torch.no_grad():  # the restored weights reproduce the recorded validation metrics
        out = model.eval()(x, lap)
    out = out[:, None] if members == 1 else out
    val = member_accuracy(out, y, masks.val)
    torch.testing.assert_close(val, torch.tensor([r.val_acc for r in results]))


def test_rows_build_library_models_initialised_per_seed():
    import torch

    from cdflow.models import COIN, DiffResNet, Members

    configs = experiments_module("graph.configs")
    specs = {s.key: s for s in configs.model_specs("cora", configs.COIN_CORA)}
    assert set(specs) == set(configs.ROW_KEYS)
    f, c = 12, 3
    coin = specs["coin-explicit"].build([5, 7], f, c)
    assert isinstance(coin, COIN) and coin.members == 2
    alone = specs["coin-explicit"].build([7], f, c)  # member 1 of the pair is the model of seed 7 alone
    torch.testing.assert_close(coin.member(1)[0], alone.member(0)[0])
    diff = specs["diffresnet"].build([3], f, c)
    assert isinstance(diff, DiffResNet) and diff.hidden is None and diff.members == 1
    state = torch.random.get_rng_state()
    cdnet = specs["cdnet"].build([1, 2], f, c)
    assert torch.equal(state, torch.random.get_rng_state())  # member seeds leave the dropout stream alone
    again = specs["cdnet"].build([2], f, c)
    assert isinstance(cdnet, Members) and cdnet.members == 2
    torch.testing.assert_close(cdnet.models[1].encoder.weight, again.models[0].encoder.weight)
    assert not torch.equal(cdnet.models[0].encoder.weight, cdnet.models[1].encoder.weight)
    for key in ("mlp", "gcn", "appnp", "sgc"):
        assert specs[key].build([0, 1, 2], f, c).members == 3
