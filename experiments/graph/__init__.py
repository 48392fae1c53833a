"""Node classification on Cora and Citeseer: COIN, Diff-ResNet, their no-diffusion ablations, a continuous
convection–diffusion network and the MLP / GCN / APPNP / SGC baselines, with many initialisations trained as
one library model with a member axis by `cdflow.training.fit_members`.

Run with ``python -m experiments.graph.run [--smoke|--full] [--out DIR]``.
"""
