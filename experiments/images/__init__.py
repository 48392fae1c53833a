"""Semi-supervised image classification (digits, MNIST) with no diffusion, graph diffusion or SDE noise.

Run ``python -m experiments.images.run [--smoke|--full] [--out DIR]``; see :mod:`experiments.images.run`.
"""
