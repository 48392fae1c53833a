"""Checkpoints that are either the old file or the new one, never half of one.

`AtomicCheckpointIO` writes a checkpoint to a hidden temporary file next to its target, flushes it to
disk (fsync), then renames it over the target with `os.replace` (atomic on POSIX and Windows within one
file system) and syncs the folder. A process killed while saving leaves the previous ``last.ckpt``
intact, plus at most a stray ``.last.ckpt.<pid>.<random>.tmp``. Temporary files are unique per process
(its PID and a random part); a process removes its own on failure, and a save removes only the strays
of processes that are gone (and those of the old, PID-less naming), never a running process's file.

It also refuses to write weights that hold NaN or Inf (`TrainingDiverged`), so a diverged run cannot
replace its last good checkpoint with a broken one. The ``cdflow`` CLI installs it by default; with the
Python API: ``Trainer(plugins=[AtomicCheckpointIO()])``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
from pathlib import Path
from typing import Any

import torch
from lightning.fabric.utilities.types import _PATH
from lightning.pytorch.plugins.io import TorchCheckpointIO

from cdflow.training.fault import TrainingDiverged

log = logging.getLogger(__name__)


def nonfinite_entries(state_dict: dict[str, Any]) -> list[str]:
    """Keys of the floating-point tensors of `state_dict` that hold NaN or Inf."""
    return [key for key, value in state_dict.items()
            if isinstance(value, torch.Tensor) and value.is_floating_point() and not bool(torch.isfinite(value).all())]


def _fsync_dir(folder: Path) -> None:
    """Make a rename in `folder` durable (a no-op where folders cannot be opened, e.g. Windows)."""
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def pid_alive(pid: int) -> bool:
    """Whether a process `pid` exists (on this machine)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # EPERM: it exists, owned by another user
        return True
    return True


def _writer_pid(tmp: Path, target: str) -> int | None:
    """The PID in a temporary name ``.<target>.<pid>.<random>.tmp``; None for the old ``.<target>.<random>.tmp``."""
    middle = tmp.name[len(target) + 2 : -len(".tmp")]
    pid, sep, _ = middle.partition(".")
    return int(pid) if sep and pid.isdigit() else None


def remove_stale_temporaries(path: str | os.PathLike[str]) -> list[Path]:
    """Remove the temporary files of `path` left by processes that are gone; return them.

    A live process's temporary file (this one's included) is never touched: it may be renamed into place
    any moment. A write that fails removes its own temporary file.
    """
    path = Path(path)
    removed = []
    for tmp in path.parent.glob(f".{path.name}.*.tmp"):
        pid = _writer_pid(tmp, path.name)
        if pid is None or not pid_alive(pid):
            tmp.unlink(missing_ok=True)
            removed.append(tmp)
    return removed


def atomic_torch_save(obj: Any, path: str | os.PathLike[str]) -> Path:
    """`torch.save` `obj` to `path` through a temporary file and `os.replace`; return the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(path)  # left by a process killed mid-write
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.{os.getpid()}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            torch.save(obj, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)
    return path


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's `TorchCheckpointIO` with atomic writes and a refusal to save non-finite weights.

    Args:
        refuse_nonfinite: raise `TrainingDiverged` instead of writing a state dict with NaN/Inf tensors.
    """

    def __init__(self, refuse_nonfinite: bool = True) -> None:
        super().__init__()
        self.refuse_nonfinite = refuse_nonfinite

    def save_checkpoint(self, checkpoint: dict[str, Any], path: _PATH, storage_options: Any | None = None) -> None:
        if storage_options is not None:
            raise TypeError(f"{type(self).__name__} takes no storage_options, got {storage_options!r}")
        if self.refuse_nonfinite:
            bad = nonfinite_entries(checkpoint.get("state_dict", {}))
            if bad:
                raise TrainingDiverged(
                    f"refusing to write {path}: the weights hold NaN/Inf in {', '.join(bad[:5])}"
                    f"{' and more' if len(bad) > 5 else ''}; the previous checkpoint is kept. The run diverged: "
                    "lower the learning rate or use --model.on_failure skip"
                )
        if "://" in str(path):  # remote storage (fsspec): Lightning's transactional write
            super().save_checkpoint(checkpoint, path)
            return
        atomic_torch_save(checkpoint, path)
        log.debug("checkpoint written atomically: %s", path)
