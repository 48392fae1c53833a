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


class RunFolderError(CdflowError, OSError):
    """A run folder cannot be used: not writable, a file in the way (see `cdflow.training.run_folder`)."""


class RunFolderInUse(RunFolderError):
    """Another live cdflow process holds the run folder's lock."""
