"""Datasets and Lightning DataModules of cdflow.

Loaders read from a data folder: the ``root`` argument, else ``$CDFLOW_DATA``. Files are verified
against SHA-256 sums; missing files are fetched from their origin, and offline the error lists which
files to put where.
"""

from cdflow.data.base import BATCH_KEYS, Batch, CdflowDataModule, full_batch_loader, minibatch_loader
from cdflow.data.covid import CovidData, load_covid
from cdflow.data.digits import load_digits, load_digits_arrays
from cdflow.data.graphs import (
    GNN_BENCHMARK_FILES,
    GraphData,
    load_graph,
    load_npz_graph,
    random_split,
)
from cdflow.data.idx import load_mnist, parse_idx, read_idx, write_idx
from cdflow.data.modules import DigitsDataModule, GraphDataModule, MNISTDataModule, ToyDataModule
from cdflow.data.paths import RemoteFile, data_root, download, fetch_missing, sha256_file, verify_checksum
from cdflow.data.planetoid import load_planetoid
from cdflow.data.splits import SplitData, labelled_subset, split_with_labels, stratified_split
from cdflow.data.toys import make_circles, make_moons, make_spirals, make_toy, make_xor
from cdflow.data.validate import (
    check_edge_index,
    check_finite,
    check_labels,
    check_masks,
    check_transductive_batch,
)

__all__ = [
    "BATCH_KEYS",
    "GNN_BENCHMARK_FILES",
    "Batch",
    "CdflowDataModule",
    "CovidData",
    "DigitsDataModule",
    "GraphData",
    "GraphDataModule",
    "MNISTDataModule",
    "RemoteFile",
    "SplitData",
    "ToyDataModule",
    "check_edge_index",
    "check_finite",
    "check_labels",
    "check_masks",
    "check_transductive_batch",
    "data_root",
    "download",
    "fetch_missing",
    "full_batch_loader",
    "labelled_subset",
    "load_covid",
    "load_digits",
    "load_digits_arrays",
    "load_graph",
    "load_mnist",
    "load_npz_graph",
    "load_planetoid",
    "make_circles",
    "make_moons",
    "make_spirals",
    "make_toy",
    "make_xor",
    "minibatch_loader",
    "parse_idx",
    "random_split",
    "read_idx",
    "sha256_file",
    "split_with_labels",
    "stratified_split",
    "verify_checksum",
    "write_idx",
]
