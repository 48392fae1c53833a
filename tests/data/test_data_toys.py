"""2-D toy sets: shapes, balance, determinism and geometry of the Diff-ResNet recipes."""

from __future__ import annotations

import math

import pytest
import torch

from cdflow.data.toys import XOR_CENTRES, make_circles, make_spirals, make_toy, make_xor
from cdflow.errors import DataError

SIZES = {"moons": 1000, "circles": 1000, "spirals": 1000, "xor": 400}


@pytest.mark.parametrize("name", sorted(SIZES))
def test_shape_balance_determinism(name: str) -> None:
    x, y = make_toy(name, seed=7)  # type: ignore[arg-type]
    n = SIZES[name]
    assert x.shape == (n, 2) and x.dtype == torch.float32
    assert y.shape == (n,) and y.dtype == torch.long
    assert torch.bincount(y).tolist() == [n // 2, n // 2]
    assert bool(torch.isfinite(x).all())
    x2, y2 = make_toy(name, seed=7)  # type: ignore[arg-type]
    assert torch.equal(x, x2) and torch.equal(y, y2)
    x3, _ = make_toy(name, seed=8)  # type: ignore[arg-type]
    assert not torch.equal(x, x3)


def test_circles_radii() -> None:
    x, y = make_circles(seed=0)
    r = x.norm(dim=1)
    assert abs(float(r[y == 0].mean()) - 2.0) < 0.02 and abs(float(r[y == 1].mean()) - 1.0) < 0.02
    assert float((r[y == 0] - 2).abs().max()) < 0.3


def test_spirals_follow_r_equals_one_plus_theta() -> None:
    x, y = make_spirals(noise=0.0, seed=0)
    theta = torch.linspace(0, 2 * math.pi, 500)
    arm = (1 + theta)[:, None] * torch.stack([theta.cos(), theta.sin()], dim=1)
    torch.testing.assert_close(x[y == 0], arm, atol=1e-5, rtol=0)
    torch.testing.assert_close(x[y == 1], -arm, atol=1e-5, rtol=0)
    noisy, _ = make_spirals(seed=0)
    assert 0.08 < float((noisy - x).std()) < 0.12


def test_xor_disks() -> None:
    x, y = make_xor(seed=0)
    for disk, (cx, cy) in enumerate(XOR_CENTRES):
        block = x[100 * disk : 100 * (disk + 1)]
        dist = (block - torch.tensor([cx, cy])).norm(dim=1)
        assert float(dist.max()) <= 0.75 + 1e-6
        assert float((dist < 0.75 / math.sqrt(2)).float().mean()) == pytest.approx(0.5, abs=0.15)  # uniform
        assert set(y[100 * disk : 100 * (disk + 1)].tolist()) == {0 if disk < 2 else 1}


def test_unknown_toy() -> None:
    with pytest.raises(DataError, match="Unknown toy"):
        make_toy("swissroll", seed=0)  # type: ignore[arg-type]
