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
        ({"method": "dopri9"}, "ODE methods: adaptive_heun, bosh3, dopri5"),
        ({"method": "rk4"}, "fixed-step: set step_size"),
        ({"method": "euler", "step_size": None}, None),  # euler is also an SDE method: checked at solve
        ({"rtol": -1e-3}, "rtol must be a positive finite number"),
        ({"atol": 0.0}, "atol must be a positive finite number"),
        ({"adjoint_rtol": float("nan")}, "adjoint_rtol must be a positive"),
        ({"t1": 0.0}, "t1 (the depth T) must be > 0"),
        ({"t1": -1.0}, "t1 (the depth T) must be > 0"),
        ({"step_size": -0.1, "method": "rk4"}, "step_size must be > 0"),
        ({"adjoint": "revolve"}, "adjoint must be 'none', 'backsolve' or 'checkpoint'"),
        ({"adjoint": "backsolve", "adjoint_method": "nope"}, "unknown adjoint_method 'nope'"),
        ({"adjoint": "backsolve", "adjoint_method": "rk4"}, "adjoint_method 'rk4' is fixed-step"),
        ({"seminorm": True}, "seminorm applies to the adjoint solve"),
        ({"adjoint": "checkpoint", "seminorm": True}, "seminorm applies to the adjoint solve of adjoint='backsolve'"),
        ({"checkpoints": 4}, "checkpoints=4 applies to adjoint='checkpoint'"),
        ({"adjoint": "backsolve", "checkpoints": 4}, "checkpoints=4 applies to adjoint='checkpoint'"),
        ({"adjoint": "checkpoint", "checkpoints": 0}, "checkpoints must be an integer ≥ 1"),
        ({"adjoint": "checkpoint", "checkpoints": 2.5}, "checkpoints must be an integer ≥ 1"),
        ({"adjoint": "checkpoint", "adjoint_method": "rk4"}, "adjoint_method applies to the backward solve of"),
        ({"adjoint": "checkpoint", "adjoint_rtol": 1e-6}, "adjoint_rtol applies to the backward solve of"),
        ({"adjoint": "checkpoint", "method": "explicit_adams", "step_size": 0.1},
         "'explicit_adams' is a multistep method"),
        ({"adjoint": "checkpoint", "method": "implicit_adams", "step_size": 0.1},
         "'implicit_adams' is a multistep method"),
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
    SolverSpec(method="dopri5", adjoint="checkpoint")
    SolverSpec(method="rk4", step_size=0.1, adjoint="checkpoint", checkpoints=3)


def test_one_step_methods_are_the_runge_kutta_ones():
    """The checkpointed adjoint replays steps from a checkpoint: every method but the multistep Adams ones."""
    table = ode_methods()
    assert {m for m, info in table.items() if not info.one_step} == {"explicit_adams", "implicit_adams"}


# -- options that cannot act on the chosen method are refused, not ignored (issue 13, item 7) -----------
@pytest.mark.parametrize(("kwargs", "message"), [
    (dict(method="rk4", step_size=0.25, adaptive=True), "adaptive=True .* SDE solves only"),
    (dict(method="dopri5", adaptive=True), "adaptive=True .* SDE solves only"),
    (dict(method="rk4", step_size=0.25, rtol=1e-9), "rtol=1e-09 set, but 'rk4' is a fixed-step method"),
    (dict(method="rk4", step_size=0.25, atol=1e-9), "atol=1e-09 set"),
    (dict(method="dopri5", sde_type="stratonovich"), "sde_type='stratonovich' applies to SDE solves only"),
    (dict(method="dopri5", adjoint_rtol=1e-6), "adjoint_rtol applies to the adjoint solve"),
    (dict(method="dopri5", adjoint_method="rk4"), "adjoint_method applies to the adjoint solve"),
])
def test_options_that_cannot_act_on_an_ode_are_refused(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        SolverSpec(**kwargs).check_ode()


def test_tolerances_on_a_fixed_step_forward_act_through_an_adaptive_adjoint():
    spec = SolverSpec(method="rk4", step_size=0.25, rtol=1e-6, adjoint="backsolve", adjoint_method="dopri5")
    assert spec.check_ode().name == "rk4"  # the adjoint's tolerances default to rtol/atol: they act


def test_step_size_is_the_first_step_of_an_adaptive_method():
    """torchdiffeq's dopri5 evaluates f(t0) and then its first stage at t0 + h0/5: with step_size = h0 that
    stage sits at h0/5; without it, at torchdiffeq's own estimate."""
    import torch

    from cdflow.solve import solve

    def first_stage_time(**kwargs):
        times = []

        class Drift(torch.nn.Module):
            def forward(self, t, x):
                times.append(float(t))
                return -x

        solve(Drift(), torch.ones(3, 2), SolverSpec(method="dopri5", **kwargs))
        return times[1]

    assert first_stage_time(step_size=1e-3) == pytest.approx(2e-4, rel=1e-6)
    assert first_stage_time(step_size=0.05) == pytest.approx(0.01, rel=1e-6)
    assert first_stage_time() != pytest.approx(2e-4, rel=1e-3)


def test_sde_tolerances_without_adaptive_steps_are_refused():
    from cdflow.sde import check_sde

    with pytest.raises(ConfigError, match="tolerances act only with adaptive=True"):
        check_sde(SolverSpec(method="euler", step_size=0.1, rtol=1e-6), "diagonal")
    check_sde(SolverSpec(method="euler", step_size=0.1, rtol=1e-6, adaptive=True), "diagonal")  # they act
