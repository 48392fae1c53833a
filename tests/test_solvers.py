"""The solver registry and SolverSpec validation."""

import pytest

from cdflow import ConfigError, SolverSpec
from cdflow.solvers import ode_method, ode_methods, sde_methods

REQUIRED = {
    "dopri8": (8, True), "dopri5": (5, True), "bosh3": (3, True), "fehlberg2": (2, True),
    "adaptive_heun": (2, True), "euler": (1, False), "midpoint": (2, False), "rk4": (4, False),
    "explicit_adams": (4, False), "implicit_adams": (4, False),
}


def test_registry_is_read_from_torchdiffeq():
    from torchdiffeq._impl.odeint import SOLVERS

    table = ode_methods()
    for name, (order, adaptive) in REQUIRED.items():
        assert (table[name].order, table[name].adaptive) == (order, adaptive), name
        assert table[name].solver_cls is SOLVERS[name]
    assert set(table) <= set(SOLVERS)


def test_sde_registry_reads_torchsde_declarations():
    table = sde_methods()
    assert {"euler", "milstein", "srk", "euler_heun", "heun", "midpoint", "reversible_heun"} <= set(table)
    assert table["euler"].sde_types == ("ito",)
    assert table["reversible_heun"].sde_types == ("stratonovich",)
    assert "general" not in table["milstein"].noise_types


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"method": "dopri9"}, "valid methods: adaptive_heun, adjoint_reversible_heun, bosh3"),
        ({"method": "rk4"}, "fixed-step: set step_size"),
        ({"method": "euler", "step_size": None}, None),  # euler is also an SDE method: checked at solve
        ({"rtol": -1e-3}, "rtol must be a positive finite number"),
        ({"atol": 0.0}, "atol must be a positive finite number"),
        ({"adjoint_rtol": float("nan")}, "adjoint_rtol must be a positive"),
        ({"t1": 0.0}, "t1 (the depth T) must be > 0"),
        ({"t1": -1.0}, "t1 (the depth T) must be > 0"),
        ({"step_size": -0.1, "method": "rk4"}, "step_size must be > 0"),
        ({"adjoint": "checkpoint"}, "adjoint must be 'none' or 'backsolve'"),
        ({"adjoint": "backsolve", "adjoint_method": "nope"}, "unknown adjoint_method 'nope'"),
        ({"adjoint": "backsolve", "adjoint_method": "rk4"}, "adjoint_method 'rk4' is fixed-step"),
        ({"seminorm": True}, "seminorm applies to the adjoint solve"),
        ({"max_steps": 0}, "max_steps must be ≥ 1"),
        ({"method": "rk4", "step_size": 0.01, "max_steps": 10}, "takes 100 steps"),
        ({"sde_type": "ito2"}, "sde_type must be 'ito' or 'stratonovich'"),
    ],
)
def test_bad_specs_are_refused_with_their_documented_error(kwargs, message):
    if message is None:
        spec = SolverSpec(**kwargs)
        with pytest.raises(ConfigError, match="fixed-step: set step_size"):
            spec.check_ode()
        return
    with pytest.raises(ConfigError) as info:
        SolverSpec(**kwargs)
    assert message in str(info.value)


def test_unknown_ode_method_names_the_valid_ones():
    with pytest.raises(ConfigError, match="valid ODE methods: adaptive_heun, bosh3, dopri5"):
        ode_method("rk45")
    with pytest.raises(ConfigError, match="that is an SDE method"):
        ode_method("milstein")


def test_good_specs_construct():
    SolverSpec()
    SolverSpec(method="rk4", step_size=0.1, adjoint="backsolve", seminorm=True)
    SolverSpec(method="dopri5", adjoint="backsolve", adjoint_method="rk4", step_size=0.05)
