"""DataModules: metadata before setup, both batch conventions, validation, and a Lightning smoke run."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import pytest
import torch
from torch import nn

import cdflow.data.modules as modules
from cdflow.data import DigitsDataModule, GraphDataModule, MNISTDataModule, ToyDataModule
from cdflow.data.base import BATCH_KEYS
from cdflow.errors import ConfigError, DataError
from cdflow.sparse import SparseMatrix


def _only_batch(loader: torch.utils.data.DataLoader) -> dict:
    batches = list(loader)
    assert len(batches) == 1, "a transductive loader must yield exactly one batch per epoch"
    return batches[0]


@pytest.mark.parametrize(
    ("name", "split", "nodes", "n_train"),
    [("cora", "random", 2485, 140), ("citeseer", "random", 2110, 120), ("cora", "planetoid", 2708, 140)],
)
def test_graph_module(data_dir: Path, name: str, split: str, nodes: int, n_train: int) -> None:
    dm = GraphDataModule(name=name, split=split, seed=1, root=str(data_dir))  # type: ignore[arg-type]
    features, classes = {"cora": (1433, 7), "citeseer": (3703, 6)}[name]
    assert (dm.num_features, dm.num_classes, dm.input_shape) == (features, classes, (features,))
    assert dm.hparams.name == name and dm.hparams.seed == 1 and dm.hparams.root == str(data_dir)
    dm.setup("fit")
    loaders = (dm.train_dataloader(), dm.val_dataloader(), dm.test_dataloader())
    batches = [_only_batch(loader) for loader in loaders]
    batch = batches[0]
    assert tuple(batch) == BATCH_KEYS
    assert all(b["x"] is batch["x"] for b in batches[1:]), "the same dict for every stage"
    assert batch["x"].shape == (nodes, features) and batch["y"].shape == (nodes,)
    assert batch["edge_index"].shape[0] == 2 and dm.num_nodes == nodes
    assert int(batch["train_mask"].sum()) == n_train


def test_graph_module_seed_changes_split(data_dir: Path) -> None:
    a = GraphDataModule("cora", seed=0, root=str(data_dir))
    b = GraphDataModule("cora", seed=1, root=str(data_dir))
    a.setup(), b.setup()
    assert not torch.equal(a.batch["train_mask"], b.batch["train_mask"])


def test_graph_module_config_errors() -> None:
    with pytest.raises(ConfigError, match="Unknown graph"):
        GraphDataModule(name="pubmed")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="Unknown split"):
        GraphDataModule(split="geom-gcn")  # type: ignore[arg-type]


def test_graph_module_without_training_nodes(data_dir: Path) -> None:
    dm = GraphDataModule("cora", root=str(data_dir), train_per_class=0)
    with pytest.raises(DataError, match="train_per_class"):
        dm.setup()


def test_graph_module_missing_data_root(tmp_path: Path) -> None:
    dm = GraphDataModule("cora", root=str(tmp_path / "absent"))
    with pytest.raises(DataError, match="absent.*does not exist"):
        dm.setup()


@pytest.mark.parametrize("flatten", [True, False])
def test_digits_inductive(flatten: bool) -> None:
    dm = DigitsDataModule(flatten=flatten, batch_size=32, seed=0)
    assert dm.num_features == 64 and dm.num_classes == 10
    assert dm.input_shape == ((64,) if flatten else (1, 8, 8))
    x, y = next(iter(dm.train_dataloader()))
    assert x.shape == (32, *dm.input_shape) and x.dtype == torch.float32 and y.dtype == torch.long
    sizes = [len(dm.datasets[k]) for k in ("train", "val", "test")]
    assert sum(sizes) == 1797
    order1 = torch.cat([y for _, y in dm.train_dataloader()])
    again = DigitsDataModule(flatten=flatten, batch_size=32, seed=0)
    order2 = torch.cat([y for _, y in again.train_dataloader()])
    assert torch.equal(order1, order2), "shuffling is seeded"


def test_digits_transductive_semi_supervised() -> None:
    dm = DigitsDataModule(transductive=True, labels_per_class=3, flatten=False)
    batch = _only_batch(dm.train_dataloader())
    assert batch["x"].shape == (1797, 1, 8, 8) and batch["edge_index"] is None
    assert torch.bincount(batch["y"][batch["train_mask"]]).tolist() == [3] * 10
    held_out = int((batch["val_mask"] | batch["test_mask"]).sum())
    assert int(dm.split.unlabelled_mask.sum()) == 1797 - held_out - 30


def test_digits_inductive_semi_supervised_drops_unlabelled() -> None:
    dm = DigitsDataModule(labels_per_class=2)
    dm.setup("fit")
    assert len(dm.datasets["train"]) == 20


@pytest.mark.parametrize("name", ["moons", "circles", "spirals", "xor"])
def test_toy_modules(name: str) -> None:
    dm = ToyDataModule(name=name, batch_size=50, seed=3)  # type: ignore[arg-type]
    assert (dm.num_features, dm.num_classes, dm.input_shape) == (2, 2, (2,))
    x, y = next(iter(dm.train_dataloader()))
    assert x.shape == (50, 2) and y.shape == (50,)
    full = ToyDataModule(name=name, transductive=True, seed=3)  # type: ignore[arg-type]
    batch = _only_batch(full.val_dataloader())
    assert batch["x"].shape[1] == 2 and batch["edge_index"] is None
    assert full.hparams.transductive is True and full.hparams.name == name


def test_toy_unknown_name() -> None:
    with pytest.raises(ConfigError, match="Unknown toy"):
        ToyDataModule(name="swissroll")  # type: ignore[arg-type]


def test_nan_features_are_reported_by_row(monkeypatch: pytest.MonkeyPatch) -> None:
    real = modules.load_digits_arrays

    def with_nan() -> tuple[torch.Tensor, torch.Tensor]:
        x, y = real()
        x = x.clone()
        x[[5, 700], 3] = float("nan")
        return x, y

    monkeypatch.setattr(modules, "load_digits_arrays", with_nan)
    with pytest.raises(DataError, match=r"rows \[5, 700\]"):
        DigitsDataModule(transductive=True).setup()
    with pytest.raises(DataError, match=r"NaN or Inf"):
        DigitsDataModule(transductive=False).setup()


def test_labels_out_of_range_are_reported(monkeypatch: pytest.MonkeyPatch) -> None:
    real = modules.load_digits_arrays

    def with_bad_label() -> tuple[torch.Tensor, torch.Tensor]:
        x, y = real()
        y = y.clone()
        y[11] = 10
        return x, y

    monkeypatch.setattr(modules, "load_digits_arrays", with_bad_label)
    with pytest.raises(DataError, match=r"outside 0\.\.9 at rows \[11\]"):
        DigitsDataModule(transductive=True).setup()


def test_mnist_module(data_dir: Path) -> None:
    dm = MNISTDataModule(kind="mnist", root=str(data_dir), batch_size=256, labels_per_class=10)
    assert dm.input_shape == (1, 28, 28) and dm.num_classes == 10 and dm.num_features == 784
    assert dm.hparams.val_size == 5000 and dm.hparams.labels_per_class == 10
    dm.setup("fit")
    assert len(dm.datasets["train"]) == 100 and len(dm.datasets["val"]) == 5000 and "test" not in dm.datasets
    x, y = next(iter(dm.val_dataloader()))
    assert x.shape == (256, 1, 28, 28) and x.dtype == torch.float32 and y.dtype == torch.long
    assert abs(float(x.mean())) < 0.1 and abs(float(x.std()) - 1) < 0.1
    dm.setup("test")
    assert len(dm.datasets["test"]) == 10000


def test_fashion_module_flat_unnormalised(data_dir: Path) -> None:
    dm = MNISTDataModule("fashion-mnist", str(data_dir), flatten=True, normalize=False, val_size=100)
    assert dm.input_shape == (784,)
    dm.setup("test")
    x, _ = next(iter(dm.test_dataloader()))
    assert x.shape == (128, 784) and float(x.min()) >= 0 and float(x.max()) <= 1


def test_mnist_module_missing_files(tmp_path: Path) -> None:
    dm = MNISTDataModule(root=str(tmp_path), download=False)
    with pytest.raises(DataError, match=str(tmp_path / "mnist" / "train-images-idx3-ubyte.gz")):
        dm.setup("fit")


class _TinyTransductive(L.LightningModule):
    """Consumes the full-batch dict the way the project's model will: one mask per stage."""

    def __init__(self, num_features: int, num_classes: int) -> None:
        super().__init__()
        self.net = nn.Linear(num_features, num_classes)
        self.seen: list[str] = []

    def _loss(self, batch: dict, mask_key: str, stage: str) -> torch.Tensor:
        self.seen.append(stage)
        mask = batch[mask_key]
        x = batch["x"]  # graph modules hand bag-of-words features as a cdflow.sparse.SparseMatrix
        logits = self.net(x.to_dense() if isinstance(x, SparseMatrix) else x.flatten(1))
        return nn.functional.cross_entropy(logits[mask], batch["y"][mask])

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        return self._loss(batch, "train_mask", "train")

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        self.log("val_loss", self._loss(batch, "val_mask", "val"), batch_size=1)

    def test_step(self, batch: dict, batch_idx: int) -> None:
        self.log("test_loss", self._loss(batch, "test_mask", "test"), batch_size=1)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.1)


def test_lightning_runs_one_batch_per_epoch(data_dir: Path, tmp_path: Path) -> None:
    dm = GraphDataModule("cora", root=str(data_dir))
    model = _TinyTransductive(dm.num_features, dm.num_classes)
    trainer = L.Trainer(
        max_epochs=2,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
        num_sanity_val_steps=0,
    )
    trainer.fit(model, datamodule=dm)
    trainer.test(model, datamodule=dm, verbose=False)
    assert model.seen == ["train", "val", "train", "val", "test"]
