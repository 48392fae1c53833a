"""Ready models built from the core: COIN, Diff-ResNet, and a general convection–diffusion network."""

from cdflow.models.cdnet import ConvectionDiffusionNet
from cdflow.models.coin import COIN
from cdflow.models.diffresnet import DiffResNet
from cdflow.models.diffusion_spec import DiffusionSpec
from cdflow.models.graph_source import GraphSpec, LaplacianCache

__all__ = ["COIN", "ConvectionDiffusionNet", "DiffResNet", "DiffusionSpec", "GraphSpec", "LaplacianCache"]
