"""cdflow.models.layers: dropout masks, per-member linear layers, per-member losses."""

import pytest
import torch

from cdflow.errors import ConfigError
from cdflow.models.layers import MemberLinear, dropout, keep_mask, member_generators, member_nll
from cdflow.sparse import SparseMatrix


@pytest.mark.parametrize("p", [0.25, 0.35, 0.8])
def test_keep_mask_rate_and_scale(p):
    torch.manual_seed(0)
    mask = keep_mask((300, 7, 11), p)
    assert mask.dtype == torch.bool and mask.shape == (300, 7, 11)
    rate = float(mask.float().mean())
    assert abs(rate - (1 - p)) < 4 * (p * (1 - p) / mask.numel()) ** 0.5
    h = torch.ones(5, 4)
    assert dropout(h, p, training=False) is h
    assert dropout(h, 0.0) is h
    values = torch.unique(dropout(torch.ones(50, 50), p))
    torch.testing.assert_close(values, torch.tensor([0.0, 1.0 / (1.0 - p)]))
    with pytest.raises(ConfigError, match=r"\[0, 1\)"):
        keep_mask((3,), 1.0)


def test_keep_mask_follows_the_default_generator():
    torch.manual_seed(3)
    a = keep_mask((17, 5), 0.3)
    torch.manual_seed(3)
    assert torch.equal(keep_mask((17, 5), 0.3), a)


def test_masks_are_made_on_the_device_of_what_they_mask():
    """keep_mask draws on the device it is given, and dropout masks on its input's device (the meta device stands
    in for a GPU here: a mask made on the CPU fails to multiply a tensor on another device)."""
    assert keep_mask((4, 5), 0.3).device.type == "cpu"
    assert keep_mask((4, 5), 0.3, "meta").device.type == "meta"
    assert dropout(torch.ones(4, 5, device="meta"), 0.3).device.type == "meta"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_dropout_on_cuda_keeps_the_rate():
    torch.manual_seed(0)
    out = dropout(torch.ones(400, 300, device="cuda"), 0.25)
    assert out.device.type == "cuda"
    assert abs(float((out > 0).float().mean()) - 0.75) < 4 * (0.25 * 0.75 / out.numel()) ** 0.5


def test_member_linear_matches_nn_linear():
    layer = MemberLinear(3, 6, 4)
    refs = [torch.nn.Linear(6, 4) for _ in range(3)]
    for k, ref in enumerate(refs):
        layer.load_member(k, ref)
    h = torch.randn(10, 3, 6)
    out = layer(h)
    for k, ref in enumerate(refs):
        torch.testing.assert_close(out[:, k], ref(h[:, k]))
    no_bias = MemberLinear(3, 6, 4, bias=False)
    with torch.no_grad():
        no_bias.weight.copy_(layer.weight)
    torch.testing.assert_close(no_bias(h), out - layer.bias)


def test_member_linear_forward_shared():
    """A shared input [N, in] (dense or SparseMatrix) → [N, K, out]; dropout masks differ per member."""
    layer = MemberLinear(3, 6, 4).double()
    x = torch.randn(10, 6, dtype=torch.float64)
    x[x.abs() < 0.5] = 0.0
    ref = torch.stack([x @ layer.weight[k] + layer.bias[k] for k in range(3)], dim=1)
    torch.testing.assert_close(layer.forward_shared(x), ref)
    torch.testing.assert_close(layer.forward_shared(SparseMatrix.from_tensor(x)), ref)
    torch.testing.assert_close(layer.forward_shared(x, 0.5, training=False), ref)
    with torch.no_grad():
        layer.weight[1:] = layer.weight[0]
        layer.bias[1:] = layer.bias[0]
    for given in (x, SparseMatrix.from_tensor(x)):
        out = layer.forward_shared(given, 0.5, training=True)
        assert out.shape == (10, 3, 4) and not torch.allclose(out[:, 0], out[:, 1])


def test_member_initialisation_is_nn_linear_from_each_seed():
    a, b = MemberLinear(3, 6, 4), MemberLinear(2, 6, 4)
    a.reset_parameters(member_generators([5, 6, 7]))
    b.reset_parameters(member_generators([7, 5]))
    torch.testing.assert_close(a.weight[2], b.weight[0])
    torch.testing.assert_close(a.bias[0], b.bias[1])
    bound = 1 / 6**0.5
    assert a.weight.abs().max() <= bound and a.bias.abs().max() <= bound


def test_member_nll():
    logp = torch.log_softmax(torch.randn(12, 3, 5), dim=-1)
    y = torch.arange(12) % 5
    idx = torch.tensor([0, 3, 4, 9])
    losses = member_nll(logp, y, idx)
    assert losses.shape == (3,)
    for k in range(3):
        torch.testing.assert_close(losses[k], torch.nn.functional.nll_loss(logp[idx, k], y[idx]))
