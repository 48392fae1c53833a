"""cdflow's exceptions: each names what went wrong and how to fix it."""

from __future__ import annotations


class CdflowError(Exception):
    """Base class of every error cdflow raises on purpose."""


class ConfigError(CdflowError, ValueError):
    """A setting is invalid (unknown solver, negative tolerance, incompatible options)."""


class DataError(CdflowError, ValueError):
    """Input data is missing, corrupt or malformed (NaN rows, labels out of range, bad graph)."""


class SolverError(CdflowError, RuntimeError):
    """A solve failed: non-finite state, step-size underflow, or too many steps."""
