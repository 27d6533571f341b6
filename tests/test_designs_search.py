"""Seed designs on the simplex and the utility search over the surrogates."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from mergemix_dagster.core.designs import coarse_grid, sample_simplex, seed_design
from mergemix_dagster.core.errors import ConfigError
from mergemix_dagster.core.mixture import Mixture
from mergemix_dagster.core.search import (
    ScoreScale,
    Utility,
    fit_score_scale,
    search_mixture,
    utility_values,
)

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
    # vertices first, then the 6 pairwise midpoints, then the centroid
    np.testing.assert_array_equal(arr[:4], np.eye(4))
    mids = [tuple(r) for r in arr[4:10]]
    expected = []
    for i, j in itertools.combinations(range(4), 2):
        p = [0.0] * 4
        p[i] = p[j] = 0.5
        expected.append(tuple(p))
    assert mids == expected
    np.testing.assert_allclose(arr[10], 0.25)
    assert len({tuple(np.round(r, 9)) for r in arr}) == 40  # no duplicates
    assert seed_design(DOMAINS, 40, seed=0) == design
    assert seed_design(DOMAINS, 40, seed=1)[11:] != design[11:]
    assert seed_design(DOMAINS, 40, seed=1)[:11] == design[:11]


def test_seed_design_small_n_keeps_priority_and_priors_dedup():
    assert [m.as_array().tolist() for m in seed_design(DOMAINS, 3)] == np.eye(4)[:3].tolist()
    prior = Mixture.from_dict({"math": 0.7, "code": 0.1, "sft": 0.1, "general": 0.1}, DOMAINS)
    dup = Mixture.uniform(DOMAINS)  # already the centroid: kept once
    design = seed_design(DOMAINS, 20, priors=[prior, dup])
    assert design[11] == prior
    assert sum(m == dup for m in design) == 1
    # K=2: midpoint == centroid, kept once
    two = seed_design(("a", "b"), 3)
    assert [m.weights for m in two] == [(1.0, 0.0), (0.0, 1.0), (0.5, 0.5)]
    with pytest.raises(ConfigError):
        seed_design(DOMAINS, 0)


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


def test_search_finds_known_optimum_and_is_on_simplex():
    s = QuadraticSurrogates(CENTERS)
    scale = ScoreScale(lo={"reasoning": 0.0, "coding": 0.0}, hi={"reasoning": 1.0, "coding": 1.0})
    result = search_mixture(s, Utility(), scale, n_samples=100_000, seed=0)
    # macro-average of two equal quadratics peaks at the mean of the centers
    target = (CENTERS["reasoning"] + CENTERS["coding"]) / 2
    assert np.abs(result.mixture.as_array() - target).max() < 0.05
    assert abs(sum(result.mixture.weights) - 1.0) < 1e-12
    assert result.n_samples >= 100_000
    assert result.top[0][0] == result.mixture and result.top[0][1] == pytest.approx(result.predicted_utility)
    assert set(result.predicted) == {"reasoning", "coding"}
    # capability-targeted: all weight on coding -> coding's optimum
    targeted = search_mixture(s, Utility(capability_weights={"coding": 1.0}), scale, n_samples=100_000)
    assert np.abs(targeted.mixture.as_array() - CENTERS["coding"]).max() < 0.05
    # an included point that is exactly optimal is found exactly
    exact = Mixture.from_array(DOMAINS, CENTERS["reasoning"])
    r = search_mixture(s, Utility(capability_weights={"reasoning": 1}), scale, n_samples=10, include=[exact])
    assert r.mixture == exact


def test_utility_weighting_scaling_and_floors():
    scores = {"a": np.array([0.0, 10.0, 5.0]), "b": np.array([1.0, 0.0, 0.5])}
    scale = fit_score_scale(scores)
    assert scale.lo == {"a": 0.0, "b": 0.0} and scale.hi == {"a": 10.0, "b": 1.0}
    np.testing.assert_allclose(utility_values(scores, Utility(), scale), [0.5, 0.5, 0.5])
    np.testing.assert_allclose(utility_values(scores, Utility({"a": 3, "b": 1}), scale), [0.25, 0.75, 0.5])
    floored = utility_values(scores, Utility(floors={"b": 0.4}), scale)
    assert np.isneginf(floored[1]) and floored[0] == pytest.approx(0.5)
    # constant capability: scale 1, no division by zero
    flat = fit_score_scale({"c": np.array([0.3, 0.3])})
    np.testing.assert_allclose(utility_values({"c": np.array([0.3, 0.5])}, Utility(), flat), [0.0, 0.2])
    with pytest.raises(ConfigError):
        utility_values(scores, Utility({"nope": 1.0}), scale)
    with pytest.raises(ConfigError):
        utility_values(scores, Utility({"a": -1.0}), scale)


def test_search_respects_floors():
    s = QuadraticSurrogates(CENTERS)
    scale = ScoreScale(lo={"reasoning": 0.0, "coding": 0.0}, hi={"reasoning": 1.0, "coding": 1.0})
    free = search_mixture(s, Utility({"coding": 1.0}), scale, n_samples=20_000)
    assert free.predicted["reasoning"] < 0.83
    floored = search_mixture(s, Utility({"coding": 1.0}, floors={"reasoning": 0.9}), scale, n_samples=20_000)
    assert floored.predicted["reasoning"] >= 0.9
    assert floored.predicted_utility < free.predicted_utility
    with pytest.raises(ConfigError):
        search_mixture(s, Utility(floors={"reasoning": 2.0}), scale, n_samples=1000)
