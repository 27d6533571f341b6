"""A measured mixture replaces the verified search choice only beyond paired noise; experts beat the base only
beyond paired noise; the search's cost counts every evaluation. Synthetic and fast: no pipeline runs."""

import numpy as np
import pandas as pd
import pytest

from mergemix_dagster.core.errors import PairedAnalysisError
from mergemix_dagster.core.evaluation.paired import paired_capability_difference, paired_objective_difference
from mergemix_dagster.core.evaluation.scores import CapabilityTable
from mergemix_dagster.core.mixture import Mixture
from mergemix_dagster.core.search.choose import (
    NO_ITEMS_MARGIN,
    MarginRule,
    PairedItems,
    Prediction,
    choose_verified_or_measured,
    chosen_objectives,
)
from mergemix_dagster.core.search.constraints import MixtureConstraints
from mergemix_dagster.core.search.objective import Objective, ScoreScale, objective_values
from mergemix_dagster.core.settings import Settings

DOMAINS = ("math", "code")
TASK = ("mm_math", "gold_prob")
N = 400


def _verified_items() -> np.ndarray:
    return (np.arange(N) % 2).astype(float)  # 0/1 accuracies, mean 0.5


def _flip(items: np.ndarray, up: int, down: int) -> np.ndarray:
    out = items.copy()
    zeros, ones = np.flatnonzero(out == 0), np.flatnonzero(out == 1)
    out[zeros[:up]] = 1.0
    out[ones[:down]] = 0.0
    return out


RULE = MarginRule(Objective(), ScoreScale({"math": 0.0}, {"math": 1.0}), quantile=0.025, n_boot=2000, seed=0)


def _choose(measured_items: np.ndarray | None, rule=RULE, verified_has_items: bool = True):
    verified_items = _verified_items()
    search_choice = Mixture(DOMAINS, (0.4, 0.6))
    score = float(np.mean(measured_items)) if measured_items is not None else 0.6
    table = CapabilityTable(("c0",), DOMAINS, ("math",), np.array([[0.7, 0.3]]), {"math": np.array([score])})
    measured_objectives = objective_values(table.scores, RULE.objective, RULE.scale, table.alphas, DOMAINS)
    verified = float(verified_items.mean())
    items = PairedItems(
        verified={TASK: verified_items} if verified_has_items else None,
        measured={"c0": None if measured_items is None else {TASK: measured_items}},
        capability_of={TASK: "math"},
    )
    return choose_verified_or_measured(search_choice, {"math": verified}, verified, table, measured_objectives,
                                       MixtureConstraints.none(DOMAINS), items=items, rule=rule)


def test_a_measured_mixture_better_by_less_than_paired_noise_does_not_replace_the_verified_choice():
    measured = _flip(_verified_items(), up=8, down=4)  # +0.01: 12 items differ, paired se ≈ 0.0087
    chosen = _choose(measured)
    assert chosen.chosen_from == "search" and chosen.measured_id is None
    c = chosen.comparison
    assert c["measured_candidate"] == "c0" and c["difference"] == pytest.approx(0.01)
    assert c["interval"][0] <= 0 < c["interval"][1]
    assert "within paired noise" in c["decision"] and c["n_items"] == N


def test_a_measured_mixture_better_well_beyond_paired_noise_replaces_it():
    measured = _flip(_verified_items(), up=40, down=0)  # +0.10
    chosen = _choose(measured)
    assert chosen.measured_id == "c0" and chosen.chosen_from.startswith("measured candidate c0")
    assert chosen.objective == pytest.approx(0.6)
    c = chosen.comparison
    assert c["interval"][0] > 0 and c["difference"] == pytest.approx(0.1)
    assert c["decision"] == "measured mixture chosen: higher beyond paired noise"


def test_without_items_the_old_rule_applies_and_says_so():
    chosen = _choose(None)  # the measured candidate has no per-item scores: strictly higher wins
    assert chosen.measured_id == "c0" and chosen.comparison["margin"] == NO_ITEMS_MARGIN
    verified_lacks = _choose(_flip(_verified_items(), 8, 4), verified_has_items=False)  # within noise, yet:
    assert verified_lacks.measured_id == "c0" and verified_lacks.comparison["margin"] == NO_ITEMS_MARGIN
    assert "old rule" in verified_lacks.comparison["decision"]
    no_rule = _choose(_flip(_verified_items(), 8, 4), rule=None)
    assert no_rule.measured_id == "c0" and no_rule.comparison["margin"] == NO_ITEMS_MARGIN
    unpaired = _choose(np.ones(N + 1))  # other items (another limit): cannot pair, old rule, said so
    assert unpaired.measured_id == "c0" and "do not pair" in unpaired.comparison["margin"]


def test_no_comparison_when_no_measured_mixture_scored_higher():
    chosen = _choose(_flip(_verified_items(), up=0, down=20))
    assert chosen.chosen_from == "search" and "no feasible measured mixture scored higher" in chosen.comparison["decision"]


def test_stored_predicted_and_verified_objectives_belong_to_the_chosen_mixture():
    kl = Objective(prior={"math": 0.5, "code": 0.5}, kl_weight=0.1)
    scale = RULE.scale
    prediction = Prediction({"math": 0.42}, {})
    beaten = _choose(_flip(_verified_items(), up=40, down=0))
    predicted, verified = chosen_objectives(beaten, 0.99, prediction, kl, scale)
    expected = objective_values({"math": np.array([0.42])}, kl, scale, beaten.mixture.as_array()[None, :], DOMAINS)
    assert predicted == pytest.approx(float(expected[0])) and predicted != 0.99
    assert verified == beaten.objective
    kept = _choose(_flip(_verified_items(), up=8, down=4))
    assert chosen_objectives(kept, 0.99, prediction, kl, scale) == (0.99, kept.objective)


def test_paired_objective_difference_resamples_the_same_items_for_both():
    a = np.linspace(0, 1, 50)
    same = paired_objective_difference({"t": a}, {"t": a}, lambda s: s["x"], 500, 0, capability_of={"t": "x"})
    assert same.difference == 0 and same.low == 0 and same.high == 0  # paired: a shift-free copy has no noise
    shifted = paired_capability_difference({"t": a + 0.01}, {"t": a})
    assert shifted.low == pytest.approx(0.01) and shifted.high == pytest.approx(0.01)
    two_tasks = paired_capability_difference({"t": a + 0.02, "u": a}, {"t": a, "u": a})
    assert two_tasks.difference == pytest.approx(0.01)  # equal-weight mean of the tasks' means
    with pytest.raises(PairedAnalysisError, match="same tasks"):
        paired_capability_difference({"t": a}, {"u": a})


# ---------------------------------------------------------------- experts_beat_base on paired noise

def _settings() -> Settings:
    return Settings(domains=[{"name": "math", "capability": "math"}, {"name": "code", "capability": "code"}])


def _rows(candidate: str, alpha: dict, items: dict, with_items: bool = True) -> list[dict]:
    return [{"candidate_id": candidate, "alpha": alpha, "task": task, "metric": "gold_prob", "capability": cap,
             "value": float(np.mean(v)), "item_values": tuple(v) if with_items else None}
            for (task, cap), v in items.items()]


def _expert_frame(code_items: bool = True) -> pd.DataFrame:
    n = 1000
    base_math = np.linspace(0.2, 0.8, n)
    base_code = np.linspace(0.1, 0.7, n)
    wiggle = np.where(np.arange(n) % 2 == 0, 0.1, -0.1)
    rows = _rows("base", {"math": 0.0, "code": 0.0},
                 {("mm_math", "math"): base_math, ("mm_code", "code"): base_code}, code_items)
    rows += _rows("c_math", {"math": 1.0, "code": 0.0},  # +0.003, per-item sd 0.1: paired se ≈ 0.003
                  {("mm_math", "math"): base_math + 0.003 + wiggle, ("mm_code", "code"): base_code}, code_items)
    rows += _rows("c_code", {"math": 0.0, "code": 1.0},  # +0.05, per-item sd 0.01
                  {("mm_math", "math"): base_math, ("mm_code", "code"): base_code + 0.05 + wiggle / 10}, code_items)
    return pd.DataFrame(rows)


def test_experts_beat_base_fails_an_expert_whose_small_gain_is_within_its_paired_interval():
    import dagster as dg

    from mergemix_dagster.assets.evaluations import expert_vs_base_frame, experts_beat_base_result

    s = _settings()
    versus = expert_vs_base_frame(s, _expert_frame()).set_index("domain")
    assert versus.loc["math", "gain"] == pytest.approx(0.003)
    assert versus.loc["math", "ci_low"] < 0 < versus.loc["math", "ci_high"] and not versus.loc["math", "beats_base"]
    assert versus.loc["code", "ci_low"] > 0.04 and versus.loc["code", "beats_base"]
    check = experts_beat_base_result(s, versus.reset_index())
    assert not check.passed and check.severity == dg.AssetCheckSeverity.WARN
    assert "1 of 2 experts beat the base" in check.description and "not: math" in check.description
    assert "math +0.003 [" in check.description and "code +0.050 [" in check.description


def test_experts_beat_base_without_items_uses_the_gain_and_says_so():
    from mergemix_dagster.assets.evaluations import expert_vs_base_frame, experts_beat_base_result

    s = _settings()
    versus = expert_vs_base_frame(s, _expert_frame(code_items=False))
    check = experts_beat_base_result(s, versus)
    assert check.passed  # both gains > 0 under the old rule
    assert "math +0.003 (no per-item scores" in check.description


# ---------------------------------------------------------------- the search's cost

def test_search_costs_count_round_evaluations_and_show_a_missing_record_as_unknown(tmp_path):
    from mergemix_dagster.core.evaluation.fidelity import cost_markdown
    from mergemix_dagster.resources import CheckpointStore, EvaluationDatabase, layout
    from mergemix_dagster.steps.validation_report import search_costs

    s = _settings()
    store = CheckpointStore(root=str(tmp_path / "store"))
    db = EvaluationDatabase(path=str(tmp_path / "db.duckdb"))
    for d in s.domain_names:
        store.put_json(layout.expert_pointer("s0", d), {"key": f"stages/s0/experts/{d}/ckpt"})
    db.record_training_run("s0", "math-run", "expert", {"math": 1.0}, 0, 1234, 5.0, 1.0,
                           store.uri("stages/s0/experts/math/ckpt"))  # code's run has no record
    kinds = [("base", "base")] + [(f"c{i}", "seed") for i in range(3)] + [(f"r{i}", "round1") for i in range(2)] \
        + [("r2_0", "round2"), ("verify", "verify"), ("v0", "validation_proxy")]
    db.upsert_evaluations(pd.DataFrame([
        {"stage": "s0", "candidate_id": cid, "kind": kind, "alpha": {"math": 0.5, "code": 0.5}, "task": task,
         "metric": "gold_prob", "value": 0.5, "capability": cap, "model_fingerprint": "fp"}
        for cid, kind in kinds for task, cap in (("mm_math", "math"), ("mm_code", "code"))]))
    mergemix, trained = search_costs(s, store, db, "s0")
    assert mergemix.evaluations == 8  # base + 3 seed + 2 round1 + 1 round2 + verify; not the validation proxy
    assert mergemix.tokens_trained is None and np.isnan(mergemix.train_seconds)
    text = cost_markdown([mergemix, trained])
    assert "| MergeMix (K experts, merged proxies) | 2 | unknown | unknown | 8 |" in text
    assert f"{s.experts.tokens:,}" not in text
    # a home moved or copied elsewhere: the records keep the old absolute URI, the store key still names the run
    db.record_training_run("s0", "code-run", "expert", {"code": 1.0}, 0, 1000, 3.0, 1.0,
                           "/old/home/store/stages/s0/experts/code/ckpt")
    db.record_training_run("s0", "other-run", "expert", {"code": 1.0}, 0, 99, 1.0, 1.0,
                           "/old/home/store/stages/s0/experts/code/ckpt-other")
    mergemix, _ = search_costs(s, store, db, "s0")
    assert mergemix.tokens_trained == 1234 + 1000 and mergemix.train_seconds == 5.0 + 3.0
