"""Datasets and Lightning DataModules of cdflow.

Loaders read from a data folder: the ``root`` argument, else ``$CDFLOW_DATA``. Files are verified
against SHA-256 sums; missing files are fetched from their origin, and offline the error lists which
files to put where.

Names are imported lazily (PEP 562), so ``from cdflow.data.paths import ...`` or ``load_graph`` do not
import Lightning; the DataModules do.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_EXPORTS: dict[str, str] = {
    # base: batch conventions
    "BATCH_KEYS": "base",
    "Batch": "base",
    "CdflowDataModule": "base",
    "full_batch_loader": "base",
    "minibatch_loader": "base",
    # modules
    "DigitsDataModule": "modules",
    "GraphDataModule": "modules",
    "MNISTDataModule": "modules",
    "ToyDataModule": "modules",
    "TabularDataModule": "tabular",
    "GraphFileDataModule": "graph_files",
    "LabelNames": "label_names",
    "read_label_names": "label_names",
    # loaders
    "CovidData": "covid",
    "load_covid": "covid",
    "load_digits": "digits",
    "load_digits_arrays": "digits",
    "GNN_BENCHMARK_FILES": "graphs",
    "GraphData": "graphs",
    "load_graph": "graphs",
    "load_npz_graph": "graphs",
    "random_split": "graphs",
    "load_mnist": "idx",
    "parse_idx": "idx",
    "read_idx": "idx",
    "write_idx": "idx",
    "load_planetoid": "planetoid",
    "make_circles": "toys",
    "make_moons": "toys",
    "make_spirals": "toys",
    "make_toy": "toys",
    "make_xor": "toys",
    # helpers
    "RemoteFile": "paths",
    "data_root": "paths",
    "download": "paths",
    "fetch_missing": "paths",
    "sha256_file": "paths",
    "verify_checksum": "paths",
    "SplitData": "splits",
    "labelled_subset": "splits",
    "split_with_labels": "splits",
    "stratified_split": "splits",
    "check_edge_index": "validate",
    "check_finite": "validate",
    "check_labels": "validate",
    "check_masks": "validate",
    "check_transductive_batch": "validate",
}

__all__ = [
    "BATCH_KEYS",
    "Batch",
    "CdflowDataModule",
    "CovidData",
    "DigitsDataModule",
    "GNN_BENCHMARK_FILES",
    "GraphData",
    "GraphDataModule",
    "GraphFileDataModule",
    "LabelNames",
    "MNISTDataModule",
    "RemoteFile",
    "SplitData",
    "TabularDataModule",
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
    "read_label_names",
    "sha256_file",
    "split_with_labels",
    "stratified_split",
    "verify_checksum",
    "write_idx",
]


def __getattr__(name: str) -> Any:
    """Import ``name`` from its submodule on first use."""
    if name not in _EXPORTS:
        raise AttributeError(f"module 'cdflow.data' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"cdflow.data.{_EXPORTS[name]}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


if TYPE_CHECKING:  # static analysers see the eager imports
    from cdflow.data.base import BATCH_KEYS, Batch, CdflowDataModule, full_batch_loader, minibatch_loader
    from cdflow.data.covid import CovidData, load_covid
    from cdflow.data.digits import load_digits, load_digits_arrays
    from cdflow.data.graph_files import GraphFileDataModule
    from cdflow.data.graphs import GNN_BENCHMARK_FILES, GraphData, load_graph, load_npz_graph, random_split
    from cdflow.data.idx import load_mnist, parse_idx, read_idx, write_idx
    from cdflow.data.label_names import LabelNames, read_label_names
    from cdflow.data.modules import DigitsDataModule, GraphDataModule, MNISTDataModule, ToyDataModule
    from cdflow.data.paths import RemoteFile, data_root, download, fetch_missing, sha256_file, verify_checksum
    from cdflow.data.planetoid import load_planetoid
    from cdflow.data.splits import SplitData, labelled_subset, split_with_labels, stratified_split
    from cdflow.data.tabular import TabularDataModule
    from cdflow.data.toys import make_circles, make_moons, make_spirals, make_toy, make_xor
    from cdflow.data.validate import (
        check_edge_index,
        check_finite,
        check_labels,
        check_masks,
        check_transductive_batch,
    )
