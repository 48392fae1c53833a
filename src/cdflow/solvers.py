"""Solver registry and `SolverSpec`.

The ODE registry is read from the installed torchdiffeq (``torchdiffeq._impl.odeint.SOLVERS``) and the
SDE registry from the installed torchsde (``torchsde.settings.METHODS`` and each method's declared
``sde_type`` / ``noise_types`` / orders), so a new solver in either library appears here by itself.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Literal

from cdflow.errors import ConfigError


@dataclass(frozen=True)
class ODEMethod:
    """An ODE method as torchdiffeq declares it: its order and whether it adapts its step."""

    name: str
    order: int
    adaptive: bool
    solver_cls: type = field(repr=False)
    options: dict = field(default_factory=dict, repr=False)
    #: a one-step method: a step depends only on the state it starts from (and, for torchdiffeq's Runge–Kutta
    #: tableaux, the derivative carried from the previous step), so a solve can be replayed from a checkpoint;
    #: the Adams methods keep a history of past derivatives and are not.
    one_step: bool = True


@dataclass(frozen=True)
class SDEMethod:
    """An SDE method as torchsde declares it.

    ``strong_order`` is the order for the noise types where torchsde gives one fixed value (it depends on
    the noise type for some methods: see :func:`sde_strong_order`); ``sde_types`` lists Itô /
    Stratonovich support, ``noise_types`` the noise structures it accepts.
    """

    name: str
    sde_types: tuple[str, ...]
    noise_types: tuple[str, ...]
    weak_order: float
    adjoint_only: bool = False


# Entries of torchdiffeq's table that are not distinct numerical methods we expose.
_ODE_SKIP = {"scipy_solver", "fixed_adams"}
# torchdiffeq's Adams methods declare order 4 but default to variable order up to 12, where the explicit
# (Bashforth) variant is unstable; these options make them the fourth-order methods they declare.
_ODE_OPTIONS = {"explicit_adams": {"max_order": 5}, "implicit_adams": {"max_order": 4}}


@lru_cache(maxsize=1)
def ode_methods() -> dict[str, ODEMethod]:
    """The ODE methods of the installed torchdiffeq, with their order and adaptivity."""
    from torchdiffeq._impl.fixed_adams import AdamsBashforthMoulton
    from torchdiffeq._impl.odeint import SOLVERS
    from torchdiffeq._impl.rk_common import RKAdaptiveStepsizeODESolver
    from torchdiffeq._impl.solvers import AdaptiveStepsizeODESolver, FixedGridODESolver

    table = {}
    for name, cls in SOLVERS.items():
        if name in _ODE_SKIP or not hasattr(cls, "order"):
            continue
        adaptive = issubclass(cls, AdaptiveStepsizeODESolver)
        one_step = issubclass(cls, RKAdaptiveStepsizeODESolver) or (
            issubclass(cls, FixedGridODESolver) and not issubclass(cls, AdamsBashforthMoulton))
        table[name] = ODEMethod(name, int(cls.order), adaptive, cls, dict(_ODE_OPTIONS.get(name, {})), one_step)
    return table


@lru_cache(maxsize=1)
def sde_methods() -> dict[str, SDEMethod]:
    """The SDE methods of the installed torchsde, with the SDE and noise types each supports."""
    from torchsde._core import methods as sde_impl
    from torchsde.settings import METHODS, SDE_TYPES

    table = {}
    for name in METHODS.all():
        classes = []
        for sde_type in SDE_TYPES.all():
            try:
                cls = sde_impl.select(name, sde_type)
            except ValueError:
                continue
            if cls.sde_type == sde_type:
                classes.append(cls)
        if not classes:
            continue
        table[name] = SDEMethod(
            name=name,
            sde_types=tuple(sorted({c.sde_type for c in classes})),
            noise_types=tuple(sorted(set().union(*(c.noise_types for c in classes)))),
            weak_order=float(classes[0].weak_order),
            adjoint_only=name == METHODS.adjoint_reversible_heun,
        )
    return table


def ode_method(name: str) -> ODEMethod:
    """Look up an ODE method by name, or raise a ConfigError listing the valid names."""
    table = ode_methods()
    if name not in table:
        hint = " (that is an SDE method: add a noise term to use it)" if name in sde_methods() else ""
        raise ConfigError(f"unknown ODE method {name!r}{hint}; valid ODE methods: {', '.join(sorted(table))}")
    return table[name]


def sde_method(name: str) -> SDEMethod:
    """Look up an SDE method by name, or raise a ConfigError listing the valid names."""
    table = sde_methods()
    if name not in table:
        raise ConfigError(f"unknown SDE method {name!r}; valid SDE methods: {', '.join(sorted(table))}")
    return table[name]


def all_method_names() -> list[str]:
    """Every method name accepted by `SolverSpec.method` (ODE and SDE)."""
    return sorted(set(ode_methods()) | set(sde_methods()))


def _default(name: str):  # noqa: ANN202 — a SolverSpec field's default value
    return SolverSpec.__dataclass_fields__[name].default


AdjointMode = Literal["none", "backsolve", "checkpoint"]
SDEType = Literal["ito", "stratonovich"]


@dataclass
class SolverSpec:
    """How to integrate over depth t ∈ [0, t1].

    Args:
        method: an ODE method of torchdiffeq (dopri5, rk4, …) or, with a noise term, an SDE method of
            torchsde (euler, milstein, reversible_heun, …).
        rtol, atol: tolerances of adaptive methods (refused when no method of the solve adapts its step).
        step_size: step of fixed-step methods (required for them); the first step of adaptive ODE methods
            (torchdiffeq's ``first_step``; default: its own estimate); the step dt of SDE solves.
        t1: the depth T > 0.
        adjoint: ``none`` backpropagates through the solver's operations; ``backsolve`` solves the adjoint
            equation backwards in time (memory O(1) in the number of steps, gradient accurate to the backward
            solve's tolerance); ``checkpoint`` stores the state at a few checkpoints of the forward solve and
            backpropagates through one segment at a time, replaying the forward's own steps (the exact gradient of
            the discretised solve, as backprop's, with memory O(checkpoints + steps/checkpoints); ODE one-step
            methods only, see `cdflow.checkpoint_adjoint`).
        checkpoints: ``adjoint='checkpoint'`` only: at most this many checkpoints (the input is the first), each
            segment ⌈steps/checkpoints⌉ steps (fixed-step methods) or a power of two of steps (adaptive methods,
            whose step count is unknown until the end); ``None`` keeps about √(steps·e) checkpoints of about
            √(steps/e) steps each, e the drift evaluations per step (the least memory of a uniform schedule).
        adjoint_method, adjoint_rtol, adjoint_atol: the backward solve's method and tolerances
            (default: the forward ones; ``adjoint='backsolve'`` only).
        seminorm: measure the adjoint's error only on the state and adjoint state, not on the parameter
            gradients (Kidger, Chen & Lyons 2021): fewer backward steps, same gradients to tolerance.
        max_steps: fail with a SolverError after this many (attempted) steps; ``None`` = unlimited.
        sde_type: Itô or Stratonovich interpretation of the noise (SDE solves only: refused on an ODE).
        adaptive: adaptive steps for SDE methods (ODE adaptivity is a property of the method: refused on
            an ODE).
    """

    method: str = "dopri5"
    rtol: float = 1e-3
    atol: float = 1e-4
    step_size: float | None = None
    t1: float = 1.0
    adjoint: AdjointMode = "none"
    checkpoints: int | None = None
    adjoint_method: str | None = None
    adjoint_rtol: float | None = None
    adjoint_atol: float | None = None
    seminorm: bool = False
    max_steps: int | None = None
    sde_type: SDEType = "ito"
    adaptive: bool = False

    def __post_init__(self) -> None:
        valid = all_method_names()
        if self.method not in valid:
            ode, sde = ", ".join(sorted(ode_methods())), ", ".join(sorted(sde_methods()))
            raise ConfigError(f"unknown solver method {self.method!r}; ODE methods: {ode}; SDE methods (with a noise "
                              f"term): {sde}")
        for name in ("rtol", "atol", "adjoint_rtol", "adjoint_atol"):
            value = getattr(self, name)
            if value is not None and not (value > 0 and math.isfinite(value)):
                raise ConfigError(f"{name} must be a positive finite number, got {value!r}")
        if not (self.t1 > 0 and math.isfinite(self.t1)):
            raise ConfigError(f"t1 (the depth T) must be > 0 and finite, got {self.t1!r}")
        if self.step_size is not None and not (self.step_size > 0 and math.isfinite(self.step_size)):
            raise ConfigError(f"step_size must be > 0, got {self.step_size!r}")
        if self.adjoint not in ("none", "backsolve", "checkpoint"):
            raise ConfigError(f"adjoint must be 'none', 'backsolve' or 'checkpoint', got {self.adjoint!r}")
        if self.checkpoints is not None:
            if self.adjoint != "checkpoint":
                raise ConfigError(
                    f"checkpoints={self.checkpoints} applies to adjoint='checkpoint' (this spec has adjoint="
                    f"{self.adjoint!r}): set adjoint='checkpoint' or drop checkpoints"
                )
            if isinstance(self.checkpoints, bool) or not isinstance(self.checkpoints, int) or self.checkpoints < 1:
                raise ConfigError(f"checkpoints must be an integer ≥ 1 or None, got {self.checkpoints!r}")
        if self.sde_type not in ("ito", "stratonovich"):
            raise ConfigError(f"sde_type must be 'ito' or 'stratonovich', got {self.sde_type!r}")
        if self.max_steps is not None and self.max_steps < 1:
            raise ConfigError(f"max_steps must be ≥ 1 or None, got {self.max_steps!r}")
        if self.adjoint_method is not None and self.adjoint_method not in valid:
            raise ConfigError(
                f"unknown adjoint_method {self.adjoint_method!r}; valid methods: {', '.join(valid)}"
            )
        if self.seminorm and self.adjoint != "backsolve":
            raise ConfigError(
                f"seminorm applies to the adjoint solve of adjoint='backsolve' (this spec has adjoint="
                f"{self.adjoint!r}): set adjoint='backsolve' or seminorm=False"
            )
        if self.adjoint == "checkpoint":
            for name in ("adjoint_method", "adjoint_rtol", "adjoint_atol"):
                if getattr(self, name) is not None:
                    raise ConfigError(
                        f"{name} applies to the backward solve of adjoint='backsolve'; adjoint='checkpoint' "
                        f"replays the forward's own steps and has none: drop {name}"
                    )
        # ODE-specific requirements are checked here when the method is ODE-only; shared names
        # (euler, midpoint) are checked again by the solve that uses them.
        if self.method in ode_methods() and self.method not in sde_methods():
            self.check_ode()

    # -- checks that depend on whether the solve is an ODE or an SDE ---------------------------------
    def check_ode(self) -> ODEMethod:
        """Validate this spec for an ODE solve and return the method's registry entry. Options that cannot
        act on an ODE solve with this method are refused, not ignored."""
        info = ode_method(self.method)
        if self.adaptive:
            raise ConfigError(
                "adaptive=True switches on torchsde's adaptive steps and applies to SDE solves only; this solve is "
                f"an ODE, where adaptivity is a property of the method ({self.method!r} is "
                f"{'adaptive' if info.adaptive else 'fixed-step'}): choose an adaptive method (dopri5, bosh3, …) "
                "and set adaptive=False"
            )
        if self.sde_type != _default("sde_type"):
            raise ConfigError(
                f"sde_type={self.sde_type!r} applies to SDE solves only and this solve is an ODE (no noise term): "
                "add noise (e.g. --model.diffusion.kind noise) or leave sde_type unset"
            )
        if self.adjoint == "none":
            for name in ("adjoint_method", "adjoint_rtol", "adjoint_atol"):
                if getattr(self, name) is not None:
                    raise ConfigError(f"{name} applies to the adjoint solve: set adjoint='backsolve' or drop {name}")
        if self.adjoint == "checkpoint" and not info.one_step:
            one_step = ", ".join(sorted(n for n, m in ode_methods().items() if m.one_step))
            raise ConfigError(
                f"adjoint='checkpoint' replays the solve from checkpoints, which needs a one-step method; "
                f"{self.method!r} is a multistep method (it carries a history of past derivatives): use "
                f"adjoint='backsolve' or 'none', or one of {one_step}"
            )
        adjoint_adapts = self.adjoint == "backsolve" and ode_method(self.adjoint_method or self.method).adaptive
        if not info.adaptive and not adjoint_adapts:
            changed = [f"{n}={getattr(self, n)}" for n in ("rtol", "atol") if getattr(self, n) != _default(n)]
            if changed:
                raise ConfigError(
                    f"{', '.join(changed)} set, but {self.method!r} is a fixed-step method (step_size="
                    f"{self.step_size}) and tolerances only act on adaptive methods: choose an adaptive method "
                    "(dopri5, bosh3, …) or drop the tolerances"
                )
        if not info.adaptive and self.step_size is None:
            raise ConfigError(
                f"method {self.method!r} is fixed-step: set step_size (e.g. step_size={self.t1 / 10:g}) "
                "or choose an adaptive method (dopri5, bosh3, …)"
            )
        if self.adjoint == "backsolve":
            adj = ode_method(self.adjoint_method or self.method)
            if not adj.adaptive and self.step_size is None:
                raise ConfigError(
                    f"adjoint_method {adj.name!r} is fixed-step: set step_size or an adaptive adjoint_method"
                )
        if self.max_steps is not None and not info.adaptive:
            n = self.num_fixed_steps()
            if n > self.max_steps:
                raise ConfigError(
                    f"{self.method!r} with step_size={self.step_size} takes {n} steps over [0, {self.t1}], "
                    f"more than max_steps={self.max_steps}: raise max_steps or the step size"
                )
        return info

    def num_fixed_steps(self) -> int:
        """Number of steps a fixed-step method takes over [0, t1]."""
        assert self.step_size is not None
        return max(1, math.ceil(self.t1 / self.step_size - 1e-9))
