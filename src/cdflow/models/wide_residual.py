"""The F-wide residual layer of COIN and the reference Diff-ResNet on sparse features, K members at once.

    y_k = ReLU(x W1_k + b1_k) W2_k      (x [N, F] sparse, W1_k F×F, W2_k F×C)

computed one cache-sized column chunk of the hidden layer at a time, so the [N, F] hidden activations of a
member never exist at once and the products use the sparsity of x (embedding-bag sums over its non-zeros).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from cdflow.sparse import SparseMatrix


class WideResidual(torch.autograd.Function):
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
        vals = x.ordered_values(False, w1.dtype)
        for k in active:
            for c in range(n_chunks):
                z = WideResidual._hidden(x, vals, w1, b1, k, c)
                # W2 zᵀ [C, N], not z W2ᵀ: torch's skinny [N, chunk] × [chunk, C] product evicts the cache
                # (2× slower per chunk on CPU)
                out[k].addmm_(w2t[k, :, c * chunk : (c + 1) * chunk], z.t())
                if not recompute:
                    saved[k, c] = z
        ctx.save_for_backward(w1, b1, w2t, *saved.values())
        ctx.x, ctx.recompute, ctx.active, ctx.saved_keys = x, recompute, active, list(saved)
        return out.permute(2, 0, 1).contiguous()

    @staticmethod
    def _hidden(x: SparseMatrix, vals: Tensor, w1: Tensor, b1: Tensor, k: int, c: int) -> Tensor:
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
        vals, t_vals = x.ordered_values(False, w1.dtype), x.ordered_values(True, w1.dtype)
        for k in ctx.active:
            g = grad[:, k].contiguous()
            for c in range(n_chunks):
                cols = slice(c * chunk, (c + 1) * chunk)
                z = WideResidual._hidden(x, vals, w1, b1, k, c) if ctx.recompute else saved[k, c]
                torch.mm(g.t(), z, out=gw2t[k, :, cols])
                dz = torch.ops.aten.threshold_backward(torch.mm(g, w2t[k, :, cols]), z, 0.0)
                torch.sum(dz, 0, out=gb1[k, cols])
                gw1[k, c] = F.embedding_bag(x.t_cols, dz, x.t_offsets, mode="sum", per_sample_weights=t_vals)
        return gw1, gb1, gw2t, None, None, None


