"""The two batch conventions shared by cdflow's DataModules.

* Inductive mini-batches: each batch is a tuple ``(x, y)``.
* Transductive full batch: each of the train / val / test / predict loaders yields exactly one batch per
  epoch, the same dict ``{"x": [N, F], "y": [N], "train_mask", "val_mask", "test_mask", "edge_index":
  [2, E] or None}``; the LightningModule picks the mask of its stage.
"""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset, TensorDataset

from cdflow.data.validate import check_finite, check_labels, check_transductive_batch

Batch = dict[str, torch.Tensor | None]
BATCH_KEYS = ("x", "y", "train_mask", "val_mask", "test_mask", "edge_index")


class FullBatchDataset(Dataset):
    """A dataset of one item: the whole-graph dict."""

    def __init__(self, batch: Batch) -> None:
        self.batch = batch

    def __len__(self) -> int:
        return 1

    def __getitem__(self, index: int) -> Batch:
        if index != 0:
            raise IndexError(index)
        return self.batch


class TransductiveDataModule(L.LightningDataModule):
    """Base for full-batch DataModules; subclasses implement :meth:`build_batch`.

    Attributes (set in ``__init__`` by subclasses, before ``setup``): ``num_features``, ``input_shape``,
    ``num_classes``. After ``setup``: ``batch`` (the dict) and ``num_nodes``.
    """

    num_features: int
    input_shape: tuple[int, ...]
    num_classes: int

    def __init__(self) -> None:
        super().__init__()
        self.batch: Batch | None = None

    def build_batch(self) -> Batch:
        """Return the full-batch dict (called once, in ``setup``)."""
        raise NotImplementedError

    @property
    def num_nodes(self) -> int:
        """Number of nodes N (after ``setup``)."""
        if self.batch is None:
            raise RuntimeError(f"{type(self).__name__}.num_nodes is known after setup(); call setup() first.")
        assert self.batch["x"] is not None
        return int(self.batch["x"].shape[0])

    def setup(self, stage: str | None = None) -> None:
        """Build and validate the batch (once)."""
        if self.batch is None:
            batch = self.build_batch()
            check_transductive_batch(batch, self.num_classes, source=type(self).__name__)
            self.batch = batch

    def _loader(self) -> DataLoader:
        if self.batch is None:
            self.setup()
        assert self.batch is not None
        return DataLoader(FullBatchDataset(self.batch), batch_size=None, shuffle=False, num_workers=0)

    def train_dataloader(self) -> DataLoader:
        """One batch: the full dict."""
        return self._loader()

    def val_dataloader(self) -> DataLoader:
        """One batch: the same dict (use ``val_mask``)."""
        return self._loader()

    def test_dataloader(self) -> DataLoader:
        """One batch: the same dict (use ``test_mask``)."""
        return self._loader()

    def predict_dataloader(self) -> DataLoader:
        """One batch: the same dict."""
        return self._loader()


class InductiveDataModule(L.LightningDataModule):
    """Base for mini-batch DataModules; subclasses fill ``self.datasets`` in ``setup``.

    ``self.datasets`` maps ``"train"``, ``"val"``, ``"test"`` to datasets of ``(x, y)`` pairs. The training
    loader shuffles with a generator seeded from ``seed``.
    """

    num_features: int
    input_shape: tuple[int, ...]
    num_classes: int

    def __init__(self, batch_size: int, num_workers: int, seed: int) -> None:
        super().__init__()
        self._batch_size, self._num_workers, self._seed = batch_size, num_workers, seed
        self.datasets: dict[str, Dataset] = {}

    def _loader(self, split: str, shuffle: bool) -> DataLoader:
        if split not in self.datasets:
            self.setup("fit" if split in ("train", "val") else "test")
        kwargs: dict[str, Any] = {}
        if shuffle:
            kwargs["generator"] = torch.Generator().manual_seed(self._seed)
        return DataLoader(
            self.datasets[split],
            batch_size=self._batch_size,
            shuffle=shuffle,
            num_workers=self._num_workers,
            persistent_workers=self._num_workers > 0,
            **kwargs,
        )

    def train_dataloader(self) -> DataLoader:
        """Shuffled ``(x, y)`` mini-batches of the (labelled) training set."""
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        """``(x, y)`` mini-batches of the validation set."""
        return self._loader("val", shuffle=False)

    def test_dataloader(self) -> DataLoader:
        """``(x, y)`` mini-batches of the test set."""
        return self._loader("test", shuffle=False)

    def predict_dataloader(self) -> DataLoader:
        """``(x, y)`` mini-batches of the test set."""
        return self._loader("test", shuffle=False)


def tensor_dataset(x: torch.Tensor, y: torch.Tensor, num_classes: int, *, name: str) -> TensorDataset:
    """A validated ``TensorDataset`` of ``(x, y)``."""
    check_finite(x, f"x ({name})")
    check_labels(y, num_classes, f"y ({name})")
    return TensorDataset(x, y)
