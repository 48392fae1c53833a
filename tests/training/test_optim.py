"""The optimisers `build_optimizer` returns."""

from __future__ import annotations

import pytest
import torch


@pytest.mark.parametrize("name", ["adam", "adamw"])
def test_member_adam_steps_each_member_as_a_one_member_model(name):
    """`build_optimizer(..., members=K)` steps p[k] exactly as torch's fused Adam steps a one-member [1, ...]
    parameter, whatever k (a stacked tensor stepped whole rounds member k by its position in it)."""
    from cdflow.training.optim import build_optimizer

    k_members, gen = 3, torch.Generator().manual_seed(0)
    shapes = [(37, 11), (5,), (2, 3, 7)]
    stacked = [torch.nn.Parameter(torch.randn(k_members, *s, generator=gen)) for s in shapes]
    alone = [[torch.nn.Parameter(p[k:k + 1].detach().clone()) for p in stacked] for k in range(k_members)]
    opt = build_optimizer(stacked, name, lr=0.01, weight_decay=5e-4, members=k_members)
    opts = [build_optimizer(ps, name, lr=0.01, weight_decay=5e-4) for ps in alone]
    for _ in range(30):
        grads = [torch.randn(p.shape, generator=gen) for p in stacked]
        for p, g in zip(stacked, grads):
            p.grad = g.clone()
        opt.step()
        for k in range(k_members):
            for p, g in zip(alone[k], grads):
                p.grad = g[k:k + 1].clone()
            opts[k].step()
    for k in range(k_members):
        for p, q in zip(stacked, alone[k]):
            assert torch.equal(p[k:k + 1], q)


def test_replanned_cosine_continues_as_a_schedule_planned_over_the_new_epochs():
    """A cosine schedule restored at epoch e of a 2-epoch plan and re-planned over 6 epochs gives, from e on, the
    rates of a schedule planned over 6 epochs from the start (not 0 at epoch 2 and a climb back after it)."""
    from cdflow.training.optim import replan_cosine

    def opt():
        return torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)

    old = torch.optim.lr_scheduler.CosineAnnealingLR(opt(), T_max=2)
    ref = torch.optim.lr_scheduler.CosineAnnealingLR(opt(), T_max=6)
    for _ in range(2):
        old.optimizer.step(), old.step(), ref.optimizer.step(), ref.step()
    assert old.get_last_lr()[0] == pytest.approx(0.0, abs=1e-12)  # where the restored plan stands: rate 0
    assert replan_cosine(old, 6) == 2 and old.T_max == 6
    for _ in range(4):
        assert old.get_last_lr()[0] == pytest.approx(ref.get_last_lr()[0], rel=1e-9)
        old.optimizer.step(), old.step(), ref.optimizer.step(), ref.step()
    assert replan_cosine(old, 6) is None  # same plan: untouched
    assert replan_cosine(torch.optim.lr_scheduler.StepLR(opt(), 1), 6) is None
