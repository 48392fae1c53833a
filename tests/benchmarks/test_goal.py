"""A row's goal text and its test come from the same numbers, and `met` holds only beyond the spread."""

import math

import pytest

from benchmarks.common import Goal, goal_row, median_spread, paired_ratio


def test_goal_text_matches_its_bound():
    assert str(Goal("<=", 1.0, note="at most linear in N")) == "≤ 1 (at most linear in N)"
    assert str(Goal(">=", 60.0, "%")) == "≥ 60%"
    assert str(Goal("<", 15.0, " s")) == "< 15 s"
    with pytest.raises(ValueError):
        Goal("=<", 1.0)


@pytest.mark.parametrize(
    ("goal", "value", "spread", "met"),
    [
        (Goal(">", 1.0), 1.008, 0.018, False),  # the compile row: a speed-up inside its spread is no speed-up
        (Goal(">", 1.0), 1.05, 0.018, True),
        (Goal("<=", 1.05), 1.02, 0.174, False),  # an overhead ratio whose spread reaches past the goal
        (Goal("<=", 1.05), 1.02, 0.02, True),
        (Goal("<=", 1.0), 1.1, 0.0, False),  # ≤ 1 means ≤ 1, not ≤ 1.15
        (Goal(">=", 60.0), 65.0, 4.0, True),
        (Goal(">=", 60.0), 62.0, 4.0, False),
        (Goal("<=", 12.0), 11.0, math.nan, False),  # no spread known: not shown
        (Goal("<=", 12.0), math.nan, 0.0, False),
    ],
)
def test_met_only_beyond_the_spread(goal, value, spread, met):
    assert goal.met(value, spread) is met


def test_goal_row_without_a_spread_is_not_judged():
    row = goal_row("b", "c", "m", 1.0, "x", math.nan, Goal("<=", 2.0))
    assert row.met is None and row.goal == "" and row.spread is None
    assert row.extra["goal_if_judged"] == "≤ 2" and row.extra["not_judged"]
    row = goal_row("b", "c", "m", 1.0, "x", 0.1, Goal("<=", 2.0), require=False)  # e.g. different NFE
    assert row.met is False and row.goal == "≤ 2"
    row = goal_row("b", "c", "m", 1.0, "x", 0.1, Goal("<=", 2.0))
    assert row.met is True and row.extra["goal_rule"] == {"op": "<=", "bound": 2.0, "beyond_spread": True}


def test_spreads():
    assert math.isnan(median_spread([1.0])[1])
    assert median_spread([1.0, 3.0, 2.0]) == (2.0, 1.0)  # half the range of 2–3 samples, never a false 0
    med, spread = median_spread([1.0, 2.0, 3.0, 4.0, 100.0])
    assert med == 3.0 and spread < 40
    ratio, spread, ratios = paired_ratio([2.0, 4.0, 6.0], [1.0, 2.0, 3.0])
    assert ratio == 2.0 and spread == 0.0 and ratios == [2.0, 2.0, 2.0]  # load that drifts across rounds cancels
