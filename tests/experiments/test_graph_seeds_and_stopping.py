"""The graph protocol's initialisation seed rules (`--init-seeds paired|authors`) and the Diff-ResNet rows'
stopping rules (issue 13, item 9): the authors' seeds are the Diff-ResNet reference's `torch_seeds`, members
built from them carry the weights of one-member models, the reference initialisation gives the reference
network, every run records the rule it trained with, and the report states both from the records."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from smoke_runner import ROOT, experiments_module

from cdflow.data.graphs import GraphData, random_split
from cdflow.data.paths import data_root
from cdflow.graph import Laplacian
from cdflow.models.baselines import gcn_adjacency
from cdflow.sparse import SparseMatrix
from cdflow.training import StoppingRule
from cdflow.training.member_stopping import member_views

configs = experiments_module("graph.configs")
data = experiments_module("graph.data")
units = experiments_module("graph.units")
run = experiments_module("graph.run")
markdown = experiments_module("graph.markdown")

SIZES = (61, 74, 55, 58)  # nodes per class: enough for 20 + 30 per class, unequal so the draws differ by class


def _labels(sizes=SIZES, seed=0) -> np.ndarray:
    y = np.concatenate([np.full(n, c) for c, n in enumerate(sizes)])
    return np.random.RandomState(seed).permutation(y)


def _reference_torch_seeds(labels: np.ndarray, split_seed: int, num_inits: int) -> np.ndarray:
    """A transcription of the reference's draws (github.com/shwangtangjun/Diff-ResNet, graph/train.py
    `run_single_split` → utils.load_data → make_dataset.get_train_val_test_split / sample_per_class, one-hot
    labels), then its `torch_seeds = random_state.randint(0, 1000000, args.num_inits)`."""
    random_state = np.random.RandomState(split_seed)
    one_hot = np.eye(labels.max() + 1)[labels]
    num_samples, num_classes = one_hot.shape

    def sample_per_class(k, forbidden=None):
        per_class = {c: [i for i in range(num_samples) if one_hot[i, c] > 0.0
                         and (forbidden is None or i not in forbidden)] for c in range(num_classes)}
        return np.concatenate([random_state.choice(per_class[c], k, replace=False) for c in range(num_classes)])

    train = sample_per_class(20)
    sample_per_class(30, forbidden=train)
    return random_state.randint(0, 1000000, num_inits)


@pytest.mark.parametrize("split", [0, 1, 7])
def test_authors_rule_is_the_reference_torch_seeds(split):
    y = _labels(seed=split)
    split_seed = data.SPLIT_SEEDS[split]
    want = _reference_torch_seeds(y, split_seed, 20)
    got = data.authors_init_seeds(y, split_seed, 20)
    assert got == [int(v) for v in want]
    # the i-th seed does not depend on how many are drawn: a protocol of 3 inits pairs with the reference's first 3
    assert data.authors_init_seeds(y, split_seed, 3) == got[:3]
    # `init_seeds` picks initialisation indices out of that stream (member groups beyond the first)
    assert data.init_seeds("authors", split, (2, 5), y) == [got[2], got[5]]
    assert data.init_seeds("paired", split, (2, 5), y) == [1000 * split + 2, 1000 * split + 5]
    # the split's RandomState is continued after drawing the split: not a fresh RandomState(split_seed)
    fresh = np.random.RandomState(split_seed).randint(0, 10**6, 20)
    assert got != [int(v) for v in fresh]
    with pytest.raises(ValueError, match="unknown initialisation seed rule"):
        data.init_seeds("fresh", split, (0,), y)


def test_authors_rule_refuses_a_replay_that_is_not_random_splits(monkeypatch):
    y = _labels()
    monkeypatch.setattr(data, "random_split", lambda labels, seed, *a: random_split(labels, seed + 1, *a))
    with pytest.raises(RuntimeError, match="did not give random_split's split"):
        data.authors_init_seeds(y, 5, 3)


def _specs():
    return {s.key: s for s in configs.model_specs("cora", configs.COIN_CORA)}


@pytest.mark.parametrize("key", configs.ROW_KEYS)
def test_members_from_authors_seeds_are_the_one_member_models(key):
    """Two members seeded by the authors' rule get the weights one-member models with those seeds get (under
    the initialisation the protocol uses for the row under that rule)."""
    spec = _specs()[key]
    seeds = data.init_seeds("authors", 3, (0, 1), _labels())
    assert seeds == data.authors_init_seeds(_labels(), data.SPLIT_SEEDS[3], 2)
    reference_init = spec.family == "diffresnet"  # as `run_unit` builds the rows under "authors"
    f, c = 9, 4
    pair = spec.build(seeds, f, c, reference_init=reference_init)
    views = member_views(pair, 2)
    for k, seed in enumerate(seeds):
        alone = member_views(spec.build([seed], f, c, reference_init=reference_init), 1)[0]
        assert len(alone) == len(views[k])
        for a, b in zip(views[k], alone):
            torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert not all(torch.equal(a, b) for a, b in zip(*views))  # the two seeds give two networks


def _dense_laplacian(ei: torch.Tensor, n: int) -> torch.Tensor:
    a = gcn_adjacency(ei, n).to_dense()
    return torch.diag(a.sum(1)) - a


def test_reference_init_gives_the_reference_network():
    """Under `reference_init` a Diff-ResNet member of seed s has the reference DiffusionNet's weights after
    torch.manual_seed(s) (nn.Linear(F, F), nn.Linear(F, C)) and computes its output (evaluation mode: no
    dropout); DiffResNet's own initialisation draws the same numbers in another layout."""
    spec = _specs()["diffresnet"]
    n, f, c, seed = 30, 6, 3, 711880
    model = spec.build([seed], f, c, reference_init=True)
    torch.manual_seed(seed)
    linear, classifier = torch.nn.Linear(f, f), torch.nn.Linear(f, c)  # the reference's order
    torch.testing.assert_close(model.w1[0].t(), linear.weight.detach(), rtol=0, atol=0)
    torch.testing.assert_close(model.b1[0], linear.bias.detach(), rtol=0, atol=0)
    torch.testing.assert_close(model.w2[0].t(), classifier.weight.detach(), rtol=0, atol=0)
    torch.testing.assert_close(model.b2[0], classifier.bias.detach(), rtol=0, atol=0)
    own = spec.build([seed], f, c)
    assert not torch.equal(own.w1[0].t(), linear.weight.detach())
    # the reference forward: x + ReLU(linear(x)), n × x ← x − τ(D − Â)x, classifier
    src = torch.arange(n)
    ei = torch.cat([torch.stack([src, (src + 1) % n]), torch.stack([src, (src + 7) % n])], 1)
    x = (torch.rand(n, f, generator=torch.Generator().manual_seed(1)) < 0.4).float()
    x = x / x.sum(1, keepdim=True).clamp_min(1)
    lap = Laplacian.from_edges(ei, n, kind="gcn", dtype=torch.float32)
    with torch.no_grad():
        h = x + torch.relu(linear(x))
        for _ in range(spec.kwargs["n_steps"]):
            h = h - spec.kwargs["tau"] * _dense_laplacian(ei, n) @ h
        want = torch.log_softmax(classifier(h), -1)
        got = model.eval()(SparseMatrix.from_tensor(x), lap)
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)


def test_diffresnet_rows_state_their_stopping_rule():
    specs = _specs()
    protocol = configs.Training()
    assert protocol.member_training().rule == StoppingRule(50, False)
    own = specs["diffresnet-own-rule"]
    assert own.training(protocol).member_training().rule == StoppingRule(50, True)  # Diff-ResNet's own
    assert specs["diffresnet"].training(protocol) == protocol  # the protocol's (COIN's) rule
    assert own.kwargs == specs["diffresnet"].kwargs and own.family == "diffresnet"
    assert specs["diffresnet"].row_label(protocol).endswith("; stopping: COIN's rule (strict)")
    assert own.row_label(own.training(protocol)).endswith("; stopping: Diff-ResNet's rule (ties count)")
    assert specs["resnet"].row_label(protocol).endswith("; stopping: COIN's rule (strict)")
    assert specs["coin-explicit"].row_label(protocol) == specs["coin-explicit"].label  # only Diff-ResNet rows
    tie = configs.Training(improve_on_tie=True)
    assert tie.stopping() == {"rule": "Diff-ResNet", "patience": 50, "improve_on_tie": True}
    assert specs["diffresnet"].row_label(tie).endswith("Diff-ResNet's rule (ties count)")


def _synthetic_task(name: str) -> "data.GraphTask":
    y = torch.from_numpy(_labels())
    n = len(y)
    gen = torch.Generator().manual_seed(0)
    x = torch.cat([torch.nn.functional.one_hot(y, len(SIZES)).float(), (torch.rand(n, 8, generator=gen) < 0.3).float()],
                  1)
    x = x / x.sum(1, keepdim=True)  # binary bag of words, row-normalised
    src = torch.arange(n)
    order = torch.argsort(y)  # a ring through each class and a few links between classes
    ei = torch.stack([order, order.roll(1)])
    ei = torch.cat([ei, ei.flip(0), torch.stack([src, (src + 11) % n]), torch.stack([(src + 11) % n, src])], 1)
    graph = GraphData(x=x, y=y, edge_index=ei, num_classes=len(SIZES), name=name)
    lap = Laplacian.from_edges(ei, n, kind="gcn", dtype=torch.float32)
    return data.GraphTask(name=name, data=graph, x=SparseMatrix.from_tensor(x), lap=lap,
                          adj=SparseMatrix.from_tensor(gcn_adjacency(ei, n)), lam_max=lap.spectral_bound().estimate)


def test_run_unit_records_the_seed_rule_and_the_stopping_rule_it_trained_with(monkeypatch):
    """End to end on a synthetic task: the records carry the authors' seeds, the reference initialisation of
    the Diff-ResNet rows and the stopping rule, and the rule is the one the loop applied: with a step too small
    to move the weights the validation scores tie every epoch, so COIN's strict rule stops after `patience`
    epochs at the first while Diff-ResNet's counts every tie as an improvement and runs to max_epochs."""
    monkeypatch.setitem(units.TASKS, ("synthetic", False), _synthetic_task("synthetic"))
    specs = _specs()
    training = configs.Training(lr=1e-30, max_epochs=12, patience=4)
    seeds = data.authors_init_seeds(_labels(), data.SPLIT_SEEDS[2], 2)
    out = {}
    for key in ("diffresnet", "diffresnet-own-rule", "coin-explicit"):
        inits = (1,) if key.startswith("diffresnet") else (0, 1)
        unit = units.Unit("synthetic", False, specs[key], 2, inits, training, seed_rule="authors")
        out[key] = units.run_unit(unit)
    strict, ties = out["diffresnet"][0], out["diffresnet-own-rule"][0]
    for r in (strict, ties):
        assert r["init_seed"] == seeds[1] and r["init_seed_rule"] == "authors" and r["reference_init"]
        assert r["family"] == "diffresnet"
    assert [r["init_seed"] for r in out["coin-explicit"]] == seeds
    assert not any(r["reference_init"] for r in out["coin-explicit"])
    assert strict["stopping"] == {"rule": "COIN", "patience": 4, "improve_on_tie": False}
    assert ties["stopping"] == {"rule": "Diff-ResNet", "patience": 4, "improve_on_tie": True}
    assert strict["label"].endswith("COIN's rule (strict)")
    assert ties["label"].endswith("Diff-ResNet's rule (ties count)")
    assert (strict["epochs"], strict["best_epoch"]) == (training.patience + 1, 0)
    assert (ties["epochs"], ties["best_epoch"]) == (training.max_epochs, training.max_epochs - 1)
    assert strict["test_acc"] == ties["test_acc"]  # the same (unmoved) weights: same seed, same initialisation


def _record(model: str, split: int, init: int, seed: int, rule: str | None, **extra) -> dict:
    rec = {"phase": "main", "dataset": "cora", "split_protocol": "random", "model": model, "split": split,
           "split_seed": data.SPLIT_SEEDS[split], "init": init, "init_seed": seed, **extra}
    if rule is not None:
        rec["init_seed_rule"] = rule
    return rec


def test_report_states_the_recorded_seed_rule_and_stopping_rules():
    paired = [_record(m, s, i, 1000 * s + i, None) for m in ("coin-explicit", "gcn") for s in (0, 1) for i in (0, 1)]
    text = markdown.seed_sentence(paired)  # older records without the field: the rule their seeds follow
    assert "initialisation i of split s has seed 1000·s + i (8 runs), the same for every row" in text
    assert "reference" not in text
    authors = [_record(m, s, i, 500 + 10 * s + i, "authors", reference_init=m == "diffresnet")
               for m in ("coin-explicit", "diffresnet") for s in (0, 1) for i in (0, 1)]
    text = markdown.seed_sentence(authors)
    assert "the Diff-ResNet reference's seed for it" in text and "(8 runs), the same for every row" in text
    assert f"e.g. Cora split 0 (seed {data.SPLIT_SEEDS[0]}): init 0 → 500, init 1 → 501" in text
    assert "The Diff-ResNet rows (diffresnet; 4 runs) draw their weights as the reference's" in text
    # a record that names "paired" but does not follow it is not counted as paired; rows that differ are said to
    mixed = paired[:2] + [_record("gcn", 0, 0, 77, "paired")]
    text = markdown.seed_sentence(mixed)
    assert "1000·s + i (2 runs)" in text and "the `init_seed` of each record (1 run)" in text
    assert "not the same for every row" in text
    # stopping rules, from the records only
    assert markdown.stopping_sentence(paired) == ""
    strict = {"rule": "COIN", "patience": 50, "improve_on_tie": False}
    ties = {"rule": "Diff-ResNet", "patience": 50, "improve_on_tie": True}
    runs = [_record("diffresnet", 0, 0, 1, "paired", stopping=strict),
            _record("resnet", 0, 0, 1, "paired", stopping=strict),
            _record("diffresnet-own-rule", 0, 0, 1, "paired", stopping=ties)]
    text = markdown.stopping_sentence(runs)
    assert ("COIN's rule (strict, patience 50): diffresnet, resnet; Diff-ResNet's rule (ties count, patience 50): "
            "diffresnet-own-rule.") in text
    assert "scores before the step" in text
    assert "scores before the step" not in markdown.stopping_sentence(runs[:2])


def test_cli_option_reaches_every_unit_and_merge_refuses_mixed_rules():
    assert run._parse([]).init_seeds == "paired"  # default: the committed results' rule
    assert run._parse(["--init-seeds", "authors"]).init_seeds == "authors"
    proto = configs.protocol("smoke", init_seeds="authors")
    specs = configs.model_specs("cora", configs.COIN_CORA)
    planned = run.plan(proto, "cora", specs, public=False) + run.tune_units(proto, "cora")
    assert planned and {u.seed_rule for u in planned} == {"authors"}
    assert {u.spec.key for u in planned} >= {"diffresnet", "diffresnet-own-rule"}
    assert {u.seed_rule for u in run.plan(configs.protocol("smoke"), "cora", specs, public=True)} == {"paired"}
    old = {"protocol": {"init_seeds": "paired"}, "runs": []}
    with pytest.raises(SystemExit, match="--init-seeds paired, this run authors"):
        run.merge(old, {"protocol": {"init_seeds": "authors"}, "runs": []})


def test_merge_replaces_a_rows_runs_whatever_their_settings():
    """A row re-run with new settings replaces the row's old runs (they were kept beside the new ones: a table row
    of 10 × 6 runs mixing two settings)."""
    base = {"phase": "main", "dataset": "cora", "split_protocol": "random", "model": "cdnet"}
    assert run._group({**base, "kwargs": {"t1": 1.0}}) == run._group({**base, "kwargs": {"t1": 0.3}})
    assert run._group({**base, "kwargs": {}}) != run._group({**base, "model": "coin-explicit", "kwargs": {}})
    assert run._group({**base, "kwargs": {}}) != run._group({**base, "dataset": "citeseer", "kwargs": {}})


def _have_cora() -> bool:
    try:
        return data_root().joinpath("gnn-benchmark", "cora.npz").exists()
    except Exception:
        return False


@pytest.mark.skipif(not _have_cora(), reason="Cora not in the data folder")
def test_graph_runner_smoke_with_the_authors_seeds(tmp_path):
    """`--init-seeds authors` in smoke mode: every run's seed is the reference's for its split of Cora's
    labels, the Diff-ResNet rows start from the reference's weights, and the page says so."""
    cmd = [sys.executable, "-m", "experiments.graph.run", "--smoke", "--out", str(tmp_path), "--init-seeds", "authors",
           "--models", "coin-explicit", "diffresnet", "diffresnet-own-rule", "resnet", "--no-timing"]
    env = dict(os.environ, OMP_NUM_THREADS="1", OMP_WAIT_POLICY="PASSIVE")
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    saved = json.loads((tmp_path / "graph_smoke.json").read_text())
    md = (tmp_path / "graph_smoke.md").read_text()
    assert saved["protocol"]["init_seeds"] == "authors"
    labels = units.task("cora", False).y
    for r in saved["runs"]:
        split = 0 if r["split_protocol"] == "public" else r["split"]
        assert r["init_seed_rule"] == "authors"
        assert r["init_seed"] == data.authors_init_seeds(labels, data.SPLIT_SEEDS[split], r["init"] + 1)[r["init"]]
        assert r["reference_init"] == (r["model"] in ("diffresnet", "diffresnet-own-rule", "resnet"))
        assert r["stopping"]["improve_on_tie"] == (r["model"] == "diffresnet-own-rule")
    main = {r["model"] for r in saved["runs"] if r["phase"] == "main"}
    assert main == {"coin-explicit", "diffresnet", "diffresnet-own-rule", "resnet"}
    assert "the Diff-ResNet reference's seed for it" in md and "draw their weights as the reference's" in md
    for key in ("diffresnet", "diffresnet-own-rule"):
        s = saved["summary"][f"random/cora/{key}"]
        assert f"| {s['label']} |" in md and "; stopping: " in s["label"]
