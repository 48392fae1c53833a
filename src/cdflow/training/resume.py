"""What a checkpoint needs, beyond Lightning's own state, for a resumed run to continue exactly: RNG states.

Lightning restores weights, optimiser, schedulers, loop counters and (with `cdflow.data.resumable`) the
position in the epoch, but not the global random generators: after a resume, dropout would draw other
masks than the uninterrupted run. `rng_state` is stored in the checkpoint (plain tensors and numbers, so
``torch.load(weights_only=True)`` still reads it) and `restore_rng_state` puts it back.
"""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import torch

KEY = "cdflow_rng"


def rng_state() -> dict[str, Any]:
    """The states of Python's, NumPy's and torch's (CPU and CUDA) global generators."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": (kind, torch.from_numpy(np.asarray(keys, dtype=np.int64)), int(pos), int(has_gauss), float(cached)),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    """Put back what `rng_state` returned (the CUDA states only where the same devices exist)."""
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    cuda = state.get("cuda")
    if cuda is not None and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda)
