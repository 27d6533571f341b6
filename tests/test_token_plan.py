"""Token plan: tokens and epochs per domain of the target run, and the repetition flag."""

from __future__ import annotations

import json
import warnings

import pytest

from mergemix_dagster.core.errors import OverRepetitionWarning, SimplexError, TokenPlanError
from mergemix_dagster.core.data.token_plan import TokenPlan, apportion, plan_tokens

AVAILABLE = {"math": 10_000_000_000, "code/repos": 40_000_000_000, "code/competitions": 1_000_000_000}


def test_tokens_follow_weights_exactly_and_epochs_divide_by_available():
    weights = {"math": 0.5, "code/repos": 0.3, "code/competitions": 0.2}
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # 2 epochs of competitions is under the cap: no warning
        plan = plan_tokens(weights, 10_000_000_000, AVAILABLE, max_epochs=4)
    assert sum(a.tokens for a in plan.allocations) == 10_000_000_000
    assert plan.allocation("math").tokens == 5_000_000_000
    assert plan.allocation("math").epochs == pytest.approx(0.5)
    assert plan.allocation("code/competitions").epochs == pytest.approx(2.0)
    assert plan.over_repeated == ()


def test_over_repetition_is_flagged_warned_and_marked_in_the_table():
    weights = {"math": 0.2, "code/repos": 0.3, "code/competitions": 0.5}
    with pytest.warns(OverRepetitionWarning, match=r"code/competitions 50\.00"):
        plan = plan_tokens(weights, 100_000_000_000, AVAILABLE, max_epochs=4)
    assert plan.over_repeated == ("code/competitions",)  # math is at exactly 2 epochs, repos 0.75
    table = plan.to_markdown()
    assert "Over the cap: code/competitions" in table
    marked = [line for line in table.splitlines() if "⚠" in line]
    assert len(marked) == 1 and "code/competitions" in marked[0] and "50.00" in marked[0]


def test_exactly_at_the_cap_is_not_flagged():
    plan = plan_tokens({"a": 0.4, "b": 0.6}, 1000, {"a": 100, "b": 1000}, max_epochs=4)
    assert plan.allocation("a").epochs == 4.0 and plan.over_repeated == ()


def test_integer_tokens_sum_to_target_for_awkward_weights():
    weights = {f"d{i}": 1 / 7 for i in range(7)}
    plan = plan_tokens(weights, 1_000_003, {d: 10**6 for d in weights}, max_epochs=4)
    counts = [a.tokens for a in plan.allocations]
    assert sum(counts) == 1_000_003 and max(counts) - min(counts) <= 1
    assert apportion(10, [0.25, 0.25, 0.5]) == [3, 2, 5]  # ties go to the earlier name


def test_round_trips_through_json():
    plan = plan_tokens(
        {"math": 0.25, "code/repos": 0.75}, 12_345, {"math": 1000, "code/repos": 99_999}, 4, {"math": 10}
    )
    back = TokenPlan.from_dict(json.loads(json.dumps(plan.to_dict())))
    assert back == plan
    assert back.allocation("math").mean_document_tokens == 100.0


def test_named_errors_for_unusable_inputs():
    with pytest.raises(TokenPlanError, match="no available token count"):
        plan_tokens({"math": 0.5, "code": 0.5}, 1000, {"math": 10}, 4)
    with pytest.raises(TokenPlanError, match="target tokens"):
        plan_tokens({"math": 1.0}, None, {"math": 10}, 4)
    with pytest.raises(TokenPlanError, match="0 available tokens"):
        plan_tokens({"math": 1.0}, 1000, {"math": 0}, 4)
    with pytest.raises(SimplexError):
        plan_tokens({"math": 0.5, "code": 0.6}, 1000, {"math": 10, "code": 10}, 4)
