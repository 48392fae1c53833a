"""Ready models built from the core: COIN, Diff-ResNet, and a general convection–diffusion network.

COIN and Diff-ResNet train K initialisations as one model with ``members=K``; any other network is
stacked by `Members`. Graph baselines (MLP, GCN, APPNP, SGC) are in `cdflow.models.baselines`.
"""

from cdflow.models.cdnet import ConvectionDiffusionNet
from cdflow.models.coin import COIN
from cdflow.models.diffresnet import DiffResNet
from cdflow.models.diffusion_spec import DiffusionSpec
from cdflow.models.graph_source import GraphSpec, resolve_graph
from cdflow.models.members import Members

__all__ = ["COIN", "ConvectionDiffusionNet", "DiffResNet", "DiffusionSpec", "GraphSpec", "Members", "resolve_graph"]
