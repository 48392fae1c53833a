"""The residual block and head of COIN's projected network, computed by row tiles:

    h = p + ReLU(p W₁ + b₁),   logits = (h ⊙ m) W₂ + b₂     (per member k; m an inverted-dropout mask or 1)

for p [N, K, H]. Only p and the logits [N, K, C] exist at full size: every intermediate ([N, K, H] each) lives
for one tile of `TILE_ROWS` rows, so that it stays in the cache however large N is, and the backward recomputes
them tile by tile (activation memory O(N·C) beside p). Untiled, each of the half-dozen [N, H] passes streams
from memory once N·H·4 bytes exceed the last-level cache (N = 10⁶, H = 64: 256 MB a pass).

Member k's rows of a tile are made contiguous before its products, so member k computes exactly what a
one-member model computes (the same GEMM shapes, the same summation order of the weight gradients).
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["TILE_ROWS", "residual_head"]

#: rows per tile: a [TILE_ROWS, 64] float32 activation is 1 MiB
TILE_ROWS = 4096


def residual_head(p: Tensor, w1: Tensor, b1: Tensor, w2: Tensor, b2: Tensor, mask: Tensor | None = None,
                  tile: int = TILE_ROWS) -> Tensor:
    """logits [N, K, C] of p [N, K, H] with w1 [K, H, H], b1 [K, H], w2 [K, H, C], b2 [K, C]; `mask` [N, K, H]
    (the dropout mask already scaled by 1/(1 − p)) or None."""
    if tile < 1:
        raise ValueError(f"tile must be ≥ 1, got {tile}")
    return _ResidualHead.apply(p, w1, b1, w2, b2, mask, int(tile))


def _tiles(n: int, tile: int):
    return ((r, min(n, r + tile)) for r in range(0, n, tile))


class _ResidualHead(torch.autograd.Function):
    @staticmethod
    def forward(ctx, p, w1, b1, w2, b2, mask, tile):  # type: ignore[override]
        n, k, _ = p.shape
        out = p.new_empty(n, k, w2.shape[2])
        for j in range(k):
            for r0, r1 in _tiles(n, tile):
                pc = p[r0:r1, j].contiguous()
                h = torch.addmm(b1[j], pc, w1[j]).relu_().add_(pc)
                if mask is not None:
                    h.mul_(mask[r0:r1, j])
                out[r0:r1, j] = torch.addmm(b2[j], h, w2[j])
        ctx.save_for_backward(p, w1, b1, w2, mask)
        ctx.tile = tile
        return out

    @staticmethod
    def backward(ctx, g):  # type: ignore[override]
        p, w1, b1, w2, mask = ctx.saved_tensors
        n, k, hdim = p.shape
        gp = torch.empty_like(p) if ctx.needs_input_grad[0] else None
        gw1, gb1 = torch.zeros_like(w1), torch.zeros_like(b1)
        gw2, gb2 = torch.zeros_like(w2), p.new_zeros(k, w2.shape[2])
        for j in range(k):
            for r0, r1 in _tiles(n, ctx.tile):
                pc = p[r0:r1, j].contiguous()
                gc = g[r0:r1, j].contiguous()
                a = torch.addmm(b1[j], pc, w1[j])
                h = torch.relu(a).add_(pc)
                if mask is not None:
                    mc = mask[r0:r1, j]
                    h.mul_(mc)
                gw2[j].addmm_(h.t(), gc)
                gb2[j].add_(gc.sum(0))
                gh = gc @ w2[j].t()
                if mask is not None:
                    gh.mul_(mc)
                ga = gh * (a > 0)
                gw1[j].addmm_(pc.t(), ga)
                gb1[j].add_(ga.sum(0))
                if gp is not None:
                    dest = gp[r0:r1, j]
                    if dest.is_contiguous():  # one member: written in place
                        torch.addmm(gh, ga, w1[j].t(), out=dest)
                    else:
                        dest.copy_(torch.addmm(gh, ga, w1[j].t()))
        return gp, gw1, gb1, gw2, gb2, None, None
