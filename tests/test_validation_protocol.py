"""The pre-registered validation protocol on synthetic numbers whose answers are known: the paired t-interval
and its verdicts, the declared metric, RegMix's independent swarm, the protocol's settings and its ledger."""

from __future__ import annotations

import numpy as np
import pytest
import yaml

from mergemix_dagster.core.errors import PairedAnalysisError, ProtocolChangedError, ProtocolError
from mergemix_dagster.core.evaluation.fidelity import validation_mixtures
from mergemix_dagster.core.evaluation.judging import margins_over, metric_value, paired_margin
from mergemix_dagster.core.evaluation.protocol import (
    SWARM_MIN_L1,
    mark_judged,
    protocol_hash,
    register_attempt,
    regmix_swarm,
)
from mergemix_dagster.core.mixture import Mixture
from mergemix_dagster.core.settings import Settings, ValidationProtocol, load_settings

DOMAINS = ("math", "code", "web", "sft")
DOMAIN_ROWS = [{"name": d, "capability": c} for d, c in zip(DOMAINS, ("math", "code", "language", "knowledge"))]


# ---------------------------------------------------------------- the paired t-interval

def test_paired_margin_matches_the_t_interval_by_hand():
    # d = (0.1, 0.2, 0.3): mean 0.2, sd 0.1, se 0.1/√3; t(0.975, 2 df) = 4.302653
    m = paired_margin([1.1, 1.2, 1.3], [1.0, 1.0, 1.0], confidence=0.95)
    half = 4.302653 * 0.1 / np.sqrt(3)
    assert m.mean == pytest.approx(0.2) and m.std == pytest.approx(0.1) and m.n == 3
    assert (m.low, m.high) == pytest.approx((0.2 - half, 0.2 + half), abs=1e-6)
    # every seed favours a, yet 3 seeds this spread do not exclude 0: within noise, not a win
    assert m.low < 0 < m.high and not m.beats and not m.loses and m.verdict == "within noise"
    assert m.per_seed == pytest.approx((0.1, 0.2, 0.3))


def test_known_differences_give_the_right_verdicts():
    rng = np.random.default_rng(0)
    base = rng.normal(0.5, 0.1, size=5)  # shared by both arms at a seed: cancels in the pairing
    noise = rng.normal(0, 0.002, size=5)
    better = paired_margin(base + 0.05 + noise, base, 0.95)
    assert better.beats and better.mean == pytest.approx(0.05, abs=0.003)
    worse = paired_margin(base - 0.05 + noise, base, 0.95)
    assert worse.loses and not worse.beats and not worse.as_dict()["no_worse"]
    # the same +0.05 drowned in seed noise of the difference: not a win
    noisy = paired_margin(base + 0.05 + rng.normal(0, 0.2, size=5), base, 0.95)
    assert not noisy.beats
    # a wider confidence widens the interval around the same mean
    assert paired_margin(base + 0.05 + noise, base, 0.99).low < better.low


def test_the_interval_covers_a_known_difference_at_its_confidence():
    rng = np.random.default_rng(1)
    true, hits, n = 0.02, 0, 4000
    for _ in range(n):
        seeds = rng.normal(0.5, 0.05, size=3)
        m = paired_margin(seeds + true + rng.normal(0, 0.01, size=3), seeds + rng.normal(0, 0.01, size=3), 0.9)
        hits += m.low <= true <= m.high
    assert hits / n == pytest.approx(0.9, abs=0.02)


def test_paired_margin_refuses_what_it_cannot_judge():
    with pytest.raises(PairedAnalysisError, match="at least 2"):
        paired_margin([0.1], [0.2])
    with pytest.raises(PairedAnalysisError, match="equal-length"):
        paired_margin([0.1, 0.2, 0.3], [0.2, 0.3])
    with pytest.raises(PairedAnalysisError, match="non-finite"):
        paired_margin([0.1, float("nan"), 0.3], [0.2, 0.3, 0.4])


def test_margins_over_pairs_by_seed_and_names_a_missing_run():
    values = {"chosen": {7: 0.5, 8: 0.6, 9: 0.7}, "uniform": {9: 0.6, 7: 0.4, 8: 0.5}}
    m = margins_over(values, "chosen", 0.95)["uniform"]
    assert m.per_seed == pytest.approx((0.1, 0.1, 0.1)) and m.beats  # paired by seed, not by order
    with pytest.raises(PairedAnalysisError, match=r"no run at seeds \[9\]"):
        margins_over({"chosen": values["chosen"], "natural": {7: 0.1, 8: 0.2}}, "chosen", 0.95)


# ---------------------------------------------------------------- the declared metric

def test_metric_values_are_oriented_higher_is_better():
    scores = {"math": 0.6, "code": 0.2, "bpb": 1.5}
    caps = ["math", "code", "bpb"]
    assert metric_value("macro_average", scores, caps, {"bpb": "minimize"}) == pytest.approx((0.6 + 0.2 - 1.5) / 3)
    assert metric_value("capability:bpb", scores, caps, {"bpb": "minimize"}) == pytest.approx(-1.5)
    assert metric_value("capability:math", scores, caps) == pytest.approx(0.6)
    assert metric_value("objective", scores, caps, objective=0.25) == 0.25
    with pytest.raises(ProtocolError, match="every capability"):
        metric_value("macro_average", {"math": 0.6}, caps)
    with pytest.raises(ProtocolError, match="objective value"):
        metric_value("objective", scores, caps)


# ---------------------------------------------------------------- the protocol in settings

def test_fewer_than_three_seeds_are_refused_at_load(tmp_path):
    with pytest.raises(ProtocolError, match="at least 3 seeds"):
        ValidationProtocol(seeds=[7001, 7002])
    with pytest.raises(ProtocolError, match="repeats a seed"):
        ValidationProtocol(seeds=[7001, 7001, 7002])
    path = tmp_path / "two_seeds.yaml"
    path.write_text(yaml.safe_dump({"domains": DOMAIN_ROWS, "validation": {"protocol": {"seeds": [1, 2]}}}))
    with pytest.raises(ProtocolError, match="at least 3 seeds"):  # named, not a generic validation error
        load_settings(str(path))


def test_protocol_metric_and_arms_are_checked_before_anything_runs():
    assert ValidationProtocol().seeds == [7001, 7002, 7003] and ValidationProtocol().metric == "macro_average"
    with pytest.raises(ProtocolError, match="not one of"):
        ValidationProtocol(metric="overall")
    with pytest.raises(ProtocolError, match="'chosen'"):
        ValidationProtocol(arms=["uniform", "natural"])
    with pytest.raises(ProtocolError, match="unknown capability 'reasoning'"):
        Settings(domains=DOMAIN_ROWS, validation={"protocol": {"metric": "capability:reasoning"}})
    s = Settings(domains=DOMAIN_ROWS, validation={"protocol": {"metric": "capability:code"}})
    assert s.validation.protocol.capability == "code"


# ---------------------------------------------------------------- RegMix's own swarm

def test_swarm_is_seeded_independent_and_never_holds_the_chosen_mixture():
    prior = {"math": 0.4, "code": 0.3, "web": 0.2, "sft": 0.1}
    swarm = regmix_swarm(DOMAINS, prior, 8, 4.0, seed=0)
    assert swarm == regmix_swarm(DOMAINS, prior, 8, 4.0, seed=0)  # fixed seed: the same runs, reused
    assert swarm != regmix_swarm(DOMAINS, prior, 8, 4.0, seed=1)
    # hand it one of its own draws as the chosen mixture: that draw is redrawn, the others are kept
    chosen = swarm[3]
    excluded = regmix_swarm(DOMAINS, prior, 8, 4.0, seed=0, exclude=[chosen])
    dist = [sum(abs(m[d] - chosen[d]) for d in DOMAINS) for m in excluded]
    assert min(dist) >= SWARM_MIN_L1 and swarm[:3] == excluded[:3]
    # independent of the validation design: the same draws whatever the design or a far-away chosen mixture
    design = validation_mixtures(DOMAINS, 12, seed=0, include=[Mixture.from_dict(chosen, DOMAINS)])
    far = {"math": 0.0, "code": 0.0, "web": 0.0, "sft": 1.0}
    assert regmix_swarm(DOMAINS, prior, 8, 4.0, seed=0, exclude=[far]) == swarm
    assert all(min(np.abs(m.as_array() - np.array([x[d] for d in DOMAINS])).sum() for m in design) > 0
               for x in excluded)
    # sampled around the natural prior
    many = np.array([[m[d] for d in DOMAINS] for m in regmix_swarm(DOMAINS, prior, 2000, 4.0, seed=2)])
    assert many.mean(axis=0) == pytest.approx([0.4, 0.3, 0.2, 0.1], abs=0.02)


def test_swarm_refuses_a_prior_it_cannot_leave():
    point = {"math": 1.0, "code": 0.0, "web": 0.0, "sft": 0.0}
    with pytest.raises(ProtocolError, match="no swarm draw"):
        regmix_swarm(DOMAINS, point, 2, 1e4, seed=0, exclude=[point])


# ---------------------------------------------------------------- the ledger of attempts

def test_a_changed_protocol_after_judging_is_refused_or_a_new_dated_attempt():
    first = ValidationProtocol().judging()
    other = ValidationProtocol(metric="objective").judging()
    h1, h2 = protocol_hash({"protocol": first}), protocol_hash({"protocol": other})
    assert h1 != h2 and h1 == protocol_hash({"protocol": dict(reversed(list(first.items())))})
    ledger, attempt = register_attempt(None, h1, first, None, "2026-12-07T10:00:00+00:00")
    assert attempt["number"] == 1 and attempt["judged_at"] is None
    assert register_attempt(ledger, h1, first, None, "later")[1]["registered_at"] == "2026-12-07T10:00:00+00:00"
    # changed before any result was judged: a new attempt, the old one kept as superseded
    early, attempt = register_attempt(ledger, h2, other, None, "2026-12-07T11:00:00+00:00")
    assert attempt["number"] == 2 and early["attempts"][0]["superseded_at"] == "2026-12-07T11:00:00+00:00"
    # judged, then the metric changes: refused without a reason
    judged = mark_judged(ledger, h1, "2026-12-07T12:00:00+00:00", ["r1", "r2"])
    assert judged["attempts"][0]["judged_at"] == "2026-12-07T12:00:00+00:00"
    with pytest.raises(ProtocolChangedError, match="new_attempt"):
        register_attempt(judged, h2, other, None, "2026-12-08T09:00:00+00:00")
    # with a reason: a new, dated attempt beside the old one, which stays as it was
    after, attempt = register_attempt(judged, h2, other, "macro-average hides the code loss", "2026-12-08T09:00:00+00:00")
    assert attempt["number"] == 2 and attempt["registered_at"] == "2026-12-08T09:00:00+00:00"
    assert after["attempts"][0] == judged["attempts"][0]
    after = mark_judged(after, h2, "2026-12-08T10:00:00+00:00", ["r1", "r2"])
    h3 = protocol_hash({"protocol": ValidationProtocol(confidence=0.9).judging()})
    with pytest.raises(ProtocolChangedError):  # a reason already used is not a new attempt
        register_attempt(after, h3, {}, "macro-average hides the code loss", "2026-12-09T09:00:00+00:00")
    with pytest.raises(ProtocolError, match="not registered"):
        mark_judged(after, h3, "now", [])
