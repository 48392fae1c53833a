"""Tests of cdflow.graph.build: Laplacian kinds against dense formulas, kNN graphs against brute force."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from cdflow.errors import ConfigError, DataError
from cdflow.graph import (
    LAPLACIAN_KINDS,
    adjacency_from_edges,
    is_symmetric,
    knn_gaussian_graph,
    knn_rownorm_graph,
    laplacian_from_edges,
    laplacian_from_weights,
    random_walk_operator,
    spectral_bound,
)

F64 = torch.float64


def _random_graph(n: int = 12, e: int = 30, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Random weighted edge list on n nodes; node n−1 is isolated; some duplicate edges."""
    g = torch.Generator().manual_seed(seed)
    ei = torch.randint(0, n - 1, (2, e), generator=g)
    ei = ei[:, ei[0] != ei[1]]
    ei = torch.cat([ei, ei[:, :3]], dim=1)  # duplicates
    w = torch.rand(ei.shape[1], generator=g, dtype=F64) + 0.5
    w[-3:] = w[:3]
    return ei, w, n


def _dense_adjacency(ei: torch.Tensor, w: torch.Tensor, n: int) -> torch.Tensor:
    a = torch.zeros(n, n, dtype=F64)
    for (i, j), v in zip(ei.T.tolist(), w.tolist()):
        a[i, j] = max(a[i, j].item(), v)
        a[j, i] = max(a[j, i].item(), v)
    return a


def _dense_laplacian(a: torch.Tensor, kind: str) -> torch.Tensor:
    n = a.shape[0]
    if kind == "gcn":
        at = a + torch.eye(n, dtype=F64)
        dis = at.sum(1).pow(-0.5)
        ah = dis[:, None] * at * dis[None, :]
        return torch.diag(ah.sum(1)) - ah
    d = a.sum(1)
    nz = (d > 0).to(F64)
    dsafe = torch.where(d > 0, d, torch.ones_like(d))
    if kind == "combinatorial":
        return torch.diag(d) - a
    if kind == "sym":
        dis = nz / dsafe.sqrt()
        return torch.diag(nz) - dis[:, None] * a * dis[None, :]
    return torch.diag(nz) - (nz / dsafe)[:, None] * a


@pytest.mark.parametrize("kind", LAPLACIAN_KINDS)
def test_laplacian_matches_dense_construction(kind: str) -> None:
    ei, w, n = _random_graph()
    lap = laplacian_from_edges(ei, n, kind, edge_weight=w)
    assert lap.is_sparse and lap.is_coalesced()
    ref = _dense_laplacian(_dense_adjacency(ei, w, n), kind)
    torch.testing.assert_close(lap.to_dense(), ref, rtol=1e-12, atol=1e-12)
    assert torch.isfinite(lap.values()).all()
    assert (lap.to_dense()[n - 1] == 0).all(), "isolated node must have a zero row"


@pytest.mark.parametrize("kind", ["combinatorial", "sym", "gcn"])
def test_symmetric_kinds_are_symmetric_psd(kind: str) -> None:
    ei, w, n = _random_graph(seed=1)
    lap = laplacian_from_edges(ei, n, kind, edge_weight=w)
    assert is_symmetric(lap)
    assert torch.linalg.eigvalsh(lap.to_dense()).min() >= -1e-10


def test_combinatorial_annihilates_constants_and_rw_rows_sum_to_one() -> None:
    ei, w, n = _random_graph(seed=2)
    lap = laplacian_from_edges(ei, n, "combinatorial", edge_weight=w)
    assert torch.sparse.mm(lap, torch.ones(n, 1, dtype=F64)).abs().max() < 1e-12
    p = random_walk_operator(adjacency_from_edges(ei, n, w))
    rows = torch.sparse.mm(p, torch.ones(n, 1, dtype=F64)).flatten()
    torch.testing.assert_close(rows[:-1], torch.ones(n - 1, dtype=F64))
    assert rows[-1] == 0  # isolated node: zero row, no NaN
    lrw = laplacian_from_edges(ei, n, "rw", edge_weight=w).to_dense()
    torch.testing.assert_close(lrw[:-1], (torch.eye(n, dtype=F64) - p.to_dense())[:-1])


def test_duplicates_dropped_and_symmetrize_flag() -> None:
    ei = torch.tensor([[0, 0, 0, 1], [1, 1, 2, 2]])
    a = adjacency_from_edges(ei, 3, dtype=F64).to_dense()
    torch.testing.assert_close(a, torch.tensor([[0, 1, 1], [1, 0, 1], [1, 1, 0]], dtype=F64))
    directed = adjacency_from_edges(ei, 3, symmetrize=False, dtype=F64).to_dense()
    assert directed[0, 1] == 1 and directed[1, 0] == 0


def test_path_graph_spectral_bound() -> None:
    n = 40
    ei = torch.stack([torch.arange(n - 1), torch.arange(1, n)])
    lap = laplacian_from_edges(ei, n, "combinatorial", dtype=F64)
    exact = 2.0 + 2.0 * math.cos(math.pi / n)
    b = spectral_bound(lap)
    assert abs(b.estimate - exact) < 1e-8
    assert exact <= b.upper <= b.gershgorin + 1e-12
    assert b.gershgorin == pytest.approx(4.0)
    assert b.explicit_step_limit == pytest.approx(2.0 / exact)


# ------------------------------------------------------------------------------------------------ kNN
def _reference_gaussian(x: torch.Tensor, k: int, k_scale: int, strict: bool) -> torch.Tensor:
    """Dense Diff-ResNet recipe (N×N): keep the k smallest distances (self counted) — or, strict, those
    below the k-th smallest (the reference code's `distance < kthvalue`) — Gaussian with local scale."""
    dist = torch.cdist(x, x)
    kth = torch.kthvalue(dist, k, dim=1, keepdim=True).values
    scale = torch.kthvalue(dist, k_scale, dim=1, keepdim=True).values
    keep = dist < kth if strict else dist <= kth
    w = torch.where(keep, torch.exp(-((dist / scale) ** 2)), torch.zeros_like(dist))
    dis = w.sum(1).pow(-0.5)
    w = dis[:, None] * w * dis[None, :]
    return (w + w.T) / 2


@pytest.mark.parametrize("strict", [False, True])
@pytest.mark.parametrize(("k", "k_scale"), [(8, 4), (5, 7)])
def test_knn_gaussian_matches_dense_reference(k: int, k_scale: int, strict: bool) -> None:
    x = torch.randn(70, 5, dtype=F64, generator=torch.Generator().manual_seed(3))
    w = knn_gaussian_graph(x, k, k_scale, strict_kth=strict, chunk_size=9)
    assert w.is_coalesced() and is_symmetric(w)
    ref = _reference_gaussian(x, k, k_scale, strict)
    torch.testing.assert_close(w.to_dense(), ref, rtol=1e-10, atol=1e-12)


def test_knn_neighbours_match_sklearn_and_chunking() -> None:
    from sklearn.neighbors import NearestNeighbors

    x = torch.randn(300, 16, generator=torch.Generator().manual_seed(4))
    k = 6
    w = knn_gaussian_graph(x, k, 3, chunk_size=37)
    nn_idx = NearestNeighbors(n_neighbors=k).fit(x.numpy()).kneighbors(x.numpy(), return_distance=False)
    expected = np.zeros((300, 300), dtype=bool)
    expected[np.repeat(np.arange(300), k), nn_idx.reshape(-1)] = True
    expected |= expected.T
    assert np.array_equal(w.to_dense().numpy() > 0, expected)
    torch.testing.assert_close(w.to_dense(), knn_gaussian_graph(x, k, 3).to_dense())


def test_knn_float32_far_from_origin_matches_float64() -> None:
    # ‖a‖² + ‖b‖² − 2ab cancels catastrophically in float32 at offset 1000 unless the data are centred
    x = torch.randn(300, 8, generator=torch.Generator().manual_seed(9)) * 0.01 + 1000.0
    w32, w64 = knn_gaussian_graph(x, 8, 4), knn_gaussian_graph(x.double(), 8, 4)
    assert torch.equal(w32.to_dense() > 0, w64.to_dense() > 0)


def test_knn_gaussian_laplacian_psd_conserves_mass() -> None:
    x = torch.randn(80, 3, dtype=F64, generator=torch.Generator().manual_seed(5))
    lap = laplacian_from_weights(knn_gaussian_graph(x))
    assert is_symmetric(lap)
    assert torch.linalg.eigvalsh(lap.to_dense()).min() >= -1e-10
    assert torch.sparse.mm(lap, torch.ones(80, 1, dtype=F64)).abs().max() < 1e-12


def test_knn_rownorm_matches_toy_recipe() -> None:
    x = torch.randn(60, 2, dtype=F64, generator=torch.Generator().manual_seed(6))
    k, eps = 10, 0.5
    p = knn_rownorm_graph(x, k, eps, chunk_size=11)
    w = torch.exp(-(torch.cdist(x, x) ** 2) / eps**2)
    top = torch.topk(w, k, dim=1).indices
    ref = torch.zeros_like(w).scatter(1, top, w.gather(1, top))
    ref = ref / ref.sum(1, keepdim=True)
    torch.testing.assert_close(p.to_dense(), ref, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(torch.sparse.sum(p, 1).to_dense(), torch.ones(60, dtype=F64))
    lap = laplacian_from_weights(p)  # D = I for a row-stochastic P, so this is I − P
    torch.testing.assert_close(lap.to_dense(), torch.eye(60, dtype=F64) - ref)


def test_knn_differentiable_flag() -> None:
    x = torch.randn(14, 2, dtype=F64, generator=torch.Generator().manual_seed(7), requires_grad=True)
    assert not knn_gaussian_graph(x, 4, 3).requires_grad
    assert not knn_rownorm_graph(x, 4, 1.0).requires_grad
    torch.autograd.gradcheck(lambda z: knn_gaussian_graph(z, 4, 3, differentiable=True).to_dense(), (x,))
    torch.autograd.gradcheck(lambda z: knn_rownorm_graph(z, 4, 1.0, differentiable=True).to_dense(), (x,))
    lap = laplacian_from_weights(knn_gaussian_graph(x, 4, 3, differentiable=True))
    torch.sparse.mm(lap, x.detach()).pow(2).sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


def test_duplicate_points_zero_scale() -> None:
    x = torch.randn(20, 3, generator=torch.Generator().manual_seed(8))
    x[5:9] = x[4]  # point 4 has four exact duplicates
    with pytest.raises(DataError, match=r"s_i = 0 .*rows 4, 5, 6, 7, 8.*scale_floor"):
        knn_gaussian_graph(x, 6, 4)
    w = knn_gaussian_graph(x, 6, 4, scale_floor=1e-6)
    assert torch.isfinite(w.values()).all() and is_symmetric(w, atol=1e-6)


# ----------------------------------------------------------------------------------------- bad inputs
_X = torch.randn(10, 3)
_X_NAN = _X.clone()
_X_NAN[[2, 7], 1] = float("nan")


@pytest.mark.parametrize(
    ("call", "error", "match"),
    [
        (lambda: knn_gaussian_graph(_X, k=11), DataError, r"k=11 exceeds .* N=10"),
        (lambda: knn_gaussian_graph(_X, k=4, k_scale=12), DataError, r"k_scale=12 exceeds .* N=10"),
        (lambda: knn_gaussian_graph(_X_NAN), DataError, r"NaN/Inf in 2 rows \(2, 7\)"),
        (lambda: knn_rownorm_graph(_X_NAN, 3, 1.0), DataError, r"rows \(2, 7\)"),
        (lambda: knn_gaussian_graph(_X, k=1), ConfigError, "k must be an int ≥ 2"),
        (lambda: knn_gaussian_graph(_X, k_scale=1), ConfigError, "k_scale must be an int ≥ 2"),
        (lambda: knn_gaussian_graph(_X[0]), DataError, r"\[N, F\]"),
        (lambda: knn_gaussian_graph(_X, chunk_size=0), ConfigError, "chunk_size"),
        (lambda: knn_rownorm_graph(_X, 3, eps=0.0), ConfigError, "eps must be a positive"),
        (lambda: laplacian_from_edges(torch.tensor([[0, 5]]).T, 3), DataError, r"num_nodes=3"),
        (lambda: laplacian_from_edges(torch.tensor([[0, 1]]), 3), DataError, r"shape \[2, E\]"),
        (lambda: laplacian_from_edges(torch.tensor([[0.0], [1.0]]), 3), DataError, "integer"),
        (lambda: laplacian_from_edges(torch.tensor([[0], [1]]), 3, "normalized"), ConfigError, "valid kinds"),
        (
            lambda: laplacian_from_edges(torch.tensor([[0], [1]]), 3, edge_weight=torch.tensor([-1.0])),
            DataError,
            "negative",
        ),
        (
            lambda: spectral_bound(laplacian_from_edges(torch.tensor([[0, 1], [1, 2]]), 3, "rw")),
            DataError,
            "symmetric",
        ),
    ],
)
def test_bad_inputs(call, error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        call()
