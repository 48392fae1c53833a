"""The tiled residual head h = p + ReLU(pW₁ + b₁), logits = (h ⊙ m)W₂ + b₂: equal to its plain-autograd
formula for any tile size (values and all gradients), gradcheck in float64, members computed exactly as
one-member models, and refused tile sizes."""

import pytest
import torch

from cdflow.models.residual_head import residual_head

F64 = torch.float64


def _params(k: int, h: int, c: int, dtype=F64, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    shapes = ((k, h, h), (k, h), (k, h, c), (k, c))
    return [(torch.randn(*s, generator=g, dtype=dtype) * 0.5).requires_grad_() for s in shapes]


def _reference(p, w1, b1, w2, b2, mask):
    """The untiled formula by plain autograd, member by member."""
    outs = []
    for j in range(p.shape[1]):
        h = p[:, j] + torch.relu(p[:, j] @ w1[j] + b1[j])
        if mask is not None:
            h = h * mask[:, j]
        outs.append(h @ w2[j] + b2[j])
    return torch.stack(outs, 1)


@pytest.mark.parametrize("tile", [1, 7, 16, 1000])
@pytest.mark.parametrize("with_mask", [False, True])
def test_equals_untiled_formula_values_and_gradients(tile, with_mask):
    n, k, h, c = 37, 2, 5, 3
    g = torch.Generator().manual_seed(1)
    p = torch.randn(n, k, h, generator=g, dtype=F64, requires_grad=True)
    params = _params(k, h, c)
    mask = (torch.rand(n, k, h, generator=g, dtype=F64) > 0.3).to(F64) / 0.7 if with_mask else None
    seed_grad = torch.randn(n, k, c, generator=g, dtype=F64)
    out = residual_head(p, *params, mask, tile=tile)
    grads = torch.autograd.grad(out, [p, *params], seed_grad)
    ref = _reference(p, *params, mask)
    ref_grads = torch.autograd.grad(ref, [p, *params], seed_grad)
    torch.testing.assert_close(out, ref, rtol=1e-12, atol=1e-12)
    for a, b, name in zip(grads, ref_grads, ("p", "w1", "b1", "w2", "b2")):
        torch.testing.assert_close(a, b, rtol=1e-11, atol=1e-11, msg=name)


def test_gradcheck():
    n, k, h, c = 9, 2, 3, 2
    g = torch.Generator().manual_seed(2)
    p = torch.randn(n, k, h, generator=g, dtype=F64, requires_grad=True)
    mask = (torch.rand(n, k, h, generator=g, dtype=F64) > 0.5).to(F64) * 2.0
    assert torch.autograd.gradcheck(lambda *a: residual_head(*a, mask, tile=4), (p, *_params(k, h, c)))


def test_members_compute_exactly_what_one_member_models_compute():
    """Member j of a K-member call equals (bit for bit) a one-member call with member j's tensors."""
    n, k, h, c = 50, 3, 8, 4
    g = torch.Generator().manual_seed(3)
    p = torch.randn(n, k, h, generator=g, requires_grad=True)
    params = _params(k, h, c, torch.float32)
    seed_grad = torch.randn(n, k, c, generator=g)
    out = residual_head(p, *params, tile=16)
    grads = torch.autograd.grad(out, [p, *params], seed_grad)
    for j in range(k):
        pj = p[:, j:j + 1].detach().clone().requires_grad_()
        pars = [t[j:j + 1].detach().clone().requires_grad_() for t in params]
        oj = residual_head(pj, *pars, tile=16)
        gj = torch.autograd.grad(oj, [pj, *pars], seed_grad[:, j:j + 1])
        assert torch.equal(oj[:, 0], out[:, j])
        assert torch.equal(gj[0][:, 0], grads[0][:, j])
        for a, b in zip(gj[1:], grads[1:]):
            assert torch.equal(a[0], b[j])


def test_bad_tile_refused():
    p = torch.zeros(4, 1, 2)
    with pytest.raises(ValueError, match="tile"):
        residual_head(p, *_params(1, 2, 2, torch.float32), tile=0)
