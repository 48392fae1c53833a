"""The F-wide residual layer of COIN and the reference Diff-ResNet on sparse features, K members at once.

    y_k = (act(x W1_k + b1_k) ⊙ m_k · s) W2_k      (x [N, F] sparse, W1_k F×F, W2_k F×C)

computed one cache-sized column chunk of the hidden layer at a time, so the [N, F] hidden activations of a
member never exist at once and the products use the sparsity of x (embedding-bag sums over its non-zeros).
Optional: per-member values of x's non-zeros in the first product (input dropout), an inverted-dropout mask m
with scale s on the hidden layer, and the activation (relu, tanh, identity).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from cdflow.sparse import SparseMatrix

#: Activations the kernel computes (and differentiates from its output).
ACTIVATIONS = ("relu", "tanh", "identity")


class WideResidual(torch.autograd.Function):
    """y[:, k] = (act(x W1_k + b1_k) ⊙ m_k · s) W2_k for every member k, one cache-sized column chunk of the
    hidden layer at a time (W1 is stored chunk-major, [K, n_chunks, F, chunk], so every chunk is contiguous):

        z = act(x W1 + b1),  y = (z ⊙ m s) W2;   dz = (dy W2ᵀ) ⊙ m s,  da = dz ⊙ act'(z),
        dW1 = xᵀ da,  db1 = Σ_n da,  dW2 = (z ⊙ m s)ᵀ dy.

    The hidden chunks are kept for the backward (K·N·F floats), or recomputed there when `recompute`.
    vals: [K, nnz] values of x's non-zeros per member (row order; no gradient), None for x's own. mask: the
    inverted-dropout factors m·s chunk-major, [K, n_chunks, N, chunk] (each chunk contiguous; `chunk_mask` lays
    out a keep mask), or None. Gradients flow to W1, b1, W2 only.
    """

    @staticmethod
    def forward(ctx, w1, b1, w2t, x, recompute, active, vals=None, mask=None,  # type: ignore[override]
                activation="relu"):
        """active: the members to compute (the others get y = 0 and zero gradients); None: all."""
        if activation not in ACTIVATIONS:
            raise ValueError(f"WideResidual activation {activation!r}; valid: {', '.join(ACTIVATIONS)}")
        k_members, n_chunks, _, chunk = w1.shape
        active = list(range(k_members)) if active is None else list(active)
        out = w2t.new_zeros(k_members, w2t.shape[1], x.n_rows)
        saved: dict[tuple[int, int], Tensor] = {}
        for k in active:
            v = WideResidual._values(x, vals, k, False, w1.dtype)
            for c in range(n_chunks):
                z = WideResidual._hidden(x, v, w1, b1, k, c, activation)
                zm = z if mask is None else z * mask[k, c]
                # W2 zᵀ [C, N], not z W2ᵀ: torch's skinny [N, chunk] × [chunk, C] product evicts the cache
                # (2× slower per chunk on CPU)
                out[k].addmm_(w2t[k, :, c * chunk : (c + 1) * chunk], zm.t())
                if not recompute:
                    saved[k, c] = z
        ctx.save_for_backward(w1, b1, w2t, *saved.values())
        ctx.x, ctx.recompute, ctx.active, ctx.saved_keys = x, recompute, active, list(saved)
        ctx.vals, ctx.mask, ctx.activation = vals, mask, activation
        return out.permute(2, 0, 1).contiguous()

    @staticmethod
    def _values(x: SparseMatrix, vals: Tensor | None, k: int, transposed: bool, dtype: torch.dtype) -> Tensor:
        """Member k's values of x's non-zeros in row (or xᵀ's row) order."""
        if vals is None:
            return x.ordered_values(transposed, dtype)
        v = vals[k].detach().to(dtype)
        return v[x.perm] if transposed else v

    @staticmethod
    def _hidden(x: SparseMatrix, vals: Tensor, w1: Tensor, b1: Tensor, k: int, c: int, activation: str) -> Tensor:
        """act(x W1_k[:, chunk c] + b1_k[chunk c]) [N, chunk] (W1 detached: torch's forward-only kernel)."""
        chunk = w1.shape[3]
        z = F.embedding_bag(x.cols, w1[k, c].detach(), x.offsets, mode="sum", per_sample_weights=vals)
        z = z.add_(b1[k, c * chunk : (c + 1) * chunk].detach())
        if activation == "relu":
            return z.relu_()
        return z.tanh_() if activation == "tanh" else z

    @staticmethod
    def backward(ctx, grad):  # type: ignore[override]
        w1, b1, w2t, *saved_list = ctx.saved_tensors
        x, mask, activation = ctx.x, ctx.mask, ctx.activation
        saved = dict(zip(ctx.saved_keys, saved_list))
        k_members, n_chunks, _, chunk = w1.shape
        gw1, gb1, gw2t = torch.empty_like(w1), torch.empty_like(b1), torch.empty_like(w2t)
        for k in set(range(k_members)) - set(ctx.active):
            gw1[k].zero_(), gb1[k].zero_(), gw2t[k].zero_()
        for k in ctx.active:
            g = grad[:, k].contiguous()
            vals = WideResidual._values(x, ctx.vals, k, False, w1.dtype)
            t_vals = WideResidual._values(x, ctx.vals, k, True, w1.dtype)
            for c in range(n_chunks):
                cols = slice(c * chunk, (c + 1) * chunk)
                z = WideResidual._hidden(x, vals, w1, b1, k, c, activation) if ctx.recompute else saved[k, c]
                torch.mm(g.t(), z if mask is None else z * mask[k, c], out=gw2t[k, :, cols])
                dz = torch.mm(g, w2t[k, :, cols])
                if mask is not None:
                    dz = dz.mul_(mask[k, c])
                if activation == "relu":
                    da = torch.ops.aten.threshold_backward(dz, z, 0.0)
                elif activation == "tanh":
                    da = dz.mul_(1.0 - z * z)
                else:
                    da = dz
                torch.sum(da, 0, out=gb1[k, cols])
                gw1[k, c] = F.embedding_bag(x.t_cols, da, x.t_offsets, mode="sum", per_sample_weights=t_vals)
        return gw1, gb1, gw2t, None, None, None, None, None, None


def chunk_mask(keep: Tensor, scale: float, padded: int, chunk: int, dtype: torch.dtype) -> Tensor:
    """A keep mask [K, N, F] as `WideResidual`'s mask: the factors keep·scale in `dtype`, columns zero-padded to
    `padded` and laid out chunk-major, [K, n_chunks, N, chunk]."""
    k, n, f = keep.shape
    m = torch.zeros(k, n, padded, dtype=dtype, device=keep.device)
    m[:, :, :f] = keep
    return m.view(k, n, padded // chunk, chunk).transpose(1, 2).contiguous().mul_(scale)


class WideLinear(torch.nn.Module):
    """y = x Wᵀ + b (nn.Linear's map and initialisation) with W stored for `WideResidual`: chunk-major,
    w1 [1, n_chunks, in, chunk] holding Wᵀ's columns zero-padded to n_chunks·chunk, and b1 [1, n_chunks·chunk].
    The padding stays zero in training (its gradient is zero). `weight` and `bias` give nn.Linear's views."""

    def __init__(self, in_features: int, out_features: int, chunk: int = 128) -> None:
        super().__init__()
        n_chunks = -(-out_features // min(chunk, out_features))
        chunk = -(-out_features // n_chunks)  # the same number of chunks, as little zero padding as possible
        self.in_features, self.out_features = in_features, out_features
        self.w1 = torch.nn.Parameter(torch.zeros(1, n_chunks, in_features, chunk))
        self.b1 = torch.nn.Parameter(torch.zeros(1, n_chunks * chunk))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """nn.Linear's initialisation (its draws, in its order), laid out chunk-major; the padding zero."""
        linear = torch.nn.Linear(self.in_features, self.out_features, dtype=self.w1.dtype)
        n_chunks, chunk = self.w1.shape[1], self.w1.shape[3]
        padded = torch.zeros(self.in_features, n_chunks * chunk, dtype=self.w1.dtype)
        padded[:, : self.out_features] = linear.weight.detach().t()
        with torch.no_grad():
            self.w1.copy_(padded.view(self.in_features, n_chunks, chunk).transpose(0, 1)[None])
            self.b1.zero_()[0, : self.out_features] = linear.bias.detach()

    @property
    def padded(self) -> int:
        """n_chunks·chunk: the hidden columns the kernel computes (out_features plus zero padding)."""
        return self.b1.shape[1]

    @property
    def weight(self) -> Tensor:
        """W [out, in] (differentiable view-and-copy of w1)."""
        return self.w1[0].transpose(0, 1).reshape(self.in_features, -1)[:, : self.out_features].t()

    @property
    def bias(self) -> Tensor:
        return self.b1[0, : self.out_features]

    def forward(self, x: Tensor) -> Tensor:
        return F.linear(x, self.weight, self.bias)
