"""The choose-and-verify rule of ``chosen_mixture`` (core/search/choose.py), without Dagster."""

import numpy as np

from mergemix_dagster.core.evaluation.scores import CapabilityTable
from mergemix_dagster.core.mixture import Mixture
from mergemix_dagster.core.search.choose import (
    NO_ITEMS_MARGIN,
    MarginRule,
    PairedItems,
    choose_verified_or_measured,
    degenerate,
    effective_domains,
)
from mergemix_dagster.core.search.objective import Objective, ScoreScale
from mergemix_dagster.core.search.constraints import MixtureConstraints, build_constraints

DOMAINS = ("math", "code")


def _table(alphas, math_scores) -> CapabilityTable:
    alphas = np.array(alphas, dtype=float)
    return CapabilityTable(tuple(f"c{i}" for i in range(len(alphas))), DOMAINS, ("math",), alphas,
                           {"math": np.array(math_scores, dtype=float)})


def test_the_verified_search_choice_stands_unless_a_measured_mixture_did_strictly_better():
    search_choice = Mixture(DOMAINS, (0.4, 0.6))
    table = _table([[1.0, 0.0], [0.5, 0.5]], [0.7, 0.2])
    none = MixtureConstraints.none(DOMAINS)

    kept = choose_verified_or_measured(search_choice, {"math": 0.5}, 0.8, table, np.array([0.8, 0.1]), none)
    assert (kept.mixture, kept.chosen_from, kept.scores, kept.objective, kept.measured_id) == (
        search_choice, "search", {"math": 0.5}, 0.8, None)

    beaten = choose_verified_or_measured(search_choice, {"math": 0.5}, 0.3, table, np.array([0.9, 0.1]), none)
    assert beaten.mixture.domains == DOMAINS and np.allclose(beaten.mixture.as_array(), [1.0, 0.0])  # projected
    assert beaten.chosen_from == "measured candidate c0 (the verified search choice scored lower)"
    assert beaten.scores == {"math": 0.7} and beaten.objective == 0.9 and beaten.measured_id == "c0"


def test_a_measured_mixture_outside_the_constraints_is_never_chosen():
    search_choice = Mixture(DOMAINS, (0.4, 0.6))
    table = _table([[1.0, 0.0], [0.5, 0.5]], [0.7, 0.2])
    capped = build_constraints(DOMAINS, max_weight={"math": 0.8})
    chosen = choose_verified_or_measured(search_choice, {"math": 0.5}, 0.3, table, np.array([0.9, 0.4]), capped)
    assert chosen.measured_id == "c1" and chosen.objective == 0.4
    nothing_feasible = choose_verified_or_measured(search_choice, {"math": 0.5}, 0.3, _table([[1.0, 0.0]], [0.7]),
                                                   np.array([0.9]), capped)
    assert nothing_feasible.chosen_from == "search"


def test_degenerate_and_effective_domains():
    assert degenerate({"math": 0.95, "code": 0.05}).startswith("math holds 95%")
    assert degenerate({"math": 0.5, "code": 0.5}) is None
    assert np.isclose(effective_domains({"math": 0.5, "code": 0.5}), 2.0)
    assert np.isclose(effective_domains({"math": 1.0, "code": 0.0}), 1.0)


def test_without_per_item_scores_the_strict_rule_applies_and_the_comparison_says_so():
    search_choice = Mixture(DOMAINS, (0.4, 0.6))
    table = _table([[1.0, 0.0], [0.5, 0.5]], [0.7, 0.2])
    none = MixtureConstraints.none(DOMAINS)
    beaten = choose_verified_or_measured(search_choice, {"math": 0.5}, 0.3, table, np.array([0.9, 0.1]), none)
    assert beaten.comparison["margin"] == NO_ITEMS_MARGIN
    assert beaten.comparison["measured_candidate"] == "c0" and beaten.comparison["difference"] == 0.6
    rule = MarginRule(Objective(), ScoreScale({"math": 0.0}, {"math": 1.0}))
    items = PairedItems(verified={("t", "acc"): [0.0, 1.0, 1.0]}, measured={"c0": None, "c1": None},
                        capability_of={("t", "acc"): "math"})
    with_rule = choose_verified_or_measured(search_choice, {"math": 0.5}, 0.3, table, np.array([0.9, 0.1]), none,
                                            items=items, rule=rule)
    assert with_rule.measured_id == "c0" and with_rule.comparison["margin"] == NO_ITEMS_MARGIN


def test_a_measured_lead_within_paired_noise_keeps_the_search_choice():
    search_choice = Mixture(DOMAINS, (0.4, 0.6))
    verified = np.tile([0.0, 1.0], 100)
    measured = verified.copy()
    measured[[0, 2, 4]] = 1.0  # +0.015 on 200 items: 3 differ
    table = _table([[0.7, 0.3]], [measured.mean()])
    rule = MarginRule(Objective(), ScoreScale({"math": 0.0}, {"math": 1.0}))
    items = PairedItems({("t", "acc"): verified}, {"c0": {("t", "acc"): measured}}, {("t", "acc"): "math"})
    kept = choose_verified_or_measured(search_choice, {"math": 0.5}, 0.5, table, np.array([measured.mean()]),
                                       MixtureConstraints.none(DOMAINS), items=items, rule=rule)
    assert kept.chosen_from == "search" and kept.comparison["interval"][0] <= 0
