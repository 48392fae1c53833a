"""Test set-up: quiet threads on 2 cores, offline W&B, and the shared data root."""

import os
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")
os.environ.setdefault("CDFLOW_DATA", str(Path(__file__).resolve().parents[2] / "shared" / "data"))

import torch  # noqa: E402

torch.set_num_threads(min(2, torch.get_num_threads()))
