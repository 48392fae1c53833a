"""Bad inputs get a cdflow error (ConfigError / DataError / SolverError) naming the problem and the fix, and
nothing is written or overwritten; a few odd-but-valid inputs (isolated nodes, duplicate points) just work."""

from __future__ import annotations

import sys
import tempfile
import warnings
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.configuration import set_hypothesis_home_dir

from cdflow.cli import run_cli
from cdflow.data.graphs import load_graph
from cdflow.data.modules import ToyDataModule
from cdflow.data.validate import DisconnectedGraphWarning, check_transductive_batch
from cdflow.errors import ConfigError, DataError, SolverError
from cdflow.graph import knn_gaussian_graph, laplacian_from_edges
from cdflow.models import ConvectionDiffusionNet, DiffusionSpec, GraphSpec
from cdflow.solvers import SolverSpec
from cdflow.training import ContinuousDepthClassifier

CONFIGS = Path(__file__).resolve().parents[2] / "experiments" / "configs"
set_hypothesis_home_dir(tempfile.mkdtemp(prefix="cdflow-hypothesis-"))  # its caches, outside the repository
FAST = settings(max_examples=20, deadline=None, database=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture])


class Points(ToyDataModule):
    """A toy data module serving given points (the DataModule validation path)."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor, **kwargs) -> None:
        super().__init__(**kwargs)
        self._points = (x, y)

    def load_points(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self._points


def _points(n: int = 60, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 2, generator=g), torch.arange(n) % 2


def _graph_net(source: str = "knn", k: int = 4, integrator: str = "split") -> ConvectionDiffusionNet:
    torch.manual_seed(0)
    return ConvectionDiffusionNet(
        3, 2, hidden=4, width=4, solver=SolverSpec(method="rk4", step_size=0.5),
        diffusion=DiffusionSpec(kind="graph", integrator=integrator, gamma=1.0, n_steps=2),
        graph=GraphSpec(source=source, knn_k=k, knn_k_scale=2, per_batch=True),
    )


def _batch(n: int = 6, edge_index: torch.Tensor | None = None, **masks: torch.Tensor) -> dict:
    train = torch.zeros(n, dtype=torch.bool)
    train[:2] = True
    batch = {"x": torch.randn(n, 3), "y": torch.arange(n) % 2, "train_mask": train,
             "val_mask": torch.zeros(n, dtype=torch.bool), "test_mask": torch.zeros(n, dtype=torch.bool),
             "edge_index": edge_index}
    batch.update(masks)
    return batch


# -- features and labels ----------------------------------------------------------------------------------
@FAST
@given(rows=st.sets(st.integers(0, 59), min_size=1, max_size=12), value=st.sampled_from([float("nan"), float("inf"),
                                                                                          -float("inf")]))
def test_nonfinite_features_name_their_rows(rows, value):
    x, y = _points()
    x[sorted(rows), 0] = value
    with pytest.raises(DataError) as info:
        Points(x, y).setup("fit")
    shown = sorted(rows)[:10]
    assert f"has NaN or Inf values in {len(rows)} row(s): rows [{', '.join(map(str, shown))}]" in str(info.value)
    assert "Clean or drop those rows" in str(info.value)


def test_nonfinite_input_reaching_a_model_is_refused():
    with pytest.raises(SolverError, match=r"the initial state has NaN/Inf in rows \[1\]: clean the input features"):
        ContinuousDepthClassifier(2, (2,), hidden=4, width=4, solver=SolverSpec(method="rk4", step_size=0.5),
                                  encoder="none")(torch.tensor([[0.0, 1.0], [float("nan"), 0.0]]))
    with pytest.raises(DataError, match=r"x has NaN/Inf in 1 rows \(2\); drop or impute those rows"):
        _graph_net(k=2)(torch.tensor([[0.0, 1, 2], [1, 2, 3], [float("inf"), 0, 0]]))


@FAST
@given(bad=st.lists(st.integers(-3, 6).filter(lambda v: v not in (0, 1)), min_size=1, max_size=5))
def test_labels_out_of_range(bad):
    x, y = _points()
    y[: len(bad)] = torch.tensor(bad)
    with pytest.raises(DataError) as info:
        Points(x, y).setup("fit")
    msg = str(info.value)
    assert "has labels outside 0..1" in msg and f"values {sorted(set(bad))}" in msg
    assert "Remap the labels to 0..1 or fix num_classes" in msg


@pytest.mark.parametrize("transductive", [False, True])
def test_feature_and_label_counts_must_match(transductive):
    x, y = _points()
    with pytest.raises(DataError, match=r"x \(from Points\) has 60 rows but y has 50 labels"):
        Points(x, y[:50], transductive=transductive).setup("fit")


def test_examples_of_the_wrong_shape_for_the_model():
    model = ContinuousDepthClassifier(10, (32,), hidden=4, width=4, solver=SolverSpec(method="rk4", step_size=0.5))
    with pytest.raises(DataError, match=r"examples of shape \(64,\) but the model was built for input_shape \(32,\)"):
        model.training_step((torch.randn(4, 64), torch.zeros(4, dtype=torch.long)), 0)


# -- graphs ---------------------------------------------------------------------------------------------------
def test_a_mask_with_no_training_nodes():
    with pytest.raises(DataError, match="train_mask selects no training nodes: every loss would be empty"):
        check_transductive_batch(_batch(train_mask=torch.zeros(6, dtype=torch.bool)), 2)


def test_an_empty_graph_has_no_nodes():
    with pytest.raises(DataError, match=r"the graph is empty: x has shape \(0, 3\), no nodes"):
        check_transductive_batch(_batch(0), 2)


def test_a_graph_without_edges_diffuses_nothing_and_stays_finite():
    net = _graph_net("edges").eval()
    x, none = torch.randn(6, 3), torch.zeros(2, 0, dtype=torch.long)
    out = net(x, none)
    assert torch.isfinite(out).all()
    net.diffusion = DiffusionSpec(kind="graph", integrator="split", gamma=0.0, n_steps=2)
    torch.testing.assert_close(out, net(x, none))  # an empty Laplacian: the same as no diffusion


@FAST
@given(n=st.integers(4, 20), isolated=st.sets(st.integers(0, 19), min_size=1, max_size=6),
       integrator=st.sampled_from(["split", "drift", "explicit"]))
def test_isolated_nodes_get_zero_laplacian_rows_and_finite_outputs(n, isolated, integrator):
    isolated = {i for i in isolated if i < n}
    connected = [i for i in range(n) if i not in isolated]
    if len(connected) < 2:
        return
    ring = torch.tensor([connected, connected[1:] + connected[:1]])
    lap = laplacian_from_edges(ring, n, kind="gcn").to_dense()
    for i in isolated:
        assert torch.count_nonzero(lap[i]) == 0 and torch.count_nonzero(lap[:, i]) == 0
    net = _graph_net("edges", integrator=integrator)
    x = torch.randn(n, 3, requires_grad=True)
    out = net(x, ring)
    out.sum().backward()
    assert torch.isfinite(out).all() and torch.isfinite(x.grad).all()
    assert all(torch.isfinite(p.grad).all() for p in net.parameters() if p.grad is not None)


def test_disconnected_graph_warns_about_components_without_training_nodes():
    two_triangles = torch.tensor([[0, 1, 2, 3, 4, 5], [1, 2, 0, 4, 5, 3]])
    with pytest.warns(DisconnectedGraphWarning, match=r"2 connected components and 1 of them \(3 of 6 nodes\) hold "
                                                      r"no training node"):
        check_transductive_batch(_batch(edge_index=two_triangles), 2)  # training nodes 0, 1: first triangle only
    train = torch.tensor([True, False, False, True, False, False])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_transductive_batch(_batch(edge_index=two_triangles, train_mask=train), 2)  # one per component
    out = _graph_net("edges")(torch.randn(6, 3), two_triangles)  # still fine for diffusion
    assert torch.isfinite(out).all()


def test_edges_and_features_must_agree_on_the_node_count():
    with pytest.raises(DataError, match=r"edge_index refers to nodes outside 0\.\.5 in columns \[1\]"):
        check_transductive_batch(_batch(edge_index=torch.tensor([[0, 9], [1, 2]])), 2)
    with pytest.raises(DataError, match=r"edge_index has node ids in \[0, 7\] but num_nodes=6"):
        _graph_net("edges")(torch.randn(6, 3), torch.tensor([[0, 7], [1, 2]]))
    with pytest.raises(DataError, match=r"train_mask must be a bool tensor of shape \(6,\), got torch.bool of shape"):
        check_transductive_batch(_batch(train_mask=torch.ones(5, dtype=torch.bool)), 2)


@FAST
@given(n=st.integers(1, 7))
def test_knn_k_larger_than_the_batch(n):
    with pytest.raises(DataError) as info:
        _graph_net(k=8)(torch.randn(n, 3))
    assert f"the batch has {n} points but the kNN graph needs graph.knn_k=8" in str(info.value)
    assert "lower --model.graph.knn_k" in str(info.value)


@FAST
@given(copies=st.integers(2, 6), distinct=st.integers(0, 4))
def test_duplicate_points_give_a_finite_graph(copies, distinct):
    x = torch.cat([torch.ones(copies, 3), torch.randn(distinct, 3)])
    k = min(4, x.shape[0])
    if k < 2:
        return
    out = _graph_net(k=k)(x)  # the model floors the Gaussian scale at 1e-8
    assert torch.isfinite(out).all()
    with pytest.raises(DataError, match="exact duplicates, so the k_scale=2-th distance is 0; deduplicate x"):
        knn_gaussian_graph(x, k=k, k_scale=2)  # the raw graph builder says what happened


# -- files ----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("content", [b"", b"PK\x03\x04 truncated zip", b"\x00" * 100])
def test_a_corrupt_or_truncated_data_file(tmp_path, content):
    folder = tmp_path / "gnn-benchmark"
    folder.mkdir()
    (folder / "cora.npz").write_bytes(content)
    with pytest.raises(DataError, match=r"cora.npz is corrupt or truncated: its SHA-256 is [0-9a-f]{64}, expected "
                                        r"068e22d9.*Delete .*cora.npz and download it again from https://"):
        load_graph("cora", tmp_path, download=False)
    with pytest.raises(DataError, match=r"Cannot read .*cora.npz as a .npz file .*Delete it and download it again"):
        load_graph("cora", tmp_path, download=False, verify=False)
    assert (folder / "cora.npz").read_bytes() == content and len(list(folder.iterdir())) == 1  # nothing touched


def test_a_data_root_that_does_not_exist(tmp_path):
    from cdflow.data.modules import MNISTDataModule

    with pytest.raises(DataError, match=r"Data folder .*nowhere \(from the `root` argument\) does not exist"):
        MNISTDataModule(root=str(tmp_path / "nowhere")).setup("fit")
    assert not (tmp_path / "nowhere").exists()


# -- settings -------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("t1", [0.0, -1.0, float("inf")])
def test_depth_must_be_positive(t1):
    with pytest.raises(ConfigError, match=r"t1 \(the depth T\) must be > 0 and finite"):
        SolverSpec(t1=t1)


def test_incompatible_sde_method_and_noise():
    with pytest.raises(ConfigError, match="method 'reversible_heun' solves stratonovich SDEs, not ito: set "
                                          "sde_type='stratonovich', or use one of euler, milstein, srk"):
        ConvectionDiffusionNet(3, 2, solver=SolverSpec(method="reversible_heun", step_size=0.1),
                               diffusion=DiffusionSpec(kind="noise", noise_type="diagonal"))
    with pytest.raises(ConfigError, match=r"method 'srk' does not support general noise \(only additive, diagonal, "
                                          r"scalar\); methods for ito SDEs with general noise: euler"):
        ConvectionDiffusionNet(3, 2, solver=SolverSpec(method="srk", step_size=0.1),
                               diffusion=DiffusionSpec(kind="noise", noise_type="general"))


#: A ready network chosen on the command line, whose settings are nested under --model.model.
NESTED_NET = ["--model.model", "cdflow.models.ConvectionDiffusionNet", "--model.model.in_features", "64",
              "--model.model.num_classes", "10"]
CLI_CASES = {
    "unknown flag": (["--model.hiddn", "16"], "error: unrecognized arguments: --model.hiddn 16"),
    "unknown key in a config": (["--config", "{bad_key}"],
                                "error: Subcommand 'fit' does not accept option 'model.hiddn'"),
    "wrong type flag": (["--model.hidden", "abc"], "cdflow fit: error: --model.hidden: 'abc' is not an int\n"),
    "wrong type in a config": (["--config", "{bad_type}"],
                               "cdflow fit: error: --model.hidden: 'sixteen' is not an int\n"),
    "wrong type in a nested setting": (["--model.solver.rtol", "abc"],
                                       "cdflow fit: error: --model.solver.rtol: 'abc' is not a number\n"),
    "wrong type of a union": (["--trainer.max_epochs", "two"],
                              "cdflow fit: error: --trainer.max_epochs: 'two' is not valid; expected an int or null\n"),
    "a union of choices": (["--trainer.precision", "17"],
                           "cdflow fit: error: --trainer.precision: '17' is not valid; expected one of 64, 32, 16, "
                           "transformer-engine, "),
    "unknown accelerator": (["--trainer.accelerator", "gpux"],
                            "cdflow fit: error: ConfigError: --trainer.accelerator gpux: You selected an invalid "
                            "accelerator name: `accelerator='gpux'`."),
    "negative max_epochs": (["--trainer.max_epochs", "-2"],
                            "cdflow fit: error: ConfigError: --trainer.max_epochs -2: `max_epochs` must be a "
                            "non-negative integer"),
    "accumulate 0 (Lightning divides by it while training)": (
        ["--trainer.accumulate_grad_batches", "0"],
        "cdflow fit: error: ConfigError: --trainer.accumulate_grad_batches 0: takes an int ≥ 1\n"),
    "validation interval 0": (["--trainer.val_check_interval", "0"],
                              "cdflow fit: error: ConfigError: --trainer.val_check_interval 0: takes a fraction"),
    "the setting at fault among several": (
        ["--trainer.accelerator", "cpu", "--trainer.devices", "0", "--trainer.precision", "bf16-mixed"],
        "cdflow fit: error: ConfigError: --trainer.devices 0: `Trainer(devices='0')` value is not a valid input"),
    "an optional of the wrong type": (["--model.solver.step_size", "abc"],
                                      "cdflow fit: error: --model.solver.step_size: 'abc' is not valid; "
                                      "expected a number or null\n"),
    "an optional of the wrong type in a nested network setting": (
        [*NESTED_NET, "--model.model.solver.step_size", "abc"],
        "cdflow fit: error: --model.model.solver.step_size: 'abc' is not valid; expected a number or null\n"),
    "float16 with a ready network's adaptive solver": (
        [*NESTED_NET, "--model.model.solver.method", "dopri5", "--trainer.precision", "16-true"],
        "cdflow fit: error: ConfigError: --trainer.precision 16-true computes in float16"),
    "float16 advice names the ready network's flags": (
        [*NESTED_NET, "--model.model.solver.method", "dopri5", "--trainer.precision", "16-true"],
        "or a fixed-step method (--model.model.solver.method rk4 --model.model.solver.step_size 0.1)\n"),
    "validation scored twice": (["--model.validate_on_train_forward", "true", "--model.dropout", "0",
                                 "--trainer.limit_val_batches", "2"],
                                "cdflow fit: error: ConfigError: --model.validate_on_train_forward scores validation "
                                "on the training forward pass, and the validation loop (--trainer.limit_val_batches "
                                "2) would score it again"),
    "unknown strategy": (["--trainer.accelerator", "cpu", "--trainer.strategy", "ddpx"],
                         "cdflow fit: error: ConfigError: --trainer.strategy ddpx: You selected an invalid strategy "
                         "name"),
    "t1 = 0": (["--model.solver.t1", "0"], "cdflow fit: error: ConfigError: t1 (the depth T) must be > 0 and finite"),
    "incompatible SDE": (["--model.diffusion.kind", "noise", "--model.solver.method", "reversible_heun",
                          "--model.solver.step_size", "0.1"],
                         "ConfigError: method 'reversible_heun' solves stratonovich SDEs, not ito"),
    "missing data root": (["--data", "cdflow.data.modules.MNISTDataModule", "--data.root", "{nowhere}"],
                          "cdflow fit: error: DataError: Data folder"),
    "unknown failure mode": (["--model.on_failure", "ignore"],
                             "cdflow fit: error: --model.on_failure: 'ignore' is not a valid choice; choose from stop, "
                             "skip\n"),
    "bad choice in a nested network setting": (
        [*NESTED_NET, "--model.model.diffusion.method", "bogus"],
        "cdflow fit: error: --model.model.diffusion.method: 'bogus' is not a valid choice; choose from krylov, "
        "chebyshev, implicit, explicit\n(see cdflow fit --help)"),
}


@pytest.mark.parametrize("case", list(CLI_CASES))
@pytest.mark.parametrize("existing", [False, True], ids=["fresh", "existing-run"])
def test_cli_rejects_bad_settings_before_running(tmp_path, monkeypatch, capsys, case, existing):
    monkeypatch.setenv("WANDB_MODE", "disabled")
    monkeypatch.setattr(sys, "argv", ["cdflow"])
    (tmp_path / "bad_key.yaml").write_text("model:\n  hiddn: 16\n")
    (tmp_path / "bad_type.yaml").write_text("model:\n  hidden: sixteen\n")
    root = tmp_path / "run"
    if existing:  # a previous run's files must survive untouched
        (root / "checkpoints").mkdir(parents=True)
        (root / "checkpoints" / "last.ckpt").write_bytes(b"previous run")
    extra, expected = CLI_CASES[case]
    names = {"bad_key": tmp_path / "bad_key.yaml", "bad_type": tmp_path / "bad_type.yaml",
             "nowhere": tmp_path / "nowhere"}
    extra = [e.format(**names) for e in extra]
    with pytest.raises(SystemExit) as info:
        run_cli(["fit", "--config", str(CONFIGS / "digits.yaml"), "--trainer.default_root_dir", str(root), *extra])
    err = capsys.readouterr().err
    assert info.value.code == 2 and expected in err and "Traceback" not in err
    if existing:
        assert sorted(p.relative_to(root).as_posix() for p in root.rglob("*")) == ["checkpoints",
                                                                                   "checkpoints/last.ckpt"]
        assert (root / "checkpoints" / "last.ckpt").read_bytes() == b"previous run"
    else:
        assert not root.exists()
