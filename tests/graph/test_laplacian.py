"""cdflow.graph.Laplacian: the operator the integrators take. Construction against the builders, products
for [N], [N, C] and [N, K, C], the transpose, degrees, the memoised spectral bound, immutability."""

from __future__ import annotations

import math

import pytest
import torch

from cdflow.errors import ConfigError, DataError
from cdflow.graph import (
    LAPLACIAN_KINDS,
    Laplacian,
    SpectralBound,
    is_symmetric,
    knn_gaussian_graph,
    knn_rownorm_graph,
    laplacian_from_edges,
    laplacian_from_weights,
    spectral_bound,
)
from cdflow.sparse import SparseMatrix

F64 = torch.float64


def _edges(n: int = 12, e: int = 30, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Random weighted edges on n nodes (node n−1 isolated, some duplicates)."""
    g = torch.Generator().manual_seed(seed)
    ei = torch.randint(0, n - 1, (2, e), generator=g)
    ei = torch.cat([ei, ei[:, :3]], dim=1)
    return ei, torch.rand(ei.shape[1], generator=g, dtype=F64) + 0.5, n


def _path(n: int = 40) -> Laplacian:
    return Laplacian.from_edges(torch.stack([torch.arange(n - 1), torch.arange(1, n)]), n, "combinatorial", dtype=F64)


def _rownorm(n: int = 30) -> tuple[Laplacian, torch.Tensor]:
    x = torch.randn(n, 2, dtype=F64, generator=torch.Generator().manual_seed(3))
    return Laplacian.from_knn(x, k=6, graph="rownorm", eps=0.7), x


# ----------------------------------------------------------------------------------------- building
@pytest.mark.parametrize("symmetrize", [True, False])
@pytest.mark.parametrize("kind", LAPLACIAN_KINDS)
def test_from_edges_equals_the_builder(kind: str, symmetrize: bool) -> None:
    ei, w, n = _edges()
    lap = Laplacian.from_edges(ei, n, kind, edge_weight=w, symmetrize=symmetrize, dtype=F64)
    ref = laplacian_from_edges(ei, n, kind, edge_weight=w, symmetrize=symmetrize, dtype=F64)
    torch.testing.assert_close(lap.to_dense(), ref.to_dense(), rtol=0, atol=0)
    assert (lap.kind, lap.source, lap.num_nodes, lap.shape, lap.dtype) == (kind, "edges", n, (n, n), F64)
    assert lap.nnz == ref._nnz()
    assert lap.symmetric == (symmetrize and kind != "rw")
    if lap.symmetric:
        assert is_symmetric(ref)
    torch.testing.assert_close(lap.to_torch().to_dense(), ref.to_dense(), rtol=0, atol=0)
    assert lap.to_torch().is_coalesced()


def test_from_edges_default_dtype_is_float32() -> None:
    ei, _, n = _edges()
    assert Laplacian.from_edges(ei, n).dtype == torch.float32


def test_from_knn_equals_the_builders() -> None:
    x = torch.randn(50, 3, dtype=F64, generator=torch.Generator().manual_seed(1))
    gauss = Laplacian.from_knn(x, k=7, k_scale=3)
    ref = laplacian_from_weights(knn_gaussian_graph(x, 7, 3, scale_floor=1e-8), "combinatorial")
    torch.testing.assert_close(gauss.to_dense(), ref.to_dense(), rtol=0, atol=0)
    assert (gauss.kind, gauss.source, gauss.symmetric) == ("combinatorial", "knn", True)
    rown = Laplacian.from_knn(x, k=7, graph="rownorm", eps=0.6)
    p = knn_rownorm_graph(x, 7, 0.6).to_dense()
    torch.testing.assert_close(rown.to_dense(), torch.eye(50, dtype=F64) - p, rtol=1e-14, atol=1e-15)
    assert (rown.kind, rown.source, rown.symmetric) == ("rw", "knn", False)
    sparse_x = Laplacian.from_knn(SparseMatrix.from_tensor(x), k=7, k_scale=3)
    torch.testing.assert_close(sparse_x.to_dense(), gauss.to_dense(), rtol=0, atol=0)
    with pytest.raises(ConfigError, match="'gaussian' or 'rownorm'"):
        Laplacian.from_knn(x, graph="cosine")


def test_from_matrix_and_coerce() -> None:
    sym = _path(10)
    dense = sym.to_dense()
    for given in (dense, sym.to_torch(), SparseMatrix.from_tensor(dense)):
        lap = Laplacian.from_matrix(given)
        assert lap.source == "matrix" and lap.symmetric
        torch.testing.assert_close(lap.to_dense(), dense, rtol=0, atol=0)
    rw = _rownorm()[0]
    assert not Laplacian.from_matrix(rw.to_dense()).symmetric
    assert Laplacian.coerce(sym) is sym
    wrapped = Laplacian.coerce(dense)
    assert isinstance(wrapped, Laplacian) and torch.equal(wrapped.to_dense(), dense)
    with pytest.raises(DataError, match="expected a cdflow.graph.Laplacian"):
        Laplacian.coerce([[1.0]])
    with pytest.raises(DataError, match="square"):
        Laplacian.from_matrix(torch.ones(3, 4))
    bad = dense.clone()
    bad[0, 1] = float("nan")
    with pytest.raises(DataError, match="non-finite"):
        Laplacian.from_matrix(bad, symmetric=False)


def test_describe_names_the_source() -> None:
    ei, w, n = _edges()
    lap = Laplacian.from_edges(ei, n, "gcn", edge_weight=w)
    assert lap.describe() == f"edges graph, gcn Laplacian, {n} nodes, {lap.nnz} non-zeros"
    assert "knn graph" in repr(_rownorm()[0])


# ----------------------------------------------------------------------------------------- products
@pytest.mark.parametrize("shape", [(12,), (12, 5), (12, 4, 3)])
@pytest.mark.parametrize("kind", ["gcn", "rw"])
def test_products_for_every_state_shape(kind: str, shape: tuple[int, ...]) -> None:
    ei, w, n = _edges()
    lap = Laplacian.from_edges(ei, n, kind, edge_weight=w, dtype=F64)
    x = torch.randn(*shape, dtype=F64, generator=torch.Generator().manual_seed(2))
    y = lap @ x
    assert y.shape == x.shape
    ref = (lap.to_dense() @ x.reshape(n, -1)).reshape(shape)
    torch.testing.assert_close(y, ref, rtol=1e-13, atol=1e-13)
    torch.testing.assert_close(lap.matmul(x), y, rtol=0, atol=0)


def test_product_gradients() -> None:
    ei, w, n = _edges()
    lap = Laplacian.from_edges(ei, n, "sym", edge_weight=w, dtype=F64)
    x = torch.randn(n, 3, dtype=F64, requires_grad=True)
    torch.autograd.gradcheck(lambda z: lap @ z, (x,))


def test_product_with_the_wrong_node_count() -> None:
    with pytest.raises(DataError, match="has 40 nodes but the state has 7 rows"):
        _path() @ torch.zeros(7, 2, dtype=F64)


def test_transpose_of_a_rownorm_knn_laplacian() -> None:
    lap, _ = _rownorm()
    dense = lap.to_dense()
    assert not torch.allclose(dense, dense.T)
    lt = lap.T
    assert lap.T is lt  # built once
    assert not lt.symmetric and (lt.kind, lt.source) == (lap.kind, lap.source)
    torch.testing.assert_close(lt.to_dense(), dense.T, rtol=0, atol=0)
    torch.testing.assert_close(lt.T.to_dense(), dense, rtol=0, atol=0)
    y = torch.randn(30, 2, 3, dtype=F64, generator=torch.Generator().manual_seed(4))
    torch.testing.assert_close(lt @ y, torch.einsum("ji,jkc->ikc", dense, y), rtol=1e-13, atol=1e-13)
    # ⟨L x, y⟩ = ⟨x, Lᵀ y⟩
    x = torch.randn(30, 4, dtype=F64, generator=torch.Generator().manual_seed(5))
    z = torch.randn(30, 4, dtype=F64, generator=torch.Generator().manual_seed(6))
    torch.testing.assert_close(((lap @ x) * z).sum(), (x * (lt @ z)).sum(), rtol=1e-12, atol=1e-12)
    sym = _path()
    assert sym.T is sym


def test_degrees_are_the_diagonal() -> None:
    ei, w, n = _edges()
    for kind in LAPLACIAN_KINDS:
        lap = Laplacian.from_edges(ei, n, kind, edge_weight=w, dtype=F64)
        torch.testing.assert_close(lap.degrees(), torch.diagonal(lap.to_dense()), rtol=0, atol=0)
    comb = Laplacian.from_edges(ei, n, "combinatorial", edge_weight=w, dtype=F64)
    a = -(comb.to_dense() - torch.diag(comb.degrees()))
    torch.testing.assert_close(comb.degrees(), a.sum(1), rtol=1e-13, atol=1e-13)


def test_differentiable_knn_values() -> None:
    """from_knn(differentiable=True): L @ y differentiates w.r.t. the features, as the dense builder does."""
    feat = torch.randn(20, 2, dtype=F64, generator=torch.Generator().manual_seed(7))
    y = torch.randn(20, 3, dtype=F64, generator=torch.Generator().manual_seed(8))
    grads = []
    for ours in (True, False):
        f = feat.clone().requires_grad_()
        if ours:
            lap = Laplacian.from_knn(f, 5, 3, differentiable=True)
            assert lap.requires_grad
            out = lap @ y
        else:
            out = laplacian_from_weights(knn_gaussian_graph(f, 5, 3, differentiable=True)).to_dense() @ y
        out.pow(2).sum().backward()
        grads.append(f.grad)
    torch.testing.assert_close(grads[0], grads[1], rtol=1e-12, atol=1e-12)
    assert not Laplacian.from_knn(feat.requires_grad_(), 5, 3).requires_grad


# ------------------------------------------------------------------------------------ spectral bound
def test_spectral_bound_of_the_path() -> None:
    n = 40
    lap = _path(n)
    exact = 2.0 + 2.0 * math.cos(math.pi / n)
    b = lap.spectral_bound()
    assert isinstance(b, SpectralBound)
    assert abs(b.estimate - exact) < 1e-8
    assert exact <= b.upper <= b.gershgorin + 1e-12
    assert b.gershgorin == pytest.approx(4.0)
    assert b.explicit_step_limit == pytest.approx(2.0 / exact)
    assert lap.lam_max == b.upper


def test_spectral_bound_is_memoised_and_its_products_counted_once(monkeypatch) -> None:
    calls = []
    original = SparseMatrix.__matmul__

    def counting(self, w):
        calls.append(w.shape)
        return original(self, w)

    monkeypatch.setattr(SparseMatrix, "__matmul__", counting)
    lap = _path()
    assert not lap.bound_known
    first = lap.spectral_bound()
    assert lap.bound_known and len(calls) == first.products > 0
    calls.clear()
    assert lap.spectral_bound() is first and spectral_bound(lap) is first and lap.lam_max == first.upper
    assert calls == []
    # other Lanczos settings are computed afresh and leave the memo alone
    other = spectral_bound(lap, n_iter=10)
    assert other is not first and len(calls) == other.products == 10
    assert lap.spectral_bound() is first
    # a cast keeps the bound; the float32 copy does not recompute it
    calls.clear()
    lap32 = lap.to(torch.float32)
    assert lap32 is not lap and lap32.bound_known and lap32.spectral_bound() is first and calls == []
    assert lap.to(F64) is lap


def test_spectral_bound_of_a_plain_tensor_and_of_a_non_symmetric_laplacian() -> None:
    lap = _path()
    b = spectral_bound(lap.to_torch())
    assert b.estimate == pytest.approx(lap.spectral_bound().estimate, rel=1e-12)
    with pytest.raises(DataError, match="symmetric"):
        _rownorm()[0].spectral_bound()
    with pytest.raises(ConfigError, match="n_iter"):
        spectral_bound(lap, n_iter=0)


# -------------------------------------------------------------------------------------- immutability
def test_laplacian_is_immutable() -> None:
    lap = _path(5)
    dense = lap.to_dense()
    for name, value in (("_matrix", None), ("kind", "sym"), ("symmetric", False), ("_bound", None),
                        ("anything", 1)):
        with pytest.raises(AttributeError):
            setattr(lap, name, value)
    for name in ("_matrix", "_bound", "_kind"):
        with pytest.raises(AttributeError):
            delattr(lap, name)
    with pytest.raises(AttributeError):
        lap.__dict__  # noqa: B018 — slots only: no per-object attribute dictionary
    assert torch.equal(lap.to_dense(), dense) and lap.kind == "combinatorial" and lap.symmetric
