"""`Laplacian`: the one graph operator every heat-flow integrator and graph model takes.

An immutable, validated N×N graph Laplacian L held in the fast product format (`cdflow.sparse.SparseMatrix`),
built once per graph by explicit code — a DataModule for a fixed graph, a model per batch for an inductive
kNN graph — and passed in. It gives integrators what they need:

* ``L @ X`` for states [N], [N, C] and member stacks [N, K, C] (one product for all columns);
* ``L.T @ X`` (non-symmetric Laplacians, e.g. the random-walk I − P);
* ``degrees()`` (the diagonal of L) and ``spectral_bound()`` (λ_max by Lanczos, computed once per object).

Nothing is cached under a memory address: a new graph is a new object.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from cdflow.errors import ConfigError, DataError
from cdflow.graph.build import (
    LaplacianKind,
    is_symmetric,
    knn_gaussian_graph,
    knn_rownorm_graph,
    laplacian_from_edges,
    laplacian_from_weights,
)
from cdflow.sparse import SparseMatrix

__all__ = ["Laplacian", "SpectralBound", "spectral_bound"]


@dataclass(frozen=True)
class SpectralBound:
    """Bounds on λ_max of a symmetric PSD Laplacian.

    estimate: largest Lanczos Ritz value (≤ λ_max, usually accurate to many digits);
    upper: min(gershgorin, (estimate + |β_m|)·safety), a (Zhou–Li style) upper bound — use it for
    Chebyshev intervals; gershgorin: max_i Σ_j |L_ij|, a rigorous upper bound; products: matrix-vector
    products spent.
    """

    estimate: float
    upper: float
    gershgorin: float
    products: int = 0

    @property
    def explicit_step_limit(self) -> float:
        """Largest stable explicit-Euler step τ for x ← x − τLx: 2/λ_max (from the estimate)."""
        return 2.0 / self.estimate if self.estimate > 0 else math.inf


class Laplacian:
    """An immutable graph Laplacian L [N, N] (see the module docstring).

    Build with `from_edges`, `from_knn` or `from_matrix`; `source` says where it came from ("edges",
    "knn", "matrix") and `kind` which Laplacian it is. Values may carry autograd (a differentiable kNN
    graph): products then differentiate w.r.t. them.
    """

    __slots__ = ("_matrix", "_kind", "_source", "_symmetric", "_bound", "_transpose", "_steps")

    def __init__(self, matrix: SparseMatrix, *, kind: str, source: str, symmetric: bool) -> None:
        if matrix.n_rows != matrix.n_cols:
            raise DataError(f"a Laplacian must be square, got {matrix.n_rows}×{matrix.n_cols}")
        if not bool(torch.isfinite(matrix.vals.detach()).all()):
            raise DataError("the Laplacian has non-finite entries; rebuild it from finite weights")
        for name, value in (("_matrix", matrix), ("_kind", kind), ("_source", source),
                            ("_symmetric", bool(symmetric)), ("_bound", None), ("_transpose", None),
                            ("_steps", {})):
            object.__setattr__(self, name, value)

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError("a Laplacian is immutable: build a new one for a new graph")

    def __delattr__(self, name: str) -> None:
        raise AttributeError("a Laplacian is immutable: build a new one for a new graph")

    # -- construction ---------------------------------------------------------------------------------
    @classmethod
    def from_edges(
        cls,
        edge_index: Tensor,
        num_nodes: int,
        kind: LaplacianKind = "gcn",
        edge_weight: Tensor | None = None,
        symmetrize: bool = True,
        dtype: torch.dtype = torch.float32,
    ) -> Laplacian:
        """L of an edge list [2, E] (optionally weighted): see `cdflow.graph.laplacian_from_edges`."""
        lap = laplacian_from_edges(edge_index, num_nodes, kind=kind, edge_weight=edge_weight,
                                   symmetrize=symmetrize, dtype=dtype)
        return cls(SparseMatrix.from_tensor(lap), kind=kind, source="edges", symmetric=symmetrize and kind != "rw")

    @classmethod
    def from_knn(
        cls,
        x: Tensor,
        k: int = 8,
        k_scale: int = 4,
        *,
        graph: str = "gaussian",
        eps: float = 0.5,
        differentiable: bool = False,
        scale_floor: float | None = 1e-8,
    ) -> Laplacian:
        """L of a kNN graph on the rows of x [N, F]: ``gaussian`` (the COIN / Diff-ResNet recipe, symmetric
        W, L = diag(W·1) − W) or ``rownorm`` (the toys' row-stochastic P, L = I − P)."""
        if isinstance(x, SparseMatrix):
            x = x.to_dense()
        if graph == "gaussian":
            w = knn_gaussian_graph(x, k=k, k_scale=k_scale, differentiable=differentiable, scale_floor=scale_floor)
            lap, kind, sym = laplacian_from_weights(w, "combinatorial"), "combinatorial", True
        elif graph == "rownorm":
            p = knn_rownorm_graph(x, k=k, eps=eps, differentiable=differentiable)
            lap, kind, sym = laplacian_from_weights(p, "rw"), "rw", False
        else:
            raise ConfigError(f"kNN graph must be 'gaussian' or 'rownorm', got {graph!r}")
        return cls(SparseMatrix.from_tensor(lap), kind=kind, source="knn", symmetric=sym)

    @classmethod
    def from_matrix(cls, l_mat: Tensor | SparseMatrix, kind: str = "given", symmetric: bool | None = None) -> Laplacian:
        """Wrap a ready N×N Laplacian (dense, torch sparse or `SparseMatrix`); symmetry is checked if not given."""
        if isinstance(l_mat, Tensor):
            if l_mat.ndim != 2 or l_mat.shape[0] != l_mat.shape[1]:
                raise DataError(f"L must be a square N×N matrix, got shape {tuple(l_mat.shape)}")
            if symmetric is None:
                symmetric = is_symmetric(l_mat, atol=1e-8)
            l_mat = SparseMatrix.from_tensor(l_mat)
        elif symmetric is None:
            symmetric = is_symmetric(l_mat.to_torch(), atol=1e-8)
        return cls(l_mat, kind=kind, source="matrix", symmetric=symmetric)

    @classmethod
    def coerce(cls, l_mat: Laplacian | Tensor | SparseMatrix) -> Laplacian:
        """A Laplacian as is; a matrix wrapped by `from_matrix` (for one-off calls on a plain tensor)."""
        if isinstance(l_mat, Laplacian):
            return l_mat
        if isinstance(l_mat, (Tensor, SparseMatrix)):
            return cls.from_matrix(l_mat)
        raise DataError(f"expected a cdflow.graph.Laplacian (or an N×N matrix), got {type(l_mat).__name__}")

    # -- properties -----------------------------------------------------------------------------------
    @property
    def matrix(self) -> SparseMatrix:
        return self._matrix

    @property
    def kind(self) -> str:
        return self._kind

    @property
    def source(self) -> str:
        return self._source

    @property
    def symmetric(self) -> bool:
        return self._symmetric

    @property
    def num_nodes(self) -> int:
        return self._matrix.n_rows

    @property
    def shape(self) -> tuple[int, int]:
        return self._matrix.shape

    @property
    def nnz(self) -> int:
        return self._matrix.nnz

    @property
    def dtype(self) -> torch.dtype:
        return self._matrix.dtype

    @property
    def device(self) -> torch.device:
        return self._matrix.device

    @property
    def requires_grad(self) -> bool:
        return self._matrix.requires_grad

    def describe(self) -> str:
        """One line for logs: where the graph came from and its size."""
        return f"{self.source} graph, {self.kind} Laplacian, {self.num_nodes} nodes, {self.nnz} non-zeros"

    def __repr__(self) -> str:
        return f"Laplacian({self.describe()})"

    # -- products -------------------------------------------------------------------------------------
    def __matmul__(self, x: Tensor) -> Tensor:
        """L @ x over the first axis of x: [N], [N, C] or [N, K, C]."""
        if x.shape[0] != self.num_nodes:
            raise DataError(
                f"the Laplacian has {self.num_nodes} nodes but the state has {x.shape[0]} rows; build the "
                "Laplacian on the same node set as the state"
            )
        return self._matrix @ x

    matmul = __matmul__

    @property
    def T(self) -> Laplacian:  # noqa: N802 — as Tensor.T
        """Lᵀ (self when symmetric)."""
        if self._symmetric:
            return self
        if self._transpose is None:
            object.__setattr__(self, "_transpose", Laplacian(self._matrix.transpose(), kind=self._kind,
                                                             source=self._source, symmetric=False))
        return self._transpose

    def step_matrix(self, tau: float) -> SparseMatrix:
        """I − τL, the explicit Euler step of dx/dt = −Lx as one matrix (one product per step instead of a
        product and an update); built once per τ on this object (at most 8 kept)."""
        tau = float(tau)
        if tau not in self._steps:
            if len(self._steps) >= 8:
                self._steps.pop(next(iter(self._steps)))
            m = self._matrix
            n = self.num_nodes
            vals = m.vals.detach()
            diag = torch.arange(n, device=vals.device)
            idx = torch.cat([torch.stack([m.row_ids(), m.cols]), torch.stack([diag, diag])], dim=1)
            coo = torch.sparse_coo_tensor(idx, torch.cat([-tau * vals, vals.new_ones(n)]), (n, n),
                                          check_invariants=False).coalesce()
            self._steps[tau] = SparseMatrix.from_tensor(coo)
        return self._steps[tau]

    def degrees(self) -> Tensor:
        """diag(L) [N]: the weighted degrees for L = D − A (1 on non-isolated nodes for normalised kinds)."""
        return self._matrix.diagonal()

    def spectral_bound(self) -> SpectralBound:
        """λ_max bounds by Lanczos (see `spectral_bound`), computed once for this object."""
        if self._bound is None:
            object.__setattr__(self, "_bound", _lanczos_bound(self))
        return self._bound

    @property
    def bound_known(self) -> bool:
        """Whether `spectral_bound()` has been computed for this object."""
        return self._bound is not None

    @property
    def lam_max(self) -> float:
        """An upper bound on λ_max (`spectral_bound().upper`)."""
        return self.spectral_bound().upper

    # -- conversion -----------------------------------------------------------------------------------
    def to(self, *args, **kwargs) -> Laplacian:
        """Move and/or cast (as `Tensor.to`); returns self when nothing changes."""
        m = self._matrix.to(*args, **kwargs)
        if m is self._matrix:
            return self
        out = Laplacian(m, kind=self._kind, source=self._source, symmetric=self._symmetric)
        object.__setattr__(out, "_bound", self._bound)
        return out

    def to_torch(self) -> Tensor:
        """L as a coalesced torch sparse COO tensor."""
        return self._matrix.to_torch()

    def to_dense(self) -> Tensor:
        return self._matrix.to_dense()


def _lanczos_bound(lap: Laplacian, n_iter: int = 40, safety: float = 1.01, seed: int = 0) -> SpectralBound:
    if not lap.symmetric:
        raise DataError(
            "spectral_bound needs a symmetric L; for the random-walk Laplacian I − D⁻¹A use the symmetric "
            "normalised one (kind='sym'), which has the same spectrum"
        )
    with torch.no_grad():
        m64 = lap.matrix.to(torch.float64)
        vals = m64.vals.detach()
        n = lap.num_nodes
        gersh = float(vals.new_zeros(n).index_add(0, m64.row_ids(), vals.abs()).max()) if vals.numel() else 0.0
        m = min(n_iter, n)
        gen = torch.Generator(device="cpu").manual_seed(seed)
        q = torch.randn(n, 1, generator=gen, dtype=torch.float64).to(vals.device)
        q = q / q.norm()
        basis, alphas, betas = [q], [], []
        for _ in range(m):
            w = m64 @ basis[-1]
            alphas.append(float((w * basis[-1]).sum()))
            vb = torch.cat(basis, dim=1)
            w = w - vb @ (vb.T @ w)
            w = w - vb @ (vb.T @ w)
            beta = float(w.norm())
            betas.append(beta)
            if beta <= 1e-12 * max(1.0, abs(alphas[-1])):
                break
            basis.append(w / beta)
        j = len(alphas)
        t = torch.diag(torch.tensor(alphas, dtype=torch.float64))
        if j > 1:
            off = torch.tensor(betas[: j - 1], dtype=torch.float64)
            t = t + torch.diag(off, 1) + torch.diag(off, -1)
        est = float(torch.linalg.eigvalsh(t)[-1])
    upper = min(gersh, (est + abs(betas[j - 1])) * safety)
    return SpectralBound(estimate=est, upper=max(upper, est), gershgorin=gersh, products=j)


def spectral_bound(
    l_mat: Laplacian | Tensor, n_iter: int = 40, safety: float = 1.01, seed: int = 0
) -> SpectralBound:
    """Estimate and bound λ_max(L) for symmetric L by Lanczos (full reorthogonalisation, float64).

    Runs `n_iter` Lanczos steps from a seeded random vector; the upper bound is θ_max + |β_m| times
    `safety`, capped by the Gershgorin bound max_i Σ_j |L_ij|. A `Laplacian` with the default settings
    answers from its own memo.
    """
    if isinstance(n_iter, bool) or not isinstance(n_iter, int) or n_iter < 1:
        raise ConfigError(f"n_iter must be an int ≥ 1, got {n_iter!r}")
    if not safety >= 1.0:
        raise ConfigError(f"safety must be ≥ 1, got {safety!r}")
    if isinstance(l_mat, Tensor):
        vals = l_mat.detach().coalesce().values() if l_mat.is_sparse else l_mat.detach()
        if not bool(torch.isfinite(vals).all()):
            raise DataError("L has non-finite entries; rebuild the Laplacian from finite weights")
        if not is_symmetric(l_mat.detach(), atol=1e-8):
            raise DataError(
                "spectral_bound needs a symmetric L; for the random-walk Laplacian I − D⁻¹A use the "
                "symmetric normalised one (kind='sym'), which has the same spectrum"
            )
        l_mat = Laplacian.from_matrix(l_mat.detach(), symmetric=True)
    if (n_iter, safety, seed) == (40, 1.01, 0):
        return l_mat.spectral_bound()
    return _lanczos_bound(l_mat, n_iter, safety, seed)



