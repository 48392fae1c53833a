"""Adam over a member axis: member k of a K-member model trains bit for bit as the one-member model.

    m ← β₁m + (1−β₁)g,  v ← β₂v + (1−β₂)g²,  θ ← θ − lr · m̂ / (√v̂ + ε)    (g += λθ for Adam, θ ← θ(1 − lr·λ) for AdamW)

The update is elementwise, but torch's fused kernel splits each tensor it is given into a vectorised body, a
scalar tail and per-thread chunks, which round differently: stepping a stacked [K, ...] parameter as one tensor
puts member k's elements in other code paths than stepping the one-member [1, ...] parameter, and the members
drift apart by rounding (and then stop at other epochs). `MemberAdam` hands the kernel each member's slice as
its own tensor, so every member is stepped exactly as a one-member model is, in one fused call.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import Tensor, nn
from torch.optim.adam import adam


class MemberAdam(torch.optim.Optimizer):
    """Adam (``decoupled=True``: AdamW) whose step treats ``p[k]`` of every parameter with a leading member axis
    of size `members` as a tensor of its own. Parameters without that axis are stepped whole."""

    def __init__(self, params: Iterable[nn.Parameter], members: int, lr: float = 1e-3,
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8, weight_decay: float = 0.0,
                 decoupled: bool = False) -> None:
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay))
        self.members, self.decoupled = int(members), decoupled

    def _split(self, p: Tensor) -> bool:
        return self.members > 1 and p.ndim >= 1 and p.shape[0] == self.members and p.is_contiguous()

    @torch.no_grad()
    def step(self, closure=None):  # noqa: ANN001, ANN201 — torch.optim.Optimizer's signature
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            params, grads, exp_avgs, exp_avg_sqs, steps = [], [], [], [], []
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                split = self._split(p)
                if not state:
                    state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                    state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                    state["step"] = torch.zeros(self.members if split else 1, dtype=torch.float32)
                grad = p.grad if p.grad.is_contiguous() else p.grad.contiguous()
                parts = [(p[k], grad[k], state["exp_avg"][k], state["exp_avg_sq"][k]) for k in range(self.members)] \
                    if split else [(p, grad, state["exp_avg"], state["exp_avg_sq"])]
                for k, (pk, gk, mk, vk) in enumerate(parts):
                    params.append(pk)
                    grads.append(gk)
                    exp_avgs.append(mk)
                    exp_avg_sqs.append(vk)
                    steps.append(state["step"][k])  # a 0-d view: the kernel counts each member's steps
            if not params:
                continue
            beta1, beta2 = group["betas"]
            adam(params, grads, exp_avgs, exp_avg_sqs, [], steps, fused=True, amsgrad=False, beta1=beta1,
                 beta2=beta2, lr=group["lr"], weight_decay=group["weight_decay"], eps=group["eps"], maximize=False,
                 decoupled_weight_decay=self.decoupled)
        return loss


__all__ = ["MemberAdam"]
