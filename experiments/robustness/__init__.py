"""Robustness of a neural ODE vs the convection–diffusion SDE with Feynman–Kac averaging on MNIST.

Run ``python -m experiments.robustness.run [--smoke|--full] [--out DIR]``; see :mod:`experiments.robustness.run`.
"""
