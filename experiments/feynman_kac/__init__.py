"""Feynman–Kac check: a noise-injected ResNet averaged over noise against the convection–diffusion PDE.

Run with ``python -m experiments.feynman_kac.run [--smoke|--full] [--out DIR]``.
"""
