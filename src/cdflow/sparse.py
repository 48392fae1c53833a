"""`SparseMatrix`: cdflow's one sparse format, for bag-of-words features and graph operators alike.

A fixed sparse [N, F] matrix A stored by rows twice (the rows of A and of Aᵀ), so that both

    Y = A W    (forward: a bag sum over the non-zeros of each row of A)
    W̄ = Aᵀ Ȳ   (backward: the same bag sum over the rows of Aᵀ)

cost O(nnz·M) with torch's embedding-bag kernel, and all-zero rows (or columns) give zero rows. On CPU
this beats torch's CSR and COO products at every width used here (7 to 1,433 columns). The values may
carry autograd (a kNN graph with differentiable weights): then Ā_e = ⟨Ȳ_row(e), W_col(e)⟩.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from cdflow.errors import DataError

__all__ = ["BLOCK_BYTES", "SparseMatrix"]

#: operand bytes per block of a cache-blocked product (see `SparseMatrix.product`); at most MAX_BLOCKS blocks
BLOCK_BYTES = 16 * 2**20
MAX_BLOCKS = 16
BLOCK_MAX_ROW_BYTES = 4096


class SparseMatrix:
    """An immutable sparse [n_rows, n_cols] matrix (see the module docstring).

    rows: offsets [n_rows] and column ids / values of the non-zeros in row order; t_*: the same for Aᵀ;
    perm: for each non-zero in Aᵀ's order, its position in A's order (t_vals = vals[perm]).
    Build with `from_tensor` (dense or torch sparse) or `from_coo`; never mutate the tensors.
    """

    __slots__ = ("n_rows", "n_cols", "offsets", "cols", "vals", "t_offsets", "t_cols", "perm", "_memo")

    def __init__(self, n_rows: int, n_cols: int, offsets: Tensor, cols: Tensor, vals: Tensor, t_offsets: Tensor,
                 t_cols: Tensor, perm: Tensor) -> None:
        # a plain class, not a dataclass: Lightning's batch transfer would recurse into a dataclass's fields
        self.n_rows, self.n_cols, self.offsets, self.cols, self.vals = int(n_rows), int(n_cols), offsets, cols, vals
        self.t_offsets, self.t_cols, self.perm = t_offsets, t_cols, perm
        self._memo: dict = {}

    def __repr__(self) -> str:
        return f"SparseMatrix({self.n_rows}×{self.n_cols}, nnz={self.nnz}, dtype={self.dtype})"

    # -- construction ---------------------------------------------------------------------------------
    @classmethod
    def from_tensor(cls, x: Tensor) -> SparseMatrix:
        """From a dense or torch sparse (COO/CSR) [N, F] tensor; the values keep their autograd."""
        if not isinstance(x, Tensor) or x.ndim != 2:
            shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
            raise DataError(f"a sparse matrix must be 2-D [N, F], got {shape}")
        if x.layout == torch.strided:
            x = x.to_sparse()
        elif x.layout != torch.sparse_coo:
            x = x.to_sparse_coo()
        coo = x.coalesce()
        row, col = coo.indices()
        return cls.from_coo(row, col, coo.values(), (x.shape[0], x.shape[1]))

    @classmethod
    def from_coo(cls, row: Tensor, col: Tensor, val: Tensor, shape: tuple[int, int]) -> SparseMatrix:
        """From (row, col, value) triplets without duplicates (duplicates would be summed by products)."""
        n, f = int(shape[0]), int(shape[1])
        row, col = row.to(torch.int64), col.to(torch.int64)
        if row.numel() and (int(row.min()) < 0 or int(row.max()) >= n or int(col.min()) < 0 or int(col.max()) >= f):
            raise DataError(f"sparse entries lie outside the {n}×{f} shape; check the indices")
        by_row = torch.argsort(row * f + col)
        by_col = torch.argsort(col[by_row] * n + row[by_row], stable=True)
        counts = torch.bincount(row, minlength=n)
        t_counts = torch.bincount(col, minlength=f)
        return cls(
            n, f,
            offsets=torch.cumsum(counts, 0) - counts, cols=col[by_row], vals=val[by_row],
            t_offsets=torch.cumsum(t_counts, 0) - t_counts, t_cols=row[by_row][by_col], perm=by_col,
        )

    # -- properties -----------------------------------------------------------------------------------
    @property
    def shape(self) -> tuple[int, int]:
        return (self.n_rows, self.n_cols)

    @property
    def nnz(self) -> int:
        return int(self.cols.numel())

    @property
    def dtype(self) -> torch.dtype:
        return self.vals.dtype

    @property
    def device(self) -> torch.device:
        return self.vals.device

    @property
    def requires_grad(self) -> bool:
        return self.vals.requires_grad

    def row_ids(self) -> Tensor:
        """The row of every stored non-zero (in storage order)."""
        if "row_ids" not in self._memo:
            self._memo["row_ids"] = _bag_ids(self.offsets, self.nnz)
        return self._memo["row_ids"]

    def row_sums(self) -> Tensor:
        """A·1 [n_rows]."""
        return self.vals.new_zeros(self.n_rows).index_add(0, self.row_ids(), self.vals)

    def diagonal(self) -> Tensor:
        """diag(A) [min(n_rows, n_cols)]."""
        rows = self.row_ids()
        on = rows == self.cols
        out = self.vals.new_zeros(min(self.n_rows, self.n_cols))
        return out.index_add(0, rows[on], self.vals[on])

    # -- conversion -----------------------------------------------------------------------------------
    def to_dense(self) -> Tensor:
        out = self.vals.new_zeros(self.n_rows, self.n_cols)
        return out.index_put((self.row_ids(), self.cols), self.vals, accumulate=True)

    def to_torch(self) -> Tensor:
        """A as a coalesced torch sparse COO tensor (values keep their autograd)."""
        idx = torch.stack([self.row_ids(), self.cols])
        return torch.sparse_coo_tensor(idx, self.vals, self.shape, is_coalesced=False,
                                       check_invariants=False).coalesce()

    def with_values(self, vals: Tensor) -> SparseMatrix:
        """The same pattern with new values (in storage order), e.g. another dtype."""
        if vals.shape != self.vals.shape:
            raise DataError(f"expected {self.nnz} values, got {tuple(vals.shape)}")
        return SparseMatrix(self.n_rows, self.n_cols, self.offsets, self.cols, vals, self.t_offsets,
                            self.t_cols, self.perm)

    def select(self, keep: Tensor, vals: Tensor | None = None) -> SparseMatrix:
        """The stored entries where `keep` [nnz] (storage order) is True, with values `vals` [nnz] (default A's)
        there: dropped entries leave the pattern, so products skip them (a dropout's zeros cost nothing). O(nnz),
        no sorting: both storage orders are filtered."""
        if keep.shape != (self.nnz,):
            raise DataError(f"expected a keep mask of {self.nnz} entries, got {tuple(keep.shape)}")
        keep = keep.to(torch.bool)
        v = self.vals if vals is None else vals
        new_index = torch.cumsum(keep, 0) - 1
        t_keep = keep[self.perm]
        counts = torch.bincount(self.row_ids()[keep], minlength=self.n_rows)
        t_counts = torch.bincount(self.cols[keep], minlength=self.n_cols)
        return SparseMatrix(self.n_rows, self.n_cols, torch.cumsum(counts, 0) - counts, self.cols[keep], v[keep],
                            torch.cumsum(t_counts, 0) - t_counts, self.t_cols[t_keep], new_index[self.perm[t_keep]])

    def to(self, *args, **kwargs) -> SparseMatrix:
        """Move (and/or cast the values), as `Tensor.to`; indices keep int64. Lightning moves batches by it."""
        vals = self.vals.to(*args, **kwargs)
        dev = vals.device
        if dev == self.device and vals.dtype == self.dtype:
            return self
        return SparseMatrix(self.n_rows, self.n_cols, self.offsets.to(dev), self.cols.to(dev), vals,
                            self.t_offsets.to(dev), self.t_cols.to(dev), self.perm.to(dev))

    def transpose(self) -> SparseMatrix:
        """Aᵀ (shares storage)."""
        inv = torch.empty_like(self.perm)
        inv[self.perm] = torch.arange(self.nnz, device=self.perm.device)
        return SparseMatrix(self.n_cols, self.n_rows, self.t_offsets, self.t_cols, self.vals[self.perm],
                            self.offsets, self.cols, inv)

    # -- products -------------------------------------------------------------------------------------
    def mm(self, w: Tensor) -> Tensor:
        """A W for W [F, M] → [N, M], differentiable w.r.t. W (W̄ = Aᵀ Ȳ) and, if they require grad, the
        values."""
        if w.ndim != 2 or w.shape[0] != self.n_cols:
            raise DataError(f"A is [{self.n_rows}, {self.n_cols}] but the operand has shape {tuple(w.shape)}")
        if self.vals.requires_grad:
            return _BagMM.apply(w, self.vals.to(w.dtype), self)
        return _BagMM.apply(w, None, self)

    def product(self, w: Tensor, transposed: bool = False, vals: Tensor | None = None) -> Tensor:
        """A W (or Aᵀ W) without autograd, by embedding-bag sums; `vals` replaces the stored values (in row
        order). An operand larger than `BLOCK_BYTES` with rows of at most `BLOCK_MAX_ROW_BYTES` is cache-blocked:
        its rows are split into a power of two of blocks (at most `MAX_BLOCKS`) and the partial products
        added, so that the random gathers of a large graph hit the cache (L @ X at 10⁶ nodes and 7 columns,
        2 blocks: 44 ms against 84 ms unblocked on this 2-core CPU)."""
        w = w.detach()
        if w.stride(-1) != 1:
            w = w.contiguous()
        offsets, cols = (self.t_offsets, self.t_cols) if transposed else (self.offsets, self.cols)
        own = vals is None
        if own:
            vals = self.ordered_values(transposed, w.dtype)
        elif transposed:
            vals = vals.detach()[self.perm]
        else:
            vals = vals.detach()
        nb = _n_blocks(w.shape[0] * w.shape[1] * w.element_size(), w.shape[1] * w.element_size())
        if nb <= 1:
            return F.embedding_bag(cols, w, offsets, mode="sum", per_sample_weights=vals)
        out = None
        own_blocks = self._block_values(transposed, nb, w.dtype) if own else None
        for b, (sel, local, off, start, stop) in enumerate(self._blocks(transposed, nb)):
            vb = own_blocks[b] if own_blocks is not None else vals[sel]
            part = F.embedding_bag(local, w[start:stop], off, mode="sum", per_sample_weights=vb)
            out = part if out is None else out.add_(part)
        return out

    def ordered_values(self, transposed: bool, dtype: torch.dtype) -> Tensor:
        """The stored values (detached) in row (or Aᵀ's row) order and `dtype`, memoised on this object."""
        key = ("vals", transposed, dtype)
        if key not in self._memo:
            v = self.vals.detach().to(dtype)
            self._memo[key] = v[self.perm] if transposed else v
        return self._memo[key]

    def _blocks(self, transposed: bool, nb: int) -> list[tuple[Tensor, Tensor, Tensor, int, int]]:
        """For a product blocked over the operand's rows in `nb` blocks: per block, the entries it holds
        (indices into the storage order), their local column ids, the bag offsets, and the operand rows."""
        key = ("blocks", transposed, nb)
        if key not in self._memo:
            offsets, cols = (self.t_offsets, self.t_cols) if transposed else (self.offsets, self.cols)
            n_out = offsets.numel()
            n_src = self.n_rows if transposed else self.n_cols
            rows = self.row_ids() if not transposed else _bag_ids(offsets, cols.numel())
            size = -(-n_src // nb)
            blk = torch.div(cols, size, rounding_mode="floor")
            order = torch.argsort(blk, stable=True)  # grouped by block, in row order within a block
            bounds = torch.searchsorted(blk[order], torch.arange(nb + 1, device=cols.device))
            blocks = []
            for b in range(nb):
                sel = order[int(bounds[b]):int(bounds[b + 1])]
                c = torch.bincount(rows[sel], minlength=n_out)
                blocks.append((sel, cols[sel] - b * size, torch.cumsum(c, 0) - c, b * size, min(n_src, (b + 1) * size)))
            self._memo[key] = blocks
        return self._memo[key]

    def _block_values(self, transposed: bool, nb: int, dtype: torch.dtype) -> list[Tensor]:
        """The stored values of each block of `_blocks(transposed, nb)` in `dtype`, memoised on this object."""
        key = ("block_vals", transposed, nb, dtype)
        if key not in self._memo:
            own = self.ordered_values(transposed, dtype)
            self._memo[key] = [own[blk[0]] for blk in self._blocks(transposed, nb)]
        return self._memo[key]

    def __matmul__(self, w: Tensor) -> Tensor:
        """A @ W over the first axis of W: [F] → [N], [F, M] → [N, M], [F, K, M] → [N, K, M]."""
        if w.ndim == 1:
            return self.mm(w[:, None])[:, 0]
        return self.mm(w.reshape(w.shape[0], -1)).view(self.n_rows, *w.shape[1:])

    def mm_stacked(self, w: Tensor) -> Tensor:
        """A W_k for every member: W [K, F, H] → [N, K, H] (one bag sum over the wide [F, K·H] weight)."""
        k, f, h = w.shape
        return self.mm(w.permute(1, 0, 2).reshape(f, k * h)).view(self.n_rows, k, h)

    def mm_stacked_dropout(self, w: Tensor, p: float, training: bool = True) -> Tensor:
        """dropout_k(A) W_k for every member, with an independent dropout mask on A's non-zeros per member:
        [K, F, H] → [N, K, H]. Dropped entries are zeroed, kept ones scaled by 1/(1−p)."""
        if not training or p == 0.0:
            return self.mm_stacked(w)
        k, f, h = w.shape
        struct = self._expanded(k)
        flat = self.dropout_values(k, p, w.dtype).reshape(-1)
        out = _BagMM.apply(w.reshape(k * f, h), flat[struct.vals], struct)
        return out.view(self.n_rows, k, h)

    def dropout_values(self, k: int, p: float, dtype: torch.dtype) -> Tensor:
        """K independent inverted-dropout draws of the non-zeros (storage order): [K, nnz], dropped entries 0,
        kept ones scaled by 1/(1−p) (the draws of `mm_stacked_dropout`)."""
        from cdflow.models.layers import keep_mask  # the one dropout-mask generator

        return self.vals.detach().to(dtype)[None, :] * keep_mask((k, self.nnz), p, self.vals.device) * (1.0 / (1.0 - p))

    def _expanded(self, k: int) -> SparseMatrix:
        """The [N·K, K·F] block structure of [A, …, A] (row n·K + k holds row n's non-zeros in columns
        f + k·F). Its int64 values are, for each stored entry, its flat (k, entry) index, so that per-member
        values [K, nnz] are put in storage order by one gather. Memoised per K on this object."""
        key = ("expanded", k)
        if key not in self._memo:
            row = self.row_ids()
            kk = torch.arange(k, device=row.device)[:, None].expand(k, self.nnz)
            rows = (row[None, :] * k + kk).reshape(-1)
            cols = (self.cols[None, :] + kk * self.n_cols).reshape(-1)
            flat = torch.arange(k * self.nnz, device=row.device)
            self._memo[key] = SparseMatrix.from_coo(rows, cols, flat, (self.n_rows * k, self.n_cols * k))
        return self._memo[key]


def _bag_ids(offsets: Tensor, nnz: int) -> Tensor:
    """The bag (output row) of every entry of a bag structure given by its start offsets."""
    counts = torch.diff(offsets, append=torch.tensor([nnz], device=offsets.device))
    return torch.repeat_interleave(torch.arange(offsets.numel(), device=offsets.device), counts)


def _n_blocks(operand_bytes: int, row_bytes: int) -> int:
    """Blocks of a cache-blocked product: operand_bytes / BLOCK_BYTES rounded up to a power of two, capped; 1
    for operands with rows wider than `BLOCK_MAX_ROW_BYTES` (gathering a long row is a streaming read: blocking
    would only multiply the partial outputs)."""
    if row_bytes > BLOCK_MAX_ROW_BYTES:
        return 1
    need = -(-operand_bytes // BLOCK_BYTES)
    if need <= 1:
        return 1
    return min(MAX_BLOCKS, 1 << (need - 1).bit_length())


class _BagMM(torch.autograd.Function):
    """Y = A W by bag sums over A's rows; W̄ = Aᵀ Ȳ by bag sums over Aᵀ's rows; Ā_e = ⟨Ȳ_r, W_c⟩.
    vals None: A's own values (their per-order copies are memoised on A)."""

    @staticmethod
    def forward(ctx, w, vals, a):  # type: ignore[override]
        ctx.a = a
        ctx.save_for_backward(w if vals is not None and vals.requires_grad else None, vals)
        # w detached inside `product`: a weight that requires grad sends torch to its training kernel
        # (offset2bag and bag sizes for its own backward, which we never use), 3-5× slower
        return a.product(w, False, vals)

    @staticmethod
    def backward(ctx, grad):  # type: ignore[override]
        w, vals = ctx.saved_tensors
        a = ctx.a
        gw = gv = None
        if ctx.needs_input_grad[0]:
            gw = a.product(grad, True, vals)
        if ctx.needs_input_grad[1]:
            gv = (grad[a.row_ids()] * w.detach()[a.cols]).sum(-1)
        return gw, gv, None
