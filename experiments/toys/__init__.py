"""2-D toy experiments of Diff-ResNet: moons / circles / spirals with and without diffusion, XOR l/d curve.

Run with ``python -m experiments.toys.run [--smoke|--full] [--out DIR]``.
"""
