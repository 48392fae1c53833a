"""Argument checks and small helpers shared by the heat-flow integrators of `cdflow.heat`."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from cdflow.errors import ConfigError, DataError
from cdflow.graph.laplacian import Laplacian


def prepare(x: Tensor, l_mat: Laplacian | Tensor) -> tuple[Tensor, bool, Laplacian]:
    """Validate shapes/dtypes; return x as [N, C] (a member stack [N, K, C] is flattened to [N, K·C] by the
    caller), whether it was 1-D, and L as a `Laplacian`."""
    if not isinstance(x, Tensor) or x.ndim not in (1, 2):
        shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
        raise DataError(f"x must be [N] or [N, C], got {shape}; flatten trailing axes with x.flatten(1)")
    lap = Laplacian.coerce(l_mat)
    if lap.num_nodes != x.shape[0]:
        raise DataError(
            f"L must be N×N with N = x.shape[0] = {x.shape[0]}, got L of shape {tuple(lap.shape)}; "
            "build the Laplacian on the same node set as x"
        )
    if lap.dtype != x.dtype:
        raise DataError(f"L is {lap.dtype} but x is {x.dtype}; cast once with L = L.to(x.dtype)")
    return ((x[:, None], True) if x.ndim == 1 else (x, False)) + (lap,)


def finish(y: Tensor, was_1d: bool) -> Tensor:
    return y[:, 0] if was_1d else y


def as_time(t: float | Tensor, name: str) -> float | Tensor:
    """Validate a non-negative scalar time / step (float or 0-d tensor, grad kept)."""
    if isinstance(t, Tensor):
        if t.numel() != 1:
            raise ConfigError(f"{name} must be a scalar, got a tensor of shape {tuple(t.shape)}")
        val = float(t.detach())
        t = t.reshape(())
    elif isinstance(t, (int, float)) and not isinstance(t, bool):
        val = float(t)
    else:
        raise ConfigError(f"{name} must be a float or a scalar tensor, got {type(t).__name__}")
    if not math.isfinite(val) or val < 0:
        raise ConfigError(
            f"{name} = {val} must be finite and ≥ 0 (negative γ·h is the ill-posed backward heat equation); "
            "parametrise γ = softplus(raw) to keep it non-negative"
        )
    return t


def tval(t: float | Tensor) -> float:
    return float(t.detach()) if isinstance(t, Tensor) else float(t)


def check_steps(n_steps: object, name: str = "n_steps") -> int:
    if isinstance(n_steps, bool) or not isinstance(n_steps, int) or n_steps < 1:
        raise ConfigError(f"{name} must be an int ≥ 1, got {n_steps!r}")
    return n_steps


def default_tol(dtype: torch.dtype) -> float:
    return 1e-10 if dtype == torch.float64 else 1e-5


def safe_div(a: Tensor, b: Tensor, ok: Tensor) -> Tensor:
    """a / b where ok, else 0, with finite gradients everywhere."""
    return torch.where(ok, a / torch.where(ok, b, torch.ones_like(b)), torch.zeros_like(a))
