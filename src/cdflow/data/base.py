"""The two batch conventions shared by cdflow's DataModules, and their base classes.

* Inductive mini-batches: each batch is a tuple ``(x, y)``.
* Transductive full batch: each of the train / val / test / predict loaders yields exactly one batch per
  epoch, the same dict ``{"x": [N, F], "y": [N], "train_mask", "val_mask", "test_mask", "edge_index":
  [2, E] or None, "graph": cdflow.graph.Graph}``; the LightningModule picks the mask of its stage. Graph
  modules hand x as a `cdflow.sparse.SparseMatrix` (bag-of-words features, for the sparse kernels).

Every module sets ``num_features``, ``input_shape`` and ``num_classes`` in ``__init__`` (before setup).
"""

from __future__ import annotations

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset, TensorDataset

from cdflow.data.resumable import EpochShuffleSampler, ResumableLoader
from cdflow.data.splits import SplitData
from cdflow.data.validate import check_finite, check_labels, check_transductive_batch
from cdflow.errors import ConfigError
from cdflow.graph import Graph
from cdflow.sparse import SparseMatrix

Batch = dict[str, torch.Tensor | None]
BATCH_KEYS = ("x", "y", "train_mask", "val_mask", "test_mask", "edge_index", "graph")


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


def full_batch_loader(batch: Batch) -> DataLoader:
    """A loader that yields ``batch`` once per epoch, unchanged."""
    return DataLoader(FullBatchDataset(batch), batch_size=None, shuffle=False, num_workers=0)


def minibatch_loader(
    dataset: Dataset, batch_size: int, num_workers: int, *, shuffle: bool, seed: int
) -> DataLoader:
    """``(x, y)`` mini-batches; shuffled in an order that depends only on ``seed`` and the epoch, and
    resumable mid-epoch from a Lightning checkpoint (see :mod:`cdflow.data.resumable`)."""
    return ResumableLoader(
        dataset,
        batch_size=batch_size,
        sampler=EpochShuffleSampler(dataset, seed) if shuffle else None,
        num_workers=num_workers,
        persistent_workers=num_workers > 0,
        # Worker base seeds from their own generator, not the global one (whose state checkpoints restore).
        generator=torch.Generator().manual_seed(seed) if shuffle else None,
    )


def tensor_dataset(x: torch.Tensor, y: torch.Tensor, num_classes: int, *, name: str) -> TensorDataset:
    """A validated ``TensorDataset`` of ``(x, y)``."""
    check_finite(x, f"x ({name})")
    check_labels(y, num_classes, f"y ({name})")
    return TensorDataset(x, y)


def split_batch(
    split: SplitData, x: torch.Tensor | None = None, edge_index: torch.Tensor | None = None
) -> Batch:
    """The full-batch dict of a :class:`SplitData` (``x`` overrides ``split.x``, e.g. reshaped)."""
    return {
        "x": split.x if x is None else x,
        "y": split.y,
        "train_mask": split.train_mask,
        "val_mask": split.val_mask,
        "test_mask": split.test_mask,
        "edge_index": edge_index,
    }


class CdflowDataModule(L.LightningDataModule):
    """Common base: metadata attributes and the two loader conventions.

    Subclasses implement ``setup``, filling either ``self.batch`` (transductive) or ``self.datasets``
    (``"train"``, ``"val"``, ``"test"`` → datasets of ``(x, y)``).
    """

    num_features: int
    input_shape: tuple[int, ...]
    num_classes: int

    def __init__(
        self, *, transductive: bool, batch_size: int = 1, num_workers: int = 0, seed: int = 0
    ) -> None:
        super().__init__()
        if not (isinstance(batch_size, int) and batch_size >= 1):
            raise ConfigError(f"--data.batch_size must be an integer ≥ 1, got {batch_size!r}")
        if not (isinstance(num_workers, int) and num_workers >= 0):
            raise ConfigError(f"--data.num_workers must be an integer ≥ 0 (0: load in the main process), got "
                              f"{num_workers!r}")
        self.transductive = transductive
        self._batch_size, self._num_workers, self._seed = batch_size, num_workers, seed
        self.batch: Batch | None = None
        self.datasets: dict[str, Dataset] = {}

    def set_batch(self, batch: Batch, sparse_features: bool = False) -> None:
        """Validate and store the full-batch dict, adding ``"graph"``: the `cdflow.graph.Graph` of its edges (if
        any) and its fixed features, from which models get their Laplacian, built once for the whole run.
        With `sparse_features`, x is handed to models as a `cdflow.sparse.SparseMatrix` (bag-of-words)."""
        check_transductive_batch(batch, self.num_classes, source=type(self).__name__)
        x = batch["x"]
        if sparse_features:
            x = SparseMatrix.from_tensor(x)
        batch = {**batch, "x": x}
        batch["graph"] = Graph(batch.get("edge_index"), int(x.shape[0]), x=x, name=type(self).__name__)
        self.batch = batch

    def _loader(self, split: str) -> DataLoader:
        if self.transductive:
            if self.batch is None:
                self.setup(None)
            assert self.batch is not None
            return full_batch_loader(self.batch)
        if split not in self.datasets:
            self.setup("fit" if split in ("train", "val") else "test")
        return minibatch_loader(
            self.datasets[split],
            self._batch_size,
            self._num_workers,
            shuffle=split == "train",
            seed=self._seed,
        )

    def train_dataloader(self) -> DataLoader:
        """Transductive: the full dict. Inductive: shuffled ``(x, y)`` of the (labelled) training set."""
        return self._loader("train")

    def val_dataloader(self) -> DataLoader:
        """Transductive: the full dict (use ``val_mask``). Inductive: ``(x, y)`` of the validation set."""
        return self._loader("val")

    def test_dataloader(self) -> DataLoader:
        """Transductive: the full dict (use ``test_mask``). Inductive: ``(x, y)`` of the test set."""
        return self._loader("test")

    def predict_dataloader(self) -> DataLoader:
        """Transductive: the full dict. Inductive: ``(x, y)`` of the test set."""
        return self._loader("test")
