"""runner/plan.py: the order in which ``mergemix run`` asks its rerun rules, and how ``plan`` walks them.

Fast: fake rules and hand-made stage statuses; the real rules run in test_pipeline/test_stages/test_faults/
test_hierarchy, whose expected runs did not change when the rules moved here.
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from mergemix_dagster.runner.plan import (
    PlanContext,
    PlannedRun,
    PlanState,
    Step,
    layer_runs,
    plan,
    stage_steps,
)
from mergemix_dagster.runner.staleness import StageStatus, Status


def _names(steps) -> list[str]:
    return [step.name for step in steps]


def _settings(hierarchy: str):
    return SimpleNamespace(search=SimpleNamespace(hierarchy=hierarchy))


SOURCES = "changed_general_corpus + changed_domain_corpora + changed_stage_base + damaged_expert_checkpoints"
FLAT = [SOURCES, "stale_layer", "stale_evaluations", "stale_layer"]


def test_flat_stage_order():
    assert _names(stage_steps(_settings("none"))) == FLAT
    assert [s.once for s in stage_steps(_settings("none"))] == [True, False, True, False]


def test_hierarchical_orders():
    top = stage_steps(_settings("top_down"), hierarchical=True)
    assert _names(top) == ["changed_subdomain_corpora", *FLAT, "stale_subdomain_work", "stale_hierarchical_mixture"]
    bottom = stage_steps(_settings("bottom_up"), hierarchical=True, subdomain_layers=3)
    assert _names(bottom) == ["changed_subdomain_corpora", "stale_early_layer", "stale_subdomain_work", *FLAT,
                              "stale_hierarchical_mixture"]
    assert bottom[1].max_layers == 3 and bottom[3].max_layers == 12


def _rule(name: str, layers: list[list[str]], asked: list[str]):
    """A fake rule that plans ``layers`` one after another, then nothing; records each time it is asked."""
    pending = list(layers)

    def rule(ctx):
        asked.append(name)
        return [PlannedRun(job, None, name) for job in (pending.pop(0) if pending else [])]

    rule.__name__ = name
    return rule


def _drain(state: PlanState) -> list[list[str]]:
    out = []
    while layer := plan(state):
        out.append([run.job for run in layer])
    return out


def test_once_steps_are_asked_once_and_other_steps_until_they_have_nothing():
    asked: list[str] = []
    steps = (
        Step((_rule("a", [["a1", "a2"], ["a-again"]], asked), _rule("b", [["b1"]], asked)), once=True),
        Step((_rule("c", [["c1"], ["c2"]], asked),)),
        Step((_rule("d", [], asked),), once=True),
        Step((_rule("e", [["e1"]], asked),)),
    )
    state = PlanState(PlanContext(None, None, None, "s0"), steps)
    assert _drain(state) == [["a1", "a2", "b1"], ["c1"], ["c2"], ["e1"]]
    assert asked == ["a", "b", "c", "c", "c", "d", "e", "e"]
    assert plan(state) == []  # finished stays finished


def test_a_step_that_never_settles_is_an_error():
    forever = Step((lambda ctx: [PlannedRun("optimize_job", "s0", "always stale")],), max_layers=2)
    state = PlanState(PlanContext(None, None, None, "s0"), (forever,))
    plan(state), plan(state)
    with pytest.raises(RuntimeError, match="still not fresh after 2 layers.*optimize_job\\[s0\\]: always stale"):
        plan(state)


def test_layer_runs_say_why():
    fresh, missing, stale = Status.FRESH, Status.MISSING, Status.STALE
    status = StageStatus("s1", {"general_corpus": fresh}, {"math": fresh, "code": fresh}, fresh,
                         {"math": stale, "code": fresh}, {"merge_candidates": missing})
    [run] = layer_runs(status)
    assert (run.job, str(run.partition)) == ("experts_job", "math|s1")
    assert run.reason == "expert_checkpoint[math|s1] stale"
    status = StageStatus("s1", {"general_corpus": fresh}, {"math": fresh}, fresh, {"math": fresh},
                         {"merge_candidates": fresh, "chosen_mixture": missing})
    assert layer_runs(status) == [PlannedRun("optimize_job", "s1", "chosen_mixture missing")]
    assert layer_runs(StageStatus("s1", {}, {}, fresh, {}, {})) == []
