"""Seed designs on the simplex and the utility search over the surrogates."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from mergemix_dagster.core.search.designs import coarse_grid, extend_design, sample_simplex, seed_design
from mergemix_dagster.core.errors import ConfigError
from mergemix_dagster.core.mixture import Mixture
from mergemix_dagster.core.search.constraints import build_constraints
from mergemix_dagster.core.errors import InfeasibleConstraintsError, InfeasibleObjectiveError
from mergemix_dagster.core.search.objective import (
    Objective, ScoreScale, fit_score_scale, objective_values, resolve_targets,
)
from mergemix_dagster.core.search.simplex import maximize_on_simplex, search_mixture

DOMAINS = ("math", "code", "sft", "general")


def test_sample_simplex_rows_on_simplex_and_seeded():
    x = sample_simplex(4, 1000, seed=3)
    assert x.shape == (1000, 4)
    assert (x >= 0).all()
    np.testing.assert_allclose(x.sum(axis=1), 1.0, atol=1e-12)
    np.testing.assert_array_equal(x, sample_simplex(4, 1000, seed=3))
    assert not np.array_equal(x, sample_simplex(4, 1000, seed=4))
    # small concentration pushes mass to the corners
    assert sample_simplex(4, 1000, seed=3, concentration=0.1).max(axis=1).mean() > x.max(axis=1).mean() + 0.2


def test_seed_design_structure_order_dedup_determinism():
    design = seed_design(DOMAINS, 40, seed=0)
    assert len(design) == 40
    arr = np.array([m.as_array() for m in design])
    assert all(m.domains == DOMAINS for m in design)
    np.testing.assert_allclose(arr.sum(axis=1), 1.0, atol=1e-9)
    assert (arr >= 0).all()
    # vertices first, then the centroid, then all 6 pairwise midpoints (K=4 has few), then interior points
    np.testing.assert_array_equal(arr[:4], np.eye(4))
    np.testing.assert_allclose(arr[4], 0.25)
    expected = set()
    for i, j in itertools.combinations(range(4), 2):
        p = [0.0] * 4
        p[i] = p[j] = 0.5
        expected.add(tuple(p))
    assert {tuple(r) for r in arr[5:11]} == expected
    assert (arr[11:] > 0).all()  # the rest is interior
    assert len({tuple(np.round(r, 9)) for r in arr}) == 40  # no duplicates
    assert seed_design(DOMAINS, 40, seed=0) == design
    assert seed_design(DOMAINS, 40, seed=1)[11:] != design[11:]
    assert seed_design(DOMAINS, 40, seed=1)[:5] == design[:5]


@pytest.mark.parametrize("k,n", [(17, 40), (64, 80), (4, 8)])
def test_seed_design_has_interior_points_at_any_k(k, n):
    domains = tuple(f"d{i}" for i in range(k))
    arr = np.array([m.as_array() for m in seed_design(domains, n, seed=0)])
    assert arr.shape == (n, k)
    interior = (arr > 0).all(axis=1)
    # at K=17, N=40 the old design was 17 vertices + 23 midpoints: no interior point at all
    assert interior.sum() >= (n - k - 1) // 2
    np.testing.assert_array_equal(arr[:k], np.eye(k))


def test_seed_design_needs_k_plus_one_and_keeps_priors():
    with pytest.raises(ConfigError, match="at least 5 candidates"):
        seed_design(DOMAINS, 4)
    prior = Mixture.from_dict({"math": 0.7, "code": 0.1, "sft": 0.1, "general": 0.1}, DOMAINS)
    dup = Mixture.uniform(DOMAINS)  # already the centroid: kept once
    design = seed_design(DOMAINS, 20, priors=[prior, dup])
    assert design[5] == prior
    assert sum(m == dup for m in design) == 1
    # K=2: midpoint == centroid, kept once
    two = seed_design(("a", "b"), 3)
    assert [m.weights for m in two][:3] == [(1.0, 0.0), (0.0, 1.0), (0.5, 0.5)]
    with pytest.raises(ConfigError):
        seed_design(DOMAINS, 0)


def test_extend_design_measures_a_new_domain_and_adds_only_missing_points():
    """A 4th domain added to a 3-domain seed design: the 3-domain points are kept (new domain at 0) and only
    the new domain's vertex, its midpoints, the 4-domain centroid/prior and interior points are added."""
    old = ("math", "code", "sft")
    earlier = np.array([m.as_array() for m in seed_design(old, 8, seed=0)])
    measured = np.hstack([earlier, np.zeros((len(earlier), 1))])  # the new domain at 0
    prior = Mixture.from_dict({"math": 0.1, "code": 0.2, "sft": 0.3, "general": 0.4}, DOMAINS)
    added = extend_design(DOMAINS, measured, ["general"], 8, seed=0, priors=[prior])
    assert added.shape[1] == 4
    np.testing.assert_allclose(added.sum(axis=1), 1.0, atol=1e-9)
    assert not any(np.allclose(a, m) for a in added for m in measured)  # nothing measured twice
    assert any(np.allclose(a, [0, 0, 0, 1]) for a in added)  # the new expert alone
    for j in range(3):  # its midpoint with every other domain
        mid = np.zeros(4)
        mid[j] = mid[3] = 0.5
        assert any(np.allclose(a, mid) for a in added)
    assert any(np.allclose(a, prior.as_array()) for a in added)
    assert any(np.allclose(a, np.full(4, 0.25)) for a in added)
    assert ((added > 0).all(axis=1)).sum() >= 2 + 2  # centroid, prior and >= 2 more interior points
    assert (added[:, 3] > 0).all()  # every added point moves the new domain
    np.testing.assert_array_equal(added, extend_design(DOMAINS, measured, ["general"], 8, seed=0, priors=[prior]))
    # extending what was just extended adds nothing: every point is measured
    assert extend_design(DOMAINS, np.vstack([measured, added]), [], 8, seed=0, priors=[prior]).shape[0] == 0
    with pytest.raises(ConfigError):
        extend_design(DOMAINS, measured, ["web"], 8)


def test_extend_design_after_a_domain_is_removed_fills_the_smaller_simplex():
    kept = np.array([[1.0, 0, 0], [0, 1.0, 0], [0, 0, 1.0], [0.5, 0.5, 0]])  # the points off the removed face
    added = extend_design(("a", "b", "c"), kept, [], 8, seed=1)
    assert len(kept) + len(added) == 8
    assert any(np.allclose(a, np.full(3, 1 / 3)) for a in added)
    assert not any(np.allclose(a, m) for a in added for m in kept)


def test_coarse_grid_counts_and_multiples():
    g = coarse_grid(4, 10)
    assert g.shape == (286, 4)  # C(13, 3)
    np.testing.assert_allclose(g.sum(axis=1), 1.0, atol=1e-12)
    assert (g >= 0).all()
    np.testing.assert_allclose(g * 10, np.round(g * 10), atol=1e-9)
    assert len({tuple(r) for r in np.round(g * 10).astype(int)}) == 286
    assert coarse_grid(3, 2).tolist() == [[0.0, 0.0, 1.0], [0.0, 0.5, 0.5], [0.0, 1.0, 0.0],
                                          [0.5, 0.0, 0.5], [0.5, 0.5, 0.0], [1.0, 0.0, 0.0]]
    with pytest.raises(ConfigError):
        coarse_grid(4, 0)


class QuadraticSurrogates:
    """Stands in for CapabilitySurrogates with known optima: capability c peaks at α = centers[c]."""

    def __init__(self, centers: dict[str, np.ndarray]):
        self.domains = DOMAINS
        self.capabilities = tuple(centers)
        self.centers = centers

    def predict(self, X):
        X = np.asarray(X, dtype=float)
        return {c: 1.0 - ((X - mu) ** 2).sum(axis=1) for c, mu in self.centers.items()}


CENTERS = {
    "reasoning": np.array([0.5, 0.3, 0.1, 0.1]),
    "coding": np.array([0.1, 0.6, 0.2, 0.1]),
}


SCALE = ScoreScale(lo={"reasoning": 0.0, "coding": 0.0}, hi={"reasoning": 1.0, "coding": 1.0})


def test_search_finds_known_optimum_and_is_on_simplex():
    s = QuadraticSurrogates(CENTERS)
    result = search_mixture(s, Objective(), SCALE, n_samples=100_000, seed=0, choice="argmax")
    # macro-average of two equal quadratics peaks at the mean of the centers
    target = (CENTERS["reasoning"] + CENTERS["coding"]) / 2
    assert np.abs(result.mixture.as_array() - target).max() < 0.01
    assert abs(sum(result.mixture.weights) - 1.0) < 1e-12
    assert result.n_samples >= 80_000  # the pool; refinement stops early once its step is below 1e-6
    assert set(result.predicted) == {"reasoning", "coding"}
    # the robust choice averages the top-k pool points: close to the optimum, never better than the argmax
    robust = search_mixture(s, Objective(), SCALE, n_samples=100_000, seed=0, choice="top_k_mean", top_k=50)
    assert np.abs(robust.mixture.as_array() - target).max() < 0.05
    assert robust.predicted_objective <= result.argmax_objective + 1e-12
    # capability-targeted: all weight on coding -> coding's optimum
    targeted = search_mixture(s, Objective(weights={"coding": 1.0}), SCALE, n_samples=100_000, choice="argmax")
    assert np.abs(targeted.mixture.as_array() - CENTERS["coding"]).max() < 0.01


def test_objective_weighting_scaling_floors_and_directions():
    scores = {"a": np.array([0.0, 10.0, 5.0]), "b": np.array([1.0, 0.0, 0.5])}
    scale = fit_score_scale(scores)
    assert scale.lo == {"a": 0.0, "b": 0.0} and scale.hi == {"a": 10.0, "b": 1.0}
    np.testing.assert_allclose(objective_values(scores, Objective(), scale), [0.5, 0.5, 0.5])
    np.testing.assert_allclose(objective_values(scores, Objective({"a": 3, "b": 1}), scale), [0.25, 0.75, 0.5])
    # maximin: the weakest normalized target decides, so the balanced row wins
    np.testing.assert_allclose(objective_values(scores, Objective(aggregate="min"), scale), [0.0, 0.0, 0.5])
    # minimizing b flips it: row 1 (b = 0) is best on both
    np.testing.assert_allclose(
        objective_values(scores, Objective(directions={"b": "minimize"}), scale), [0.0, 1.0, 0.5])
    # floors are in raw units; for a minimized target they are a ceiling
    floored = objective_values(scores, Objective(floors={"b": 0.4}), scale)
    assert np.isneginf(floored[1]) and floored[0] == pytest.approx(0.5)
    ceiling = objective_values(scores, Objective(directions={"b": "minimize"}, floors={"b": 0.6}), scale)
    assert np.isneginf(ceiling[0]) and np.isfinite(ceiling[1:]).all()
    # constant target: scale 1, no division by zero
    flat = fit_score_scale({"c": np.array([0.3, 0.3])})
    np.testing.assert_allclose(objective_values({"c": np.array([0.3, 0.5])}, Objective(), flat), [0.0, 0.2])
    with pytest.raises(ConfigError):
        objective_values(scores, Objective({"nope": 1.0}), scale)
    with pytest.raises(ConfigError):
        objective_values(scores, Objective({"a": -1.0}), scale)
    with pytest.raises(ConfigError, match="prior"):
        Objective(kl_weight=0.1)


def test_targets_within_noise_are_excluded_so_noise_cannot_decide_maximin():
    # "lang" moves by 0.02 with a noise of 0.026: min–max scaling would stretch that noise to [0, 1]
    scores = {"math": np.array([0.34, 0.68, 0.50]), "lang": np.array([0.273, 0.253, 0.265])}
    res = resolve_targets(scores, {"math": 0.0095, "lang": 0.026}, min_spread_in_noise=1.0)
    assert res["math"].resolved and not res["lang"].resolved
    assert res["lang"].spread == pytest.approx(0.02) and "noise" in res["lang"].reason
    scale = fit_score_scale(scores)
    everything = objective_values(scores, Objective(aggregate="min"), scale)
    assert int(np.argmax(everything)) == 2  # noise in "lang" makes the middle row the maximin pick
    excluded = Objective(aggregate="min", excluded={"lang": res["lang"].reason})
    np.testing.assert_allclose(objective_values(scores, excluded, scale), [0.0, 1.0, 16 / 34])
    assert "not optimized (within noise): lang" in excluded.describe()
    # weights naming an excluded target are dropped with it, not an error
    weighted = Objective(weights={"math": 1.0, "lang": 3.0}, excluded={"lang": "noise"})
    np.testing.assert_allclose(objective_values(scores, weighted, scale), [0.0, 1.0, 16 / 34])
    # no noise estimate: kept, and it says so; threshold 0 keeps everything
    assert resolve_targets(scores, {"math": 0.01}, 1.0)["lang"].reason.startswith("no noise estimate")
    assert all(r.resolved for r in resolve_targets(scores, {"math": 0.01, "lang": 0.026}, 0.0).values())
    # when nothing is resolved everything is kept (nothing else to optimize) and the reasons say why
    none = resolve_targets(scores, {"math": 1.0, "lang": 1.0}, 1.0)
    assert all(r.resolved and "no target is resolved" in r.reason for r in none.values())
    with pytest.raises(ConfigError, match="every target is excluded"):
        objective_values(scores, Objective(excluded={"math": "x", "lang": "y"}), scale)


def test_kl_penalty_pulls_toward_the_prior():
    prior = {"math": 0.4, "code": 0.3, "sft": 0.2, "general": 0.1}
    X = np.array([[0.4, 0.3, 0.2, 0.1], [1.0, 0.0, 0.0, 0.0]])
    scores = {"a": np.array([0.5, 0.5])}
    values = objective_values(scores, Objective(prior=prior, kl_weight=1.0), fit_score_scale(scores), X, DOMAINS)
    assert values[0] == pytest.approx(0.0)  # at the prior: no penalty
    assert values[1] == pytest.approx(-np.log(1 / 0.4))  # KL(e_math ‖ prior) = log(1/0.4)
    # a linear objective has a vertex optimum; the KL pull makes it interior
    s = LinearSurrogates(np.array([1.0, 0.8, 0.6, 0.2]))
    plain = search_mixture(s, Objective(), fit_score_scale({"lin": np.array([0.2, 1.0])}), n_samples=20_000,
                           choice="argmax")
    assert plain.mixture.as_array().max() > 0.99
    pulled = search_mixture(s, Objective(prior=prior, kl_weight=0.2), fit_score_scale({"lin": np.array([0.2, 1.0])}),
                            n_samples=20_000, choice="argmax")
    # closed form of max g·α − w·KL(α ‖ p): α ∝ p · exp(g / w), g the normalized slopes
    gibbs = np.array(list(prior.values())) * np.exp(np.array([1.0, 0.8, 0.6, 0.2]) / 0.8 / 0.2)
    np.testing.assert_allclose(pulled.mixture.as_array(), gibbs / gibbs.sum(), atol=2e-3)
    assert pulled.mixture.as_array().max() < 0.85


def test_minimize_objective_picks_lowest_predicted_loss():
    s = QuadraticSurrogates({"loss": np.array([0.2, 0.2, 0.3, 0.3])})
    scale = ScoreScale(lo={"loss": 0.0}, hi={"loss": 1.0})
    low = search_mixture(s, Objective(directions={"loss": "minimize"}), scale, n_samples=20_000, choice="argmax")
    # "loss" = 1 - ‖α − c‖² is lowest at the vertex farthest from c
    grid = np.vstack([np.eye(4), np.random.default_rng(0).dirichlet(np.ones(4), 50_000)])
    truth = s.predict(grid)["loss"]
    assert low.predicted["loss"] <= truth.min() + 1e-9
    high = search_mixture(s, Objective(), scale, n_samples=20_000, choice="argmax")
    assert high.predicted["loss"] > 0.999


def test_search_respects_floors():
    s = QuadraticSurrogates(CENTERS)
    free = search_mixture(s, Objective({"coding": 1.0}), SCALE, n_samples=20_000, choice="argmax")
    assert free.predicted["reasoning"] < 0.83
    floored = search_mixture(s, Objective({"coding": 1.0}, floors={"reasoning": 0.9}), SCALE, n_samples=20_000,
                             choice="argmax")
    assert floored.predicted["reasoning"] >= 0.9
    assert floored.predicted_objective < free.predicted_objective
    with pytest.raises(InfeasibleObjectiveError):
        search_mixture(s, Objective(floors={"reasoning": 2.0}), SCALE, n_samples=1000)


class LinearSurrogates:
    domains = DOMAINS

    def __init__(self, slope):
        self.slope = slope

    def predict(self, X):
        return {"lin": np.asarray(X) @ self.slope}


def test_constraints_hold_exactly_and_unconstrained_differs():
    s = LinearSurrogates(np.array([1.0, 0.5, 0.2, 0.1]))  # unconstrained optimum: the math vertex
    scale = fit_score_scale({"lin": np.array([0.1, 1.0])})
    c = build_constraints(DOMAINS, min_weight={"general": 0.1}, max_weight={"math": 0.35}, pinned={"sft": 0.15})
    for choice in ("argmax", "top_k_mean"):
        r = search_mixture(s, Objective(), scale, n_samples=20_000, choice=choice, constraints=c)
        w = r.mixture.as_dict()
        assert w["math"] <= 0.35 and w["general"] >= 0.1 and w["sft"] == 0.15  # exactly, no tolerance
        assert abs(sum(r.mixture.weights) - 1.0) <= 1e-12
    r = search_mixture(s, Objective(), scale, n_samples=20_000, choice="argmax", constraints=c)
    # a linear objective under box bounds: math at its cap, the rest to the next best domain (code)
    np.testing.assert_allclose(r.mixture.as_array(), [0.35, 0.4, 0.15, 0.1], atol=1e-9)
    free = search_mixture(s, Objective(), scale, n_samples=20_000, choice="argmax")
    assert free.mixture.as_dict()["math"] > 0.99


def test_projection_is_exact_on_random_points():
    c = build_constraints(DOMAINS, min_weight={"code": 0.05, "general": 0.2}, max_weight={"math": 0.3, "sft": 0.25})
    X = np.random.default_rng(0).normal(size=(2000, 4))
    P = c.project(X)
    assert (P >= c.lo).all() and (P <= c.hi).all()
    assert np.abs(P.sum(axis=1) - 1.0).max() <= 1e-12
    # a feasible point projects onto itself
    inside = np.array([[0.25, 0.3, 0.2, 0.25]])
    np.testing.assert_allclose(c.project(inside), inside, atol=1e-12)


def test_token_availability_bound_and_infeasible_constraints():
    c = build_constraints(DOMAINS, available_tokens={"math": 1_000, "code": 10_000, "sft": 500, "general": 50_000},
                          target_tokens=10_000, max_epochs=2.0)
    assert c.upper == (0.2, 1.0, 0.1, 1.0)
    assert "token availability" in c.reasons["sft"]
    with pytest.raises(InfeasibleConstraintsError, match="maximum weights sum"):
        build_constraints(DOMAINS, available_tokens={d: 100 for d in DOMAINS}, target_tokens=10_000, max_epochs=1.0)
    with pytest.raises(InfeasibleConstraintsError, match="minimum weights sum"):
        build_constraints(DOMAINS, min_weight={"math": 0.6, "code": 0.6})
    with pytest.raises(ConfigError, match="unknown domains"):
        build_constraints(DOMAINS, max_weight={"poetry": 0.5})


@pytest.mark.parametrize("k", [4, 17, 64])
def test_search_reaches_a_concentrated_optimum_at_any_k(k):
    """Plain Dirichlet(1) sampling at K=17 never puts > ~0.6 on a domain; the optimum here is at 0.85."""
    rng = np.random.default_rng(k)
    x_star = np.full(k, 0.15 / (k - 1))
    x_star[3] = 0.85

    def f(X):
        return -((X - x_star) ** 2).sum(axis=1)

    found = maximize_on_simplex(f, k, n_evaluations=60_000, seed=0)
    span = -f(np.eye(k)).min()
    assert (0.0 - found.value) / span < 1e-3
    plain = sample_simplex(k, 60_000, seed=0)
    if k >= 17:
        assert (0.0 - f(plain).max()) / span > 10 * (0.0 - found.value) / span
    del rng


def test_search_settings_with_unknown_names_fail_at_load():
    from pydantic import ValidationError

    from mergemix_dagster.core.settings import Settings

    base = {"domains": [{"name": "math"}, {"name": "code"}]}
    Settings(**base, search={"max_weight": {"math": 0.5}, "objective": {"floors": {"math": 0.3}}})
    for bad, match in (
        ({"max_weight": {"poetry": 0.5}}, "unknown domains"),
        ({"objective": {"weights": {"poetry": 1.0}}}, "unknown capabilities"),
        ({"objective": {"directions": {"nope": "minimize"}}}, "unknown capabilities"),
        ({"n_candidates": 2}, "number of domains"),
        ({"max_weight": {"math": 1.5}}, r"\[0, 1\]"),
    ):
        with pytest.raises(ValidationError, match=match):
            Settings(**base, search=bad)
