"""K independent initialisations of a graph model trained as one: stacked weights, shared graph products.

Every parameter has the member axis first ([K, ...]); activations are node-major [N, K, H], so the graph
product of all members is one sparse product L @ [N, K·H]. Members never mix: the loss Σ_k loss_k gives
each member the gradient of its own loss, and Adam / weight decay act elementwise, so training the stack
equals training K separate models (up to float rounding; an adaptive solver shares its step sizes).

Sparse bag-of-words features are `SparseRows`; x W is an embedding-bag sum over the non-zeros
(O(nnz·H)), and its weight gradient xᵀG is the same sum over the transposed structure.

Models (log-probabilities [N, K, C]):

* `BatchedCOIN`         u⁰ = softmax(W₂(x + ReLU(W₁x + b₁)) + b₂),  u ← u − τLu (n times) or exp(−nτL)u
* `BatchedDiffResNet`   h = ReLU(W_in x),  h ← h + ReLU(W h + b),  n × [dropout → h ← h − τLh],  W_out h
* `BatchedCDNet`        h(0) = dropout(ReLU(dropout(x) W_in)),  dh/dt = v_θ(h) − γLh (adaptive ODE solve),  W_out h(1)
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from cdflow.errors import ConfigError, DataError
from cdflow.solve import solve
from cdflow.solvers import SolverSpec
from cdflow.splitting import DiffusionStats, diffuse
from cdflow.stats import SolveStats
from cdflow.terms import Convection, Drift, GraphDiffusion

__all__ = [
    "BatchedCDNet",
    "BatchedCOIN",
    "BatchedDiffResNet",
    "BatchedLinear",
    "BatchedMLPVelocity",
    "RowsGraphDiffusion",
    "SparseRows",
    "dropout",
    "keep_mask",
    "member_generators",
    "stacked_nll",
]


# --------------------------------------------------------------------------------------------------------
# dropout
# --------------------------------------------------------------------------------------------------------
def keep_mask(shape: tuple[int, ...], p: float) -> Tensor:
    """Boolean dropout mask: True (keep) with probability 1 − p (p rounded to a multiple of 2⁻¹⁶).

    Drawn as 16-bit integers, three per 64-bit draw of the default generator (whose top bit is always 0,
    so the fourth 16-bit word is not used): about 3× faster than `F.dropout`'s Bernoulli draws on CPU.
    """
    if not 0.0 <= p < 1.0:
        raise ConfigError(f"dropout probability must be in [0, 1), got {p}")
    n = math.prod(shape)
    words = torch.empty(-(-n // 3), dtype=torch.int64).random_().view(torch.int16).view(-1, 4)
    return (words[:, :3] >= round(p * 65536) - 32768).view(-1)[:n].view(shape)


def dropout(h: Tensor, p: float, training: bool = True) -> Tensor:
    """Inverted dropout h ⊙ m / (1 − p), m = keep_mask(h.shape, p); the identity when not training or p = 0."""
    if not training or p == 0.0:
        return h
    return (h * keep_mask(tuple(h.shape), p)).mul_(1.0 / (1.0 - p))


# --------------------------------------------------------------------------------------------------------
# sparse rows: x W by embedding bags
# --------------------------------------------------------------------------------------------------------
@dataclass
class SparseRows:
    """A fixed sparse [N, F] matrix stored by rows twice (the rows of x and of xᵀ), for x W and xᵀ G.

    x W [N, M] = embedding_bag over the non-zeros of each row; its weight gradient xᵀ G [F, M] is the same
    bag sum over the rows of xᵀ. Both cost O(nnz·M), and all-zero rows (or columns) give zero rows.
    """

    n_rows: int
    n_cols: int
    offsets: Tensor
    cols: Tensor
    vals: Tensor
    t_offsets: Tensor
    t_cols: Tensor
    t_vals: Tensor
    _expanded: dict = field(default_factory=dict, repr=False)
    _coo: dict = field(default_factory=dict, repr=False)

    @classmethod
    def from_tensor(cls, x: Tensor) -> SparseRows:
        """From a dense (or sparse COO) [N, F] tensor."""
        if x.ndim != 2:
            raise DataError(f"features must be [N, F], got shape {tuple(x.shape)}")
        coo = (x if x.is_sparse else x.to_sparse_coo()).coalesce()
        row, col = coo.indices()
        val = coo.values()
        n, f = x.shape
        return cls._build(n, f, row, col, val)

    @classmethod
    def _build(cls, n: int, f: int, row: Tensor, col: Tensor, val: Tensor) -> SparseRows:
        by_row = torch.argsort(row * f + col)
        by_col = torch.argsort(col * n + row)
        offsets = torch.cumsum(torch.bincount(row, minlength=n), 0) - torch.bincount(row, minlength=n)
        t_offsets = torch.cumsum(torch.bincount(col, minlength=f), 0) - torch.bincount(col, minlength=f)
        return cls(n, f, offsets, col[by_row], val[by_row], t_offsets, row[by_col], val[by_col])

    @property
    def nnz(self) -> int:
        return int(self.cols.numel())

    def row_ids(self) -> Tensor:
        """The row of every stored non-zero (in storage order)."""
        counts = torch.diff(self.offsets, append=torch.tensor([self.nnz]))
        return torch.repeat_interleave(torch.arange(self.n_rows), counts)

    def to_dense(self) -> Tensor:
        """The dense [N, F] matrix."""
        out = self.vals.new_zeros(self.n_rows, self.n_cols)
        out[self.row_ids(), self.cols] = self.vals
        return out

    def mm(self, w: Tensor) -> Tensor:
        """x W for W [F, M] → [N, M] by bag sums, differentiable w.r.t. W (dW = xᵀ dY, bag sums over xᵀ).

        On CPU this beats torch's CSR and COO products at every width we use (7 to 1,433 columns), and its
        backward needs no transposition.
        """
        if w.shape[0] != self.n_cols:
            raise DataError(f"x is [N, {self.n_cols}] but W has {w.shape[0]} rows")
        return _BagMM.apply(w, self.offsets, self.cols, self.vals.to(w.dtype), self.t_offsets, self.t_cols,
                            self.t_vals.to(w.dtype))

    def to_torch(self, dtype: torch.dtype = torch.float32) -> Tensor:
        """x as a coalesced torch sparse COO tensor of `dtype` (cached), e.g. for `cdflow.splitting`."""
        if dtype not in self._coo:
            idx = torch.stack([self.row_ids(), self.cols])
            self._coo[dtype] = torch.sparse_coo_tensor(idx, self.vals.to(dtype), (self.n_rows, self.n_cols),
                                                       check_invariants=False).coalesce()
        return self._coo[dtype]

    def mm_stacked(self, w: Tensor) -> Tensor:
        """x W_k for every member: W [K, F, H] → [N, K, H] (one bag sum over the wide [F, K·H] weight)."""
        k, f, h = w.shape
        return self.mm(w.permute(1, 0, 2).reshape(f, k * h)).view(self.n_rows, k, h)

    def mm_stacked_dropout(self, w: Tensor, p: float, training: bool = True) -> Tensor:
        """dropout_k(x) W_k for every member, with an independent dropout mask on x's non-zeros per member:
        [K, F, H] → [N, K, H]. Dropped entries are zeroed, kept ones scaled by 1/(1−p)."""
        if not training or p == 0.0:
            return self.mm_stacked(w)
        k, f, h = w.shape
        idx, off, src, t_idx, t_off, order = self._expand(k)
        keep = keep_mask((k, self.nnz), p)
        psw = (self.vals.to(w.dtype)[None, :] * keep * (1.0 / (1.0 - p))).reshape(-1)[src]
        out = _BagMM.apply(w.reshape(k * f, h), off, idx, psw, t_off, t_idx, psw[order])
        return out.view(self.n_rows, k, h)

    def _expand(self, k: int) -> tuple[Tensor, ...]:
        """The block-diagonal structure of [x, …, x] (K copies): bag (n, k) holds row n's non-zeros with
        column ids f + k·F; cached per K."""
        if k not in self._expanded:
            n, f, nnz = self.n_rows, self.n_cols, self.nnz
            row = self.row_ids()
            kk = torch.arange(k)[:, None].expand(k, nnz)
            bag = (row[None, :] * k + kk).reshape(-1)
            col = (self.cols[None, :] + kk * f).reshape(-1)
            src = torch.argsort(bag, stable=True)  # entries in bag order: the flat (k, i) index of each
            idx, bag_sorted = col[src], bag[src]
            counts = torch.bincount(bag_sorted, minlength=n * k)
            off = torch.cumsum(counts, 0) - counts
            order = torch.argsort(idx, stable=True)  # the same entries grouped by expanded column
            t_counts = torch.bincount(idx, minlength=k * f)
            t_off = torch.cumsum(t_counts, 0) - t_counts
            self._expanded[k] = (idx, off, src, bag_sorted[order], t_off, order)
        return self._expanded[k]


class _BagMM(torch.autograd.Function):
    """y = x W by bag sums over x's rows; dW = xᵀ dy by bag sums over xᵀ's rows."""

    @staticmethod
    def forward(ctx, w, offsets, cols, vals, t_offsets, t_cols, t_vals):  # type: ignore[override]
        ctx.save_for_backward(t_offsets, t_cols, t_vals)
        # detached: a weight that requires grad sends torch to its training kernel (offset2bag and bag
        # sizes for its own backward, which we never use), 3-5× slower than the forward-only kernel here
        return F.embedding_bag(cols, w.detach(), offsets, mode="sum", per_sample_weights=vals.detach())

    @staticmethod
    def backward(ctx, grad):  # type: ignore[override]
        t_offsets, t_cols, t_vals = ctx.saved_tensors
        gw = F.embedding_bag(t_cols, grad.contiguous(), t_offsets, mode="sum", per_sample_weights=t_vals)
        return gw, None, None, None, None, None, None


# --------------------------------------------------------------------------------------------------------
# stacked layers
# --------------------------------------------------------------------------------------------------------
def member_generators(seeds: Sequence[int]) -> list[torch.Generator]:
    """One seeded CPU generator per member: member k's initial weights depend on seeds[k] only."""
    return [torch.Generator().manual_seed(int(s)) for s in seeds]


def _init_uniform(t: Tensor, fan_in: int, gens: Sequence[torch.Generator]) -> None:
    """t[k] ~ U(−1/√fan_in, 1/√fan_in) from gens[k] (nn.Linear's default for weights and biases)."""
    bound = 1.0 / math.sqrt(fan_in) if fan_in > 0 else 0.0
    with torch.no_grad():
        for k, gen in enumerate(gens):
            t[k].copy_(torch.empty(t.shape[1:], dtype=t.dtype).uniform_(-bound, bound, generator=gen))


class BatchedLinear(nn.Module):
    """y_k = h_k W_k + b_k for every member: weight [K, in, out], bias [K, out]; h is [N, K, in]."""

    def __init__(self, k: int, in_features: int, out_features: int, bias: bool = True) -> None:
        super().__init__()
        self.k, self.in_features, self.out_features = k, in_features, out_features
        self.weight = nn.Parameter(torch.empty(k, in_features, out_features))
        self.bias = nn.Parameter(torch.empty(k, out_features)) if bias else None
        self.reset_parameters(member_generators(range(k)))

    def reset_parameters(self, gens: Sequence[torch.Generator]) -> None:
        """nn.Linear's initialisation, member k drawn from gens[k]."""
        _init_uniform(self.weight, self.in_features, gens)
        if self.bias is not None:
            _init_uniform(self.bias, self.in_features, gens)

    def forward(self, h: Tensor) -> Tensor:
        """[N, K, in] → [N, K, out] by one batched matrix product."""
        hk = h.transpose(0, 1)
        out = torch.bmm(hk, self.weight) if self.bias is None else torch.baddbmm(self.bias[:, None], hk, self.weight)
        return out.transpose(0, 1)

    def forward_sparse(self, x: SparseRows, dropout: float = 0.0) -> Tensor:
        """Sparse input shared by the members: [N, in] → [N, K, out], with per-member input dropout."""
        out = x.mm_stacked_dropout(self.weight, dropout, self.training) if dropout else x.mm_stacked(self.weight)
        return out if self.bias is None else out + self.bias

    def load_member(self, k: int, layer: nn.Linear) -> None:
        """Copy an nn.Linear (weight [out, in]) into member k."""
        with torch.no_grad():
            self.weight[k].copy_(layer.weight.t())
            if self.bias is not None:
                self.bias[k].copy_(layer.bias)


def stacked_nll(logp: Tensor, y: Tensor, index: Tensor) -> Tensor:
    """Per-member mean negative log-likelihood over the nodes `index`: logp [N, K, C] → [K]."""
    sel = logp[index]
    target = y[index][:, None, None].expand(-1, sel.shape[1], 1)
    return -sel.gather(2, target).squeeze(2).mean(0)


def _diffuse_columns(
    u: Tensor, lap: SparseRows, tau: float, n_steps: int, integrator: str, method: str = "krylov"
) -> tuple[Tensor, DiffusionStats]:
    """Diffuse every column of u [N, K, C] over the total time n·τ: the explicit steps u ← u − τ L u
    (n of them; stable only for τ ≤ 2/λ_max), or u ← exp(−nτL) u by `cdflow.splitting.diffuse(method)`."""
    n, k, c = u.shape
    flat = u.reshape(n, k * c)
    if integrator == "explicit":
        step = tau * n_steps / n_steps  # the same rounding as cdflow.splitting.diffuse(..., "explicit")
        for _ in range(n_steps):
            flat = torch.add(flat, lap.mm(flat), alpha=-step)
        stats = DiffusionStats(products=n_steps, substeps=n_steps)
    else:
        flat, stats = diffuse(flat, lap.to_torch(u.dtype), 1.0, tau * n_steps, method)
    return flat.view(n, k, c), stats


def _check_integrator(integrator: str) -> None:
    if integrator not in ("explicit", "split"):
        raise ConfigError(f"integrator must be 'explicit' or 'split', got {integrator!r}")


# --------------------------------------------------------------------------------------------------------
# COIN
# --------------------------------------------------------------------------------------------------------
class _WideResidual(torch.autograd.Function):
    """y[:, k] = ReLU(x W1_k + b1_k) W2_k for every member k, one cache-sized column chunk of the hidden
    layer at a time (W1 is stored chunk-major, [K, n_chunks, F, chunk], so every chunk is contiguous):

        z = ReLU(x W1 + b1),  y = z W2;   dz = (dy W2ᵀ) ⊙ 1[z > 0],  dW1 = xᵀ dz,  db1 = Σ_n dz,  dW2 = zᵀ dy.

    The hidden chunks are kept for the backward (K·N·F floats), or recomputed there when `recompute`.
    """

    @staticmethod
    def forward(ctx, w1, b1, w2t, x, recompute, active):  # type: ignore[override]
        """active: the members to compute (the others get y = 0 and zero gradients); None: all."""
        k_members, n_chunks, _, chunk = w1.shape
        active = list(range(k_members)) if active is None else list(active)
        out = w2t.new_zeros(k_members, w2t.shape[1], x.n_rows)
        saved: dict[tuple[int, int], Tensor] = {}
        vals = x.vals.to(w1.dtype)
        for k in active:
            for c in range(n_chunks):
                z = _WideResidual._hidden(x, vals, w1, b1, k, c)
                # W2 zᵀ [C, N], not z W2ᵀ: torch's skinny [N, chunk] × [chunk, C] product evicts the cache
                # (2× slower per chunk on CPU)
                out[k].addmm_(w2t[k, :, c * chunk : (c + 1) * chunk], z.t())
                if not recompute:
                    saved[k, c] = z
        ctx.save_for_backward(w1, b1, w2t, *saved.values())
        ctx.x, ctx.recompute, ctx.active, ctx.saved_keys = x, recompute, active, list(saved)
        return out.permute(2, 0, 1).contiguous()

    @staticmethod
    def _hidden(x: SparseRows, vals: Tensor, w1: Tensor, b1: Tensor, k: int, c: int) -> Tensor:
        """ReLU(x W1_k[:, chunk c] + b1_k[chunk c]) [N, chunk] (W1 detached: torch's forward-only kernel)."""
        chunk = w1.shape[3]
        z = F.embedding_bag(x.cols, w1[k, c].detach(), x.offsets, mode="sum", per_sample_weights=vals)
        return z.add_(b1[k, c * chunk : (c + 1) * chunk]).relu_()

    @staticmethod
    def backward(ctx, grad):  # type: ignore[override]
        w1, b1, w2t, *saved_list = ctx.saved_tensors
        x = ctx.x
        saved = dict(zip(ctx.saved_keys, saved_list))
        k_members, n_chunks, _, chunk = w1.shape
        gw1, gb1, gw2t = torch.empty_like(w1), torch.empty_like(b1), torch.empty_like(w2t)
        for k in set(range(k_members)) - set(ctx.active):
            gw1[k].zero_(), gb1[k].zero_(), gw2t[k].zero_()
        vals, t_vals = x.vals.to(w1.dtype), x.t_vals.to(w1.dtype)
        for k in ctx.active:
            g = grad[:, k].contiguous()
            for c in range(n_chunks):
                cols = slice(c * chunk, (c + 1) * chunk)
                z = _WideResidual._hidden(x, vals, w1, b1, k, c) if ctx.recompute else saved[k, c]
                torch.mm(g.t(), z, out=gw2t[k, :, cols])
                dz = torch.ops.aten.threshold_backward(torch.mm(g, w2t[k, :, cols]), z, 0.0)
                torch.sum(dz, 0, out=gb1[k, cols])
                gw1[k, c] = F.embedding_bag(x.t_cols, dz, x.t_offsets, mode="sum", per_sample_weights=t_vals)
        return gw1, gb1, gw2t, None, None, None


class BatchedCOIN(nn.Module):
    """K members of COIN (see `cdflow.models.COIN`): returns log max(u(T), ε) as [N, K, C].

    u⁰_k = softmax(W₂_k(x + ReLU(W₁_k x + b₁_k)) + b₂_k),  u(T) = (I − τL)ⁿ u⁰ (explicit, the authors')
    or exp(−nτL) u⁰ (split: exact, by Krylov). W₁ is F×F; its products use the sparsity of x, one hidden
    column chunk at a time (see `_WideResidual`). Parameters: w1 [K, n_chunks, F, chunk] (W₁ᵀ, columns
    zero-padded to n_chunks·chunk; the padding stays zero in training since its gradient is zero),
    b1 [K, P], w2t [K, C, P] (W₂; columns ≥ F multiply the zero padding), b2 [K, C].
    `diffusion_dropout` > 0 (not the default) applies dropout to u before every explicit step (before the
    exact exponential for the split integrator), as Diff-ResNet's reference layers do to their features.
    After a call, `last_u` holds u(T) [N, K, C] (detached). `active` (a list of member indices, or None
    for all) restricts the wide hidden layer to those members: a trainer sets it to the members still
    training, so members that stopped early cost nothing (the others' outputs are then meaningless).
    """

    def __init__(
        self,
        k: int,
        in_features: int,
        num_classes: int,
        tau: float = 0.35,
        n_steps: int = 20,
        integrator: Literal["explicit", "split"] = "explicit",
        method: Literal["krylov", "chebyshev", "implicit"] = "krylov",
        eps: float = 1e-8,
        chunk: int = 128,
        recompute: bool = False,
        diffusion_dropout: float = 0.0,
    ) -> None:
        super().__init__()
        _check_integrator(integrator)
        self.k, self.tau, self.n_steps, self.integrator, self.method = k, tau, n_steps, integrator, method
        self.eps, self.recompute, self.diffusion_dropout = eps, recompute, diffusion_dropout
        self.in_features, self.num_classes = in_features, num_classes
        n_chunks = -(-in_features // min(chunk, in_features))
        chunk = -(-in_features // n_chunks)  # the same number of chunks, as little zero padding as possible
        self.w1 = nn.Parameter(torch.zeros(k, n_chunks, in_features, chunk))
        self.b1 = nn.Parameter(torch.zeros(k, n_chunks * chunk))
        self.w2t = nn.Parameter(torch.zeros(k, num_classes, n_chunks * chunk))
        self.b2 = nn.Parameter(torch.zeros(k, num_classes))
        self.reset_parameters(member_generators(range(k)))
        self.last_u: Tensor | None = None
        self.active: list[int] | None = None
        self.diffusion_stats: DiffusionStats | None = None

    def reset_parameters(self, gens: Sequence[torch.Generator]) -> None:
        """nn.Linear's initialisation of W₁, b₁, W₂, b₂ (fan-in F), member k drawn from gens[k]."""
        f, c = self.in_features, self.num_classes
        w1, b1, w2, b2 = (torch.empty(len(gens), *shape) for shape in ((f, f), (f,), (c, f), (c,)))
        for t in (w1, b1, w2, b2):
            _init_uniform(t, f, gens)
        for k in range(len(gens)):
            self.set_member(k, w1[k], b1[k], w2[k], b2[k])

    def set_member(self, k: int, w1: Tensor, b1: Tensor, w2: Tensor, b2: Tensor) -> None:
        """Member k's W₁ [F, F] and W₂ [C, F] (nn.Linear layout: [out, in]) and biases."""
        f = self.in_features
        with torch.no_grad():
            pad = torch.zeros(f, self.b1.shape[1], dtype=self.w1.dtype)
            pad[:, :f] = w1.t()
            self.w1[k] = pad.view(f, -1, self.w1.shape[3]).transpose(0, 1)
            self.b1[k].zero_()[:f] = b1
            self.w2t[k].zero_()[:, :f] = w2
            self.b2[k] = b2

    def member(self, k: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Member k's (W₁ [F, F], b₁ [F], W₂ [C, F], b₂ [C]) in nn.Linear layout."""
        f = self.in_features
        w1t = self.w1[k].transpose(0, 1).reshape(f, -1)[:, :f]
        return w1t.t(), self.b1[k, :f], self.w2t[k, :, :f], self.b2[k]

    def load_member(self, k: int, model: nn.Module) -> None:
        """Copy an unbatched `cdflow.models.COIN` (no projection) into member k."""
        self.set_member(k, model.fc1.weight, model.fc1.bias, model.fc2.weight, model.fc2.bias)

    def base(self, x: SparseRows) -> Tensor:
        """u⁰ [N, K, C]."""
        w2_x = self.w2t[:, :, : self.in_features].transpose(1, 2)  # the x in h = x + ReLU(W₁x + b₁)
        logits = x.mm_stacked(w2_x) + self.b2
        logits = logits + _WideResidual.apply(self.w1, self.b1, self.w2t, x, self.recompute, self.active)
        return torch.softmax(logits, dim=-1)

    def forward(self, x: SparseRows, lap: SparseRows) -> Tensor:
        u = self.base(x)
        p = self.diffusion_dropout if self.training else 0.0
        if self.n_steps > 0 and self.tau > 0:
            if p > 0 and self.integrator == "explicit":  # n × [dropout → u ← u − τLu], as Diff-ResNet's layers
                for _ in range(self.n_steps):
                    u, _ = _diffuse_columns(dropout(u, p), lap, self.tau, 1, "explicit", self.method)
                self.diffusion_stats = DiffusionStats(products=self.n_steps, substeps=self.n_steps)
            else:
                u = dropout(u, p)
                u, self.diffusion_stats = _diffuse_columns(u, lap, self.tau, self.n_steps, self.integrator,
                                                           self.method)
        self.last_u = u.detach()
        return torch.log(u.clamp_min(self.eps))


# --------------------------------------------------------------------------------------------------------
# Diff-ResNet
# --------------------------------------------------------------------------------------------------------
class BatchedDiffResNet(nn.Module):
    """K members of Diff-ResNet (see `cdflow.models.DiffResNet`): log-softmax scores [N, K, C].

    h = ReLU(x W_in + b_in), h ← h + ReLU(h W + b), then n × [dropout → h ← h − τ L h] (explicit) or
    dropout once and h ← exp(−nτL) h (split), logits = h W_out + b_out. n_steps = 0: the ResNet ablation.
    """

    def __init__(
        self,
        k: int,
        in_features: int,
        num_classes: int,
        hidden: int = 64,
        tau: float = 0.25,
        n_steps: int = 20,
        dropout: float = 0.25,
        integrator: Literal["explicit", "split"] = "explicit",
        method: Literal["krylov", "chebyshev", "implicit"] = "krylov",
    ) -> None:
        super().__init__()
        _check_integrator(integrator)
        self.k, self.tau, self.n_steps, self.dropout = k, tau, n_steps, dropout
        self.integrator, self.method = integrator, method
        self.inp = BatchedLinear(k, in_features, hidden)
        self.res = BatchedLinear(k, hidden, hidden)
        self.out = BatchedLinear(k, hidden, num_classes)
        self.diffusion_stats: DiffusionStats | None = None

    def reset_parameters(self, gens: Sequence[torch.Generator]) -> None:
        for layer in (self.inp, self.res, self.out):
            layer.reset_parameters(gens)

    def load_member(self, k: int, model: nn.Module) -> None:
        """Copy an unbatched `cdflow.models.DiffResNet` into member k."""
        for mine, theirs in ((self.inp, model.inp), (self.res, model.res), (self.out, model.out)):
            mine.load_member(k, theirs)

    def forward(self, x: SparseRows, lap: SparseRows) -> Tensor:
        h = torch.relu(self.inp.forward_sparse(x))
        h = h + torch.relu(self.res(h))
        if self.n_steps > 0 and self.tau > 0:
            n, k, c = h.shape
            if self.integrator == "explicit":
                for _ in range(self.n_steps):
                    flat = dropout(h, self.dropout, self.training).reshape(n, k * c)
                    h = torch.add(flat, lap.mm(flat), alpha=-self.tau).view(n, k, c)
                self.diffusion_stats = DiffusionStats(products=self.n_steps, substeps=self.n_steps)
            else:
                h = dropout(h, self.dropout, self.training)
                h, self.diffusion_stats = _diffuse_columns(h, lap, self.tau, self.n_steps, "split", self.method)
        return torch.log_softmax(self.out(h), dim=-1)


# --------------------------------------------------------------------------------------------------------
# continuous convection–diffusion network
# --------------------------------------------------------------------------------------------------------
class BatchedMLPVelocity(nn.Module):
    """v_k(t, h) = W2_k tanh(W1_k h + b1_k) + b2_k for every member: [N, K, H] → [N, K, H] (autonomous)."""

    def __init__(self, k: int, dim: int, width: int = 64) -> None:
        super().__init__()
        self.l1 = BatchedLinear(k, dim, width)
        self.l2 = BatchedLinear(k, width, dim)

    def reset_parameters(self, gens: Sequence[torch.Generator]) -> None:
        self.l1.reset_parameters(gens)
        self.l2.reset_parameters(gens)

    def forward(self, t: Tensor, h: Tensor) -> Tensor:
        return self.l2(torch.tanh(self.l1(h)))


class RowsGraphDiffusion(GraphDiffusion):
    """The drift term −γ L x of `cdflow.terms.GraphDiffusion`, with L given as `SparseRows` (fast L @ X)."""

    def __init__(self, gamma: float = 1.0, learnable: bool = False) -> None:
        super().__init__(None, gamma, learnable)
        self.rows: SparseRows | None = None

    def set_rows(self, lap: SparseRows) -> None:
        self.rows = lap

    def apply_laplacian(self, x: Tensor) -> Tensor:
        if self.rows is None:
            raise ConfigError("RowsGraphDiffusion has no Laplacian: call set_rows(L) before solving")
        return self.rows.mm(x.reshape(x.shape[0], -1)).reshape(x.shape)


class BatchedCDNet(nn.Module):
    """K members of a continuous convection–diffusion network, one adaptive ODE solve for all of them:

        h(0) = dropout(ReLU(dropout(x) W_in + b_in)),  dh/dt = v_θ(h) − γ L h on [0, T],  logits = h(T) W_out + b_out

    with the drift built from `cdflow.terms` (Convection + GraphDiffusion) and solved by `cdflow.solve.solve`
    (default dopri5, rtol 1e-3, atol 1e-4). The members share the solver's step sizes (its error norm is
    over the whole stack). After a call, `stats` holds the solve's `SolveStats`.
    """

    def __init__(
        self,
        k: int,
        in_features: int,
        num_classes: int,
        hidden: int = 64,
        width: int = 64,
        gamma: float = 5.0,
        dropout: float = 0.5,
        input_dropout: float = 0.0,
        solver: SolverSpec | None = None,
    ) -> None:
        super().__init__()
        self.k, self.dropout, self.input_dropout = k, dropout, input_dropout
        self.solver = solver or SolverSpec(method="dopri5", rtol=1e-3, atol=1e-4, t1=1.0)
        self.inp = BatchedLinear(k, in_features, hidden)
        self.velocity = BatchedMLPVelocity(k, hidden, width)
        self.graph_term = RowsGraphDiffusion(gamma)
        self.drift = Drift([Convection(self.velocity), self.graph_term])
        self.out = BatchedLinear(k, hidden, num_classes)
        self.stats: SolveStats | None = None

    def reset_parameters(self, gens: Sequence[torch.Generator]) -> None:
        self.inp.reset_parameters(gens)
        self.velocity.reset_parameters(gens)
        self.out.reset_parameters(gens)

    def forward(self, x: SparseRows, lap: SparseRows) -> Tensor:
        h = torch.relu(self.inp.forward_sparse(x, dropout=self.input_dropout))
        h = dropout(h, self.dropout, self.training)
        self.graph_term.set_rows(lap)
        sol = solve(self.drift, h, self.solver)
        self.stats = sol.stats
        return torch.log_softmax(self.out(sol.y_final), dim=-1)
