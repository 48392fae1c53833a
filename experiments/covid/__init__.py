"""COVID-19 forecasting in England with 90% of the targets missing: COIN against linear regression, an MLP
and a GCN. Run with ``python -m experiments.covid.run [--smoke|--full] [--out DIR]``.
"""
