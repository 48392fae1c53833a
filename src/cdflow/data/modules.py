"""Lightning DataModules: graphs (full batch), digits and toys (either convention), MNIST (mini-batch).

Every module exposes ``num_features``, ``input_shape`` and ``num_classes`` right after construction
(cheap metadata, no file read), so a model config can be linked to them. See :mod:`cdflow.data.base`
for the batch formats.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch
from torch.utils.data import Dataset

from cdflow.data.base import Batch, InductiveDataModule, TransductiveDataModule, tensor_dataset
from cdflow.data.digits import SplitData, load_digits_arrays, split_with_labels
from cdflow.data.graphs import GraphName, load_graph, random_split
from cdflow.data.idx import MNISTKind, load_mnist
from cdflow.data.planetoid import load_planetoid
from cdflow.data.splits import labelled_subset
from cdflow.data.toys import ToyName, make_toy
from cdflow.data.validate import check_labels
from cdflow.errors import ConfigError

#: (num_features, num_classes) of the graphs, for metadata before setup (checked in setup).
GRAPH_META: dict[str, tuple[int, int]] = {"cora": (1433, 7), "citeseer": (3703, 6)}
#: Pixel mean and std of the training images (after scaling to [0, 1]).
MNIST_STATS: dict[str, tuple[float, float]] = {"mnist": (0.1307, 0.3081), "fashion-mnist": (0.2860, 0.3530)}


def _split_batch(data: SplitData, edge_index: torch.Tensor | None = None) -> Batch:
    return {
        "x": data.x,
        "y": data.y,
        "train_mask": data.train_mask,
        "val_mask": data.val_mask,
        "test_mask": data.test_mask,
        "edge_index": edge_index,
    }


class GraphDataModule(TransductiveDataModule):
    """Cora / Citeseer, full batch.

    Args:
        name: ``"cora"`` or ``"citeseer"``.
        split: ``"random"`` — gnn-benchmark file, largest connected component, ``train_per_class`` /
            ``val_per_class`` nodes per class drawn with ``seed`` (COIN / Diff-ResNet protocol);
            ``"planetoid"`` — Planetoid files with the public 140/500/1000 split (``seed`` unused).
        seed: split seed.
        root: data folder (default ``$CDFLOW_DATA``).
        train_per_class, val_per_class: random split sizes.
        verify: check file checksums.
        download: fetch missing files from their origin.
    """

    def __init__(
        self,
        name: GraphName = "cora",
        split: Literal["random", "planetoid"] = "random",
        seed: int = 0,
        root: str | None = None,
        train_per_class: int = 20,
        val_per_class: int = 30,
        verify: bool = True,
        download: bool = True,
    ) -> None:
        super().__init__()
        if name not in GRAPH_META:
            raise ConfigError(f"Unknown graph {name!r}; choose one of {sorted(GRAPH_META)}.")
        if split not in ("random", "planetoid"):
            raise ConfigError(f"Unknown split {split!r}; choose 'random' or 'planetoid'.")
        self.save_hyperparameters()
        self.num_features, self.num_classes = GRAPH_META[name]
        self.input_shape = (self.num_features,)

    def build_batch(self) -> Batch:
        """Load the graph and its split."""
        hp = self.hparams
        if hp.split == "planetoid":
            data, train, val, test = load_planetoid(hp.name, hp.root, verify=hp.verify, download=hp.download)
        else:
            data = load_graph(hp.name, hp.root, verify=hp.verify, download=hp.download)
            train, val, test = random_split(data.y.numpy(), hp.seed, hp.train_per_class, hp.val_per_class)
        if (data.num_features, data.num_classes) != (self.num_features, self.num_classes):
            raise ConfigError(
                f"{data.name} has {data.num_features} features / {data.num_classes} classes, but GRAPH_META "
                f"says {self.num_features} / {self.num_classes}; update GRAPH_META in {__name__}."
            )
        self.data = data
        return {
            "x": data.x,
            "y": data.y,
            "train_mask": torch.from_numpy(train),
            "val_mask": torch.from_numpy(val),
            "test_mask": torch.from_numpy(test),
            "edge_index": data.edge_index,
        }


class _SplitModule:
    """Shared logic of Digits / Toy modules: either convention over one :class:`SplitData`."""

    hparams: object
    num_classes: int

    def _split_data(self) -> SplitData:
        raise NotImplementedError

    def _shape(self, x: torch.Tensor) -> torch.Tensor:
        return x


class DigitsDataModule(InductiveDataModule, _SplitModule):
    """scikit-learn 8x8 digits (1,797 images) in [0, 1], stratified split.

    Args:
        transductive: one full batch (dict, ``edge_index=None``) instead of ``(x, y)`` mini-batches.
        labels_per_class: keep only that many labelled training points per class (semi-supervised). In
            transductive mode the other training points stay in ``x`` with no mask; in inductive mode they
            are left out of the training set.
        flatten: inputs ``[B, 64]`` (True) or ``[B, 1, 8, 8]`` (False).
        val_fraction, test_fraction: split sizes.
    """

    def __init__(
        self,
        transductive: bool = False,
        labels_per_class: int | None = None,
        flatten: bool = True,
        val_fraction: float = 0.2,
        test_fraction: float = 0.2,
        batch_size: int = 64,
        num_workers: int = 0,
        seed: int = 0,
    ) -> None:
        super().__init__(batch_size, num_workers, seed)
        self.save_hyperparameters()
        self.num_features, self.num_classes = 64, 10
        self.input_shape = (64,) if flatten else (1, 8, 8)
        self.batch: Batch | None = None

    def _split_data(self) -> SplitData:
        x, y = load_digits_arrays()
        hp = self.hparams
        return split_with_labels(
            x, y, hp.seed, val_fraction=hp.val_fraction, test_fraction=hp.test_fraction,
            labels_per_class=hp.labels_per_class,
        )

    def _shape(self, x: torch.Tensor) -> torch.Tensor:
        return x.reshape(x.shape[0], *self.input_shape)

    def setup(self, stage: str | None = None) -> None:
        """Build the split (once)."""
        _setup_split(self)

    def train_dataloader(self):  # noqa: ANN201 — DataLoader
        """Inductive: shuffled ``(x, y)``; transductive: the full dict."""
        return _full_or(self, "train_dataloader")

    def val_dataloader(self):  # noqa: ANN201
        """Inductive: ``(x, y)``; transductive: the full dict."""
        return _full_or(self, "val_dataloader")

    def test_dataloader(self):  # noqa: ANN201
        """Inductive: ``(x, y)``; transductive: the full dict."""
        return _full_or(self, "test_dataloader")

    def predict_dataloader(self):  # noqa: ANN201
        """Inductive: ``(x, y)`` of the test set; transductive: the full dict."""
        return _full_or(self, "predict_dataloader")


class ToyDataModule(InductiveDataModule, _SplitModule):
    """2-D toys (``moons``, ``circles``, ``spirals``, ``xor``; Diff-ResNet recipes), stratified split.

    Args:
        name: which toy.
        transductive: one full batch (dict, ``edge_index=None``) instead of ``(x, y)`` mini-batches.
        labels_per_class: as in :class:`DigitsDataModule`.
        val_fraction, test_fraction: split sizes.
        seed: seeds both the points and the split.
    """

    def __init__(
        self,
        name: ToyName = "moons",
        transductive: bool = False,
        labels_per_class: int | None = None,
        val_fraction: float = 0.2,
        test_fraction: float = 0.2,
        batch_size: int = 128,
        num_workers: int = 0,
        seed: int = 0,
    ) -> None:
        super().__init__(batch_size, num_workers, seed)
        if name not in ("moons", "circles", "spirals", "xor"):
            raise ConfigError(f"Unknown toy {name!r}; choose 'moons', 'circles', 'spirals' or 'xor'.")
        self.save_hyperparameters()
        self.num_features, self.num_classes, self.input_shape = 2, 2, (2,)
        self.batch: Batch | None = None

    def _split_data(self) -> SplitData:
        hp = self.hparams
        x, y = make_toy(hp.name, seed=hp.seed)
        return split_with_labels(
            x, y, hp.seed, val_fraction=hp.val_fraction, test_fraction=hp.test_fraction,
            labels_per_class=hp.labels_per_class,
        )

    def setup(self, stage: str | None = None) -> None:
        """Build the points and the split (once)."""
        _setup_split(self)

    def train_dataloader(self):  # noqa: ANN201
        """Inductive: shuffled ``(x, y)``; transductive: the full dict."""
        return _full_or(self, "train_dataloader")

    def val_dataloader(self):  # noqa: ANN201
        """Inductive: ``(x, y)``; transductive: the full dict."""
        return _full_or(self, "val_dataloader")

    def test_dataloader(self):  # noqa: ANN201
        """Inductive: ``(x, y)``; transductive: the full dict."""
        return _full_or(self, "test_dataloader")

    def predict_dataloader(self):  # noqa: ANN201
        """Inductive: ``(x, y)`` of the test set; transductive: the full dict."""
        return _full_or(self, "predict_dataloader")


def _setup_split(module: DigitsDataModule | ToyDataModule) -> None:
    if module.batch is not None or module.datasets:
        return
    data = module._split_data()
    x = module._shape(data.x)
    if module.hparams.transductive:
        batch = _split_batch(SplitData(x, data.y, data.train_mask, data.val_mask, data.test_mask,
                                       data.unlabelled_mask, module.num_classes))
        from cdflow.data.validate import check_transductive_batch

        check_transductive_batch(batch, module.num_classes, source=type(module).__name__)
        module.batch = batch
        module.split = data
        return
    name = type(module).__name__
    module.datasets = {
        split: tensor_dataset(x[mask], data.y[mask], module.num_classes, name=f"{name} {split}")
        for split, mask in (("train", data.train_mask), ("val", data.val_mask), ("test", data.test_mask))
    }
    module.split = data


def _full_or(module: DigitsDataModule | ToyDataModule, method: str):  # noqa: ANN202
    if module.hparams.transductive:
        module.setup()
        helper = TransductiveDataModule()
        helper.batch = module.batch
        return getattr(helper, method)()
    return getattr(InductiveDataModule, method)(module)


class _ImageDataset(Dataset):
    """uint8 images ``[N, 28, 28]`` served as normalised float ``[1, 28, 28]`` (or ``[784]``)."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, mean: float, std: float, flatten: bool) -> None:
        self.images, self.labels = images, labels
        self.mean, self.std, self.flatten = mean, std, flatten

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        x = (self.images[index].to(torch.float32) / 255.0 - self.mean) / self.std
        return (x.reshape(-1) if self.flatten else x.unsqueeze(0)), self.labels[index]


class MNISTDataModule(InductiveDataModule):
    """MNIST / Fashion-MNIST mini-batches ``(x [B, 1, 28, 28], y [B])``, scaled to [0, 1] then normalised.

    Args:
        kind: ``"mnist"`` or ``"fashion-mnist"``.
        root: data folder (default ``$CDFLOW_DATA``); files in ``<root>/<kind>/``.
        val_size: training images held out (seeded) for validation; the official test set is the test set.
        labels_per_class: keep only that many labelled training images per class (others are dropped).
        normalize: subtract the training mean and divide by the std (``MNIST_STATS``).
        flatten: inputs ``[B, 784]`` instead of ``[B, 1, 28, 28]``.
    """

    def __init__(
        self,
        kind: MNISTKind = "mnist",
        root: str | None = None,
        val_size: int = 5000,
        labels_per_class: int | None = None,
        normalize: bool = True,
        flatten: bool = False,
        batch_size: int = 128,
        num_workers: int = 0,
        seed: int = 0,
        verify: bool = True,
        download: bool = True,
    ) -> None:
        super().__init__(batch_size, num_workers, seed)
        if kind not in MNIST_STATS:
            raise ConfigError(f"Unknown kind {kind!r}; choose 'mnist' or 'fashion-mnist'.")
        if not 0 <= val_size < 60_000:
            raise ConfigError(f"val_size must be in 0..59999, got {val_size}.")
        self.save_hyperparameters()
        self.num_features, self.num_classes = 28 * 28, 10
        self.input_shape = (784,) if flatten else (1, 28, 28)

    def _dataset(self, images: np.ndarray, labels: np.ndarray, name: str) -> _ImageDataset:
        hp = self.hparams
        mean, std = MNIST_STATS[hp.kind] if hp.normalize else (0.0, 1.0)
        y = torch.from_numpy(labels)
        check_labels(y, self.num_classes, f"{hp.kind} {name} labels")
        return _ImageDataset(torch.from_numpy(images), y, mean, std, hp.flatten)

    def setup(self, stage: str | None = None) -> None:
        """Load the files the stage needs (train/val for fit and validate, test for test and predict)."""
        hp = self.hparams
        if stage in (None, "fit", "validate") and "train" not in self.datasets:
            images, labels = load_mnist(hp.root, "train", hp.kind, verify=hp.verify, download=hp.download)
            order = np.random.default_rng(hp.seed).permutation(len(labels))
            val_idx, train_idx = np.sort(order[: hp.val_size]), np.sort(order[hp.val_size :])
            if hp.labels_per_class is not None:
                mask = np.zeros(len(labels), dtype=bool)
                mask[train_idx] = True
                train_idx = np.flatnonzero(labelled_subset(labels, mask, hp.labels_per_class, hp.seed))
            self.datasets["train"] = self._dataset(images[train_idx], labels[train_idx], "train")
            self.datasets["val"] = self._dataset(images[val_idx], labels[val_idx], "val")
        if stage in (None, "test", "predict") and "test" not in self.datasets:
            images, labels = load_mnist(hp.root, "test", hp.kind, verify=hp.verify, download=hp.download)
            self.datasets["test"] = self._dataset(images, labels, "test")
