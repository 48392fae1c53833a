"""Layers with a member axis: K independent initialisations of one model trained as one.

Every parameter has the member axis first ([K, ...]); activations are node-major [N, K, H]. Members never
mix: the loss Σ_k loss_k gives each member the gradient of its own loss, and Adam / weight decay act
elementwise, so training the stack equals training K separate models (up to float rounding).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from cdflow.errors import ConfigError
from cdflow.sparse import SparseMatrix

__all__ = [
    "MemberLinear", "as_sparse", "check_dropouts", "check_members", "dropout", "init_uniform", "keep_mask",
    "member_accuracy", "member_bias", "member_generators", "member_matmul", "member_mean", "member_nll",
]


def keep_mask(shape: tuple[int, ...], p: float, device: torch.device | str | None = None) -> Tensor:
    """Boolean dropout mask on `device` (default: the CPU): True (keep) with probability 1 − p (p rounded to a
    multiple of 2⁻¹⁶).

    Drawn as 16-bit integers, three per 64-bit draw of the default generator (whose top bit is always 0,
    so the fourth 16-bit word is not used): about 3× faster than `F.dropout`'s Bernoulli draws on CPU.
    """
    if not 0.0 <= p < 1.0:
        raise ConfigError(f"dropout probability must be in [0, 1), got {p}")
    n = math.prod(shape)
    words = torch.empty(-(-n // 3), dtype=torch.int64, device=device).random_().view(torch.int16).view(-1, 4)
    return (words[:, :3] >= round(p * 65536) - 32768).view(-1)[:n].view(shape)


def dropout(h: Tensor, p: float, training: bool = True) -> Tensor:
    """Inverted dropout h ⊙ m / (1 − p), m = keep_mask(h.shape, p); the identity when not training or p = 0."""
    if not training or p == 0.0:
        return h
    return (h * keep_mask(tuple(h.shape), p, h.device)).mul_(1.0 / (1.0 - p))


def member_generators(seeds: Sequence[int]) -> list[torch.Generator]:
    """One seeded CPU generator per member: member k's initial weights depend on seeds[k] only."""
    return [torch.Generator().manual_seed(int(s)) for s in seeds]


def init_uniform(t: Tensor, fan_in: int, gens: Sequence[torch.Generator]) -> None:
    """t[k] ~ U(−1/√fan_in, 1/√fan_in) from gens[k] (nn.Linear's default for weights and biases)."""
    bound = 1.0 / math.sqrt(fan_in) if fan_in > 0 else 0.0
    with torch.no_grad():
        for k, gen in enumerate(gens):
            t[k].copy_(torch.empty(t.shape[1:], dtype=t.dtype).uniform_(-bound, bound, generator=gen))


class MemberLinear(nn.Module):
    """y_k = h_k W_k + b_k for every member: weight [K, in, out], bias [K, out]; h is [N, K, in]."""

    def __init__(self, k: int, in_features: int, out_features: int, bias: bool = True) -> None:
        super().__init__()
        self.k, self.in_features, self.out_features = k, in_features, out_features
        self.weight = nn.Parameter(torch.empty(k, in_features, out_features))
        self.bias = nn.Parameter(torch.empty(k, out_features)) if bias else None
        self.reset_parameters(member_generators(range(k)))

    def reset_parameters(self, gens: Sequence[torch.Generator]) -> None:
        """nn.Linear's initialisation, member k drawn from gens[k]."""
        init_uniform(self.weight, self.in_features, gens)
        if self.bias is not None:
            init_uniform(self.bias, self.in_features, gens)

    def forward(self, h: Tensor) -> Tensor:
        """[N, K, in] → [N, K, out] by one batched matrix product (see `member_matmul`)."""
        out = member_matmul(h, self.weight)
        return out if self.bias is None else member_bias(out, self.bias)

    def forward_shared(self, x: Tensor | SparseMatrix, p: float = 0.0, training: bool = True) -> Tensor:
        """An input shared by the members, [N, in] → [N, K, out], with per-member inverted dropout p on x
        (on its non-zeros when x is a `SparseMatrix`)."""
        if isinstance(x, SparseMatrix):
            out = x.mm_stacked_dropout(self.weight, p, training)
        elif p > 0 and training:
            xk = dropout(x[None].expand(self.k, *x.shape), p, True)
            out = torch.bmm(xk, self.weight).transpose(0, 1)
        else:
            k, f, h = self.weight.shape
            out = (x @ self.weight.permute(1, 0, 2).reshape(f, k * h)).view(x.shape[0], k, h)
        return out if self.bias is None else member_bias(out, self.bias)

    def load_member(self, k: int, layer: nn.Linear) -> None:
        """Copy an nn.Linear (weight [out, in]) into member k."""
        with torch.no_grad():
            self.weight[k].copy_(layer.weight.t())
            if self.bias is not None:
                self.bias[k].copy_(layer.bias)


class _MemberBias(torch.autograd.Function):
    """h + b for h [N, K, H], b [K, H]; b̄_k = Σ_n h̄[n, k], member k's rows [N, H] made contiguous (no copy
    when K = 1) and summed over n by one kernel, the same for every K. (A transpose to [K, H, N] first cost
    0.3 s an epoch at N = 10⁶, H = 64: its strided writes miss the cache.)"""

    @staticmethod
    def forward(ctx, h, b):  # type: ignore[override]
        return h + b

    @staticmethod
    def backward(ctx, grad):  # type: ignore[override]
        return grad, torch.stack([grad[:, k].contiguous().sum(0) for k in range(grad.shape[1])])


def member_matmul(h: Tensor, w: Tensor) -> Tensor:
    """h_k W_k for every member: h [N, K, in], w [K, in, out] → [N, K, out]. Each member's rows are made
    contiguous first, so that its product runs the GEMM a one-member model runs (a strided batch rounds
    differently) and member k trains bit for bit as a one-member model."""
    return torch.bmm(h.transpose(0, 1).contiguous(), w).transpose(0, 1)


def member_bias(h: Tensor, b: Tensor) -> Tensor:
    """h + b over the nodes (h [N, K, H], b [K, H]), with a bias gradient that, like `member_mean`, rounds the
    same for member k whatever the number of members (autograd's broadcast sum over the strided node axis
    does not): member k of a K-member model then trains bit for bit as a one-member model."""
    return _MemberBias.apply(h, b)


def member_mean(values: Tensor) -> Tensor:
    """Per-member mean of values [N, K] → [K], each member's N values reduced as one contiguous vector, so
    that a member's result does not depend on how many members sit beside it (a mean over the strided axis
    0 rounds differently for different K)."""
    return values.t().contiguous().mean(1)


def member_accuracy(logp: Tensor, y: Tensor, index: Tensor) -> Tensor:
    """Per-member accuracy over the nodes `index`: logp [N, K, C] → [K]."""
    return member_mean((logp[index].argmax(-1) == y[index][:, None]).to(logp.dtype))


def member_nll(logp: Tensor, y: Tensor, index: Tensor) -> Tensor:
    """Per-member mean negative log-likelihood over the nodes `index`: logp [N, K, C] → [K]."""
    sel = logp[index]
    target = y[index][:, None, None].expand(-1, sel.shape[1], 1)
    return member_mean(-sel.gather(2, target).squeeze(2))


def as_sparse(x: Tensor | SparseMatrix) -> SparseMatrix:
    """Features in the sparse product format (dense or torch sparse input is converted once per call)."""
    return x if isinstance(x, SparseMatrix) else SparseMatrix.from_tensor(x.detach())


def check_dropouts(model: str, **probs: float) -> None:
    """Every dropout probability in [0, 1), named in the error."""
    for name, p in probs.items():
        if not 0.0 <= p < 1.0:
            raise ConfigError(f"{model} {name} must be in [0, 1), got {p}")


def check_members(members: int) -> int:
    if isinstance(members, bool) or not isinstance(members, int) or members < 1:
        raise ConfigError(f"members must be an int ≥ 1 (initialisations trained together), got {members!r}")
    return members
