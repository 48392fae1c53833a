"""File-based data modules: tables and graphs read from users' files, labels mapped and kept, every
malformed file a DataError naming the file, and training from files through the CLI."""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from cdflow.cli import run_cli
from cdflow.data import GraphFileDataModule, TabularDataModule, read_label_names
from cdflow.data.base import BATCH_KEYS
from cdflow.errors import ConfigError, DataError
from cdflow.sparse import SparseMatrix

WINES = ("grignolino", "barolo", "barbera")  # not in sorted order: the mapping sorts them


# -- files made here -----------------------------------------------------------------------------------------
def _write_csv(path: Path, header: list[str], rows: list[list]) -> Path:
    with open(path, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def _wine(seed: int = 0, counts: tuple[int, ...] = (59, 71, 48)) -> tuple[np.ndarray, np.ndarray]:
    """A wine-like table: 13 features on different scales, 3 classes with shifted means."""
    rng = np.random.default_rng(seed)
    scale = np.logspace(-1, 3, 13)
    x = np.concatenate([rng.normal(k * 1.5, 1.0, (c, 13)) * scale + scale for k, c in enumerate(counts)])
    y = np.repeat(np.arange(len(counts)), counts)
    return x, y


@pytest.fixture
def wine_csv(tmp_path: Path) -> Path:
    x, y = _wine()
    header = [f"f{j}" for j in range(13)] + ["label"]
    return _write_csv(tmp_path / "wine.csv", header, [[*map(repr, row.tolist()), WINES[k]] for row, k in zip(x, y)])


def _sbm(per_class: int = 100, p_in: float = 0.12, p_out: float = 0.01, seed: int = 0):
    """A 3-community stochastic block model: weak-signal features, labels 3 / 7 / 42, edges [E, 2] (i < j)."""
    rng = np.random.default_rng(seed)
    c = np.repeat(np.arange(3), per_class)
    n = len(c)
    prob = np.where(c[:, None] == c[None, :], p_in, p_out)
    upper = np.triu(rng.random((n, n)) < prob, k=1)
    edges = np.argwhere(upper)
    x = rng.normal(0.0, 1.0, (n, 8)) + 0.4 * np.eye(8)[c]
    return x, np.array([3, 7, 42])[c], edges


@pytest.fixture
def sbm_npz(tmp_path: Path) -> Path:
    x, y, edges = _sbm()
    np.savez(tmp_path / "sbm.npz", x=x, y=y, edge_index=edges.T)
    return tmp_path / "sbm.npz"


@pytest.fixture
def sbm_csvs(tmp_path: Path) -> tuple[Path, Path]:
    """Nodes CSV with string ids and labels; weighted edges CSV using those ids."""
    x, y, edges = _sbm(per_class=60)
    names = {3: "red", 7: "green", 42: "blue"}
    nodes = _write_csv(tmp_path / "nodes.csv", ["id", *[f"f{j}" for j in range(8)], "label"],
                       [[f"n{i}", *map(repr, row.tolist()), names[int(k)]] for i, (row, k) in enumerate(zip(x, y))])
    weights = np.random.default_rng(1).uniform(0.5, 2.0, len(edges))
    edge_file = _write_csv(tmp_path / "edges.csv", ["source", "target", "weight"],
                           [[f"n{a}", f"n{b}", repr(float(w))] for (a, b), w in zip(edges, weights)])
    return nodes, edge_file


# -- tables ----------------------------------------------------------------------------------------------------
def test_csv_string_labels_metadata_and_batches(wine_csv: Path) -> None:
    dm = TabularDataModule(str(wine_csv))
    assert (dm.num_features, dm.input_shape, dm.num_classes) == (13, (13,), 3)
    assert dm.label_names == ["barbera", "barolo", "grignolino"]
    assert torch.bincount(dm.y).tolist() == [48, 71, 59]  # barbera was written third, 48 rows
    dm.setup("fit")
    x, y = next(iter(dm.train_dataloader()))
    assert x.dtype == torch.float32 and x.shape == (64, 13) and y.dtype == torch.int64
    assert sum(len(dm.datasets[k]) for k in ("train", "val", "test")) == 178


def test_integer_labels_map_to_sorted_names_and_float64_input(tmp_path: Path) -> None:
    x, y = _wine()
    labels = np.array([42, 3, 7])[y]
    np.savez(tmp_path / "wine.npz", x=x.astype(np.float64), y=labels)
    dm = TabularDataModule(str(tmp_path / "wine.npz"))
    assert dm.label_names == ["3", "7", "42"]
    assert torch.equal(dm.y, torch.from_numpy(np.array([2, 0, 1])[y]))
    dm.setup("fit")
    xb, _ = next(iter(dm.train_dataloader()))
    assert xb.dtype == torch.float32
    assert TabularDataModule.load_state_dict(dm, dm.state_dict()) is None  # same names: accepted


@pytest.mark.parametrize("kind", ["structured", "plain"])
def test_npy_files(tmp_path: Path, kind: str) -> None:
    x, y = _wine()
    if kind == "plain":  # documented: the last column is the label
        np.save(tmp_path / "w.npy", np.column_stack([x, y + 1]))
    else:
        table = np.zeros(len(y), dtype=[*[(f"f{j}", "f8") for j in range(13)], ("label", "U12")])
        for j in range(13):
            table[f"f{j}"] = x[:, j]
        table["label"] = np.array(WINES)[y]
        np.save(tmp_path / "w.npy", table)
    dm = TabularDataModule(str(tmp_path / "w.npy"))
    assert dm.num_features == 13
    assert dm.label_names == (["1", "2", "3"] if kind == "plain" else sorted(WINES))


def test_standardisation_is_fitted_on_the_training_part_only(wine_csv: Path) -> None:
    dm = TabularDataModule(str(wine_csv))
    raw = TabularDataModule(str(wine_csv), standardize=False)
    train = torch.from_numpy(dm.masks["train"])
    x_train = dm.x[train].double()
    assert torch.allclose(x_train.mean(0), torch.zeros(13, dtype=torch.float64), atol=1e-5)
    assert torch.allclose(x_train.std(0, unbiased=False), torch.ones(13, dtype=torch.float64), atol=1e-5)
    mean, std = raw.x[train].double().mean(0), raw.x[train].double().std(0, unbiased=False)
    for part in ("val", "test"):
        mask = torch.from_numpy(dm.masks[part])
        expected = (raw.x[mask].double() - mean) / std
        assert torch.allclose(dm.x[mask].double(), expected, atol=1e-4)
        assert not torch.allclose(dm.x[mask].double().mean(0), torch.zeros(13, dtype=torch.float64), atol=1e-3)
    assert np.allclose(dm.state_dict()["feature_mean"], mean.numpy())


def test_stratified_split_fractions_are_seeded(wine_csv: Path) -> None:
    dm = TabularDataModule(str(wine_csv), split=(0.6, 0.2, 0.2), seed=3)
    sizes = {k: int(m.sum()) for k, m in dm.masks.items()}
    assert sum(sizes.values()) == 178 and abs(sizes["train"] - 0.6 * 178) <= 2 and abs(sizes["test"] - 0.2 * 178) <= 2
    for k in range(3):  # every class in every part, in proportion
        in_class = dm.y.numpy() == k
        assert abs(dm.masks["train"][in_class].mean() - 0.6) < 0.05
    again = TabularDataModule(str(wine_csv), split=(0.6, 0.2, 0.2), seed=3)
    other = TabularDataModule(str(wine_csv), split=(0.6, 0.2, 0.2), seed=4)
    assert np.array_equal(dm.masks["train"], again.masks["train"])
    assert not np.array_equal(dm.masks["train"], other.masks["train"])


def test_masks_given_in_the_file(tmp_path: Path) -> None:
    x, y = _wine()
    part = np.arange(len(y)) % 5  # 0-2 train, 3 val, 4 test; rows 0..9 in no mask
    rows = [[*map(repr, r.tolist()), WINES[k], int(p < 3 and i >= 10), int(p == 3 and i >= 10), str(p == 4).lower()]
            for i, (r, k, p) in enumerate(zip(x, y, part))]
    path = _write_csv(tmp_path / "m.csv", [*[f"f{j}" for j in range(13)], "label", *MASKS], rows)
    dm = TabularDataModule(str(path))
    assert dm.num_features == 13  # mask columns are not features
    assert np.array_equal(dm.masks["test"], part == 4)
    assert int(dm.masks["train"].sum()) == int(((part < 3) & (np.arange(len(y)) >= 10)).sum())
    np.savez(tmp_path / "m.npz", x=x, y=y, train_mask=part < 3, val_mask=part == 3, test_mask=part == 4)
    assert np.array_equal(TabularDataModule(str(tmp_path / "m.npz")).masks["val"], part == 3)


MASKS = ["train_mask", "val_mask", "test_mask"]


# -- graphs ----------------------------------------------------------------------------------------------------
def test_graph_npz_per_class_split_and_undirected_edges(sbm_npz: Path) -> None:
    dm = GraphFileDataModule(str(sbm_npz), train_per_class=20, val_per_class=30, seed=1)
    assert (dm.num_nodes, dm.num_features, dm.num_classes, dm.label_names) == (300, 8, 3, ["3", "7", "42"])
    dm.setup("fit")
    batch = dm.batch
    assert tuple(batch) == BATCH_KEYS and isinstance(batch["x"], SparseMatrix)
    for k in range(3):
        in_class = batch["y"] == k
        assert int((batch["train_mask"] & in_class).sum()) == 20 and int((batch["val_mask"] & in_class).sum()) == 30
    assert int(batch["test_mask"].sum()) == 300 - 150
    ei = batch["edge_index"]
    pairs = set(map(tuple, ei.T.tolist()))
    assert all((b, a) in pairs for a, b in pairs) and all(a != b for a, b in pairs)
    assert ei.shape[1] == 2 * np.load(sbm_npz)["edge_index"].shape[1]
    # [E, 2] edge lists, dense features, and masks from the file work too
    x, y, edges = _sbm()
    mask = np.arange(300) % 3
    np.savez(sbm_npz.with_name("t.npz"), x=x, y=y, edge_index=edges, train_mask=mask == 0, val_mask=mask == 1,
             test_mask=mask == 2)
    given = GraphFileDataModule(str(sbm_npz.with_name("t.npz")), sparse_features=False)
    given.setup()
    assert torch.equal(given.batch["val_mask"], torch.from_numpy(mask == 1)) and given.batch["x"].dtype == torch.float32
    assert torch.equal(given.batch["edge_index"], ei)


def test_graph_csv_with_ids_and_weights_reaching_the_laplacian(sbm_csvs: tuple[Path, Path]) -> None:
    nodes, edges = sbm_csvs
    dm = GraphFileDataModule(str(nodes), edges=str(edges))
    assert dm.label_names == ["blue", "green", "red"] and dm.num_features == 8  # the id column is no feature
    dm.setup()
    lap = dm.batch["graph"].laplacian("combinatorial").matrix.to_dense()
    w = torch.zeros(180, 180)
    with open(edges) as fh:
        for row in csv.DictReader(fh):
            a, b = int(row["source"][1:]), int(row["target"][1:])
            w[a, b] = w[b, a] = float(row["weight"])
    assert torch.allclose(lap, torch.diag(w.sum(1)) - w, atol=1e-5)
    assert not torch.allclose(lap, torch.diag((w > 0).float().sum(1)) - (w > 0).float())


def test_graph_sparse_csr_features_and_row_number_ids(tmp_path: Path) -> None:
    import scipy.sparse as sp

    x, y, edges = _sbm(per_class=60)
    x = np.where(x > 1.0, 1.0, 0.0)  # bag-of-words like
    csr = sp.csr_matrix(x)
    np.savez(tmp_path / "s.npz", x_data=csr.data, x_indices=csr.indices, x_indptr=csr.indptr, x_shape=csr.shape,
             y=y, edge_index=edges.T)
    dm = GraphFileDataModule(str(tmp_path / "s.npz"))
    assert torch.equal(dm.x, torch.from_numpy(x).float())
    nodes = _write_csv(tmp_path / "n.csv", ["label", "a", "b"], [[str(k), "1", "0"] for k in y])
    edge_file = _write_csv(tmp_path / "e.csv", ["source", "target"], edges.tolist())
    from_csv = GraphFileDataModule(str(nodes), edges=str(edge_file))
    assert torch.equal(from_csv.edge_index, dm.edge_index) and from_csv.edge_weight is None


# -- malformed files -------------------------------------------------------------------------------------------
def _table_error(tmp_path: Path, name: str, header: list[str], rows: list[list], **kw) -> str:
    path = _write_csv(tmp_path / name, header, rows)
    with pytest.raises(DataError) as info:
        TabularDataModule(str(path), **kw)
    msg = str(info.value)
    assert str(path) in msg
    return msg


def _rows(n: int = 30, bad: dict | None = None) -> list[list]:
    rows = [[str(i * 0.5), str(i % 3), WINES[i % 3]] for i in range(n)]
    for (r, c), v in (bad or {}).items():
        rows[r][c] = v
    return rows


def test_table_errors(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="does not exist"):
        TabularDataModule(str(tmp_path / "none.csv"))
    (tmp_path / "d.xlsx").write_text("x")
    with pytest.raises(DataError, match=r"unknown extension '\.xlsx'.*\.csv"):
        TabularDataModule(str(tmp_path / "d.xlsx"))
    msg = _table_error(tmp_path, "a.csv", ["a", "b", "wine"], _rows())
    assert "no label column 'label'" in msg and "'a', 'b', 'wine'" in msg
    msg = _table_error(tmp_path, "b.csv", ["a", "b", "label"], _rows(bad={(4, 1): "abc"}))
    assert "non-numeric value 'abc' in column 'b' at row 4 (line 6)" in msg
    msg = _table_error(tmp_path, "c.csv", ["a", "b", "label"], _rows(bad={(7, 0): "nan", (9, 1): "inf"}))
    assert "feature 'a' is nan at row 7 (line 9)" in msg and "2 NaN/inf value(s) in all, in 2 column(s)" in msg
    msg = _table_error(tmp_path, "e.csv", ["a", "b", "label"], _rows(bad={(3, 2): "merlot"}))
    assert "class 'merlot' has only 1 example" in msg
    msg = _table_error(tmp_path, "f.csv", ["a", "b", "label"], _rows(bad={(3, 2): ""}))
    assert "label 'label' is empty at row 3 (line 5)" in msg
    with pytest.raises(ConfigError, match="sum to 1.1"):
        TabularDataModule(str(tmp_path / "a.csv"), label="wine", split=(0.7, 0.2, 0.2))


def test_mask_errors(tmp_path: Path) -> None:
    header = ["a", "b", "label", *MASKS]
    overlap = [[*r, "1", "1" if i == 2 else "0", str(int(i % 5 == 0))] for i, r in enumerate(_rows())]
    assert "overlap at rows [2]" in _table_error(tmp_path, "o.csv", header, overlap)
    empty = [[*r, "1", "0", "0"] for r in _rows()]
    assert "val_mask selects no example" in _table_error(tmp_path, "e.csv", header, empty)
    partial = [[*r, "1", "0"] for r in _rows()]
    assert "give all three masks" in _table_error(tmp_path, "p.csv", header[:-1], partial)
    bad = [[*r, "maybe" if i == 1 else "1", "0", "0"] for i, r in enumerate(_rows())]
    assert "'maybe' at row 1" in _table_error(tmp_path, "b.csv", header, bad)


def test_npz_and_npy_errors(tmp_path: Path) -> None:
    np.savez(tmp_path / "nolabel.npz", x=np.ones((5, 2)))
    with pytest.raises(DataError, match="no label array 'y'"):
        TabularDataModule(str(tmp_path / "nolabel.npz"))
    np.save(tmp_path / "flat.npy", np.ones(10))
    with pytest.raises(DataError, match="last column is the label"):
        TabularDataModule(str(tmp_path / "flat.npy"))
    np.savez(tmp_path / "obj.npz", x=np.ones((2, 2)), y=np.array(["a", None], dtype=object))
    with pytest.raises(DataError, match="object array"):
        TabularDataModule(str(tmp_path / "obj.npz"))
    (tmp_path / "broken.npz").write_bytes(b"not a zip")
    with pytest.raises(DataError, match="broken.npz"):
        TabularDataModule(str(tmp_path / "broken.npz"))


def test_parquet_without_pyarrow_names_the_package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "t.parquet").write_bytes(b"PAR1")
    monkeypatch.setitem(sys.modules, "pyarrow", None)
    monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)
    with pytest.raises(DataError, match=r"t\.parquet.*needs the package pyarrow.*pip install pyarrow"):
        TabularDataModule(str(tmp_path / "t.parquet"))


def _graph_error(tmp_path: Path, **arrays) -> str:
    x, y, edges = _sbm(per_class=60)
    base = {"x": x, "y": y, "edge_index": edges.T}
    np.savez(tmp_path / "g.npz", **{**base, **arrays})
    with pytest.raises(DataError) as info:
        GraphFileDataModule(str(tmp_path / "g.npz"))
    assert str(tmp_path / "g.npz") in str(info.value)
    return str(info.value)


def test_graph_errors(tmp_path: Path, sbm_csvs: tuple[Path, Path]) -> None:
    _, _, edges = _sbm(per_class=60)
    out_of_range = np.vstack([edges, [[5, 180], [2, 250]]]).T
    assert "refers to node 250, but there are N=180 nodes" in _graph_error(tmp_path, edge_index=out_of_range)
    assert "[2, E] or [E, 2], got (3, 4)" in _graph_error(tmp_path, edge_index=np.zeros((3, 4), dtype=int))
    assert "3 edge weights for" in _graph_error(tmp_path, edge_weight=np.ones(3))
    weights = np.ones(len(edges))
    weights[4] = -1.0
    assert "edge weight -1.0 at row 4 is negative" in _graph_error(tmp_path, edge_weight=weights)
    x, y, _ = _sbm(per_class=60)
    np.savez(tmp_path / "h.npz", x=x, y=y, edge_index=edges.T)
    with pytest.raises(DataError, match="class '3' has only 60 nodes, fewer than .* = 70"):
        GraphFileDataModule(str(tmp_path / "h.npz"), train_per_class=40)
    nodes, edge_file = sbm_csvs
    with pytest.raises(ConfigError, match="--data.edges"):
        GraphFileDataModule(str(nodes))
    bad_edges = _write_csv(tmp_path / "bad_edges.csv", ["source", "target"], [["n0", "n1"], ["n2", "n999"]])
    with pytest.raises(DataError, match=r"target 'n999' at row 1 \(line 3\) is not an id"):
        GraphFileDataModule(str(nodes), edges=str(bad_edges))
    no_cols = _write_csv(tmp_path / "cols.csv", ["from", "to"], [["n0", "n1"]])
    with pytest.raises(DataError, match="no edge column 'source'; columns found: 'from', 'to'"):
        GraphFileDataModule(str(nodes), edges=str(no_cols))


def test_checkpoint_with_other_classes_is_refused(wine_csv: Path) -> None:
    dm = TabularDataModule(str(wine_csv))
    with pytest.raises(DataError, match=r"trained with the classes \['a', 'b', 'c'\].*--data.classes"):
        dm.load_state_dict({"label_names": ["a", "b", "c"]})
    fixed = TabularDataModule(str(wine_csv), classes=["grignolino", "barolo", "barbera"])
    assert fixed.label_names == list(WINES) and int(fixed.y[0]) == 0  # row 0 is a grignolino


# -- through the CLI -------------------------------------------------------------------------------------------
@pytest.fixture
def _cli_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WANDB_MODE", "disabled")
    monkeypatch.setattr(sys, "argv", ["cdflow"])


QUICK = ["--trainer.logger", "false", "--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary",
         "false", "--trainer.callbacks", "[]", "--model.hidden", "16", "--model.width", "16"]
QUICK_PREDICT = [*QUICK, "--model.solver.method", "rk4", "--model.solver.step_size", "0.25"]


def test_fit_help_lists_the_data_modules(_cli_env: None, capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as info:
        run_cli(["fit", "--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    assert "TabularDataModule" in out and "GraphFileDataModule" in out and "DigitsDataModule" in out


def test_cli_trains_a_table_from_a_csv(_cli_env: None, wine_csv: Path, tmp_path: Path) -> None:
    root = tmp_path / "run"
    cli = run_cli(["fit", "--data", "TabularDataModule", "--data.path", str(wine_csv), "--trainer.max_epochs", "3",
                   "--trainer.default_root_dir", str(root), *QUICK, "--model.solver.method", "rk4",
                   "--model.solver.step_size", "0.25", "--model.lr", "0.01"])
    assert read_label_names(root) == ["barbera", "barolo", "grignolino"]
    assert json.loads((root / "labels.json").read_text())["label_names"] == ["barbera", "barolo", "grignolino"]
    ckpt = torch.load(root / "checkpoints" / "last.ckpt", weights_only=True)
    assert ckpt["TabularDataModule"]["label_names"] == ["barbera", "barolo", "grignolino"]
    assert cli.test_results[0]["test/acc"] > 0.6
    # predictions come back in the original label names, indexed by the file's rows of the test split
    pred = run_cli(["predict", "--data", "TabularDataModule", "--data.path", str(wine_csv),
                    "--ckpt_path", str(root / "checkpoints" / "last.ckpt"), *QUICK_PREDICT])
    with open(pred.predictions_path, newline="") as fh:
        rows = list(csv.DictReader(fh))
    test_rows = cli.datamodule.predict_index.tolist()
    assert [int(r["index"]) for r in rows] == test_rows and len(rows) == int(cli.datamodule.masks["test"].sum())
    with open(wine_csv, newline="") as fh:
        file_labels = [r["label"] for r in csv.DictReader(fh)]
    assert [r["label"] for r in rows] == [file_labels[i] for i in test_rows]  # the true names, row by row
    assert {r["prediction"] for r in rows} <= {"barbera", "barolo", "grignolino"}
    assert sum(r["prediction"] == r["label"] for r in rows) / len(rows) > 0.6
    # new rows without labels, in another column order: predicted in the file's order, no label column
    x, y = _wine()
    new = _write_csv(tmp_path / "new.csv", [f"f{j}" for j in reversed(range(13))],
                     [[repr(v) for v in reversed(row.tolist())] for row in x[:9]])
    pred = run_cli(["predict", "--data", "TabularDataModule", "--data.path", str(wine_csv), "--data.predict_path",
                    str(new), "--ckpt_path", str(root / "checkpoints" / "last.ckpt"), *QUICK_PREDICT])
    with open(pred.predictions_path, newline="") as fh:
        new_rows = list(csv.DictReader(fh))
    assert [int(r["index"]) for r in new_rows] == list(range(9)) and "label" not in new_rows[0]
    assert {r["prediction"] for r in new_rows} <= {"barbera", "barolo", "grignolino"}
    assert sum(r["prediction"] == WINES[k] for r, k in zip(new_rows, y[:9])) >= 5  # the same rows as trained on


def test_cli_trains_a_graph_from_an_npz(_cli_env: None, sbm_npz: Path, tmp_path: Path) -> None:
    root = tmp_path / "run"
    cli = run_cli(["fit", "--data", "GraphFileDataModule", "--data.path", str(sbm_npz), "--trainer.max_epochs", "10",
                   "--trainer.default_root_dir", str(root), *QUICK, "--model.diffusion.kind", "graph",
                   "--model.diffusion.gamma", "5", "--model.diffusion.n_steps", "4", "--model.solver.method", "euler",
                   "--model.solver.step_size", "0.5", "--model.lr", "0.02"])
    assert read_label_names(root) == ["3", "7", "42"]
    # chance is 1/3 and the features alone give about 0.4 (diffusion.kind none); the graph gives about 0.95
    assert cli.test_results[0]["test/acc"] > 0.7


def test_cli_bad_file_stops_before_training(_cli_env: None, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    bad = _write_csv(tmp_path / "bad.csv", ["a", "label"], [["1", "x"], ["oops", "y"]])
    root = tmp_path / "run"
    with pytest.raises(SystemExit) as info:
        run_cli(["fit", "--data", "TabularDataModule", "--data.path", str(bad), "--trainer.default_root_dir", str(root),
                 *QUICK])
    err = capsys.readouterr().err
    assert info.value.code == 2 and "DataError" in err and str(bad) in err and "'oops' in column 'a'" in err
    assert "Traceback" not in err and not root.exists()
