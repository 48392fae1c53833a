"""Regressions of the graph a model diffuses over. The old design cached a model's Laplacian under the
memory address (data_ptr) of the edge_index or feature tensor and defaulted ConvectionDiffusionNet to a kNN
graph: a new graph at a reused address, an edge list edited in place, or a mini-batch filling the previous
batch's memory silently reused the old graph, and edges in the batch were ignored. Now a model builds its
Laplacian from what each call gives it (or uses the `Laplacian` / `Graph` it is given) and says which."""

from __future__ import annotations

import pytest
import torch
from model_graphs import features

from cdflow import SolverSpec
from cdflow.graph import Graph, Laplacian
from cdflow.models import COIN, ConvectionDiffusionNet, DiffResNet, DiffusionSpec, GraphSpec

F64 = torch.float64
N, F, C = 30, 5, 3
_FAST = SolverSpec(method="rk4", step_size=0.25)


def _edge_lists(seed: int, n: int = N, e: int = 60) -> list[list[int]]:
    """A random edge list [2, E] as Python lists (no self-loops); same shape for every seed."""
    gen = torch.Generator().manual_seed(seed)
    src = torch.randint(0, n, (e,), generator=gen)
    dst = (src + torch.randint(1, n, (e,), generator=gen)) % n
    return [src.tolist(), dst.tolist()]


_MODELS = {
    "coin": lambda graph: COIN(F, C, tau=0.3, n_steps=6, graph=graph),
    "coin-split": lambda graph: COIN(F, C, tau=0.3, n_steps=6, integrator="split", graph=graph),
    "diffresnet": lambda graph: DiffResNet(F, C, hidden=8, tau=0.3, n_steps=6, graph=graph),
    "cdnet-split": lambda graph: ConvectionDiffusionNet(
        F, C, hidden=6, width=8, solver=_FAST, graph=graph,
        diffusion=DiffusionSpec(kind="graph", integrator="split", gamma=1.0, n_steps=2)),
    "cdnet-drift": lambda graph: ConvectionDiffusionNet(
        F, C, hidden=6, width=8, solver=_FAST, graph=graph,
        diffusion=DiffusionSpec(kind="graph", integrator="drift", gamma=1.0)),
}


def _build(name: str, graph: GraphSpec | None, state: dict | None = None) -> torch.nn.Module:
    torch.manual_seed(0)
    model = _MODELS[name](graph).double().eval()
    if state is not None:
        model.load_state_dict(state)
    return model


def _fresh(model: torch.nn.Module, name: str, graph: GraphSpec, x, g) -> torch.Tensor:
    """The output of a newly built model with the same weights, on this input alone."""
    return _build(name, graph, model.state_dict())(x, g)


# ------------------------------------------------------------------- (a) a new or edited edge_index
@pytest.mark.parametrize("name", list(_MODELS))
def test_new_edge_index_at_a_reused_address_is_used(name: str) -> None:
    """Create an edge_index, run, delete it, create another one (different edges, same shape) in the freed
    memory — what an allocator often does, done here deterministically — and run again."""
    spec = GraphSpec(source="edges")
    model = _build(name, spec)
    x = features(N, F).double()
    first, second = _edge_lists(1), _edge_lists(2)
    ei = torch.tensor(first)
    out1 = model(x, ei)
    storage, address = ei.untyped_storage(), ei.data_ptr()
    del ei
    ei = torch.empty(0, dtype=torch.long).set_(storage, 0, (2, len(second[0]))).copy_(torch.tensor(second))
    del storage
    assert ei.data_ptr() == address
    out2 = model(x, ei)
    assert not torch.allclose(out1, out2)
    torch.testing.assert_close(out2, _fresh(model, name, spec, x, torch.tensor(second)), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(out1, _fresh(model, name, spec, x, torch.tensor(first)), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("name", list(_MODELS))
def test_edge_index_edited_in_place_is_used(name: str) -> None:
    spec = GraphSpec(source="edges")
    model = _build(name, spec)
    x = features(N, F).double()
    ei = torch.tensor(_edge_lists(3))
    out1 = model(x, ei)
    ei[1] = (ei[1] + 5) % N  # same tensor, same address, other edges
    out2 = model(x, ei)
    assert not torch.allclose(out1, out2)
    torch.testing.assert_close(out2, _fresh(model, name, spec, x, ei.clone()), rtol=1e-12, atol=1e-12)


# ------------------------------------------------------------------- (b) one kNN graph per mini-batch
@pytest.mark.parametrize("integrator", ["split", "drift"])
@pytest.mark.parametrize("refill", ["in-place buffer", "new tensor in the freed memory"])
def test_minibatch_knn_graph_is_each_batch_own(refill: str, integrator: str) -> None:
    """32 batches of the same shape through forward(x_batch): each output equals a freshly built copy of the
    model run on that batch alone — when a loader fills one buffer, or hands out a new tensor placed in the
    memory the previous batch freed."""
    spec = GraphSpec(source="knn", knn_k=5, knn_k_scale=3)

    def build(state=None):
        torch.manual_seed(0)
        m = ConvectionDiffusionNet(4, 3, hidden=6, width=8, solver=_FAST, graph=spec,
                                   diffusion=DiffusionSpec(kind="graph", integrator=integrator, gamma=1.0,
                                                           n_steps=2)).eval()
        if state is not None:
            m.load_state_dict(state)
        return m

    model = build()
    data = torch.randn(32, 16, 4, generator=torch.Generator().manual_seed(0))
    buffer, freed = torch.empty(16, 4), None
    outs = []
    for i in range(32):
        if refill == "in-place buffer":
            xb = buffer.copy_(data[i])
        elif freed is None:
            xb = data[i].clone()
        else:
            xb = torch.empty(0).set_(freed, 0, (16, 4)).copy_(data[i])
        outs.append(model(xb).detach())
        freed = xb.untyped_storage()
        del xb
    for i in range(32):
        alone = build(model.state_dict())
        torch.testing.assert_close(outs[i], alone(data[i].clone()), rtol=1e-6, atol=1e-7)
    assert model.last_graph.startswith("knn graph, combinatorial Laplacian, 16 nodes")
    # and the graph matters: diffusing the first batch over the last batch's graph gives another answer
    other = Laplacian.from_knn(data[-1], k=5, k_scale=3)
    assert not torch.allclose(outs[0], build(model.state_dict())(data[0].clone(), other), atol=1e-5)


# ------------------------------------------------------------------- (c) edges present, default spec
@pytest.mark.parametrize("name", ["coin", "coin-split", "diffresnet", "cdnet-split", "cdnet-drift"])
def test_default_graph_spec_diffuses_over_the_batch_edges(name: str) -> None:
    model = _build(name, None)  # the model's own default: GraphSpec(), source 'auto'
    assert model.graph.source == "auto"
    x = features(N, F).double()
    ei = torch.tensor(_edge_lists(4))
    lap = Laplacian.from_edges(ei, N, kind="gcn", dtype=F64)
    out = model(x, ei)
    assert model.last_graph == lap.describe() and model.last_graph.startswith("edges graph")
    torch.testing.assert_close(out, model(x, lap), rtol=1e-12, atol=1e-12)
    # a DataModule's Graph (edges and fixed features): the same edges
    torch.testing.assert_close(model(x, Graph(ei, N, x=x)), out, rtol=1e-12, atol=1e-12)
    assert model.last_graph == lap.describe()
    # not the kNN graph of the features
    knn = _build(name, GraphSpec(source="knn"), model.state_dict())
    assert not torch.allclose(knn(x, ei), out)
    assert knn.last_graph.startswith("knn graph")
    # without edges, 'auto' falls back to the kNN graph of x
    torch.testing.assert_close(model(x), knn(x, ei), rtol=1e-12, atol=1e-12)
    assert model.last_graph.startswith("knn graph")
