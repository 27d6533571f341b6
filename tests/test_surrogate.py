"""LightGBM capability surrogates: small-data fit, cross-validated quality, native save/load."""

from __future__ import annotations

import json

import numpy as np
import pytest

from mergemix_dagster.core.search.designs import seed_design
from mergemix_dagster.core.errors import MergeMixError, SimplexError
from mergemix_dagster.core.search.objective import Objective, fit_score_scale
from mergemix_dagster.core.search.simplex import search_mixture
from mergemix_dagster.core.search.surrogate import CapabilitySurrogates

DOMAINS = ("math", "code", "sft", "general")
CENTER = np.array([0.45, 0.3, 0.15, 0.1])


def _data(n: int = 40, seed: int = 0, noise: float = 0.01):
    X = np.array([m.as_array() for m in seed_design(DOMAINS, n, seed=seed)])
    rng = np.random.default_rng(seed + 100)
    quad = 0.6 + 0.3 * X[:, 0] - 1.5 * ((X - CENTER) ** 2).sum(axis=1) + rng.normal(0, noise, n)
    inter = 0.2 + 0.4 * X[:, 1] + 0.8 * X[:, 1] * X[:, 2] + rng.normal(0, noise, n)
    return X, {"reasoning": quad, "coding": inter}


@pytest.fixture(scope="module")
def fitted():
    X, y = _data()
    return X, y, CapabilitySurrogates.fit(DOMAINS, X, y, seed=0, cv_folds=5)


def test_fit_quality_on_smooth_function(fitted):
    X, y, s = fitted
    assert s.domains == DOMAINS and s.capabilities == ("reasoning", "coding")
    for cap, q in s.quality.items():
        assert q.n == 40 and q.folds == 5
        assert q.r2 > 0.5, (cap, q)
        assert q.spearman > 0.7, (cap, q)
    pred = s.predict(X)
    # not a constant model (LightGBM defaults with min_data_in_leaf=20 would be)
    assert np.std(pred["reasoning"]) > 0.5 * np.std(y["reasoning"])
    # pure noise has no out-of-fold skill
    noise = {"noise": np.random.default_rng(5).normal(size=40)}
    q = CapabilitySurrogates.fit(DOMAINS, X, noise, seed=0).quality["noise"]
    assert q.r2 < 0.3


def test_surrogate_search_lands_near_true_optimum(fitted):
    _, y, s = fitted
    result = search_mixture(s, Objective({"reasoning": 1.0}), fit_score_scale(y), n_samples=20_000, choice="argmax")
    # true optimum of the reasoning function: maximize 0.3 a0 - 1.5 |a - c|^2 on the simplex
    grid = np.random.default_rng(0).dirichlet(np.ones(4), 200_000)
    truth = 0.3 * grid[:, 0] - 1.5 * ((grid - CENTER) ** 2).sum(axis=1)
    best = grid[np.argmax(truth)]
    assert np.abs(result.mixture.as_array() - best).max() < 0.2


def test_save_load_identical_predictions(fitted, tmp_path):
    X, _, s = fitted
    s.save(tmp_path / "bundle")
    files = sorted(p.name for p in (tmp_path / "bundle").iterdir())
    assert "surrogates.json" in files and all(f.endswith((".txt", ".json")) for f in files)
    manifest = json.loads((tmp_path / "bundle" / "surrogates.json").read_text())
    assert manifest["domains"] == list(DOMAINS)
    loaded = CapabilitySurrogates.load(tmp_path / "bundle")
    probe = np.random.default_rng(1).dirichlet(np.ones(4), 500)
    a, b = s.predict(probe), loaded.predict(probe)
    for cap in s.capabilities:
        np.testing.assert_array_equal(a[cap], b[cap])
    assert loaded.quality == s.quality
    assert loaded.domains == s.domains and loaded.capabilities == s.capabilities


def test_deterministic_and_tiny_n():
    X, y = _data()
    a = CapabilitySurrogates.fit(DOMAINS, X, y, seed=0)
    b = CapabilitySurrogates.fit(DOMAINS, X, y, seed=0)
    probe = np.random.default_rng(2).dirichlet(np.ones(4), 100)
    np.testing.assert_array_equal(a.predict(probe)["coding"], b.predict(probe)["coding"])
    # smoke-test sizes: 8 points, cv clipped to N, a constant capability is NaN-safe
    X8, y8 = X[:8], {"reasoning": y["reasoning"][:8], "flat": np.full(8, 0.25)}
    s = CapabilitySurrogates.fit(DOMAINS, X8, y8, cv_folds=20)
    assert s.quality["reasoning"].folds == 8
    assert np.isnan(s.quality["flat"].r2)
    np.testing.assert_allclose(s.predict(probe)["flat"], 0.25)
    assert np.ptp(s.predict(probe)["reasoning"]) > 0


def test_bad_inputs_raise_clear_errors():
    X, y = _data(12)
    bad = dict(y, coding=y["coding"].copy())
    bad["coding"][3] = np.nan
    with pytest.raises(MergeMixError, match="coding"):
        CapabilitySurrogates.fit(DOMAINS, X, bad)
    off = X.copy()
    off[0] = [0.5, 0.5, 0.5, 0.0]
    with pytest.raises(SimplexError):
        CapabilitySurrogates.fit(DOMAINS, off, y)
    nan_x = X.copy()
    nan_x[1, 0] = np.nan
    with pytest.raises(SimplexError):
        CapabilitySurrogates.fit(DOMAINS, nan_x, y)
    s = CapabilitySurrogates.fit(DOMAINS, X, y)
    with pytest.raises(SimplexError):
        s.predict(np.array([[0.9, 0.9, 0.0, 0.0]]))
    with pytest.raises(SimplexError):
        s.predict(np.array([[1.0, 0.0, 0.0]]))


def test_ensemble_intervals_widen_with_noise_and_survive_save_load(tmp_path):
    X, _ = _data()
    rng = np.random.default_rng(0)
    flat = 0.5 + 0.05 * X[:, 0]
    a = CapabilitySurrogates.fit(DOMAINS, X, {"c": flat}, seed=0, ensemble=8)
    b = CapabilitySurrogates.fit(DOMAINS, X, {"c": flat + rng.normal(0, 0.1, len(flat))}, seed=0, ensemble=8)
    assert a.n_members == 8
    probe = np.random.default_rng(3).dirichlet(np.ones(4), 200)
    width = {n: float(np.mean(np.diff(s.intervals(probe)["c"], axis=1))) for n, s in (("clean", a), ("noisy", b))}
    assert width["noisy"] > 3 * width["clean"]
    lo, hi = b.intervals(probe)["c"].T
    assert (lo <= hi).all()
    b.save(tmp_path / "ens")
    loaded = CapabilitySurrogates.load(tmp_path / "ens")
    np.testing.assert_array_equal(loaded.predict_members(probe)["c"], b.predict_members(probe)["c"])
    with pytest.raises(MergeMixError, match="ensemble"):
        CapabilitySurrogates.fit(DOMAINS, X, {"c": flat}, seed=0).predict_members(probe)


def test_lcb_choice_maximizes_the_lower_bound():
    X, y = _data(noise=0.05)
    s = CapabilitySurrogates.fit(DOMAINS, X, y, seed=0, ensemble=16)
    scale = fit_score_scale(y)
    lcb = search_mixture(s, Objective(), scale, n_samples=20_000, choice="lcb")
    top = search_mixture(s, Objective(), scale, n_samples=20_000, choice="argmax")
    assert lcb.lcb_objective <= lcb.predicted_objective + 1e-9
    # the argmax is one of the candidates the LCB choice ranks: its lower bound cannot be higher
    assert top.lcb_objective <= lcb.lcb_objective + 1e-9
    for c, (lo, hi) in lcb.intervals.items():
        assert lo <= hi
    with pytest.raises(MergeMixError, match="ensemble"):
        search_mixture(CapabilitySurrogates.fit(DOMAINS, X, y, seed=0), Objective(), scale, n_samples=1000,
                       choice="lcb")
