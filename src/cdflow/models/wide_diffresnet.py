"""The Diff-ResNet of the reference graph code: an F-wide residual block, then dropout + diffusion layers.

    h⁰ = x + ReLU(W₁ x + b₁)                      (W₁ is F×F: the hidden features have x's width)
    hⁱ⁺¹ = (I − τL)(mⁱ ⊙ hⁱ) / (1 − p),  i < n     (dropout mask mⁱ, then one explicit diffusion step)
    logits = W₂ hⁿ + b₂

K members are stacked as in `cdflow.models.batched`. Training keeps only the n boolean dropout masks for
the backward: the layers are linear in h, so ∂/∂hⁱ = mⁱ ⊙ (I − τL)ᵀ ∂/∂hⁱ⁺¹ / (1 − p) needs no hⁱ
(`_DropoutDiffusion`). Without dropout (evaluation, or p = 0) the layers are (I − τL)ⁿ, which commutes
with the head: logits = (I − τL)ⁿ (h⁰ W₂ᵀ) + b₂ diffuses C columns instead of F.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from cdflow.models.batched import SparseRows, _diffuse_columns, _init_uniform, keep_mask, member_generators
from cdflow.splitting import DiffusionStats


def _diffusion_step(h: Tensor, lap: SparseRows, tau: float) -> Tensor:
    """h − τ L h for h [N, M]."""
    return torch.add(h, lap.mm(h), alpha=-tau)


class _DropoutDiffusion(torch.autograd.Function):
    """hⁿ from h⁰ [N, M] through n × [dropout p → h ← h − τLh]; L symmetric. Saves the masks only.

    Columns never mix, so the n steps run on one cache-sized block of columns at a time (all n steps of a
    block before the next block): 3-5× faster on CPU than n sweeps over the full [N, M] array.
    """

    @staticmethod
    def forward(ctx, h0, lap, tau, n_steps, p, block):  # type: ignore[override]
        scale = 1.0 / (1.0 - p)
        masks: list[list[Tensor]] = []
        out = torch.empty_like(h0)
        with torch.no_grad():
            for start in range(0, h0.shape[1], block):
                cols = slice(start, start + block)
                h = h0[:, cols].contiguous()
                block_masks = []
                for _ in range(n_steps):
                    m = keep_mask(tuple(h.shape), p)
                    block_masks.append(m)
                    h = _diffusion_step(h.mul_(m).mul_(scale), lap, tau)
                out[:, cols] = h
                masks.append(block_masks)
        ctx.lap, ctx.tau, ctx.scale, ctx.masks, ctx.block = lap, tau, scale, masks, block
        return out

    @staticmethod
    def backward(ctx, grad):  # type: ignore[override]
        out = torch.empty_like(grad)
        for b, block_masks in enumerate(ctx.masks):
            cols = slice(b * ctx.block, (b + 1) * ctx.block)
            g = grad[:, cols].contiguous()
            for m in reversed(block_masks):
                g = _diffusion_step(g, ctx.lap, ctx.tau).mul_(m).mul_(ctx.scale)
            out[:, cols] = g
        ctx.masks = []
        return out, None, None, None, None, None


class BatchedWideDiffResNet(nn.Module):
    """K members of the reference code's F-wide Diff-ResNet: log-softmax scores [N, K, C].

    Parameters: w1 [K, F, F] (W₁ᵀ), b1 [K, F], w2 [K, F, C] (W₂ᵀ), b2 [K, C]; nn.Linear's initialisation.
    `block`: columns diffused together in training (see `_DropoutDiffusion`; the masks are drawn per
    block, so the dropout noise depends on it). `n_steps = 0` is the ResNet ablation (the same network
    without diffusion, and then without dropout).
    """

    def __init__(
        self,
        k: int,
        in_features: int,
        num_classes: int,
        tau: float = 0.25,
        n_steps: int = 20,
        dropout: float = 0.25,
        block: int = 128,
    ) -> None:
        super().__init__()
        self.k, self.tau, self.n_steps, self.dropout, self.block = k, tau, n_steps, dropout, block
        self.in_features, self.num_classes = in_features, num_classes
        f, c = in_features, num_classes
        self.w1 = nn.Parameter(torch.empty(k, f, f))
        self.b1 = nn.Parameter(torch.empty(k, f))
        self.w2 = nn.Parameter(torch.empty(k, f, c))
        self.b2 = nn.Parameter(torch.empty(k, c))
        self.reset_parameters(member_generators(range(k)))
        self.diffusion_stats: DiffusionStats | None = None

    def reset_parameters(self, gens: Sequence[torch.Generator]) -> None:
        """nn.Linear's initialisation (fan-in F for both layers), member k drawn from gens[k]."""
        for t in (self.w1, self.b1, self.w2, self.b2):
            _init_uniform(t, self.in_features, gens)

    def load_member(self, k: int, model: nn.Module) -> None:
        """Copy an unbatched F-wide `cdflow.models.DiffResNet` (hidden=None) into member k."""
        with torch.no_grad():
            self.w1[k].copy_(model.res.weight.t())
            self.b1[k].copy_(model.res.bias)
            self.w2[k].copy_(model.out.weight.t())
            self.b2[k].copy_(model.out.bias)

    def hidden(self, x: SparseRows) -> Tensor:
        """h⁰ = x + ReLU(W₁x + b₁) [N, K, F]."""
        return torch.relu(x.mm_stacked(self.w1) + self.b1) + x.to_dense()[:, None, :]

    def forward(self, x: SparseRows, lap: SparseRows) -> Tensor:
        h0 = self.hidden(x)
        n, k, f = h0.shape
        diffuse = self.n_steps > 0 and self.tau > 0
        if diffuse and self.training and self.dropout > 0:
            h = _DropoutDiffusion.apply(h0.reshape(n, k * f), lap, self.tau, self.n_steps, self.dropout, self.block)
            logits = torch.bmm(h.view(n, k, f).transpose(0, 1), self.w2).transpose(0, 1)
            self.diffusion_stats = DiffusionStats(products=self.n_steps, substeps=self.n_steps)
        else:
            logits = torch.bmm(h0.transpose(0, 1), self.w2).transpose(0, 1)  # (I − τL)ⁿ commutes with W₂
            if diffuse:
                logits, self.diffusion_stats = _diffuse_columns(logits, lap, self.tau, self.n_steps, "explicit")
        return torch.log_softmax(logits + self.b2, dim=-1)
