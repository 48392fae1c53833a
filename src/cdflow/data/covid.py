"""England COVID-19 cases on daily mobility graphs.

The data of PyTorch Geometric Temporal's ``EnglandCovidDatasetLoader`` (Panagopoulos et al., AAAI 2021).

``<root>/covid/england_covid.json`` holds ``y`` (61 days x 129 NUTS3 regions of daily cases),
``time_periods`` (61) and ``edge_mapping`` with ``edge_index`` and ``edge_weight``, each a dict from the
day (``"0"`` .. ``"60"``) to a list of ``[source, target]`` pairs / weights. The daily graphs are
directed and weighted (number of people moving), with self-loops; they are returned as stored.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass

import numpy as np
import torch

from cdflow.data.paths import RemoteFile, data_root, fetch_missing, verify_checksum
from cdflow.data.validate import check_edge_index, check_finite
from cdflow.errors import DataError

COVID_URL = "https://raw.githubusercontent.com/benedekrozemberczki/pytorch_geometric_temporal/master/dataset/england_covid.json"
COVID_FILE = RemoteFile(
    "england_covid.json", COVID_URL, "497056cc4585b58951fd5cd17554fe0c535f68ea0c907a5b5727ae30e3913450"
)


@dataclass
class CovidData:
    """Daily cases ``cases [T, N]`` and one directed weighted graph per day."""

    cases: torch.Tensor
    edge_index: list[torch.Tensor]
    edge_weight: list[torch.Tensor]

    @property
    def num_days(self) -> int:
        """Number of days T."""
        return int(self.cases.shape[0])

    @property
    def num_nodes(self) -> int:
        """Number of regions N."""
        return int(self.cases.shape[1])


def load_covid(
    root: str | os.PathLike[str] | None = None, *, verify: bool = True, download: bool = True
) -> CovidData:
    """Load ``<root>/covid/england_covid.json``: cases ``float32 [61, 129]`` and 61 daily graphs."""
    folder = data_root(root) / "covid"
    fetch_missing(folder, {"covid": COVID_FILE}, dataset="england_covid", allow_download=download)
    path = folder / COVID_FILE.name
    if verify and COVID_FILE.sha256:
        verify_checksum(path, COVID_FILE.sha256, url=COVID_FILE.url)
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
        days = int(raw["time_periods"])
        cases = torch.as_tensor(np.asarray(raw["y"], dtype=np.float32))
        mapping = raw["edge_mapping"]
        index_by_day, weight_by_day = mapping["edge_index"], mapping["edge_weight"]
    except (ValueError, KeyError, TypeError) as exc:
        raise DataError(
            f"{path} is not the England COVID json (needs 'y', 'time_periods', 'edge_mapping'): {exc!r}."
        ) from exc
    if cases.dim() != 2 or cases.shape[0] != days:
        raise DataError(f"{path}: 'y' has shape {tuple(cases.shape)}, expected [{days} days, regions].")
    check_finite(cases, "cases", source=str(path))
    edge_index, edge_weight = [], []
    for day in range(days):
        key = str(day)
        if key not in index_by_day or key not in weight_by_day:
            raise DataError(f"{path}: edge_mapping has no graph for day {key!r}.")
        pairs = np.asarray(index_by_day[key], dtype=np.int64).reshape(-1, 2)
        weights = torch.as_tensor(np.asarray(weight_by_day[key], dtype=np.float32))
        ei = torch.from_numpy(np.ascontiguousarray(pairs.T))
        check_edge_index(ei, cases.shape[1], source=f"{path}, day {day}")
        if weights.shape != (ei.shape[1],):
            raise DataError(f"{path}, day {day}: {ei.shape[1]} edges but {weights.numel()} weights.")
        check_finite(weights, f"edge_weight[day {day}]", source=str(path))
        edge_index.append(ei)
        edge_weight.append(weights)
    return CovidData(cases=cases, edge_index=edge_index, edge_weight=edge_weight)
