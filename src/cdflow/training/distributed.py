"""What a network needs to know about the process group: per-rank noise seeds.

Under DDP every rank trains on different samples, so every rank must draw its own Brownian paths; and a
rerun with the same seed and the same world size must draw the same ones. `fold_rank` gives each module
that has an integer ``seed`` (`ConvectionDiffusionNet`, `StochasticDepth`, or any network following the
same convention) the seed `rank_seed(seed, rank)`: rank 0 keeps the run seed, so a single process draws
exactly what it always drew, and rank r > 0 gets an independent stream keyed by (seed, r).

Gathering a mini-batch across ranks for a kNN graph is `cdflow.models.graph_source.gather_rows`
(``--model.graph.gather true``).
"""

from __future__ import annotations

from torch import nn

from cdflow.sde import derive_seed

#: Key of the per-rank stream (a constant, so that rank r of seed s never equals rank 0 of another seed).
RANK_STREAM = 0x52414E4B  # "RANK"


def rank_seed(seed: int, rank: int) -> int:
    """The seed of `rank` for the run seed `seed`: `seed` itself on rank 0, an independent one elsewhere."""
    return int(seed) if rank == 0 else derive_seed(int(seed), RANK_STREAM, int(rank))


def fold_rank(net: nn.Module, rank: int) -> list[nn.Module]:
    """Give every submodule of `net` with an integer ``seed`` the seed of `rank`; return those modules.

    The run seed is kept as ``base_seed`` on first use, so calling this again (fit, then test) or with
    another rank never compounds.
    """
    seeded = []
    for module in net.modules():
        seed = getattr(module, "seed", None)
        if isinstance(seed, bool) or not isinstance(seed, int):
            continue
        if not hasattr(module, "base_seed"):
            module.base_seed = seed
        module.seed = rank_seed(module.base_seed, rank)
        seeded.append(module)
    return seeded
