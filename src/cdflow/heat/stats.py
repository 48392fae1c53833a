"""`DiffusionStats`: the work counters every heat-flow integrator returns."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class DiffusionStats:
    """Work counters. products: L @ X block products in the forward pass; backward_products: those spent
    by custom backward passes (implicit solves; filled in when backward runs); krylov_dim: largest Lanczos
    dimension; substeps: time substeps taken; cg_iterations: CG iterations (forward); error_estimate:
    largest relative a-posteriori error estimate (Krylov) or coefficient-tail bound (Chebyshev);
    convection_solves: convection sub-solves (split_solve); reorthogonalisations: Lanczos steps that
    were fully reorthogonalised (Krylov)."""

    products: int = 0
    backward_products: int = 0
    krylov_dim: int = 0
    substeps: int = 0
    cg_iterations: int = 0
    error_estimate: float = 0.0
    convection_solves: int = 0
    reorthogonalisations: int = 0

    def merge(self, other: DiffusionStats) -> DiffusionStats:
        """Accumulate `other` into self (counts add, dimensions/errors take the max); returns self."""
        self.products += other.products
        self.backward_products += other.backward_products
        self.krylov_dim = max(self.krylov_dim, other.krylov_dim)
        self.substeps += other.substeps
        self.cg_iterations += other.cg_iterations
        self.error_estimate = max(self.error_estimate, other.error_estimate)
        self.convection_solves += other.convection_solves
        self.reorthogonalisations += other.reorthogonalisations
        return self
