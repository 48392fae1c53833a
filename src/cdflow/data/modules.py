"""Lightning DataModules: graphs (full batch), digits and toys (either convention), MNIST (mini-batch).

Every module exposes ``num_features``, ``input_shape`` and ``num_classes`` right after construction
(cheap metadata, no file read), so a model config can be linked to them. Batch formats: see
:mod:`cdflow.data.base`.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch
from torch.utils.data import Dataset

from cdflow.data.base import CdflowDataModule, split_batch, tensor_dataset
from cdflow.data.digits import load_digits_arrays
from cdflow.data.graphs import GraphData, GraphName, load_graph, random_split
from cdflow.data.idx import MNISTKind, load_mnist
from cdflow.data.planetoid import load_planetoid
from cdflow.data.splits import SplitData, labelled_subset, split_with_labels
from cdflow.data.toys import TOYS, ToyName, make_toy
from cdflow.data.validate import check_finite, check_labels, check_same_rows
from cdflow.errors import ConfigError

#: (num_features, num_classes) of the graphs, for metadata before setup (checked in setup).
GRAPH_META: dict[str, tuple[int, int]] = {"cora": (1433, 7), "citeseer": (3703, 6)}
#: Pixel mean and std of the training images (after scaling to [0, 1]).
MNIST_STATS: dict[str, tuple[float, float]] = {"mnist": (0.1307, 0.3081), "fashion-mnist": (0.2860, 0.3530)}


class GraphDataModule(CdflowDataModule):
    """Cora / Citeseer, transductive full batch (``edge_index`` symmetric, no self-loops).

    Args:
        name: ``"cora"`` or ``"citeseer"``.
        split: ``"random"``: gnn-benchmark file, largest connected component, ``train_per_class`` /
            ``val_per_class`` nodes per class drawn with ``seed``, rest test (COIN / Diff-ResNet protocol).
            ``"planetoid"``: Planetoid files with the public split (Cora 140/500/1000; ``seed`` unused).
        seed: split seed.
        root: data folder (default ``$CDFLOW_DATA``).
        train_per_class, val_per_class: sizes of the random split.
        verify: check file checksums.
        download: fetch missing files from their origin.
        sparse_features: hand the bag-of-words features to the model as a `cdflow.sparse.SparseMatrix` (the
            sparse kernels of COIN / Diff-ResNet; networks that take dense input get x densified).
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
        sparse_features: bool = True,
    ) -> None:
        if name not in GRAPH_META:
            raise ConfigError(f"Unknown graph {name!r}; choose one of {sorted(GRAPH_META)}.")
        if split not in ("random", "planetoid"):
            raise ConfigError(f"Unknown split {split!r}; choose 'random' or 'planetoid'.")
        super().__init__(transductive=True, seed=seed)
        self.save_hyperparameters()
        self.num_features, self.num_classes = GRAPH_META[name]
        self.input_shape = (self.num_features,)
        self.data: GraphData | None = None

    @property
    def num_nodes(self) -> int:
        """Number of nodes N (after ``setup``)."""
        self.setup(None)
        assert self.data is not None
        return self.data.num_nodes

    def setup(self, stage: str | None = None) -> None:
        """Load the graph and its split (once)."""
        if self.batch is not None:
            return
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
        self.set_batch(
            {
                "x": data.x,
                "y": data.y,
                "train_mask": torch.from_numpy(train),
                "val_mask": torch.from_numpy(val),
                "test_mask": torch.from_numpy(test),
                "edge_index": data.edge_index,
            },
            sparse_features=hp.sparse_features,
        )


class _SplitDataModule(CdflowDataModule):
    """Points with a stratified split, served in either convention (``transductive``)."""

    split: SplitData | None = None

    def load_points(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Return all points ``x [N, F]`` and labels ``y [N]``."""
        raise NotImplementedError

    def setup(self, stage: str | None = None) -> None:
        """Validate the points, split them once (seeded), then build the full dict (transductive) or the
        three ``(x, y)`` datasets (inductive)."""
        if self.split is not None:
            return
        x, y = self.load_points()
        source = type(self).__name__
        check_same_rows(x, y, source=source)
        check_finite(x, "x", source=source)
        check_labels(y, self.num_classes, "y", source=source)
        hp = self.hparams
        split = split_with_labels(
            x,
            y,
            hp.seed,
            val_fraction=hp.val_fraction,
            test_fraction=hp.test_fraction,
            labels_per_class=hp.labels_per_class,
        )
        x = split.x.reshape(split.x.shape[0], *self.input_shape)
        if self.transductive:
            self.set_batch(split_batch(split, x=x))
        else:
            name = type(self).__name__
            masks = {"train": split.train_mask, "val": split.val_mask, "test": split.test_mask}
            self.datasets = {
                key: tensor_dataset(x[mask], split.y[mask], self.num_classes, name=f"{name} {key}")
                for key, mask in masks.items()
            }
        self.split = split


class DigitsDataModule(_SplitDataModule):
    """scikit-learn 8x8 digits (1,797 images) in [0, 1], seeded stratified split.

    Args:
        transductive: one full-batch dict (``edge_index=None``) instead of ``(x, y)`` mini-batches.
        labels_per_class: keep only that many labelled training points per class (semi-supervised). In
            transductive mode the other training points stay in ``x`` but in no mask
            (``self.split.unlabelled_mask``); in inductive mode they are left out of the training set.
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
        super().__init__(transductive=transductive, batch_size=batch_size, num_workers=num_workers, seed=seed)
        self.save_hyperparameters()
        self.num_features, self.num_classes = 64, 10
        self.input_shape = (64,) if flatten else (1, 8, 8)

    def load_points(self) -> tuple[torch.Tensor, torch.Tensor]:
        """All 1,797 digits."""
        return load_digits_arrays()


class ToyDataModule(_SplitDataModule):
    """2-D toys (``moons``, ``circles``, ``spirals``, ``xor``; Diff-ResNet recipes), seeded stratified split.

    Args:
        name: which toy.
        transductive: one full-batch dict (``edge_index=None``) instead of ``(x, y)`` mini-batches.
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
        if name not in TOYS:
            raise ConfigError(f"Unknown toy {name!r}; choose one of {sorted(TOYS)}.")
        super().__init__(transductive=transductive, batch_size=batch_size, num_workers=num_workers, seed=seed)
        self.save_hyperparameters()
        self.num_features, self.num_classes, self.input_shape = 2, 2, (2,)

    def load_points(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The toy points (seeded)."""
        return make_toy(self.hparams.name, seed=self.hparams.seed)


class _ImageDataset(Dataset):
    """uint8 images ``[N, 28, 28]`` served as normalised float ``[1, 28, 28]`` (or ``[784]``)."""

    def __init__(
        self, images: torch.Tensor, labels: torch.Tensor, mean: float, std: float, flatten: bool
    ) -> None:
        self.images, self.labels = images, labels
        self.mean, self.std, self.flatten = mean, std, flatten

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        x = (self.images[index].to(torch.float32) / 255.0 - self.mean) / self.std
        return (x.reshape(-1) if self.flatten else x.unsqueeze(0)), self.labels[index]


class MNISTDataModule(CdflowDataModule):
    """MNIST / Fashion-MNIST mini-batches ``(x [B, 1, 28, 28], y [B])``: pixels / 255, then normalised.

    Args:
        kind: ``"mnist"`` or ``"fashion-mnist"``.
        root: data folder (default ``$CDFLOW_DATA``); files in ``<root>/<kind>/``.
        val_size: training images held out (seeded) for validation; the official test set is the test set.
        labels_per_class: keep only that many labelled training images per class (the others are dropped).
        normalize: subtract the training mean and divide by the std (``MNIST_STATS``).
        flatten: inputs ``[B, 784]`` instead of ``[B, 1, 28, 28]``.
        verify: check the checksums; download: fetch missing files from the origin.
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
        if kind not in MNIST_STATS:
            raise ConfigError(f"Unknown kind {kind!r}; choose 'mnist' or 'fashion-mnist'.")
        if not 0 <= val_size < 60_000:
            raise ConfigError(f"val_size must be in 0..59999, got {val_size}.")
        super().__init__(transductive=False, batch_size=batch_size, num_workers=num_workers, seed=seed)
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
        """Load what the stage needs: training file for fit / validate, test file for test / predict."""
        hp = self.hparams
        if stage in (None, "fit", "validate") and "train" not in self.datasets:
            images, labels = load_mnist(hp.root, "train", hp.kind, verify=hp.verify, download=hp.download)
            order = np.random.default_rng(hp.seed).permutation(len(labels))
            val_idx, train_idx = np.sort(order[: hp.val_size]), np.sort(order[hp.val_size :])
            if hp.labels_per_class is not None:
                pool = np.zeros(len(labels), dtype=bool)
                pool[train_idx] = True
                train_idx = np.flatnonzero(labelled_subset(labels, pool, hp.labels_per_class, hp.seed))
            self.datasets["train"] = self._dataset(images[train_idx], labels[train_idx], "train")
            self.datasets["val"] = self._dataset(images[val_idx], labels[val_idx], "val")
        if stage in (None, "test", "predict") and "test" not in self.datasets:
            images, labels = load_mnist(hp.root, "test", hp.kind, verify=hp.verify, download=hp.download)
            self.datasets["test"] = self._dataset(images, labels, "test")
