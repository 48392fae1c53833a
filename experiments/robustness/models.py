"""The compared classifiers, all taking flattened pixels in [0, 1] and normalising inside.

* ``ode``: `ConvectionDiffusionNet` with no diffusion (neural ODE, Euler steps).
* ``sde``: the same network with diffusion ``noise`` (dZ = v dt + ς dW, Euler–Maruyama, same steps), trained
  with one path per step and evaluated by the Feynman–Kac Monte Carlo mean of the softmax over paths.
* ``sde_mean_field``: the SDE-trained weights evaluated by the noise-free ODE (``diffusion.mean_field``).
* ``conv_ode``: optionally, the convolutional neural ODE of ``experiments/configs/mnist.yaml`` (a checkpoint).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from cdflow.models import ConvectionDiffusionNet
from cdflow.models.diffusion_spec import DiffusionSpec
from cdflow.solvers import SolverSpec
from experiments.robustness.config import HPARAMS

#: MNIST pixel mean and std (= cdflow.data.modules.MNIST_STATS["mnist"]; not imported: it pulls in Lightning).
MEAN, STD = 0.1307, 0.3081


class Normalized(nn.Module):
    """x ∈ [0, 1]^784 ↦ net((x − mean) / std), reshaped to `shape` first; returns the net's scores."""

    def __init__(self, net: nn.Module, shape: tuple[int, ...] = (784,)) -> None:
        super().__init__()
        self.net, self.shape = net, shape

    def forward(self, x: Tensor) -> Tensor:
        return self.net(((x - MEAN) / STD).reshape(x.shape[0], *self.shape))


def build_model(kind: str, seed: int, n_samples: int = 8, sigma: float = 0.5) -> Normalized:
    """``ode`` or ``sde`` (noise ς = `sigma`): the shared `ConvectionDiffusionNet` (784 → hidden, MLP velocity,
    linear head)."""
    hp = HPARAMS
    solver = SolverSpec(method=hp["method"], step_size=hp["step_size"], t1=hp["t1"])
    if kind == "sde":
        diffusion = DiffusionSpec(kind="noise", sigma=sigma, noise_type=hp["noise_type"], n_samples=n_samples)
    elif kind == "ode":
        diffusion = DiffusionSpec(kind="none")
    else:
        raise ValueError(f"unknown model kind {kind!r}")
    net = ConvectionDiffusionNet(784, 10, hidden=hp["hidden"], width=hp["width"], depth=hp["depth"],
                                 activation=hp["activation"], solver=solver, diffusion=diffusion,
                                 dropout=hp["dropout"], seed=seed)
    return Normalized(net)


def load_conv_ode(path: str) -> Normalized:
    """The conv neural ODE of a ``cdflow fit --config experiments/configs/mnist.yaml`` checkpoint."""
    from cdflow.training.module import ContinuousDepthClassifier

    module = ContinuousDepthClassifier.load_from_checkpoint(path, map_location="cpu")
    return Normalized(module.net, (1, 28, 28))


def set_paths(model: nn.Module, seed: int) -> None:
    """Point the SDE's evaluation Brownian paths at `seed` (no-op for ODE models)."""
    net = getattr(model, "net", None)
    if isinstance(net, ConvectionDiffusionNet):
        net.seed = seed


def set_mean_field(model: nn.Module, on: bool) -> None:
    """Evaluate an SDE model by its noise-free ODE (True) or the Monte Carlo mean (False)."""
    net = getattr(model, "net", None)
    if isinstance(net, ConvectionDiffusionNet):
        net.diffusion.mean_field = on


def is_stochastic(model: nn.Module) -> bool:
    """Whether the model's evaluation averages over random paths."""
    net = getattr(model, "net", None)
    return isinstance(net, ConvectionDiffusionNet) and net.diffusion.kind == "noise" and not net.diffusion.mean_field


@torch.no_grad()
def accuracy(model: nn.Module, x: Tensor, y: Tensor, batch: int) -> float:
    """Clean accuracy of `model` on (x, y), in eval mode, by batches."""
    model.eval()
    correct = sum(int((model(x[i:i + batch]).argmax(-1) == y[i:i + batch]).sum()) for i in range(0, len(y), batch))
    return correct / len(y)
