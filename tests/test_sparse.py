"""cdflow.sparse.SparseMatrix: products and gradients against dense algebra (also w.r.t. the values), the
transpose, the per-member products, and dropout on the non-zeros (unbiased, independent per member)."""

from __future__ import annotations

import pytest
import torch

from cdflow.errors import DataError
from cdflow.models.layers import keep_mask
from cdflow.sparse import SparseMatrix

F64 = torch.float64


def bag_of_words(n: int = 40, f: int = 30, seed: int = 0) -> torch.Tensor:
    """Binary, row-normalised sparse features (about 15% non-zero, one empty row and one empty column)."""
    gen = torch.Generator().manual_seed(seed)
    x = (torch.rand(n, f, generator=gen) < 0.15).to(F64)
    x[3] = 0.0
    x[:, 7] = 0.0
    return x / x.sum(1, keepdim=True).clamp_min(1.0)


def _entries(a: SparseMatrix, vals: torch.Tensor) -> torch.Tensor:
    """The dense matrix with a's pattern and the given values, by plain autograd."""
    return torch.zeros(a.shape, dtype=vals.dtype).index_put((a.row_ids(), a.cols), vals, accumulate=True)


@pytest.mark.filterwarnings("ignore:Sparse CSR tensor support is in beta state")
def test_construction_and_conversion() -> None:
    x = bag_of_words()
    for given in (x, x.to_sparse(), x.to_sparse_csr()):
        a = SparseMatrix.from_tensor(given)
        assert a.shape == (40, 30) and a.nnz == int((x != 0).sum()) and a.dtype == F64
        torch.testing.assert_close(a.to_dense(), x, rtol=0, atol=0)
        torch.testing.assert_close(a.to_torch().to_dense(), x, rtol=0, atol=0)
    a = SparseMatrix.from_tensor(x)
    torch.testing.assert_close(a.row_sums(), x.sum(1), rtol=1e-15, atol=0)
    sq = SparseMatrix.from_tensor(x[:30])
    torch.testing.assert_close(sq.diagonal(), torch.diagonal(x[:30]), rtol=0, atol=0)
    assert a.to(F64) is a
    a32 = a.to(torch.float32)
    assert a32.dtype == torch.float32 and a32.cols is a.cols
    torch.testing.assert_close(a.with_values(2 * a.vals).to_dense(), 2 * x, rtol=0, atol=0)
    # from_coo in any order equals the coalesced build
    row, col = x.nonzero().T
    perm = torch.randperm(row.numel(), generator=torch.Generator().manual_seed(1))
    b = SparseMatrix.from_coo(row[perm], col[perm], x[row, col][perm], (40, 30))
    torch.testing.assert_close(b.to_dense(), x, rtol=0, atol=0)


@pytest.mark.parametrize("width", [5, 300])
def test_products_and_weight_gradients_match_dense(width: int) -> None:
    x = bag_of_words()
    a = SparseMatrix.from_tensor(x)
    w = torch.randn(30, width, dtype=F64, requires_grad=True)
    g = torch.randn(40, width, dtype=F64)
    (a.mm(w) * g).sum().backward()
    torch.testing.assert_close(a.mm(w.detach()), x @ w.detach())
    torch.testing.assert_close(w.grad, x.t() @ g)
    torch.testing.assert_close(a @ w.detach(), a.mm(w.detach()), rtol=0, atol=0)


def test_matmul_over_the_first_axis() -> None:
    x = bag_of_words()
    a = SparseMatrix.from_tensor(x)
    v = torch.randn(30, dtype=F64)
    torch.testing.assert_close(a @ v, x @ v)
    w3 = torch.randn(30, 4, 5, dtype=F64)
    torch.testing.assert_close(a @ w3, torch.einsum("nf,fkc->nkc", x, w3))
    torch.testing.assert_close(a @ w3.float(), (x @ w3.reshape(30, -1)).reshape(40, 4, 5).float())
    with pytest.raises(DataError, match=r"A is \[40, 30\]"):
        a.mm(torch.zeros(29, 2, dtype=F64))


def test_gradcheck_weights_and_values() -> None:
    a = SparseMatrix.from_tensor(bag_of_words(12, 9, seed=2))
    w = torch.randn(9, 4, dtype=F64, requires_grad=True)
    vals = a.vals.clone().requires_grad_()
    torch.autograd.gradcheck(lambda w_, v_: a.with_values(v_).mm(w_), (w, vals))


def test_value_gradients_match_dense_autograd() -> None:
    """Ā_e = ⟨Ȳ_row(e), W_col(e)⟩, against the dense matrix built from the same leaf values."""
    a = SparseMatrix.from_tensor(bag_of_words())
    w = torch.randn(30, 6, dtype=F64)
    g = torch.randn(40, 6, dtype=F64)
    grads = []
    for dense in (False, True):
        vals = a.vals.clone().requires_grad_()
        out = _entries(a, vals) @ w if dense else a.with_values(vals) @ w
        (out * g).sum().backward()
        grads.append(vals.grad)
    torch.testing.assert_close(grads[0], grads[1], rtol=1e-13, atol=1e-13)


def test_transpose() -> None:
    x = bag_of_words()
    a = SparseMatrix.from_tensor(x)
    t = a.transpose()
    assert t.shape == (30, 40) and t.nnz == a.nnz
    torch.testing.assert_close(t.to_dense(), x.T, rtol=0, atol=0)
    torch.testing.assert_close(t.transpose().to_dense(), x, rtol=0, atol=0)
    g = torch.randn(40, 3, dtype=F64)
    torch.testing.assert_close(t @ g, x.T @ g)
    # products with the transpose differentiate w.r.t. the original values
    w = torch.randn(40, 3, dtype=F64)
    grads = []
    for dense in (False, True):
        vals = a.vals.clone().requires_grad_()
        out = _entries(a, vals).T @ w if dense else a.with_values(vals).transpose() @ w
        (out * torch.arange(90, dtype=F64).view(30, 3)).sum().backward()
        grads.append(vals.grad)
    torch.testing.assert_close(grads[0], grads[1], rtol=1e-13, atol=1e-13)
    # and w.r.t. the operand
    torch.autograd.gradcheck(lambda z: t.mm(z), (torch.randn(40, 2, dtype=F64, requires_grad=True),))


def test_mm_stacked() -> None:
    x = bag_of_words()
    a = SparseMatrix.from_tensor(x)
    w = torch.randn(3, 30, 4, dtype=F64, requires_grad=True)
    out = a.mm_stacked(w)
    torch.testing.assert_close(out, torch.einsum("nf,kfh->nkh", x, w))
    g = torch.randn(40, 3, 4, dtype=F64)
    (out * g).sum().backward()
    torch.testing.assert_close(w.grad, torch.einsum("nf,nkh->kfh", x, g))


def test_mm_stacked_dropout_equals_the_masked_dense_product() -> None:
    """Member k sees A with its own mask on the non-zeros (drawn as keep_mask((K, nnz), p)): outputs and
    weight gradients equal the dense products with the same masks."""
    x = bag_of_words()
    a = SparseMatrix.from_tensor(x)
    p, k = 0.4, 3
    w = torch.randn(k, 30, 4, dtype=F64, requires_grad=True)
    g = torch.randn(40, k, 4, dtype=F64)
    torch.manual_seed(7)
    out = a.mm_stacked_dropout(w, p)
    (out * g).sum().backward()
    torch.manual_seed(7)
    keep = keep_mask((k, a.nnz), p)
    w_ref = w.detach().clone().requires_grad_()
    ref = torch.stack([_entries(a, a.vals * keep[m] / (1 - p)) @ w_ref[m] for m in range(k)], dim=1)
    (ref * g).sum().backward()
    torch.testing.assert_close(out, ref, rtol=1e-13, atol=1e-13)
    torch.testing.assert_close(w.grad, w_ref.grad, rtol=1e-13, atol=1e-13)
    assert not torch.equal(keep[0], keep[1])


def test_mm_stacked_dropout_is_independent_per_member_and_unbiased() -> None:
    """With W_k = I the output is member k's dropped A, so its non-zeros are the keep indicators. Over 400 draws
    (M = 400·nnz indicators per member): each entry is kept with probability 1 − p (within 4 standard errors);
    two members' indicators are uncorrelated (|r| ≤ 4/√M, the Monte Carlo error of r under independence); the
    Monte Carlo mean of dropout_k(A) W_k is A W_k within 5 exact standard errors, element by element, and each
    element's variance is the p/(1−p) Σ_f a_nf² w_kfh² of independently dropped entries (within −30% / +40%)."""
    x = bag_of_words()
    a = SparseMatrix.from_tensor(x)
    p, k, n_draws = 0.5, 3, 400
    torch.manual_seed(0)
    eye = torch.eye(30, dtype=F64).expand(k, 30, 30).contiguous()
    rows, cols = a.row_ids(), a.cols
    keep = torch.stack([a.mm_stacked_dropout(eye, p)[rows, :, cols] != 0 for _ in range(n_draws)])  # [draws, nnz, K]
    keep = keep.reshape(-1, k).double()
    m = keep.shape[0]
    assert (keep.mean() - (1 - p)).abs() <= 4 * (p * (1 - p) / keep.numel()) ** 0.5
    corr = torch.corrcoef(keep.T)
    for i in range(k):
        for j in range(i + 1, k):
            assert corr[i, j].abs() <= 4 / m**0.5, f"members {i}, {j}: keep correlation {corr[i, j]:.4f}"
    w = torch.randn(k, 30, 4, dtype=F64)
    plain = torch.einsum("nf,kfh->nkh", x, w)
    # evaluation mode and p = 0 are the plain product
    torch.testing.assert_close(a.mm_stacked_dropout(w, p, training=False), plain)
    torch.testing.assert_close(a.mm_stacked_dropout(w, 0.0), plain)
    draws = torch.stack([a.mm_stacked_dropout(w, p) for _ in range(n_draws)])
    assert draws.shape == (n_draws, 40, k, 4)
    var = p / (1 - p) * torch.einsum("nf,kfh->nkh", x**2, w**2)  # independent Bernoulli(1 − p) entries
    z = (draws.mean(0) - plain) / (var / n_draws).sqrt().clamp_min(1e-12)
    assert z.abs().max() <= 5, f"max |mean − x W| / SE = {z.abs().max():.1f}"
    ratio = draws.var(0)[var > 0] / var[var > 0]  # sample variance of 400 draws: ±20% seen
    assert ratio.min() >= 0.7 and ratio.max() <= 1.4, f"variance / exact: {ratio.min():.3f} … {ratio.max():.3f}"


def test_bad_entries() -> None:
    with pytest.raises(DataError, match="outside the 3×3 shape"):
        SparseMatrix.from_coo(torch.tensor([0, 3]), torch.tensor([0, 1]), torch.ones(2), (3, 3))
    with pytest.raises(DataError, match="2-D"):
        SparseMatrix.from_tensor(torch.ones(3))
    a = SparseMatrix.from_tensor(torch.eye(3))
    with pytest.raises(DataError, match="expected 3 values"):
        a.with_values(torch.ones(4))


def test_select_keeps_the_chosen_entries_in_both_orders() -> None:
    """A.select(keep, vals) is the matrix of the kept entries with the given values: equal to the masked dense
    matrix, its products and its transposed products (both storage orders filtered consistently)."""
    gen = torch.Generator().manual_seed(4)
    dense = (torch.rand(9, 7, generator=gen) < 0.4) * torch.randn(9, 7, generator=gen, dtype=torch.float64)
    a = SparseMatrix.from_tensor(dense)
    keep = torch.rand(a.nnz, generator=gen) < 0.5
    vals = 2.0 * a.vals
    b = a.select(keep, vals)
    want = torch.zeros_like(dense)
    rows = a.row_ids()
    want[rows[keep], a.cols[keep]] = vals[keep]
    assert b.nnz == int(keep.sum())
    torch.testing.assert_close(b.to_dense(), want)
    w = torch.randn(7, 3, dtype=torch.float64, generator=gen)
    torch.testing.assert_close(b.mm(w), want @ w)
    v = torch.randn(9, 2, dtype=torch.float64, generator=gen)
    torch.testing.assert_close(b.product(v, transposed=True), want.t() @ v)
    torch.testing.assert_close(b.transpose().to_dense(), want.t())
    with pytest.raises(DataError, match="keep mask"):
        a.select(keep[:-1])
