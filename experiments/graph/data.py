"""The graph tasks: features and operators built once per dataset, and the split masks.

Random splits (COIN / Diff-ResNet protocol): the largest connected component, 20 labelled training nodes
and 30 validation nodes per class drawn with `random_split(labels, seed)`, every other node is a test node.
Split i uses the i-th seed of the Diff-ResNet reference code (`graph/train.py`:
``np.random.RandomState(42).randint(0, 1000000, 100)``), so the splits are the reference's splits.
Planetoid public split: the whole graph, 140/500/1000 (Cora) or 120/500/1000 (Citeseer) nodes.

Initialisation seeds (`init_seeds`): "paired" gives initialisation i of split s the seed 1000·s + i; "authors"
the reference's ``torch_seeds`` (`graph/train.py`, ``run_single_split``): the split's own
``RandomState(seed_s)``, continued after drawing the split, ``.randint(0, 1000000, num_inits)[i]`` (the i-th value
does not depend on num_inits). The Planetoid split uses split 0's seeds under either rule.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from cdflow.data.graphs import GraphData, load_graph, random_split
from cdflow.data.planetoid import load_planetoid
from cdflow.graph import Laplacian
from cdflow.models.baselines import gcn_adjacency
from cdflow.sparse import SparseMatrix

#: The split seeds of the reference code, in order (split i of any protocol uses SPLIT_SEEDS[i]).
SPLIT_SEEDS: tuple[int, ...] = tuple(int(s) for s in np.random.RandomState(42).randint(0, 1_000_000, 100))
#: How initialisation i of split s is seeded (see the module docstring).
SEED_RULES = ("paired", "authors")


def authors_init_seeds(labels: np.ndarray | Tensor, split_seed: int, n: int, train_per_class: int = 20,
                       val_per_class: int = 30) -> list[int]:
    """The first n initialisation seeds of the Diff-ResNet reference for the split of seed `split_seed`:
    ``RandomState(split_seed)`` draws the split as `random_split` does (per class in increasing order,
    ``choice(nodes of the class, per_class, replace=False)``, training nodes, then validation nodes among the
    rest), then ``randint(0, 1000000, n)``. Raises if the draws replayed here do not give `random_split`'s split
    (then the state would not be the reference's either)."""
    y = np.asarray(labels.cpu() if isinstance(labels, Tensor) else labels).astype(np.int64)
    rng = np.random.RandomState(split_seed)
    classes = np.unique(y)
    chosen = np.zeros(len(y), dtype=bool)
    masks = []
    for per_class in (train_per_class, val_per_class):
        picks = [rng.choice(np.flatnonzero((y == c) & ~chosen), per_class, replace=False) for c in classes]
        mask = np.zeros(len(y), dtype=bool)
        mask[np.concatenate(picks)] = True
        masks.append(mask)
        chosen |= mask
    train, val, _ = random_split(y, split_seed, train_per_class, val_per_class)
    if not (np.array_equal(masks[0], train) and np.array_equal(masks[1], val)):
        raise RuntimeError(f"replaying the split of seed {split_seed} did not give random_split's split")
    return [int(v) for v in rng.randint(0, 1_000_000, n)]


def init_seeds(rule: str, split: int, inits: tuple[int, ...] | list[int], labels: np.ndarray | Tensor) -> list[int]:
    """The seeds of initialisations `inits` of random split `split` under `rule` (`labels`: the random-split
    graph's, needed by "authors")."""
    if rule == "paired":
        return [1000 * split + i for i in inits]
    if rule == "authors":
        stream = authors_init_seeds(labels, SPLIT_SEEDS[split], max(inits) + 1)
        return [stream[i] for i in inits]
    raise ValueError(f"unknown initialisation seed rule {rule!r} (choose from {', '.join(SEED_RULES)})")


@dataclass
class Masks:
    """Node indices of the training, validation and test sets."""

    train: Tensor
    val: Tensor
    test: Tensor

    @classmethod
    def from_bool(cls, train: np.ndarray, val: np.ndarray, test: np.ndarray) -> Masks:
        return cls(*(torch.from_numpy(np.flatnonzero(m)) for m in (train, val, test)))


@dataclass
class GraphTask:
    """One dataset, ready for the models (built once, shared by every unit of the process).

    x: features as a `SparseMatrix`; lap: the GCN-form Laplacian L = diag(Â·1) − Â (COIN / Diff-ResNet /
    continuous net); adj: Â = D̃^{-1/2}(A + I)D̃^{-1/2} (GCN / APPNP / SGC); lam_max: Lanczos estimate of λ_max(L).
    public: the Planetoid public split when the task is the Planetoid graph.
    """

    name: str
    data: GraphData
    x: SparseMatrix
    lap: Laplacian
    adj: SparseMatrix
    lam_max: float
    public: Masks | None = None

    @property
    def y(self) -> Tensor:
        return self.data.y

    @property
    def num_features(self) -> int:
        return self.data.num_features

    @property
    def num_classes(self) -> int:
        return self.data.num_classes

    def masks(self, split: int) -> Masks:
        """Random split number `split` (seed SPLIT_SEEDS[split]; 20 train / 30 validation per class), or the
        public split."""
        if self.public is not None:
            return self.public
        return Masks.from_bool(*random_split(self.data.y, SPLIT_SEEDS[split]))


def load_task(name: str, planetoid: bool = False, root: str | os.PathLike[str] | None = None) -> GraphTask:
    """Cora / Citeseer with the authors' preprocessing (LCC), or the Planetoid graph with its public split."""
    public = None
    if planetoid:
        data, train, val, test = load_planetoid(name, root)  # type: ignore[arg-type]
        public = Masks.from_bool(train, val, test)
    else:
        data = load_graph(name, root)  # type: ignore[arg-type]
    lap = Laplacian.from_edges(data.edge_index, data.num_nodes, kind="gcn", dtype=torch.float32)
    return GraphTask(
        name=data.name,
        data=data,
        x=SparseMatrix.from_tensor(data.x),
        lap=lap,
        adj=SparseMatrix.from_tensor(gcn_adjacency(data.edge_index, data.num_nodes)),
        lam_max=lap.spectral_bound().estimate,
        public=public,
    )
