"""Checks on tensors before they reach a model: finite features, labels in range, usable masks.

A disconnected graph is valid for diffusion (each component diffuses on its own), but a component without
a training node receives no label information through the graph: its nodes are classified from their
own features only. `check_transductive_batch` therefore warns (`DisconnectedGraphWarning`) rather than
failing: the Planetoid public split, for one, uses the whole graph. Select the largest connected
component (``load_npz_graph(lcc=True)``, the ``random`` split) to avoid it.
"""

from __future__ import annotations

import warnings

import torch

from cdflow.errors import DataError


class DisconnectedGraphWarning(UserWarning):
    """Some connected components of a graph hold no training node."""

_SHOW = 10


def _rows(rows: torch.Tensor) -> str:
    shown = ", ".join(str(int(r)) for r in rows[:_SHOW])
    more = f" and {len(rows) - _SHOW} more" if len(rows) > _SHOW else ""
    return f"[{shown}]{more}"


def check_finite(x: torch.Tensor, name: str, *, source: str = "") -> None:
    """Raise DataError naming ``name`` and its first non-finite rows if ``x`` holds NaN or Inf."""
    if not torch.is_floating_point(x) or x.numel() == 0:
        return
    finite = torch.isfinite(x)
    if bool(finite.all()):
        return
    bad = (~finite.reshape(x.shape[0], -1).all(dim=1)).nonzero().flatten()
    where = f" (from {source})" if source else ""
    raise DataError(
        f"{name}{where} has NaN or Inf values in {len(bad)} row(s): rows {_rows(bad)}. "
        f"Clean or drop those rows before training."
    )


def check_labels(y: torch.Tensor, num_classes: int, name: str = "y", *, source: str = "") -> None:
    """Raise DataError unless ``y`` is an integer tensor with values in ``0..num_classes-1``."""
    where = f" (from {source})" if source else ""
    if y.dtype.is_floating_point or y.dtype == torch.bool:
        raise DataError(f"{name}{where} must hold integer class labels, got dtype {y.dtype}.")
    if y.numel() == 0:
        return
    bad = ((y < 0) | (y >= num_classes)).nonzero().flatten()
    if len(bad):
        raise DataError(
            f"{name}{where} has labels outside 0..{num_classes - 1} at rows {_rows(bad)} "
            f"(values {sorted({int(v) for v in y[bad[:_SHOW]]})}). Remap the labels to 0..{num_classes - 1} "
            f"or fix num_classes."
        )


def check_same_rows(x: torch.Tensor, y: torch.Tensor, *, source: str = "") -> None:
    """Raise DataError unless ``x`` has one row per label of ``y``."""
    if x.shape[0] != y.shape[0]:
        where = f" (from {source})" if source else ""
        raise DataError(
            f"x{where} has {x.shape[0]} rows but y has {y.shape[0]} labels: every example needs exactly one label. "
            f"Check that features and labels come from the same (filtered) data."
        )


def unlabelled_components(edge_index: torch.Tensor, train_mask: torch.Tensor) -> tuple[int, int, int]:
    """(components, components without a training node, nodes in those) of the undirected graph."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    n = int(train_mask.shape[0])
    ei = edge_index.detach().cpu().numpy()
    adj = coo_matrix((torch.ones(ei.shape[1]).numpy(), (ei[0], ei[1])), shape=(n, n))
    count, label = connected_components(adj, directed=False)
    label_t = torch.from_numpy(label)
    trained = torch.zeros(count, dtype=torch.bool)
    trained[label_t[train_mask.cpu()]] = True
    without = (~trained).nonzero().flatten()
    return count, len(without), int(torch.isin(label_t, without).sum())


def check_masks(
    train_mask: torch.Tensor,
    val_mask: torch.Tensor,
    test_mask: torch.Tensor,
    num_nodes: int,
    *,
    source: str = "",
) -> None:
    """Raise DataError unless the masks are bool ``[num_nodes]``, disjoint, with a training node."""
    where = f" (from {source})" if source else ""
    masks = {"train_mask": train_mask, "val_mask": val_mask, "test_mask": test_mask}
    for key, mask in masks.items():
        if mask.dtype != torch.bool or mask.shape != (num_nodes,):
            raise DataError(
                f"{key}{where} must be a bool tensor of shape ({num_nodes},), "
                f"got {mask.dtype} of shape {tuple(mask.shape)}."
            )
    if not bool(train_mask.any()):
        raise DataError(
            f"train_mask{where} selects no training nodes: every loss would be empty. "
            f"Check the split (labels_per_class / train_per_class must be > 0)."
        )
    for a, b in (("train_mask", "val_mask"), ("train_mask", "test_mask"), ("val_mask", "test_mask")):
        overlap = (masks[a] & masks[b]).nonzero().flatten()
        if len(overlap):
            raise DataError(f"{a} and {b}{where} overlap at rows {_rows(overlap)}; splits must be disjoint.")


def check_transductive_batch(
    batch: dict[str, torch.Tensor | None], num_classes: int, *, source: str = ""
) -> None:
    """Validate a full-batch dict: finite x, labels in range, masks, edge_index within ``0..N-1``."""
    x, y = batch["x"], batch["y"]
    assert x is not None and y is not None
    n = x.shape[0]
    if n == 0:
        raise DataError(
            f"the graph{' (from ' + source + ')' if source else ''} is empty: x has shape {tuple(x.shape)}, no nodes. "
            "Check the data file and any filtering before it (e.g. the largest-component selection)."
        )
    if y.shape != (n,):
        raise DataError(
            f"y{' (from ' + source + ')' if source else ''} has shape {tuple(y.shape)}, expected ({n},)."
        )
    check_finite(x, "x", source=source)
    check_labels(y, num_classes, "y", source=source)
    check_masks(batch["train_mask"], batch["val_mask"], batch["test_mask"], n, source=source)  # type: ignore[arg-type]
    edge_index = batch.get("edge_index")
    if edge_index is not None:
        check_edge_index(edge_index, n, source=source)
        count, without, nodes = unlabelled_components(edge_index, batch["train_mask"])  # type: ignore[arg-type]
        if without:
            warnings.warn(
                f"the graph{' (from ' + source + ')' if source else ''} has {count} connected components and {without} "
                f"of them ({nodes} of {n} nodes) hold no training node: diffusion brings them no label information, "
                "so they are classified from their own features only. Keep the largest connected component "
                "(split='random') or put training nodes in every component.",
                DisconnectedGraphWarning, stacklevel=2,
            )


def check_edge_index(edge_index: torch.Tensor, num_nodes: int, *, source: str = "") -> None:
    """Raise DataError unless ``edge_index`` is a long [2, E] tensor with node ids in ``0..num_nodes-1``."""
    where = f" (from {source})" if source else ""
    if edge_index.dtype != torch.long or edge_index.dim() != 2 or edge_index.shape[0] != 2:
        raise DataError(
            f"edge_index{where} must be a torch.long tensor of shape [2, E], "
            f"got {edge_index.dtype} of shape {tuple(edge_index.shape)}."
        )
    if edge_index.numel() and (int(edge_index.min()) < 0 or int(edge_index.max()) >= num_nodes):
        bad = ((edge_index < 0) | (edge_index >= num_nodes)).any(dim=0).nonzero().flatten()
        raise DataError(
            f"edge_index{where} refers to nodes outside 0..{num_nodes - 1} in columns {_rows(bad)}."
        )
