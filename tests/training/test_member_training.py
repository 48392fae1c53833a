"""Many initialisations and the paper's stopping rule on the main path (`ContinuousDepthClassifier` +
`MemberEarlyStopping`), held against the library's plain loop (`fit_members`) on a small stochastic block
model: the same weights are evaluated, the same members stop at the same evaluations, the same states return."""

from __future__ import annotations

import lightning as L
import pytest
import torch

from cdflow.data.base import CdflowDataModule
from cdflow.errors import ConfigError
from cdflow.models import COIN, ConvectionDiffusionNet, DiffResNet, DiffusionSpec
from cdflow.training import (
    ContinuousDepthClassifier,
    MemberEarlyStopping,
    MemberStopping,
    MemberTraining,
    StoppingRule,
    fit_node_members,
    member_views,
)
from cdflow.training.last_checkpoint import LastCheckpoint

N, F, C = 120, 30, 3


class SBM(CdflowDataModule):
    """3 communities of 40 nodes, dense intra / sparse inter edges, noisy bag-of-words features."""

    def __init__(self, seed: int = 0, sparse_features: bool = True) -> None:
        super().__init__(transductive=True)
        self.num_features, self.num_classes, self.input_shape = F, C, (F,)
        self.seed, self.sparse = seed, sparse_features

    def setup(self, stage: str | None = None) -> None:
        if self.batch is not None:
            return
        gen = torch.Generator().manual_seed(self.seed)
        y = torch.arange(N) % C
        same = y[:, None] == y[None, :]
        p = torch.where(same, torch.tensor(0.15), torch.tensor(0.01))
        adj = torch.triu((torch.rand(N, N, generator=gen) < p).float(), 1)
        ei = (adj + adj.T).nonzero().T.contiguous()
        x = (torch.rand(N, F, generator=gen) < 0.1).float()
        x[torch.arange(N), y * 3 + torch.randint(0, 3, (N,), generator=gen)] = 1.0  # weak class signal
        x = x / x.sum(1, keepdim=True)
        perm = torch.randperm(N, generator=gen)
        masks = [torch.zeros(N, dtype=torch.bool) for _ in range(3)]
        masks[0][perm[:15]], masks[1][perm[15:45]], masks[2][perm[45:]] = True, True, True
        self.set_batch({"x": x, "y": y, "train_mask": masks[0], "val_mask": masks[1], "test_mask": masks[2],
                        "edge_index": ei}, sparse_features=self.sparse)


def _fit_lightning(tmp_path, net, members=1, patience=5, validate_on_train_forward=True, max_epochs=300):
    dm = SBM()
    module = ContinuousDepthClassifier(C, (F,), model=net, members=members, lr=0.01, weight_decay=5e-4,
                                       validate_on_train_forward=validate_on_train_forward)
    stopper = MemberEarlyStopping(patience=patience)
    trainer = L.Trainer(default_root_dir=tmp_path, logger=False, enable_progress_bar=False, enable_model_summary=False,
                        enable_checkpointing=False, max_epochs=max_epochs, callbacks=[stopper],
                        limit_val_batches=0 if validate_on_train_forward else 1.0,
                        num_sanity_val_steps=0 if validate_on_train_forward else 1)
    trainer.fit(module, datamodule=dm)
    return module, stopper, trainer, dm


def _fit_loop(net, dm, members=1, patience=5, deterministic=True, max_epochs=300):
    b = dm.batch
    idx = {k: b[f"{k}_mask"].nonzero().flatten() for k in ("train", "val")}
    fit, _ = fit_node_members(net, b["x"], b["graph"], b["y"], idx["train"], idx["val"],
                              MemberTraining(lr=0.01, weight_decay=5e-4, max_epochs=max_epochs,
                                             rule=StoppingRule(patience)), deterministic=deterministic, members=members)
    return fit


def _flat(net):
    return torch.cat([p.detach().reshape(-1) for p in net.parameters()])


def test_cdflow_fit_equals_the_library_loop_for_coin(tmp_path):
    """Same data, seed and rule: the Lightning path evaluates the same weights, stops each member at the same
    evaluation and restores the same best weights as `fit_members`."""
    module, stopper, trainer, dm = _fit_lightning(tmp_path, COIN(F, C, tau=0.2, n_steps=5, seed=3), members=3)
    loop_net = COIN(F, C, tau=0.2, n_steps=5, seed=3, members=3)
    fit = _fit_loop(loop_net, dm, members=3)
    assert module.restored_best
    assert torch.equal(stopper.state.best_epoch, fit.stopping.best_epoch)
    assert torch.equal(stopper.state.stopped_at, fit.stopping.stopped_at)
    assert bool((stopper.state.stopped_at >= 0).any())  # members stopped on their own …
    assert bool((stopper.state.stopped_at != stopper.state.stopped_at[0]).any())  # … at different epochs
    assert stopper.state.evaluations == fit.epochs  # one evaluation per epoch, the initial weights included
    torch.testing.assert_close(_flat(module.net), _flat(loop_net), rtol=1e-5, atol=1e-6)


def test_members_equal_separate_runs(tmp_path):
    """Member k of `members=3` trains as a one-member run seeded seed + k: members never mix. Forward and
    gradients are a one-member model's (tests/models/test_member_axis.py) and `MemberAdam` steps each member as
    the one-member model is stepped (tests/training/test_optim.py); what remains is BLAS rounding that depends
    on where a member's weights sit in memory (member 0 is bit for bit, others drift by ~1e-7 after a few
    epochs), so after 40 epochs without stopping the weights agree to rounding. A member that saw another
    member's data or gradients would differ at the percent level."""
    kw = dict(tau=0.2, n_steps=5)
    together, _, _, _ = _fit_lightning(tmp_path / "k3", COIN(F, C, seed=0, **kw), members=3, patience=1000,
                                       max_epochs=40)
    views = member_views(together.net, 3)
    for k in range(3):
        alone, _, _, _ = _fit_lightning(tmp_path / f"s{k}", COIN(F, C, seed=k, **kw), patience=1000, max_epochs=40)
        mine = torch.cat([v.detach().reshape(-1) for v in views[k]])
        if k == 0:
            assert torch.equal(mine, _flat(alone.net))  # the first member's weights sit where a lone model's do
        torch.testing.assert_close(mine, _flat(alone.net), rtol=1e-4, atol=1e-6)
    init = [torch.cat([v.reshape(-1) for v in m]) for m in member_views(COIN(F, C, members=3, seed=0, **kw), 3)]
    assert (init[0] - init[1]).abs().max() > 1e-2  # the members start apart: the comparison has teeth


def test_validation_loop_path_equals_the_loop_with_dropout(tmp_path):
    """With dropout the callback scores an evaluation forward after every epoch and θ₀ in the sanity check:
    the evaluated sequence is the loop's (non-deterministic mode), so best and stop epochs agree when the
    dropout masks are drawn alike; here p = 0 in the diffusion keeps both runs on the same random stream."""
    torch.manual_seed(0)
    net = DiffResNet(F, C, tau=0.2, n_steps=4, dropout=0.0, seed=1)
    module, stopper, trainer, dm = _fit_lightning(tmp_path, net, validate_on_train_forward=False)
    loop_net = DiffResNet(F, C, tau=0.2, n_steps=4, dropout=0.0, seed=1)
    fit = _fit_loop(loop_net, dm, deterministic=False)
    assert torch.equal(stopper.state.best_epoch, fit.stopping.best_epoch)
    assert stopper.state.evaluations == fit.epochs
    torch.testing.assert_close(_flat(module.net), _flat(loop_net), rtol=1e-5, atol=1e-6)


def test_validate_on_train_forward_is_refused_with_dropout():
    with pytest.raises(ConfigError, match="deterministic"):
        ContinuousDepthClassifier(C, (F,), model=DiffResNet(F, C, dropout=0.3), validate_on_train_forward=True)


def test_stopped_members_get_no_update(tmp_path):
    """A member that has stopped keeps its weights: Σ over running members only, and COIN skips its work."""
    net = COIN(F, C, tau=0.2, n_steps=5, members=2)
    module = ContinuousDepthClassifier(C, (F,), model=net, members=2, validate_on_train_forward=True)
    module.member_running = torch.tensor([True, False])
    dm = SBM()
    dm.setup()
    before = [v.detach().clone() for v in member_views(module.net, 2)[1]]
    opt = torch.optim.SGD(module.parameters(), lr=0.1)
    loss = module.training_step(dm.batch, 0)
    loss.backward()
    opt.step()
    for a, b in zip(before, member_views(module.net, 2)[1]):
        assert torch.equal(a, b.detach())


def test_generic_network_is_stacked_by_members(tmp_path):
    """A network without a member axis gets `Members`: K independent copies, each re-initialised."""
    net = ConvectionDiffusionNet(F, C, hidden=8, width=8, diffusion=DiffusionSpec(kind="graph", integrator="drift"))
    module = ContinuousDepthClassifier(C, (F,), model=net, members=3)
    copies = module.net.models
    assert len(copies) == 3 and copies[0] is net
    assert not torch.equal(copies[0].encoder.weight, copies[1].encoder.weight)
    dm = SBM()
    dm.setup()
    out = module(dm.batch["x"], dm.batch["graph"])
    assert out.shape == (N, 3, C)
    torch.testing.assert_close(out[:, 1], copies[1](dm.batch["x"], dm.batch["graph"]))


def test_member_stopping_rule_strict_and_ties():
    """The counter resets on a strict improvement of loss or accuracy; with improve_on_tie a tie counts."""
    w = [torch.zeros(2, 1)]
    views = [[w[0][0]], [w[0][1]]]
    strict, ties = MemberStopping(views, StoppingRule(2)), MemberStopping(views, StoppingRule(2, improve_on_tie=True))
    for epoch, (loss, acc) in enumerate([((1.0, 1.0), (0.5, 0.5)), ((1.0, 1.0), (0.5, 0.5)),
                                         ((1.0, 1.0), (0.5, 0.5))]):
        strict.update(torch.tensor(loss), torch.tensor(acc), epoch)
        ties.update(torch.tensor(loss), torch.tensor(acc), epoch)
    assert strict.all_stopped and int(strict.stopped_at[0]) == 2 and int(strict.best_epoch[0]) == 0
    assert not ties.all_stopped and int(ties.best_epoch[0]) == 2
    nan = MemberStopping([[torch.zeros(1)]], StoppingRule(1))
    assert not bool(nan.update(torch.tensor([float("nan")]), torch.tensor([1.0]), 0)[0])  # non-finite never improves


def test_edges_are_the_default_graph_and_the_run_says_so(tmp_path, capsys):
    """`--model.diffusion.kind graph` on data with edges diffuses over those edges (GraphSpec source auto)."""
    dm = SBM()
    module = ContinuousDepthClassifier(C, (F,), hidden=8, width=8, diffusion=DiffusionSpec(kind="graph"))
    trainer = L.Trainer(default_root_dir=tmp_path, logger=False, enable_progress_bar=False, enable_model_summary=False,
                        enable_checkpointing=False, max_epochs=1, num_sanity_val_steps=0)
    trainer.fit(module, datamodule=dm)
    assert "diffusing over the edges graph" in capsys.readouterr().out
    assert module.net.last_graph.startswith("edges graph")


def test_resumed_member_run_equals_an_uninterrupted_one(tmp_path):
    """The stopping state (counters, best states, stopped members) travels in last.ckpt, written when training
    ends and before the best weights are restored at the end of fit."""
    def fit(max_epochs, ckpt=None, save=None):
        dm = SBM()
        module = ContinuousDepthClassifier(C, (F,), model=COIN(F, C, tau=0.2, n_steps=5, seed=4), members=2,
                                           validate_on_train_forward=True)
        stopper = MemberEarlyStopping(patience=3)
        callbacks = [stopper] + ([LastCheckpoint(dirpath=save, every_n_epochs=0)] if save else [])
        trainer = L.Trainer(default_root_dir=tmp_path, logger=False, enable_progress_bar=False,
                            enable_model_summary=False, enable_checkpointing=bool(save), max_epochs=max_epochs,
                            callbacks=callbacks, limit_val_batches=0, num_sanity_val_steps=0)
        trainer.fit(module, datamodule=dm, ckpt_path=ckpt)
        return module, stopper

    whole, st_whole = fit(60)
    fit(20, save=tmp_path / "half")
    resumed, st_resumed = fit(60, ckpt=str(tmp_path / "half" / "last.ckpt"))
    assert torch.equal(st_whole.state.best_epoch, st_resumed.state.best_epoch)
    assert torch.equal(st_whole.state.stopped_at, st_resumed.state.stopped_at)
    torch.testing.assert_close(_flat(whole.net), _flat(resumed.net))


def test_a_model_built_for_other_data_is_refused_with_the_flags():
    with pytest.raises(ConfigError, match=r"in_features 30 .*num_classes 3 .*--model.model.init_args.in_features"):
        ContinuousDepthClassifier(C, (F,), model=COIN(1433, 7))


def test_member_losses_do_not_depend_on_the_number_of_members():
    """Each member's loss and accuracy are reduced alone: K = 5 gives member k the bits K = 1 gives it."""
    torch.manual_seed(0)
    logits = torch.randn(997, 5, C).log_softmax(-1)
    y = torch.randint(0, C, (997,))
    wide = ContinuousDepthClassifier(C, (F,), model=COIN(F, C, members=5))
    narrow = ContinuousDepthClassifier(C, (F,), model=COIN(F, C))
    for k in range(5):
        assert torch.equal(wide._member_losses(logits, y)[k], narrow._member_losses(logits[:, k], y)[0])


def test_members_redraw_every_layer_and_keep_a_zero_convection():
    """Members k ≥ 1 redraw all parameters, the chunk-major F-wide encoder too, and a zero-initialised convection
    output layer stays zero in every member (each module re-initialised by its outermost `reset_parameters`)."""
    net = ConvectionDiffusionNet(F, C, hidden=F, width=8, encoder="residual", propagate="logits",
                                 convection_init="zero", diffusion=DiffusionSpec(kind="graph", integrator="split",
                                                                                method="chebyshev"))
    copies = ContinuousDepthClassifier(C, (F,), model=net, members=3).net.models
    for k in (1, 2):
        for (name, a), b in zip(copies[0].named_parameters(), copies[k].parameters()):
            if name.startswith("velocity.net.1"):  # the zeroed output layer
                assert a.abs().max() == 0 and b.abs().max() == 0, name
            elif name == "encoder.b1":  # padding stays zero, the rest differs
                assert not torch.equal(a, b) and bool((b[0, F:] == 0).all())
            else:
                assert not torch.equal(a, b), name


@pytest.mark.parametrize("limit", [1.0, 3])
def test_validation_scored_on_the_training_forward_refuses_a_validation_loop(tmp_path, limit):
    """Both would score validation into the same metrics (the loop on the weights after the update)."""
    module = ContinuousDepthClassifier(C, (F,), model=COIN(F, C, tau=0.2, n_steps=5, seed=4),
                                       validate_on_train_forward=True)
    trainer = L.Trainer(default_root_dir=tmp_path, logger=False, enable_progress_bar=False, enable_model_summary=False,
                        enable_checkpointing=False, max_epochs=1, limit_val_batches=limit, num_sanity_val_steps=0)
    with pytest.raises(ConfigError, match="would score it again on other weights"):
        trainer.fit(module, datamodule=SBM())
    module.check_validation_loop(0)  # off: fine
    module.check_validation_loop(1.0, fast_dev_run=True)  # a smoke run's metrics are not results
