"""SDE noise: dX = v_θ dt + ς dW, the Feynman–Kac mean of the class probabilities and its spread."""
import os

import matplotlib.pyplot as plt
import torch

from cdflow import Convection, MLPVelocity, NoiseDiffusion, SolverSpec, StochasticDepth, feynman_kac
from cdflow.data import make_moons

# 1. Feynman–Kac on a closed form: dX = ς dW, f(x) = x², so u(x) = E f(X_T) = x² + ς² T.
zero = Convection(lambda t, x: torch.zeros_like(x))
x0 = torch.tensor([[0.0], [1.0], [2.0]])
mean, std = feynman_kac(zero, NoiseDiffusion("diagonal", sigma=0.5), x0, SolverSpec(method="euler", step_size=0.1),
                        n_samples=20000, payoff=lambda v: v**2, seed=0)
for xi, m, s in zip(x0[:, 0], mean[:, 0], std[:, 0]):
    print(f"x = {xi:.0f}: E f(X_T) = {m:.4f} ± {s / 20000**0.5:.4f} (standard error); exact {xi**2 + 0.25:.4f}")

# 2. A classifier with noise: X(0) = x, dX = v_θ(t, X) dt + ς dW, prediction = softmax(head(X(T))).
torch.manual_seed(0)
x, y = make_moons(n_per_class=250, noise=0.1, seed=0)
velocity = Convection(MLPVelocity(dim=2, width=32, depth=2, activation="tanh"))
noise = NoiseDiffusion("diagonal", sigma=0.5)
spec = SolverSpec(method="euler", step_size=0.1, t1=1.0)          # any torchsde method: cdflow.sde_methods()
flow = StochasticDepth([velocity], noise, spec, seed=0, eval_samples=16)
head = torch.nn.Linear(2, 2)
opt = torch.optim.Adam([*flow.parameters(), *head.parameters()], lr=1e-2)
flow.train()
for _ in range(150):                                           # each call: a fresh Brownian path
    loss = torch.nn.functional.cross_entropy(head(flow(x)), y)
    opt.zero_grad(); loss.backward(); opt.step()                  # noqa: E702
print(f"training loss {loss.item():.3f}; last solve: {flow.stats}")

# Evaluation: u(x) = E softmax(head(X_T)) over 64 paths (Feynman–Kac), with the spread across paths.
probs = lambda z: torch.softmax(head(z), dim=-1)                  # noqa: E731
with torch.no_grad():
    mean, std = feynman_kac(flow.drift, noise, x, spec, n_samples=64, payoff=probs, seed=1)
    ode, _ = feynman_kac(flow.drift, noise, x, spec, n_samples=64, payoff=probs, mean_field=True)
print(f"accuracy of the Feynman–Kac mean {(mean.argmax(1) == y).float().mean():.3f}, "
      f"of the noise-free ODE {(ode.argmax(1) == y).float().mean():.3f}")
print(f"std of P(class 1) across paths: median {std[:, 1].median():.3f}, max {std[:, 1].max():.3f}")
uncertain = std[:, 1].topk(5).indices
print("most uncertain points (x, y, P(class 1), std):")
for i in uncertain:
    print(f"  ({x[i, 0]:+.2f}, {x[i, 1]:+.2f})  {mean[i, 1]:.2f}  {std[i, 1]:.2f}")

# The mean and the spread over a grid of inputs.
g = torch.linspace(-2.0, 3.0, 60)
grid = torch.stack(torch.meshgrid(g, torch.linspace(-1.5, 2.0, 50), indexing="xy"), -1).reshape(-1, 2)
with torch.no_grad():
    gmean, gstd = feynman_kac(flow.drift, noise, grid, spec, n_samples=32, payoff=probs, seed=2)
fig, axes = plt.subplots(1, 2, figsize=(10, 4))
for ax, values, title in zip(axes, (gmean[:, 1], gstd[:, 1]), ("E P(class 1)", "std of P(class 1) across paths")):
    im = ax.contourf(g, torch.linspace(-1.5, 2.0, 50), values.reshape(50, 60), levels=20, cmap="coolwarm")
    ax.scatter(x[:, 0], x[:, 1], c=y, s=4, cmap="bwr", edgecolors="none")
    ax.set_title(title)
    fig.colorbar(im, ax=ax)
fig.tight_layout()
fig.savefig(os.path.join(os.environ.get("CDFLOW_DOCS_FIGURES", "."), "feynman_kac_moons.png"), dpi=80)
