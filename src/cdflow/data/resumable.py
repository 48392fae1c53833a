"""Mini-batch loading that resumes exactly: epoch-seeded shuffling and a loader that remembers its position.

Lightning restores the epoch and batch counters from a checkpoint, but a plain `DataLoader` restarts its
epoch from the first batch, and a `RandomSampler` driven by one seeded generator gives epoch e the order
of the e-th draw *of this process*: a resumed run would see different batches than an uninterrupted one.

* `EpochShuffleSampler`: the order of epoch e is a function of (seed, e) only; Lightning calls
  ``set_epoch`` at every epoch start (and, under DDP, swaps it for a `DistributedSampler`, which it
  recognises as shuffling because this is a `RandomSampler`).
* `ResumableLoader`: a `DataLoader` whose ``state_dict`` is the number of batches it has served in the
  current epoch; Lightning stores it in mid-epoch checkpoints and loads it before resuming, and the next
  epoch iteration then skips those batches.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
from torch.utils.data import DataLoader, RandomSampler


class EpochShuffleSampler(RandomSampler):
    """A random permutation per epoch that depends only on (seed, epoch), not on how many epochs came before.

    Epoch e gets the order that ``DataLoader(shuffle=True, generator=torch.Generator().manual_seed(seed))``
    gave its e-th epoch in a fresh process when every epoch ran to its end (``num_workers=0``): per epoch
    that loader draws one int64 (its worker base seed), the permutation, and a second ``randperm`` when the
    epoch is exhausted; they are replayed here from the seed. So full-epoch runs made before this sampler
    existed are reproduced (runs cut short with ``limit_train_batches`` drew less, and differ from epoch 1
    on), and a resumed run sees what it would have seen.
    """

    def __init__(self, data_source: Any, seed: int = 0) -> None:
        super().__init__(data_source)
        self.seed = int(seed)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Select the permutation of `epoch` (called by Lightning at every epoch start)."""
        self.epoch = int(epoch)

    def __iter__(self) -> Iterator[int]:
        n = len(self.data_source)
        generator = torch.Generator().manual_seed(self.seed)
        for _ in range(self.epoch):
            torch.empty((), dtype=torch.int64).random_(generator=generator)
            torch.randperm(n, generator=generator)
            torch.randperm(n, generator=generator)
        torch.empty((), dtype=torch.int64).random_(generator=generator)
        yield from torch.randperm(n, generator=generator).tolist()


class ResumableLoader(DataLoader):
    """A `DataLoader` that Lightning can checkpoint mid-epoch (``state_dict`` / ``load_state_dict``).

    Takes exactly the arguments of `DataLoader` (so Lightning can re-create it with a `DistributedSampler`).
    The state is ``{"batches": n}``, the batches served in the current epoch; after ``load_state_dict``
    the next iteration skips the first n batches of its epoch (their samples are drawn and dropped, so
    the order of the rest is that of an uninterrupted epoch).
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._served = 0
        self._skip = 0

    def __iter__(self) -> Iterator[Any]:  # type: ignore[override]
        return self._batches()

    def _batches(self) -> Iterator[Any]:
        skip, self._skip = self._skip, 0
        self._served = 0
        iterator = super().__iter__()
        for _ in range(skip):
            if next(iterator, _END) is _END:
                return
            self._served += 1
        for batch in iterator:
            self._served += 1
            yield batch

    def state_dict(self) -> dict[str, int]:
        """Batches served so far in the current epoch."""
        return {"batches": self._served}

    def load_state_dict(self, state_dict: dict[str, int]) -> None:
        """Skip ``state_dict["batches"]`` batches at the start of the next iteration."""
        self._skip = int(state_dict.get("batches", 0))


_END = object()
